"""Paired tests between two runs' dev predictions: McNemar's textbook values, the bootstrap's degenerate cases and
seed contract, and the vectorised metrics against the scores runs record (`kdlora.metrics.compute_metrics`)."""

import math

import numpy as np
import pytest

from kdlora.analysis.paired import mcnemar, paired_bootstrap, task_metric
from kdlora.data.tasks import TASKS
from kdlora.metrics import compute_metrics


def _runs(only_a: int, only_b: int, both: int = 5, neither: int = 3):
    """Predictions of runs A and B over binary gold labels (all 1): `only_a` examples only A gets right, `only_b`
    only B, `both` both, `neither` neither."""
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    return a, b, [1] * len(a)


def test_mcnemar_is_the_exact_binomial_for_few_discordant_pairs():
    result = mcnemar(*_runs(10, 2))
    # 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12
    assert result.exact and (result.only_a, result.only_b) == (10, 2) and result.statistic is None
    assert result.p == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)  # 0.03857...
    assert mcnemar(*_runs(2, 10)).p == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)  # symmetric
    # 24 discordant pairs: still exact; 2 * P(X <= 4), X ~ Binomial(24, 1/2)
    at_24 = mcnemar(*_runs(20, 4))
    assert at_24.exact and at_24.p == pytest.approx(2 * (1 + 24 + 276 + 2024 + 10626) / 2 ** 24, rel=1e-12)


def test_mcnemar_is_chi_square_with_continuity_from_25_discordant_pairs():
    at_25 = mcnemar(*_runs(21, 4))
    assert not at_25.exact and at_25.statistic == pytest.approx((21 - 4 - 1) ** 2 / 25)  # 10.24
    # the chi-square(1) survival function: P(Z^2 > x) = erfc(sqrt(x / 2))
    assert at_25.p == pytest.approx(math.erfc(math.sqrt(10.24 / 2)), rel=1e-12)
    result = mcnemar(*_runs(30, 10))
    assert result.statistic == pytest.approx((30 - 10 - 1) ** 2 / 40)  # 9.025
    assert result.p == pytest.approx(math.erfc(math.sqrt(9.025 / 2)), rel=1e-12)


def test_mcnemar_without_discordant_pairs_is_p_1():
    result = mcnemar(*_runs(0, 0))
    assert (result.only_a, result.only_b, result.p) == (0, 0, 1.0)


def test_bootstrap_of_identical_runs_is_gain_0_interval_0_0_and_p_1():
    a, _, gold = _runs(10, 2)
    result = paired_bootstrap(a, a, gold, task_metric("accuracy"), n_resamples=200)
    assert (result.gain, result.low, result.high, result.p) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_of_a_run_right_everywhere_against_one_wrong_everywhere_is_gain_1_and_p_0():
    gold = [0, 1, 1, 0, 1]
    wrong = [1 - g for g in gold]
    result = paired_bootstrap(gold, wrong, gold, task_metric("accuracy"), n_resamples=200)
    assert (result.gain, result.low, result.high, result.p) == (1.0, 1.0, 1.0, 0.0)
    backwards = paired_bootstrap(wrong, gold, gold, task_metric("accuracy"), n_resamples=200)
    assert (backwards.gain, backwards.low, backwards.high, backwards.p) == (-1.0, -1.0, -1.0, 0.0)


def test_bootstrap_p_is_twice_the_share_of_resamples_without_a_gain_from_the_fixed_seed():
    # two examples: both runs right on the first, only A on the second; a resample's accuracy gain is 0 when it
    # draws the first example twice, else positive. The documented draw: numpy's default_rng(seed).integers, one
    # block of resamples x examples.
    result = paired_bootstrap([1, 1], [1, 0], [1, 1], task_metric("accuracy"), n_resamples=1000, seed=7)
    draws = np.random.default_rng(7).integers(0, 2, size=(1000, 2))
    assert result.gain == 0.5 and result.n_resamples == 1000
    assert result.p == 2 * np.mean((draws == 0).all(axis=1))  # about 2 * 1/4
    assert (result.low, result.high) == (0.0, 1.0)
    again = paired_bootstrap([1, 1], [1, 0], [1, 1], task_metric("accuracy"), n_resamples=1000, seed=7)
    assert again == result


def test_bootstrap_over_seeds_is_the_median_of_the_seeds_gains_on_the_same_examples():
    gold = [0, 1, 1, 0, 1, 0]
    wrong = [1 - g for g in gold]
    # seed gains on every resample: 1, 0, 0 -> median 0; 1, 1, 0 -> median 1
    one_of_three = paired_bootstrap([gold, gold, gold], [wrong, gold, gold], gold, task_metric("accuracy"), 100)
    assert (one_of_three.gain, one_of_three.low, one_of_three.high, one_of_three.p) == (0.0, 0.0, 0.0, 1.0)
    two_of_three = paired_bootstrap([gold, gold, gold], [wrong, wrong, gold], gold, task_metric("accuracy"), 100)
    assert (two_of_three.gain, two_of_three.low, two_of_three.high, two_of_three.p) == (1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        paired_bootstrap([gold, gold], [gold], gold, task_metric("accuracy"))


def test_vectorised_metrics_by_hand():
    # binary: predictions 1 1 0 1 0 against gold 1 0 0 1 1: tp 2, fp 1, fn 1, tn 1
    predictions, gold = np.array([[1, 1, 0, 1, 0]]), np.array([[1, 0, 0, 1, 1]])
    assert task_metric("accuracy")(predictions, gold)[0] == pytest.approx(3 / 5)
    assert task_metric("f1")(predictions, gold)[0] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert task_metric("accuracy_f1")(predictions, gold)[0] == pytest.approx((3 / 5 + 4 / 6) / 2)
    # (tp tn - fp fn) / sqrt((tp + fp)(tp + fn)(tn + fp)(tn + fn))
    assert task_metric("mcc")(predictions, gold)[0] == pytest.approx((2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2))
    assert task_metric("f1", positive_class=0)(predictions, gold)[0] == pytest.approx(2 * 1 / (2 + 2))
    # three classes, one row each: class F1s 2*1/(1+2), 2*1/(2+1), 0 (class 2 neither predicted nor gold)
    assert task_metric("macro_f1", classes=3)(np.array([[0, 1, 1]]), np.array([[0, 0, 1]]))[0] == \
        pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # x = 1 2 3, y = 1 3 2: deviations -1 0 1 and -1 1 0 -> 1 / sqrt(2 * 2)
    assert task_metric("pearson")(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 3.0, 2.0]]))[0] == pytest.approx(0.5)
    # ties take average ranks: x = 1 1 2 -> 1.5 1.5 3, y = 1 2 3: deviations -0.5 -0.5 1 and -1 0 1
    # -> 1.5 / sqrt(1.5 * 2)
    assert task_metric("spearman")(np.array([[1.0, 1.0, 2.0]]), np.array([[1.0, 2.0, 3.0]]))[0] == \
        pytest.approx(1.5 / math.sqrt(1.5 * 2))
    # a constant prediction scores 0, as compute_metrics scores it; every row on its own
    rows = task_metric("pearson_spearman")(np.array([[0.1, 0.1, 0.1], [1.0, 2.0, 3.0]]),
                                           np.array([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]]))
    assert rows.tolist() == pytest.approx([0.0, 0.5])


@pytest.mark.parametrize("task", ["cola", "sst2", "mrpc", "mnli", "stsb"])
def test_vectorised_metrics_agree_with_the_scores_runs_record(task):
    spec = TASKS[task]
    rng = np.random.default_rng(3)
    if spec.regression:
        predictions, gold = rng.normal(2.5, 1, size=50), rng.uniform(0, 5, size=50).round(1)
    else:
        predictions, gold = rng.integers(0, spec.num_labels, size=50), rng.integers(0, spec.num_labels, size=50)
    expected = compute_metrics(spec, predictions, gold)[spec.metric]
    assert task_metric(spec.metric, spec.num_labels)(predictions[None], gold[None])[0] == pytest.approx(expected)


def test_unknown_metric_and_unequal_lengths_are_errors():
    with pytest.raises(ValueError, match="no vectorised form"):
        task_metric("bleu")
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar([0, 1], [0, 1, 1], [0, 1])
