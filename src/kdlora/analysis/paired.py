"""Paired tests between two runs scored on the same dev examples: is one run's gain over the other more than the
noise of a finite dev set?

- `mcnemar(a, b, gold)`, for classification: with b the examples only run A gets right and c those only run B gets
  right, the exact two-sided binomial p, min(1, 2 * P(X <= min(b, c))) for X ~ Binomial(b + c, 1/2), when
  b + c < `EXACT_BELOW` (25: the chi-square approximation is poor for few discordant pairs); else the chi-square
  statistic with continuity correction, (|b - c| - 1)^2 / (b + c), and its p from the chi-square distribution
  with one degree of freedom. No discordant pair: p = 1.
- `paired_bootstrap(a, b, gold, metric)`, for any metric (regression, and a second view of classification): dev
  examples resampled with replacement `n_resamples` times from a fixed seed, both runs scored on each resample;
  the gain is A's metric less B's. p = twice the share of resamples whose gain lies on the far side of zero from
  the observed gain (`<= 0` for a positive gain, `>= 0` for a negative one), at most 1; the 95 % interval is the
  2.5th and 97.5th percentiles of the resampled gains. Given several seeds' runs (rows of `a` and `b`), each
  resample takes the same examples for every seed and the gain is the median over seeds of the seeds' gains.

Metrics are vectorised over resamples (`task_metric`: the task metrics `kdlora.metrics.compute_metrics` reports,
computed from confusion counts or row-wise correlations), so a thousand resamples of a few thousand examples take
milliseconds. Never imports training code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest, chi2, rankdata

EXACT_BELOW = 25
"""McNemar's test is exact (binomial) when fewer discordant pairs than this, else chi-square with continuity."""

N_RESAMPLES = 1000
BOOTSTRAP_SEED = 0

_BLOCK = 1 << 22
"""Resampled examples drawn at once (resamples x examples): bounds the bootstrap's memory on a large dev set."""


@dataclass(frozen=True)
class McNemar:
    only_a: int
    """b: examples run A gets right and run B wrong."""
    only_b: int
    """c: examples run B gets right and run A wrong."""
    statistic: float | None
    """The chi-square statistic with continuity correction; None when the exact test was used."""
    p: float
    exact: bool

    def to_dict(self) -> dict:
        return {"test": "mcnemar", **asdict(self)}


@dataclass(frozen=True)
class Bootstrap:
    gain: float
    """The observed gain: A's metric less B's on every dev example (the median over seeds, given several)."""
    low: float
    high: float
    """The 95 % percentile interval of the resampled gains."""
    p: float
    n_resamples: int

    def to_dict(self) -> dict:
        return {"test": "bootstrap", **asdict(self)}


def mcnemar(a, b, gold) -> McNemar:
    """McNemar's test of two runs' class predictions `a` and `b` against the same `gold` labels (rule above)."""
    a, b, gold = np.asarray(a), np.asarray(b), np.asarray(gold)
    _check_same_length(a, b, gold)
    right_a, right_b = a == gold, b == gold
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(0, 0, None, 1.0, exact=True)
    if discordant < EXACT_BELOW:
        return McNemar(only_a, only_b, None, float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue), True)
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return McNemar(only_a, only_b, statistic, float(chi2.sf(statistic, df=1)), exact=False)


def paired_bootstrap(a, b, gold, metric: Callable, n_resamples: int = N_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> Bootstrap:
    """The paired bootstrap of `metric` between runs `a` and `b` (rule above). `a` and `b`: one run's predictions
    each, or one row per seed (row i of `a` paired with row i of `b`). `metric(predictions, gold)` takes 2-D arrays
    (resamples x examples) and returns one value per row (`task_metric` makes one)."""
    a, b, gold = np.atleast_2d(a), np.atleast_2d(b), np.asarray(gold)
    if a.shape != b.shape:
        raise ValueError(f"the runs to pair differ in shape: {a.shape} and {b.shape}")
    _check_same_length(a[0], gold)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, not {n_resamples}")

    def gains(rows) -> np.ndarray:  # one gain per row of example indices: median over seeds of A's less B's
        truth = gold[rows]
        return np.median([metric(a_s[rows], truth) - metric(b_s[rows], truth) for a_s, b_s in zip(a, b, strict=True)],
                         axis=0)

    observed = float(gains(np.arange(len(gold))[None, :])[0])
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK // len(gold))
    resampled = np.concatenate([gains(rng.integers(0, len(gold), size=(min(block, n_resamples - start), len(gold))))
                                for start in range(0, n_resamples, block)])
    beyond = np.mean(resampled <= 0) if observed > 0 else np.mean(resampled >= 0) if observed < 0 else 1.0
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Bootstrap(observed, float(low), float(high), float(min(1.0, 2 * beyond)), n_resamples)


def _check_same_length(*arrays) -> None:
    if len({len(x) for x in arrays}) > 1:
        raise ValueError(f"predictions and gold labels differ in length: {[len(x) for x in arrays]}")


def task_metric(metric: str, classes: int = 2, positive_class: int = 1) -> Callable:
    """The vectorised form of a task metric as `kdlora.metrics.compute_metrics` scores it (`accuracy`, `mcc`, `f1`
    of `positive_class`, `accuracy_f1`, `macro_f1` over `classes`; `pearson`, `spearman`, `pearson_spearman`):
    `f(predictions, gold)` on 2-D arrays, one value per row."""
    by_confusion = {
        "accuracy": _accuracy, "mcc": _mcc, "macro_f1": _macro_f1,
        "f1": lambda c: _f1(c)[:, positive_class],
        "accuracy_f1": lambda c: (_accuracy(c) + _f1(c)[:, positive_class]) / 2,
    }
    by_values = {"pearson": _pearson, "spearman": _spearman,
                 "pearson_spearman": lambda p, g: (_pearson(p, g) + _spearman(p, g)) / 2}
    if metric in by_values:
        return by_values[metric]
    if metric not in by_confusion:
        raise ValueError(f"no vectorised form of the metric {metric!r}")
    return lambda predictions, gold: by_confusion[metric](_confusion(predictions, gold, classes))


def _confusion(predictions, gold, classes: int) -> np.ndarray:
    """Confusion counts per row, (rows, gold class, predicted class), by one bincount over every row."""
    predictions, gold = np.atleast_2d(predictions).astype(int), np.atleast_2d(gold).astype(int)
    rows = predictions.shape[0]
    codes = (np.arange(rows)[:, None] * classes + gold) * classes + predictions
    return np.bincount(codes.ravel(), minlength=rows * classes * classes).reshape(rows, classes, classes)


def _accuracy(confusion) -> np.ndarray:
    return np.trace(confusion, axis1=1, axis2=2) / confusion.sum(axis=(1, 2))


def _f1(confusion) -> np.ndarray:
    """Each class's F1 per row, 2 tp / (true + predicted); 0 where a class is neither (scikit-learn's
    zero_division=0)."""
    true, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    return np.divide(2 * hits, true + predicted, out=np.zeros(hits.shape), where=(true + predicted) > 0)


def _macro_f1(confusion) -> np.ndarray:
    return _f1(confusion).mean(axis=1)


def _mcc(confusion) -> np.ndarray:
    """Matthews correlation from the confusion counts, in scikit-learn's multiclass form; 0 when undefined."""
    true, predicted = confusion.sum(axis=2).astype(float), confusion.sum(axis=1).astype(float)
    right, total = np.trace(confusion, axis1=1, axis2=2).astype(float), confusion.sum(axis=(1, 2)).astype(float)
    covariance = right * total - np.sum(true * predicted, axis=1)
    spread = (total ** 2 - np.sum(predicted ** 2, axis=1)) * (total ** 2 - np.sum(true ** 2, axis=1))
    return np.divide(covariance, np.sqrt(spread), out=np.zeros(covariance.shape), where=spread > 0)


def _pearson(predictions, gold) -> np.ndarray:
    """Row-wise Pearson correlation; 0 for a constant row (as `compute_metrics` scores constant predictions)."""
    x, y = np.atleast_2d(predictions).astype(float), np.atleast_2d(gold).astype(float)
    varies = (np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0)  # a constant row's mean need not be exact
    x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    spread = np.sqrt(np.sum(x * x, axis=1) * np.sum(y * y, axis=1))
    return np.divide(np.sum(x * y, axis=1), spread, out=np.zeros(len(x)), where=varies & (spread > 0))


def _spearman(predictions, gold) -> np.ndarray:
    """Row-wise Spearman correlation: Pearson's of the ranks (ties averaged)."""
    return _pearson(rankdata(np.atleast_2d(predictions), axis=1), rankdata(np.atleast_2d(gold), axis=1))
