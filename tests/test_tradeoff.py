import pytest

from kdlora.analysis.quality import aggregate
from kdlora.analysis.tradeoff import family_tradeoffs, pareto_front, pareto_plot, pareto_points
from test_quality import rec

COSTS = {"fft": (0.90, 1000, 10.0, 22_000_000), "lora": (0.88, 600, 6.0, 80_000), "kd-lora": (0.86, 400, 4.0, 40_000)}


def _aggregates(family="minilm"):
    records = []
    for method, (score, memory, seconds, params) in COSTS.items():
        for seed, delta in ((1, -0.01), (2, 0.0), (3, 0.02)):
            records.append(rec("movie-snippets", family, method, None if method == "fft" else 8, seed, score + delta,
                               memory=memory, seconds=seconds, params=params))
    return aggregate(records)


def bench_row(family, method, rank, memory, seconds):
    return {"family": family, "method": method, "rank": rank, "trainable_params": 1000 * rank,
            "peak_memory_mb": memory, "eval_seconds": seconds, "memory_kind": "cpu-peak-rss-delta"}


BENCH = [bench_row("bert", m, r, mem, s) for m, mem, s in (("fft", 2000, 10.0), ("lora", 1500, 10.0),
                                                           ("kd-lora", 800, 5.0)) for r in (8, 16)]


def test_keeps_share_of_score_at_share_of_memory_and_speed():
    [entry] = family_tradeoffs(_aggregates(), [])
    r = entry["ratios"]
    assert entry["tasks"] == ["movie-snippets"] and entry["rank"] == 8
    assert r["score_vs_lora"] == pytest.approx(0.86 / 0.88) and r["score_vs_fft"] == pytest.approx(0.86 / 0.90)
    assert r["train_memory_vs_lora"] == pytest.approx(400 / 600) and r["train_memory_vs_fft"] == pytest.approx(0.4)
    assert r["train_speed_vs_lora"] == pytest.approx(1.5) and r["train_speed_vs_fft"] == pytest.approx(2.5)
    assert r["params_vs_lora"] == pytest.approx(0.5)
    assert entry["sentence"].startswith(
        "MiniLM-L6 (movie-snippets; rank 8): KD-LoRA keeps 97.7 % of LoRA's score and 95.6 % of FFT's at 66.7 % of "
        "LoRA's peak training memory (40.0 % of FFT's) and 1.50× LoRA's training speed (2.50× FFT's)")
    assert "[train runs, memory: rss]" in entry["sentence"] and "[bench" not in entry["sentence"]


def test_memory_of_two_kinds_is_not_compared():
    """Finding: train-run memory ratios were built from figures of different kinds."""
    aggs = _aggregates()
    next(a for a in aggs if a.method == "fft").memory_kind = "cuda-max-memory-allocated"
    [entry] = family_tradeoffs(aggs, [])
    assert entry["ratios"]["train_memory_vs_fft"] is None
    assert entry["ratios"]["train_memory_vs_lora"] == pytest.approx(400 / 600)  # both rss
    assert "(n/a of FFT's)" in entry["sentence"] and "[train runs, memory kinds differ, not compared]" in \
        entry["sentence"]


def test_bench_joins_where_the_family_matches():
    entries = {e["family"]: e for e in family_tradeoffs(_aggregates("bert") + _aggregates(), BENCH)}
    assert set(entries) == {"bert", "minilm"} and entries["minilm"]["bench"] is None
    r = entries["bert"]["ratios"]
    assert r["inference_speed_vs_fft"] == pytest.approx(2.0) and r["bench_memory_vs_lora"] == pytest.approx(800 / 1500)
    assert "2.00× LoRA's inference speed (2.00× FFT's), adapters merged [bench, memory: cpu-peak-rss-delta]" in \
        entries["bert"]["sentence"]


def test_bench_only_family_gets_a_cost_line():
    [entry] = family_tradeoffs([], BENCH)
    assert entry["score"] is None and entry["rank"] == 8
    assert entry["sentence"].startswith("BERT-base (bench only, no train runs; rank 8); benched: 53.3 % of LoRA's")


def test_pareto_front_by_hand():
    points = [{"label": n, "method": "fft", "cost": c, "score": s}
              for n, c, s in (("a", 1, 0.5), ("b", 2, 0.7), ("c", 3, 0.6), ("d", 4, 0.9), ("e", 2, 0.4))]
    assert [p["label"] for p in pareto_front(points)] == ["a", "b", "d"]


def test_pareto_points_and_plot(tmp_path):
    aggs = _aggregates("bert")
    memory = pareto_points(aggs, BENCH, "memory")
    assert sorted((p["label"], p["cost"]) for p in memory) == [
        ("BERT-base FFT", 1000), ("BERT-base KD-LoRA r8", 400), ("BERT-base LoRA r8", 600)]
    assert {p["label"]: p["cost"] for p in pareto_points(aggs, BENCH, "inference")}["BERT-base KD-LoRA r8"] == 5.0
    assert pareto_points(_aggregates(), BENCH, "inference") == []  # minilm was not benched
    path = pareto_plot(memory, "memory", tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
