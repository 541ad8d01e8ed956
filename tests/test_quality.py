import pytest

from kdlora.analysis.quality import (
    GLUE_ROWS,
    aggregate,
    column_name,
    reported_vs_measured,
    table_i,
    table_rank,
)
from kdlora.analysis.select import select


def rec(task, family, method, rank, seed, score, status="done", metrics=None, when="2026-01-01", flags=(),
        configuration="", config=None, **costs):
    return {"key": f"{task}{family}{method}{rank}{seed}{when}", "task": task, "family": family, "method": method,
            "rank": rank, "seed": seed, "status": status, "reason": None, "score": score, "flags": list(flags),
            "configuration": configuration, "config": config or {},
            "metrics": metrics or {"accuracy": score}, "trainable_params": costs.get("params"),
            "peak_memory_mb": costs.get("memory"), "memory_kind": "rss", "train_seconds": costs.get("seconds"),
            "finished_at": when}


def test_median_mean_std_by_hand():
    records = [rec("sst2", "bert", "lora", 8, s, v, memory=m) for s, v, m in
               ((1, 0.90, 100), (2, 0.80, 300), (3, 0.86, 200), (4, 0.10, 900))]
    records[3]["status"] = "collapsed"
    records.append(rec("sst2", "bert", "lora", 8, 5, None, status="failed"))
    [agg] = aggregate(records)
    assert agg.seeds == [1, 2, 3] and agg.n == 3 and agg.collapsed == 1 and agg.failed == 1
    assert agg.median == 0.86
    assert agg.mean == pytest.approx((0.90 + 0.80 + 0.86) / 3)
    # sample std of 0.90, 0.80, 0.86: mean 0.85333, squares 0.0021778 + 0.0028444 + 0.0000444 = 0.0050667 / 2
    assert agg.std == pytest.approx((0.0050667 / 2) ** 0.5, rel=1e-4)
    assert agg.peak_memory_mb == 200 and agg.metrics == {"accuracy": 0.86}


def test_even_number_of_seeds_and_single_seed():
    aggs = aggregate([rec("rte", "bert", "fft", None, 1, 0.6), rec("rte", "bert", "fft", None, 2, 0.7),
                      rec("rte", "bert", "kd-lora", 16, 1, 0.5)])
    assert [a.method for a in aggs] == ["fft", "kd-lora"]
    assert aggs[0].median == pytest.approx(0.65) and aggs[1].std == 0.0 and aggs[1].median == 0.5


def test_every_configuration_is_its_own_aggregate_none_superseded():
    """Finding: a second learning rate silently "superseded" the first."""
    first = rec("rte", "bert", "fft", None, 1, 0.6, configuration="a", config={"learning_rate": 2e-5, "epochs": 3})
    second = rec("rte", "bert", "fft", None, 1, 0.7, configuration="b", config={"learning_rate": 5e-5, "epochs": 3},
                 when="2026-02-01")
    aggs = aggregate([second, first])
    assert [(a.configuration, a.median, a.params, a.configurations) for a in aggs] == [
        ("a", 0.6, {"learning_rate": 2e-5}, 2), ("b", 0.7, {"learning_rate": 5e-5}, 2)]


def test_constant_predictions_count_and_are_noted_or_left_out():
    """Finding: a WNLI run predicting the majority class was `collapsed` and dropped from every aggregate."""
    records = [rec("wnli", "bert", "fft", None, s, v, flags=f) for s, v, f in
               ((1, 0.563, ("constant_predictions", "majority_class")), (2, 0.563, ("constant_predictions",
                                                                                    "majority_class")), (3, 0.50, ()))]
    [agg] = aggregate(records)
    assert (agg.n, agg.median, agg.constant, agg.majority, agg.flag_note()) == (3, 0.563, 2, 2, "2/3 constant")
    table = table_i([agg])
    assert table.rows[0][:2] == ("WNLI", "Accuracy") and table.rows[0][2]["BERT-base FFT"] == pytest.approx(56.3)
    assert table.notes == {("WNLI", "BERT-base FFT"): "2/3 constant"}
    [kept] = aggregate(records, exclude_flagged=True)
    assert (kept.n, kept.median, kept.left_out, kept.flag_note()) == (1, 0.50, 2, "2 flagged left out")


def test_table_i_paper_layout_and_score():
    records = []
    for family in ("bert", "roberta"):
        for method, rank in (("fft", None), ("lora", 8), ("lora", 16), ("kd-lora", 8)):
            bump = {"fft": 0.02, "lora": 0.01, "kd-lora": 0.0}[method] - (0.05 if rank == 16 else 0)
            for seed in (1, 2, 3):
                records.append(rec("cola", family, method, rank, seed, 0.5 + bump + seed / 100,
                                   metrics={"mcc": 0.5 + bump + seed / 100, "accuracy": 0.8}))
                mnli = {"matched_accuracy": 0.80 + bump, "mismatched_accuracy": 0.82 + bump}
                records.append(rec("mnli", family, method, rank, seed, 0.81 + bump, metrics=mnli))
    aggs = aggregate(records)
    assert table_rank(aggs) == 8
    table = table_i(select(aggs))  # one figure per (task, family, method): the best configuration, over both ranks
    assert table.columns == ["BERT-base FFT", "BERT-base LoRA", "BERT-base KD-LoRA",
                             "RoBERTa-base FFT", "RoBERTa-base LoRA", "RoBERTa-base KD-LoRA"]
    assert [r[0] for r in table.rows] == ["CoLA", "MNLI-m", "MNLI-mm", "Score"]
    cola, mnli_m, mnli_mm, score = (cells for _, _, cells in table.rows)
    assert cola["BERT-base FFT"] == pytest.approx(54.0)  # median of 53, 54, 55 (0.5 + 0.02 + seed / 100)
    assert cola["BERT-base LoRA"] == pytest.approx(53.0)  # rank 8's configuration: rank 16's scores 5 points less
    assert table.rank is None and table.ranks["BERT-base LoRA"] == [8] and "BERT-base FFT" not in table.ranks
    assert mnli_m["BERT-base KD-LoRA"] == pytest.approx(80.0) and mnli_mm["BERT-base KD-LoRA"] == pytest.approx(82.0)
    # Score: the plain mean of the column's rows, MNLI-m and MNLI-mm counted apart as in the paper
    assert score["BERT-base KD-LoRA"] == pytest.approx((52.0 + 80.0 + 82.0) / 3)
    assert table_i(aggs, rank=16).rows[0][2]["BERT-base LoRA"] == pytest.approx(48.0)  # a per-rank view


def test_non_glue_task_gets_its_own_row_and_column_names():
    table = table_i(aggregate([rec("movie-snippets", "minilm", m, r, 1, 0.8) for m, r in
                               (("fft", None), ("lora", 8), ("kd-lora", 8))]))
    assert table.columns == ["MiniLM-L6 FFT", "MiniLM-L6 LoRA", "MiniLM-L6 KD-LoRA"]
    assert [r[0] for r in table.rows] == ["movie-snippets", "Score"]
    assert table.rows[0][1] == "Accuracy"  # the task's metric, not "Score"
    rating = table_i(aggregate([rec("movie-snippets-rating", "minilm", "fft", None, 1, 0.5)]))
    assert rating.rows[0][1] == "Mean of Pearson and Spearman"
    assert column_name("unknown", "lora") == "unknown LoRA"


def test_reported_vs_measured():
    table = table_i(aggregate([rec("rte", "bert", "fft", None, 1, 0.70), rec("sst2", "bert", "fft", None, 1, 0.9)]))
    reference = {("RTE", "BERT-base FFT"): 71.6, ("SST-2", "BERT-base FFT"): 92.8, ("Score", "BERT-base FFT"): 80.8}
    compared = {c["row"]: c for c in reported_vs_measured(table, reference)}
    assert set(compared) == {"RTE", "SST-2"}  # Score only against a complete GLUE table
    assert compared["RTE"]["difference"] == pytest.approx(70.0 - 71.6)
    full = table_i(aggregate([rec(task, "bert", "fft", None, 1, 0.7) for _, _, task, _ in GLUE_ROWS]))
    score = [c for c in reported_vs_measured(full, reference) if c["row"] == "Score"]
    assert score[0]["measured"] == pytest.approx(70.0) and score[0]["difference"] == pytest.approx(70.0 - 80.8)
