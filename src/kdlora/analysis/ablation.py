"""The ablation the paper omits: how much of a distilling method's score is the distillation, and how much the
smaller model. Per family and adapter, from the store's runs (never from training code):

    KD adds X points over LoRA on the same student (Student-LoRA); the smaller model costs Y points
    (Student-LoRA vs LoRA)

X = KD-LoRA - Student-LoRA and Y = LoRA - Student-LoRA, each the mean over the tasks all three methods have of the
cell figures Table I shows (medians over seeds), in points (100 x the score). The spread is that of the same
differences seed by seed (each cell's score of that seed: its run's, or a top-k figure's median over its
configurations of that seed's runs), over the seeds every cell has. The triples come from the method registry
(`kdlora.methods.comparisons`): any adapter registered on the teacher, on the student and on the student with KD.
"""

from __future__ import annotations

import statistics

from kdlora.analysis.quality import Aggregate, column_name
from kdlora.methods import comparisons


def _per_seed(agg: Aggregate) -> dict:
    """seed -> score: the seed's run, or the median of the seed's runs over a top-k figure's configurations."""
    return agg.by_seed


def _best_by_task(aggregates: list[Aggregate], family: str, method: str, rank: int | None) -> dict:
    """task -> the figure Table I shows for (family, method) (at `rank` when given): the best median."""
    best: dict[str, Aggregate] = {}
    for agg in aggregates:
        if agg.family == family and agg.method == method and agg.n and rank in (None, agg.rank):
            if agg.task not in best or agg.median > best[agg.task].median:
                best[agg.task] = agg
    return best


def _points(mine: dict, other: dict, tasks: list[str]) -> float:
    """100 x the mean over `tasks` of `mine`'s cell median less `other`'s."""
    return 100 * statistics.fmean(mine[t].median - other[t].median for t in tasks)


def _points_per_seed(mine: dict, other: dict, tasks: list[str], seeds: list) -> list[float]:
    """The same difference seed by seed."""
    return [100 * statistics.fmean(_per_seed(mine[t])[s] - _per_seed(other[t])[s] for t in tasks) for s in seeds]


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return "one seed, no spread"
    return (f"per seed {min(values):+.1f} to {max(values):+.1f}, std {statistics.stdev(values):.1f} over "
            f"{len(values)} seeds")


def ablations(aggregates: list[Aggregate], rank: int | None = None) -> list[dict]:
    """One entry per family and adapter with the three cells it needs (Table I's selected figures, only those at
    `rank` when given), sentence included."""
    found = []
    families = list(dict.fromkeys(a.family for a in aggregates))
    for on_teacher, distiller, on_student in comparisons():
        if on_student is None:
            continue
        methods = (on_teacher.name, distiller.name, on_student.name)
        for family in families:
            cells = {m: _best_by_task(aggregates, family, m, rank) for m in methods}
            tasks = sorted(set.intersection(*(set(c) for c in cells.values())))
            if not tasks:
                continue
            teacher, kd, student = (cells[m] for m in methods)
            seeds = sorted(set.intersection(*(set(_per_seed(c[t])) for c in cells.values() for t in tasks)))
            ranks = sorted({r for c in cells.values() for t in tasks for r in (c[t].ranks or [c[t].rank])
                            if r is not None})
            entry = {"family": family, "methods": list(methods), "ranks": ranks, "tasks": tasks, "seeds": seeds,
                     "kd_gain_points": _points(kd, student, tasks),
                     "size_cost_points": _points(teacher, student, tasks),
                     "kd_gain_per_seed": _points_per_seed(kd, student, tasks, seeds),
                     "size_cost_per_seed": _points_per_seed(teacher, student, tasks, seeds)}
            entry["sentence"] = sentence(entry, on_teacher.label, distiller.label, on_student.label)
            found.append(entry)
    return found


def sentence(entry: dict, teacher: str, kd: str, student: str) -> str:
    """The ablation of one family in a sentence, its seeds and spread named."""
    name = column_name(entry["family"], entry["methods"][0])[:-len(teacher) - 1]
    seeds = ", ".join(map(str, entry["seeds"])) or "none common to every cell"
    ranks = entry["ranks"]
    rank = f"rank{'s' * (len(ranks) > 1)} {', '.join(map(str, ranks))}"
    return (f"{name} ({', '.join(entry['tasks'])}; {rank}): KD adds {entry['kd_gain_points']:+.1f} "
            f"points over {teacher} on the same student ({student}; {kd} vs {student}), the smaller model costs "
            f"{entry['size_cost_points']:+.1f} points ({student} vs {teacher}); medians over seeds {seeds}; KD "
            f"{_spread(entry['kd_gain_per_seed'])}, model {_spread(entry['size_cost_per_seed'])}.")


def markdown(entries: list[dict], aggregates: list[Aggregate]) -> list[str]:
    """The report's ablation section: empty when no run of a student-without-KD method is in the store."""
    students = {s.name for _, _, s in comparisons() if s is not None}
    if not any(a.method in students for a in aggregates):
        return []
    lines = ["", "## Ablation: the distillation and the smaller model", ""]
    if not entries:
        return lines + ["No family has all three of an adapter on the teacher, on the student with KD and on the "
                        "student without KD at Table I's rank: nothing to set apart."]
    return lines + [f"- {e['sentence']}" for e in entries]
