import math

import pytest

from kdlora.metrics import compute_metrics, glue_score, task_score


def test_cola_is_matthews_correlation():
    # tp=2 tn=1 fp=1 fn=0: (2*1 - 1*0) / sqrt(3*2*2*1)
    out = compute_metrics("cola", [1, 1, 0, 1], [1, 1, 0, 0])
    assert out["mcc"] == pytest.approx(2 / math.sqrt(12))
    assert out["accuracy"] == 0.75
    assert task_score("cola", out) == out["mcc"]


def test_mrpc_reports_accuracy_f1_and_their_mean():
    out = compute_metrics("mrpc", [1, 1, 0, 0], [1, 0, 0, 1])
    assert out["accuracy"] == 0.5 and out["f1"] == 0.5 and out["accuracy_f1"] == 0.5
    out = compute_metrics("qqp", [1, 1, 1, 0], [1, 1, 0, 0])
    assert out["f1"] == pytest.approx(0.8) and out["accuracy_f1"] == pytest.approx((0.75 + 0.8) / 2)


def test_stsb_pearson_spearman_and_mean():
    out = compute_metrics("stsb", [1.0, 2.0, 3.0, 10.0], [1.0, 2.0, 3.0, 4.0])
    assert out["spearman"] == pytest.approx(1.0)
    # deviations x: -3 -2 -1 6, y: -1.5 -.5 .5 1.5 -> 14 / sqrt(50 * 5)
    assert out["pearson"] == pytest.approx(14 / math.sqrt(250))
    assert out["pearson_spearman"] == pytest.approx((out["pearson"] + 1.0) / 2)


def test_constant_regression_predictions_score_zero_not_nan():
    assert compute_metrics("stsb", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["pearson_spearman"] == 0.0


def test_mnli_score_averages_matched_and_mismatched():
    assert task_score("mnli", {"matched_accuracy": 0.8, "mismatched_accuracy": 0.7, "accuracy": 0.8}) == 0.75


def test_glue_score_is_the_mean_of_the_papers_rows_mnli_m_and_mm_apart():
    """Finding: glue_score averaged MNLI's pair first (nine values), the paper averages its ten rows."""
    per_task = {"cola": 0.5, "sst2": 0.9, "mrpc": {"accuracy": 0.8, "f1": 0.9, "accuracy_f1": 0.85},
                "mnli": {"matched_accuracy": 0.8, "mismatched_accuracy": 0.6}}
    # rows: CoLA 0.5, SST-2 0.9, MRPC 0.85, MNLI-m 0.8, MNLI-mm 0.6
    assert glue_score(per_task) == pytest.approx((0.5 + 0.9 + 0.85 + 0.8 + 0.6) / 5)
    with pytest.raises(ValueError):
        glue_score({})
