"""Quality across seeds: per (task, family, method, rank) the median and mean ± std of the score, and Table I.

Reads run records (plain dicts, as `records_from_runs` makes them from the store); never imports training code.
Collapsed and failed runs are excluded from every figure and counted beside it.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from kdlora.families import FAMILIES
from kdlora.methods import METHODS

METHOD_LABELS = {m.name: m.label for m in METHODS.values()}
LORA_METHODS = tuple(m.name for m in METHODS.values() if m.uses_lora)

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


def records_from_runs(runs) -> list[dict]:
    """Flat records of the store's train runs (`kdlora.store.Run`), one per run."""
    records = []
    for run in runs:
        if run.kind != "train":
            continue
        metrics = dict(run.metrics or {})
        records.append({
            "key": run.key, "task": run.task, "family": run.family, "method": run.method,
            "rank": run.rank if run.method in LORA_METHODS else None, "seed": run.seed, "status": run.status,
            "reason": run.reason, "score": metrics.pop("score", None), "metrics": metrics,
            "trainable_params": (run.params or {}).get("trainable_params"),
            "peak_memory_mb": (run.memory or {}).get("peak_memory_mb"),
            "memory_kind": (run.memory or {}).get("memory_kind"),
            "train_seconds": (run.timings or {}).get("train_seconds"),
            "energy_kwh": (run.timings or {}).get("energy_kwh"),
            "emissions_g_co2eq": (run.timings or {}).get("emissions_g_co2eq"),
            "energy_method": (run.timings or {}).get("energy_method"),
            "finished_at": run.finished_at or "",
        })
    return records


def latest_per_seed(records: list[dict]) -> tuple[list[dict], int]:
    """The most recently finished record per (task, family, method, rank, seed), and how many older ones it hid.

    A store may hold runs of the same cell under different hyper-parameters; only the latest of each counts.
    """
    latest = {}
    for record in sorted(records, key=lambda r: r["finished_at"]):
        if record["status"] == "running":
            continue
        latest[_cell(record) + (record["seed"],)] = record
    kept = list(latest.values())
    return kept, sum(r["status"] != "running" for r in records) - len(kept)


def _cell(record: dict) -> tuple:
    return record["task"], record["family"], record["method"], record["rank"]


@dataclass
class Aggregate:
    """One (task, family, method, rank) over its seeds: done runs only; collapsed and failed counted apart."""

    task: str
    family: str
    method: str
    rank: int | None
    seeds: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    collapsed: int = 0
    failed: int = 0
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

    @property
    def n(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict:
        return {**asdict(self), "n": self.n}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(records: list[dict]) -> list[Aggregate]:
    """Per (task, family, method, rank): median and mean ± std of the done runs' scores (and median costs)."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(_cell(record), []).append(record)
    found = []
    for cell, members in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        done = sorted((r for r in members if r["status"] == "done" and r["score"] is not None),
                      key=lambda r: r["seed"])
        agg = Aggregate(*cell, seeds=[r["seed"] for r in done], scores=[r["score"] for r in done],
                        collapsed=sum(r["status"] == "collapsed" for r in members),
                        failed=sum(r["status"] == "failed" for r in members))
        if done:
            agg.median = statistics.median(agg.scores)
            agg.mean = statistics.fmean(agg.scores)
            agg.std = statistics.stdev(agg.scores) if len(agg.scores) > 1 else 0.0
            names = sorted({k for r in done for k, v in r["metrics"].items() if isinstance(v, int | float)})
            agg.metrics = {k: _median(r["metrics"].get(k) for r in done) for k in names}
            for cost in ("trainable_params", "peak_memory_mb", "train_seconds", "energy_kwh", "emissions_g_co2eq"):
                setattr(agg, cost, _median(r.get(cost) for r in done))
            agg.memory_kind, agg.energy_method = done[0]["memory_kind"], done[0].get("energy_method")
        found.append(agg)
    return found


def _order(cell: tuple) -> tuple:
    """Sort key of a (task, family, method, rank) cell: methods in the paper's order FFT, LoRA, KD-LoRA."""
    task, family, method, rank = cell
    methods = list(METHOD_LABELS)
    return (task, family, methods.index(method) if method in methods else 9, method, rank or 0)


def column_name(family: str, method: str) -> str:
    """Table I's column for a family and method, as the paper names it (`BERT-base KD-LoRA`)."""
    known = FAMILIES.get(family)
    return f"{known.teacher.display_name if known else family} {METHOD_LABELS.get(method, method)}"


def table_rank(aggregates: list[Aggregate]) -> int | None:
    """The LoRA rank Table I shows: the smallest rank with a measured score."""
    ranks = [a.rank for a in aggregates if a.rank is not None and a.n]
    return min(ranks) if ranks else None


@dataclass
class TableI:
    """Table I in the paper's layout: rows of (row, metric label, {column: value in %}), then the Score row."""

    columns: list[str]
    rows: list[tuple[str, str, dict]]
    rank: int | None

    def score(self) -> dict:
        return next((cells for name, _, cells in self.rows if name == SCORE_ROW), {})

    def to_dict(self) -> dict:
        return {"columns": self.columns, "rank": self.rank,
                "rows": [{"Task": name, "Metric": label, **cells} for name, label, cells in self.rows]}


def table_i(aggregates: list[Aggregate], rank: int | None = None) -> TableI:
    """Medians over seeds in %, LoRA methods at `rank` (default: `table_rank`); Score = mean of each column's rows
    (the paper averages its ten rows, MNLI-m and MNLI-mm apart)."""
    rank = rank if rank is not None else table_rank(aggregates)
    shown = [a for a in aggregates if a.n and (a.rank is None or a.rank == rank)]
    families = sorted({a.family for a in shown}, key=lambda f: (list(FAMILIES).index(f) if f in FAMILIES else 99, f))
    columns = [column_name(f, m) for f in families for m in METHOD_LABELS if any(
        a.family == f and a.method == m for a in shown)]
    by_task: dict[str, list[Aggregate]] = {}
    for agg in shown:
        by_task.setdefault(agg.task, []).append(agg)
    rows = []
    for row, label, task, metric in GLUE_ROWS:
        if task in by_task:
            rows.append((row, label, {column_name(a.family, a.method): 100 * a.metrics.get(metric, a.median)
                                      for a in by_task[task]}))
    glue = {task for _, _, task, _ in GLUE_ROWS}
    for task in sorted(set(by_task) - glue):
        rows.append((task, "Score", {column_name(a.family, a.method): 100 * a.median for a in by_task[task]}))
    score = {}
    for column in columns:
        values = [cells[column] for _, _, cells in rows if column in cells]
        if len(values) == len(rows):  # a column missing a task has no comparable average
            score[column] = statistics.fmean(values)
    if rows:
        rows.append((SCORE_ROW, "Average", score))
    return TableI(columns, rows, rank)


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
