"""Which figure a (task, family, method) cell of Table I shows when it holds several configurations (a grid).

A cell is a task, a family and a method; the LoRA rank is one of a configuration's settings like its alpha, so a
LoRA cell of the paper's grid ranks all its 24 configurations (3 ranks x 8), as FFT's ranks its 25.
`median` (default): every configuration is aggregated on its own (median over its seeds, all of them listed in
the report); the cell shows the configuration with the best median, and says of how many.
`top-k-median`: the paper's protocol: rank the cell's configurations by their median dev score and report the
median of the best k (all of them when the cell has fewer). The selected figure keeps the ranks it came from
(`Aggregate.ranks`; `rank` is set only when that is one rank).
Neither reads training code; both take `kdlora.analysis.quality.Aggregate`s, one per configuration.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass

from kdlora.analysis.quality import EPOCHS, Aggregate
from kdlora.errors import UserError

SELECTIONS = ("median", "top-k-median")
DEFAULT_K = 6
"""The paper reports the median of the top-6 configurations."""


@dataclass(frozen=True)
class Selection:
    """How `kdlora report` turns runs into figures. Each field's docstring is its CLI help."""

    select: str = "median"
    """median: each configuration's median over seeds, every configuration listed, Table I showing the best one;
    top-k-median: per cell the median of the k configurations with the best dev scores (the paper's protocol)."""
    k: int = DEFAULT_K
    """How many configurations top-k-median keeps (the paper: 6)."""
    select_epoch: str = "best"
    """Which epoch's dev score a run contributes: best (the saved model's) or last (what the official code
    reports)."""
    exclude_flagged: bool = False
    """Leave runs whose dev predictions are one constant class or value out of every figure (counted and said)."""

    def __post_init__(self):
        """Validated once, when made."""
        if self.select not in SELECTIONS:
            raise UserError(f"--select: unknown selection {self.select!r} (known: {', '.join(SELECTIONS)})")
        if self.select_epoch not in EPOCHS:
            raise UserError(f"--select-epoch: {self.select_epoch!r} is not one of {', '.join(EPOCHS)}")
        if self.k <= 0:
            raise UserError(f"--k: {self.k} is not a positive integer")

    def describe(self) -> str:
        """One sentence for the report."""
        how = ("the median over seeds of each configuration; where a cell holds several configurations Table I "
               "shows the one with the best median (all are listed below)") if self.select == "median" else (
            f"the median of the top {self.k} configurations by dev score (each configuration's score the median "
            "over its seeds), as the paper selects")
        epoch = "the best epoch's" if self.select_epoch == "best" else "the last epoch's"
        flagged = (" Runs flagged for constant dev predictions are left out (--exclude-flagged)."
                   if self.exclude_flagged else "")
        return f"Figures are {epoch} dev scores, {how}.{flagged}"


def select(aggregates: list[Aggregate], how: str = "median", k: int = DEFAULT_K) -> list[Aggregate]:
    """One aggregate per cell, in the cells' order: see the module docstring."""
    if how not in SELECTIONS:
        raise ValueError(f"unknown selection {how!r}")
    cells: dict[tuple, list[Aggregate]] = {}
    for agg in aggregates:
        cells.setdefault((agg.task, agg.family, agg.method), []).append(agg)
    chosen = []
    for members in cells.values():
        scored = sorted((a for a in members if a.n), key=lambda a: a.median, reverse=True)
        if not scored:
            chosen.append(dataclasses.replace(members[0], configurations=len(members), selected=0))
        elif how == "median":
            chosen.append(dataclasses.replace(scored[0], configurations=len(members), selected=1))
        else:
            chosen.append(_median_of(scored[:k], members))
    return chosen


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _median_of(top: list[Aggregate], members: list[Aggregate]) -> Aggregate:
    """The cell's figure from its best configurations: medians of their medians (scores, metrics and costs)."""
    first = top[0]
    scores = [a.median for a in top]
    names = sorted({name for a in top for name in a.metrics})
    ranks = sorted({r for a in top for r in a.ranks})
    return Aggregate(
        first.task, first.family, first.method, ranks[0] if len(ranks) == 1 else None, ranks=ranks,
        seeds=sorted({s for a in top for s in a.seeds}), scores=scores,
        collapsed=sum(a.collapsed for a in members), failed=sum(a.failed for a in members),
        configuration=f"top-{len(top)}", params={}, runs=sum(a.runs for a in top),
        constant=sum(a.constant for a in top), majority=sum(a.majority for a in top),
        left_out=sum(a.left_out for a in top), partial_costs=sum(a.partial_costs for a in top),
        configurations=len(members), selected=len(top), median=statistics.median(scores),
        mean=statistics.fmean(scores), std=statistics.stdev(scores) if len(scores) > 1 else 0.0,
        metrics={name: _median(a.metrics.get(name) for a in top) for name in names},
        trainable_params=_median(a.trainable_params for a in top),
        peak_memory_mb=_median(a.peak_memory_mb for a in top), memory_kind=first.memory_kind,
        train_seconds=_median(a.train_seconds for a in top))
