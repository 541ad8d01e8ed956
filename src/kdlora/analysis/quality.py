"""Quality across seeds: per configuration of a (task, family, method) cell the median and mean ± std of the score,
and Table I (one figure per cell; the LoRA rank is a configuration's setting, like its alpha).

Reads run records (plain dicts, as `records_from_runs` makes them from the store); never imports training code.
A configuration is every setting of a run but its seed (and its teacher, which differs with the seed), so a grid
of learning rates gives one aggregate per rate: none hides another. Collapsed (non-finite loss) and failed runs
are excluded from every figure and counted beside it; done runs with constant dev predictions count, flagged
(`exclude_flagged` leaves them out, counted too). Which configuration a Table I cell shows: `kdlora.analysis.select`.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import asdict, dataclass, field

from kdlora.data.tasks import TASKS
from kdlora.families import FAMILIES
from kdlora.methods import METHODS, labels
from kdlora.metrics import glue_score

# The paper's Table I rows: (row, metric label, task, metric key in a run's metrics). Tasks outside GLUE get one
# row named after the task, valued by the run's headline score.
GLUE_ROWS = (
    ("CoLA", "Matthews corr.", "cola", "mcc"),
    ("MNLI-m", "Accuracy", "mnli", "matched_accuracy"),
    ("MNLI-mm", "Accuracy", "mnli", "mismatched_accuracy"),
    ("MRPC", "Mean of accuracy and F1", "mrpc", "accuracy_f1"),
    ("QNLI", "Accuracy", "qnli", "accuracy"),
    ("QQP", "Mean of accuracy and F1", "qqp", "accuracy_f1"),
    ("RTE", "Accuracy", "rte", "accuracy"),
    ("SST-2", "Accuracy", "sst2", "accuracy"),
    ("STS-B", "Mean of Pearson and Spearman", "stsb", "pearson_spearman"),
    ("WNLI", "Accuracy", "wnli", "accuracy"),
)
SCORE_ROW = "Score"
METRIC_LABELS = {"accuracy": "Accuracy", "mcc": "Matthews corr.", "accuracy_f1": "Mean of accuracy and F1",
                 "pearson_spearman": "Mean of Pearson and Spearman"}
EPOCHS = ("best", "last")
"""Which epoch's dev score a run contributes: the best (the saved model's; default) or the last (official code)."""
_NOT_CONFIGURATION = ("seed", "teacher")


def configuration_of(config: dict) -> str:
    """A short id of a run's configuration: every setting but the seed and the teacher (which follows the seed)."""
    rest = {k: v for k, v in (config or {}).items() if k not in _NOT_CONFIGURATION}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:12]


def records_from_runs(runs, epoch: str = "best") -> list[dict]:
    """Flat records of the store's train runs (`kdlora.store.Run`), one per run, scored at `epoch` (`EPOCHS`)."""
    records = []
    for run in runs:
        if run.kind != "train" or run.status == "running":
            continue
        metrics = dict(run.metrics or {})
        score = metrics.pop("score", None)
        metrics.pop("best_epoch", None)
        flags = list(run.flags or [])
        result = run.result or {}
        if epoch == "last":  # runs stored before the last epoch was recorded have no last score: not counted
            score, metrics = result.get("last_score"), dict(result.get("last_metrics") or {})
            flags = list(result.get("last_flags") or [])
        # a resumed run measured only its segment after the resume: its costs are not the run's (`cost_covers`)
        partial = result.get("resumed_at_step") is not None or result.get("cost_covers", "whole run") != "whole run"
        costs = {**(run.memory or {}), **(run.timings or {})}
        if partial:
            costs = {k: v for k, v in costs.items() if k == "memory_kind"}
        records.append({
            "key": run.key, "task": run.task, "family": run.family, "method": run.method,
            "rank": run.rank if _adapts(run.method) else None, "seed": run.seed, "status": run.status,
            "reason": run.reason, "score": score, "metrics": metrics, "flags": flags,
            "configuration": configuration_of(run.config), "config": run.config or {},
            "trainable_params": (run.params or {}).get("trainable_params"),
            "peak_memory_mb": costs.get("peak_memory_mb"), "memory_kind": costs.get("memory_kind"),
            "train_seconds": costs.get("train_seconds"), "energy_kwh": costs.get("energy_kwh"),
            "emissions_g_co2eq": costs.get("emissions_g_co2eq"), "energy_method": costs.get("energy_method"),
            "partial_cost": partial,
            # runs from before `dev_precision` was recorded scored dev in their training precision too
            "dev_precision": result.get("dev_precision") or (run.config or {}).get("precision") or "fp32",
            "finished_at": run.finished_at or "",
        })
    return records


def _adapts(method: str) -> bool:
    """Whether `method` is a registered adapter method (its runs have a rank)."""
    return method in METHODS and METHODS[method].uses_lora


def _cell(record: dict) -> tuple:
    return record["task"], record["family"], record["method"], record["rank"]


@dataclass
class Aggregate:
    """One configuration of a (task, family, method) cell over its seeds (or, once selected, the cell's figure):
    done runs only; collapsed and failed counted apart."""

    task: str
    family: str
    method: str
    rank: int | None
    """The configuration's LoRA rank (None for FFT, and for a selected figure drawn from several ranks)."""
    ranks: list = field(default_factory=list)
    """The LoRA ranks of the configurations the figure comes from ([] for FFT)."""
    seeds: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    by_seed: dict = field(default_factory=dict)
    """seed -> the score of that seed's run (a selected figure: the median over its configurations of that seed's
    scores, for the seeds every one of them has): what a per-seed comparison pairs, never `scores`, which a top-k
    figure holds one per configuration."""
    collapsed: int = 0
    failed: int = 0
    configuration: str = ""
    """`configuration_of` its runs' config ("" when the records do not say)."""
    params: dict = field(default_factory=dict)
    """The settings in which this configuration differs from the others of its cell."""
    runs: int = 0
    """Done runs the figure counts (over every selected configuration)."""
    constant: int = 0
    """Counted runs flagged `constant_predictions`."""
    majority: int = 0
    """Of those, how many predicted dev's majority class."""
    left_out: int = 0
    """Flagged runs left out (`exclude_flagged`)."""
    configurations: int = 1
    """Configurations of the cell; once selected, how many the cell had."""
    selected: int = 1
    """Configurations the figure is the median of (top-k selection), else 1."""
    median: float | None = None
    mean: float | None = None
    std: float | None = None
    """Sample standard deviation (n - 1); 0.0 for a single seed."""
    metrics: dict = field(default_factory=dict)
    """Median over seeds of every metric."""
    trainable_params: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: str | None = None
    train_seconds: float | None = None
    energy_kwh: float | None = None
    """Median energy of a run (codecarbon), kWh; None unless the runs tracked it."""
    emissions_g_co2eq: float | None = None
    energy_method: str | None = None
    """`measured (...)` or `estimated (...)`: how codecarbon got the CPU's power."""
    partial_costs: int = 0
    """Counted runs that were resumed: their scores count, their costs (time, energy, memory: only the segment after
    the resume) are left out of the cost medians."""

    @property
    def n(self) -> int:
        return len(self.scores)

    def flag_note(self) -> str:
        """`2/3 constant` (runs flagged / runs counted), `` when none is; says how many were left out."""
        parts = []
        if self.constant:
            parts.append(f"{self.constant}/{self.runs} constant")
        if self.left_out:
            parts.append(f"{self.left_out} flagged left out")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "n": self.n}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(records: list[dict], exclude_flagged: bool = False) -> list[Aggregate]:
    """Per configuration of each (task, family, method) cell: median and mean ± std of the done runs' scores (and
    median costs). Runs flagged `constant_predictions` count unless `exclude_flagged`."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((*_cell(record), record.get("configuration", "")), []).append(record)
    found = []
    for (*cell, configuration), members in sorted(groups.items(), key=lambda kv: (_order(tuple(kv[0][:4])),
                                                                                   kv[0][4])):
        done = [r for r in members if r["status"] == "done" and r["score"] is not None]
        left_out = [r for r in done if exclude_flagged and "constant_predictions" in r.get("flags", [])]
        done = sorted((r for r in done if r not in left_out), key=lambda r: r["seed"])
        agg = Aggregate(*cell, ranks=[cell[3]] if cell[3] is not None else [], seeds=[r["seed"] for r in done],
                        scores=[r["score"] for r in done],
                        by_seed={r["seed"]: r["score"] for r in done} if len({r["seed"] for r in done}) == len(done)
                        else {},
                        collapsed=sum(r["status"] == "collapsed" for r in members),
                        failed=sum(r["status"] == "failed" for r in members), configuration=configuration,
                        runs=len(done),
                        constant=sum("constant_predictions" in r.get("flags", []) for r in done),
                        majority=sum("majority_class" in r.get("flags", []) for r in done), left_out=len(left_out),
                        partial_costs=sum(bool(r.get("partial_cost")) for r in done))
        agg.params = dict(members[0].get("config") or {})
        if done:
            agg.median = statistics.median(agg.scores)
            agg.mean = statistics.fmean(agg.scores)
            agg.std = statistics.stdev(agg.scores) if len(agg.scores) > 1 else 0.0
            names = sorted({k for r in done for k, v in r["metrics"].items() if isinstance(v, int | float)})
            agg.metrics = {k: _median(r["metrics"].get(k) for r in done) for k in names}
            for cost in ("trainable_params", "peak_memory_mb", "train_seconds", "energy_kwh", "emissions_g_co2eq"):
                setattr(agg, cost, _median(r.get(cost) for r in done))
            agg.memory_kind = done[0]["memory_kind"]
            agg.energy_method = next((r["energy_method"] for r in done if r.get("energy_method")), None)
        found.append(agg)
    _keep_differing_params(found)
    return sorted(found, key=lambda a: (_order((a.task, a.family, a.method, a.rank)), _params_key(a.params)))


def _params_key(params: dict) -> tuple:
    """Configurations in the order of their settings (numbers by value)."""
    return tuple((k, (0, v, "") if isinstance(v, int | float) else (1, 0, str(v))) for k, v in params.items())


def _keep_differing_params(aggregates: list[Aggregate]) -> None:
    """Each aggregate's `params`: only the settings that differ between the configurations of its cell."""
    cells: dict[tuple, list[Aggregate]] = {}
    for agg in aggregates:
        cells.setdefault((agg.task, agg.family, agg.method), []).append(agg)
    for members in cells.values():
        names = {k for a in members for k in a.params if k not in _NOT_CONFIGURATION}
        differ = sorted(k for k in names if len({json.dumps(a.params.get(k), default=str) for a in members}) > 1)
        for agg in members:
            agg.params = {k: agg.params.get(k) for k in differ}
            agg.configurations = len(members)


def _order(cell: tuple) -> tuple:
    """Sort key of a (task, family, method, rank) cell: methods in the registry's order (FFT, LoRA, KD-LoRA, ...)."""
    task, family, method, rank = cell
    methods = list(labels())
    return (task, family, methods.index(method) if method in methods else 9, method, rank or 0)


def family_name(family: str) -> str:
    """A family as tables name it: by its teacher (`BERT-base`), else as given."""
    known = FAMILIES.get(family)
    return known.teacher.display_name if known else family


def column_name(family: str, method: str) -> str:
    """Table I's column for a family and method, as the paper names it (`BERT-base KD-LoRA`)."""
    return f"{family_name(family)} {labels().get(method, method)}"


def table_rank(aggregates: list[Aggregate]) -> int | None:
    """The smallest LoRA rank with a measured score (where a per-rank view, e.g. a bench row, needs one rank)."""
    ranks = [r for a in aggregates if a.n for r in a.ranks]
    return min(ranks) if ranks else None


@dataclass
class TableI:
    """Table I in the paper's layout: rows of (row, metric label, {column: value in %}), then the Score row;
    `notes` holds each flagged cell's `2/3 constant` by (row, column)."""

    columns: list[str]
    rows: list[tuple[str, str, dict]]
    rank: int | None
    """The one LoRA rank the table was restricted to; None: each cell's figure selects over every rank."""
    notes: dict = field(default_factory=dict)
    ranks: dict = field(default_factory=dict)
    """The LoRA ranks each LoRA-method column's figures come from, by column."""

    def score(self) -> dict:
        return next((cells for name, _, cells in self.rows if name == SCORE_ROW), {})

    def to_dict(self) -> dict:
        return {"columns": self.columns, "rank": self.rank, "ranks": self.ranks,
                "rows": [{"Task": name, "Metric": label, **cells} for name, label, cells in self.rows],
                "notes": [{"row": r, "column": c, "note": n} for (r, c), n in self.notes.items()]}


def table_i(aggregates: list[Aggregate], rank: int | None = None) -> TableI:
    """Figures in %, one aggregate per (task, family, method) cell (`kdlora.analysis.select` makes them); with
    `rank`, a per-rank view: LoRA methods' aggregates at that rank only. Score = `kdlora.metrics.glue_score` of each
    column's rows (the paper averages its ten rows, MNLI-m and MNLI-mm apart)."""
    shown = [a for a in aggregates if a.n and (rank is None or not _adapts(a.method) or a.rank == rank)]
    cells = [(a.task, a.family, a.method) for a in shown]
    if len(cells) != len(set(cells)):
        raise ValueError("table_i takes one aggregate per (task, family, method): select them first, or pass rank")
    families = sorted({a.family for a in shown}, key=lambda f: (list(FAMILIES).index(f) if f in FAMILIES else 99, f))
    columns = [column_name(f, m) for f in families for m in labels() if any(
        a.family == f and a.method == m for a in shown)]
    by_task: dict[str, list[Aggregate]] = {}
    for agg in shown:
        by_task.setdefault(agg.task, []).append(agg)
    rows, notes = [], {}
    for row, label, task, metric in GLUE_ROWS:
        if task in by_task:
            rows.append((row, label, {column_name(a.family, a.method): 100 * a.metrics.get(metric, a.median)
                                      for a in by_task[task]}))
    glue = {task for _, _, task, _ in GLUE_ROWS}
    for task in sorted(set(by_task) - glue):
        label = METRIC_LABELS.get(TASKS[task].metric, TASKS[task].metric) if task in TASKS else "Score"
        rows.append((task, label, {column_name(a.family, a.method): 100 * a.median for a in by_task[task]}))
    names = {task: [r for r, _, t, _ in GLUE_ROWS if t == task] or [task] for task in by_task}
    for task, members in by_task.items():
        for agg in members:
            if agg.flag_note():
                for row in names[task]:
                    notes[(row, column_name(agg.family, agg.method))] = agg.flag_note()
    score = {}
    for column in columns:
        values = {name: cells[column] for name, _, cells in rows if column in cells}
        if len(values) == len(rows):  # a column missing a task has no comparable average
            score[column] = glue_score(values)
    if rows:
        rows.append((SCORE_ROW, "Average", score))
    ranks = {}
    for agg in shown:
        if agg.ranks:
            ranks.setdefault(column_name(agg.family, agg.method), set()).update(agg.ranks)
    return TableI(columns, rows, rank, notes, {column: sorted(r) for column, r in ranks.items()})


def reported_vs_measured(table: TableI, reference: dict[tuple[str, str], float]) -> list[dict]:
    """Every cell both tables have: the paper's figure, ours, and the difference in points (the Score row only
    when ours has every GLUE row too)."""
    found = []
    complete = {row for row, _, _, _ in GLUE_ROWS} <= {name for name, _, _ in table.rows}
    for name, _, cells in table.rows:
        if name == SCORE_ROW and not complete:  # the paper's Score averages all ten GLUE rows
            continue
        for column, measured in cells.items():
            if (name, column) in reference:
                reported = reference[(name, column)]
                found.append({"row": name, "column": column, "reported": reported, "measured": measured,
                              "difference": measured - reported})
    return found
