"""Score next to cost: per family and distilling method (KD-LoRA, KD-DoRA, ...), what share of its adapter's
score on the teacher (LoRA, DoRA, ...) and of FFT's it keeps, at what memory and speed (the triples come from the
method registry, `kdlora.methods.comparisons`).

Quality comes from train runs (medians over seeds, averaged over the tasks every method has). Costs come from two
places, always labelled: the train runs' own measurements (trainable parameters, peak training memory, training
time) and `kdlora bench` rows of the same family (peak training memory in a fixed step, inference time with merged
adapters). Memory figures are compared only when they are of one kind (`memory_kind`, e.g. `cpu-peak-rss-delta`),
and the sentence names it. A family that was benched but not trained gets a cost-only line. Never imports
training code.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from kdlora.analysis.plots import new_figure, save
from kdlora.analysis.quality import Aggregate, column_name, table_rank
from kdlora.bench.forms import DEFAULT_FORM, row_form
from kdlora.methods import METHODS, baseline, colour_of, comparisons, labels

PAPER_FORM = DEFAULT_FORM
"""The inference form the paper measures (eager PyTorch, fp32, not quantised): the bench row a trade-off uses."""


def _pick(aggregates: list[Aggregate], family: str, method: str) -> list[Aggregate]:
    """The family's selected figures of `method` (one per task: each selects over every rank, like Table I)."""
    return [a for a in aggregates if a.family == family and a.method == method and a.n]


def _adapts(method: str) -> bool:
    return method in METHODS and METHODS[method].uses_lora


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _bench_figures(rows: list[dict], family: str, method: str, rank: int | None) -> dict | None:
    """The bench row of (family, method), at `rank` for LoRA methods when measured there, else any measured rank;
    in the paper's form (PAPER_FORM) when the bench measured it."""
    mine = [r for r in rows if r.get("family") == family and r.get("method") == method]
    measured = [r for r in mine if r.get("eval_seconds") is not None or r.get("peak_memory_mb") is not None]
    measured = [r for r in measured if row_form(r) == PAPER_FORM] or measured
    at_rank = [r for r in measured if not _adapts(method) or r.get("rank") == rank] or measured
    params = [r for r in mine if not _adapts(method) or r.get("rank") == rank]
    if not at_rank and not params:
        return None
    best = at_rank[0] if at_rank else {}
    return {"peak_memory_mb": best.get("peak_memory_mb"), "eval_seconds": best.get("eval_seconds"),
            "memory_kind": best.get("memory_kind"), "measured_rank": best.get("rank"),
            "trainable_params": params[0].get("trainable_params") if params else None}


def _ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def _same_kind(figures: dict, method: str, base: str) -> bool:
    """Whether `method`'s and `base`'s memory figures are of one kind (and so comparable)."""
    return figures[method]["memory_kind"] is not None and \
        figures[method]["memory_kind"] == figures[base]["memory_kind"]


def family_tradeoffs(aggregates: list[Aggregate], bench_rows: list[dict], rank: int | None = None) -> list[dict]:
    """One entry per family and distilling method that has quality (all three methods: FFT, the adapter on the
    teacher, on the student with KD) or bench rows; see the module docstring. Quality and train-run costs are the
    selected figures of every rank (`train_ranks` says which); `rank` is the LoRA rank of the bench rows (default:
    the smallest rank those figures come from, else the bench's smallest)."""
    rank = rank if rank is not None else table_rank(aggregates) or _bench_rank(bench_rows)
    families = list(dict.fromkeys([a.family for a in aggregates] + [r["family"] for r in bench_rows]))
    found = []
    for family in families:
        for on_teacher, distiller, _ in comparisons():
            entry = _entry(aggregates, bench_rows, family, rank, (baseline().name, on_teacher.name, distiller.name))
            if entry is not None:
                found.append(entry)
    return found


def _entry(aggregates, bench_rows, family, rank, methods) -> dict | None:
    """The trade-off of `methods` = (FFT, the adapter on the teacher, the distilling method) in one family."""
    picked = {m: _pick(aggregates, family, m) for m in methods}
    tasks = sorted(set.intersection(*({a.task for a in picked[m]} for m in methods)))
    entry = {"family": family, "name": column_name(family, methods[0])[:-4], "rank": rank, "tasks": tasks,
             "score": None, "train": None, "bench": None, "methods": methods}
    if tasks:
        chosen = {m: [a for a in picked[m] if a.task in tasks] for m in methods}
        entry["train_ranks"] = sorted({r for m in methods for a in chosen[m] for r in a.ranks})
        entry["score"] = {m: _mean(a.median for a in chosen[m]) for m in methods}
        entry["train"] = {m: {"trainable_params": _mean(a.trainable_params for a in chosen[m]),
                              "peak_memory_mb": _mean(a.peak_memory_mb for a in chosen[m]),
                              "train_seconds": _mean(a.train_seconds for a in chosen[m]),
                              "memory_kind": chosen[m][0].memory_kind} for m in methods}
    bench = {m: _bench_figures(bench_rows, family, m, rank) for m in methods}
    if all(bench.values()):
        entry["bench"] = bench
    if entry["score"] is None and entry["bench"] is None:
        return None
    entry["ratios"] = _ratios(entry)
    entry["sentence"] = sentence(entry)
    return entry


def _bench_rank(rows: list[dict]) -> int | None:
    ranks = [r["rank"] for r in rows if _adapts(r.get("method")) and r.get("rank") is not None]
    return min(ranks) if ranks else None


def _ratios(entry: dict) -> dict:
    """The distilling method against its adapter on the teacher and FFT: score kept, memory share, speed multiple,
    parameter share (keys `score_vs_lora`, `score_vs_fft`, ...)."""
    ratios = {}
    kd = entry["methods"][2]
    for base in entry["methods"][1::-1]:  # the adapter on the teacher, then FFT
        if entry["score"]:
            train = entry["train"]
            ratios[f"score_vs_{base}"] = _ratio(entry["score"][kd], entry["score"][base])
            ratios[f"train_memory_vs_{base}"] = _ratio(train[kd]["peak_memory_mb"],
                                                       train[base]["peak_memory_mb"]) if _same_kind(train, kd, base) \
                else None
            ratios[f"train_speed_vs_{base}"] = _ratio(train[base]["train_seconds"], train[kd]["train_seconds"])
            ratios[f"params_vs_{base}"] = _ratio(train[kd]["trainable_params"], train[base]["trainable_params"])
        if entry["bench"]:
            bench = entry["bench"]
            ratios[f"bench_memory_vs_{base}"] = _ratio(bench[kd]["peak_memory_mb"],
                                                       bench[base]["peak_memory_mb"]) if _same_kind(bench, kd, base) \
                else None
            ratios[f"inference_speed_vs_{base}"] = _ratio(bench[base]["eval_seconds"], bench[kd]["eval_seconds"])
    return ratios


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _times(value) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _kind(figures: dict | None) -> str:
    """`, memory: cpu-peak-rss-delta` when every method's memory is of that one kind; else says they differ."""
    kinds = {f["memory_kind"] for f in (figures or {}).values()}
    if kinds == {None}:
        return ""
    return f", memory: {kinds.pop()}" if len(kinds) == 1 else ", memory kinds differ, not compared"


def sentence(entry: dict) -> str:
    """The trade-off in one sentence, every figure computed and its source named."""
    r = entry["ratios"]
    name = entry["name"]
    fft, lora, kd = entry["methods"]
    label = labels()
    F, L, K = label[fft], label[lora], label[kd]
    rank = f"rank {entry['rank']}" if entry["rank"] else L
    trained = entry.get("train_ranks") or []
    if entry["score"] and trained and trained != [entry["rank"]]:
        rank = f"ranks {', '.join(map(str, trained))}" + (f", bench at rank {entry['rank']}" if entry["bench"] else "")
    if entry["score"]:
        text = (f"{name} ({', '.join(entry['tasks'])}; {rank}): {K} keeps {_pct(r[f'score_vs_{lora}'])} of {L}'s "
                f"score and {_pct(r[f'score_vs_{fft}'])} of {F}'s at {_pct(r[f'train_memory_vs_{lora}'])} of {L}'s "
                f"peak training memory ({_pct(r[f'train_memory_vs_{fft}'])} of {F}'s) and "
                f"{_times(r[f'train_speed_vs_{lora}'])} {L}'s training speed ({_times(r[f'train_speed_vs_{fft}'])} "
                f"{F}'s), with {_pct(r[f'params_vs_{lora}'])} of {L}'s trainable parameters "
                f"[train runs{_kind(entry['train'])}]")
    else:
        text = f"{name} (bench only, no train runs; {rank})"
    if entry["bench"]:
        text += (f"; benched: {_pct(r[f'bench_memory_vs_{lora}'])} of {L}'s peak training memory "
                 f"({_pct(r[f'bench_memory_vs_{fft}'])} of {F}'s) and {_times(r[f'inference_speed_vs_{lora}'])} "
                 f"{L}'s inference speed ({_times(r[f'inference_speed_vs_{fft}'])} {F}'s), adapters merged "
                 f"[bench{_kind(entry['bench'])}]")
    return text + "."


# -- Pareto plots: score against a cost, one point per (family, method, rank) --

PARETO_AXES = {
    "memory": ("peak training memory (MB)", "pareto_memory.png"),
    "inference": ("inference time on the bench eval set (s)", "pareto_inference.png"),
    "params": ("trainable parameters", "pareto_params.png"),
}


def pareto_points(aggregates: list[Aggregate], bench_rows: list[dict], axis: str) -> list[dict]:
    """Points (label, method, cost, score) for one axis; inference time only where the family was benched."""
    points = []
    by_cell: dict[tuple, list[Aggregate]] = {}
    for agg in aggregates:
        if agg.n:
            by_cell.setdefault((agg.family, agg.method, agg.rank), []).append(agg)
    for (family, method, rank), aggs in by_cell.items():
        if axis == "memory":
            cost = _mean(a.peak_memory_mb for a in aggs)
        elif axis == "params":
            cost = _mean(a.trainable_params for a in aggs)
        else:
            bench = _bench_figures(bench_rows, family, method, rank)
            cost = bench["eval_seconds"] if bench else None
        if cost is None:
            continue
        label = column_name(family, method) + (f" r{rank}" if rank else "")
        points.append({"label": label, "method": method, "cost": cost,
                       "score": _mean(a.median for a in aggs)})
    return points


def pareto_front(points: list[dict], higher_is_better: bool = False) -> list[dict]:
    """The points no other point beats on both axes (lower cost, or higher when `higher_is_better` as for a
    speedup, and higher score), best cost first."""
    front, best = [], float("-inf")
    for point in sorted(points, key=lambda p: (-p["cost"] if higher_is_better else p["cost"], -p["score"])):
        if point["score"] > best:
            front.append(point)
            best = point["score"]
    return front


def pareto_plot(points: list[dict], axis: str, path: str | Path, xlabel: str | None = None,
                higher_is_better: bool = False) -> Path:
    """Scatter of score against cost, the Pareto front joined by a line; `xlabel` for an axis not in
    PARETO_AXES."""
    figure = new_figure(7, 4.5)
    ax = figure.add_subplot()
    for method, label in labels().items():
        mine = [p for p in points if p["method"] == method]
        if mine:
            ax.scatter([p["cost"] for p in mine], [100 * p["score"] for p in mine], label=label,
                       color=colour_of(label), s=40, zorder=3)
    for p in points:
        ax.annotate(p["label"], (p["cost"], 100 * p["score"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    front = pareto_front(points, higher_is_better)
    ax.plot([p["cost"] for p in front], [100 * p["score"] for p in front], color="grey", linestyle="--",
            zorder=2, label="Pareto front")
    xlabel = xlabel or PARETO_AXES[axis][0]
    if axis == "params":
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (median over seeds, %)")
    ax.set_title(f"Score vs {xlabel.split(' (')[0]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(figure, path)
