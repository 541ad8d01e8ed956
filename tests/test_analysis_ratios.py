from pathlib import Path

import pytest

from kdlora.analysis import ratios
from kdlora.analysis.table import load_table

DATA = Path(__file__).parent / "data" / "analysis"
HEADER = "Model,Method,Rank 8,Rank 16,Rank 32,Memory Usage,Inference Time\n"
# BERT-base as `kdlora bench` counts it: LoRA adds 36,864 per rank plus a 1,538-parameter head
GOOD = ("BERT-base,FFT,109.48M,109.48M,109.48M,1700MB,3.4s\n"
        "BERT-base,LoRA,296.450K,591.362K,1181.186K,700MB,3.5s\n"
        "DistilBERT-base,KD-LoRA,739.586K,887.042K,1181.954K,450MB,1.8s\n")


def table_of(tmp_path, rows: str):
    path = tmp_path / "t.csv"
    path.write_text(HEADER + rows)
    return load_table(path)


def test_paper_ratios_are_the_definitions():
    table = load_table(DATA / "kd-lora-table-ii.csv")
    analysis = ratios.analyse(table)
    assert analysis["param_reduction"]["KD-LoRA"]["RoBERTa-base"]["16"] == (125 - 2.9) / 125
    assert analysis["average_param_reduction"]["LoRA"]["8"] == pytest.approx(
        ((110 - 2.9) / 110 + (125 - 2.9) / 125 + (183 - 2.9) / 183) / 3, rel=1e-15)
    assert analysis["speedup"]["LoRA"]["DeBERTa-v3-base"] == 14.37 / 15.62
    assert analysis["average_memory_reduction"]["KD-LoRA"] == pytest.approx(
        ((1332 - 296.8) / 1332 + (1515.9 - 358.3) / 1515.9 + (2234.5 - 590.3) / 2234.5) / 3, rel=1e-15)


def test_kd_lora_against_lora():
    versus = ratios.kd_lora_vs_lora(load_table(DATA / "kd-lora-table-ii.csv"))
    assert versus["BERT-base"]["memory_ratio"] == 296.8 / 463.5
    assert versus["RoBERTa-base"]["speedup"] == 7.19 / 4.44
    assert versus["DeBERTa-v3-base"]["param_ratio"]["64"] == 11.8 / 23.6


def test_a_method_missing_from_a_family_is_left_out_of_its_average(tmp_path):
    table = table_of(tmp_path, GOOD + "RoBERTa-base,FFT,125M,125M,125M,1500MB,7s\n"
                                      "RoBERTa-base,LoRA,1M,2M,4M,500MB,7s\n")
    analysis = ratios.analyse(table)
    assert list(analysis["speedup"]["KD-LoRA"]) == ["BERT-base"]
    assert analysis["average_speedup"]["KD-LoRA"] == 3.4 / 1.8
    assert analysis["average_speedup"]["LoRA"] == (3.4 / 3.5 + 1.0) / 2
    assert list(ratios.kd_lora_vs_lora(table)) == ["BERT-base"]


def test_true_counts_pass_every_sanity_check(tmp_path):
    assert ratios.sanity_checks(table_of(tmp_path, GOOD)) == []
    assert ratios.sanity_checks(load_table(DATA / "measured-table-ii.csv")) == []


def test_paper_counts_are_ten_times_the_adapter_size():
    checks = ratios.sanity_checks(load_table(DATA / "kd-lora-table-ii.csv"))
    sizes = [c for c in checks if c["check"] == "adapter-size"]
    assert [(c["model"], c["method"]) for c in sizes] == [
        ("BERT-base", "LoRA"), ("DistilBERT-base", "KD-LoRA"), ("RoBERTa-base", "LoRA"),
        ("DistilRoBERTa-base", "KD-LoRA"), ("DeBERTa-v3-base", "LoRA"), ("DeBERTa-v3-small", "KD-LoRA")]
    assert sizes[0]["message"].startswith("LoRA on query and value of BERT-base (12 layers, 768 wide) adds 36,864 "
                                          "parameters per rank (294,912 at rank 8)")
    assert sizes[0]["message"].endswith("10.0× that")
    slow = [c["model"] for c in checks if c["check"] == "student-slow"]
    assert slow == ["DistilBERT-base", "DeBERTa-v3-small"]  # 1.14x and 1.38x; DistilRoBERTa's 1.62x passes


@pytest.mark.parametrize(("old", "new", "check", "model"), [
    ("296.450K,591.362K,1181.186K", "296.450K,1181.186K,591.362K", "not-linear-in-rank", "BERT-base"),
    ("296.450K,591.362K,1181.186K", "200M,400M,800M", "more-than-fft", "BERT-base"),
    ("450MB,1.8s", "450MB,3.5s", "student-not-faster", "DistilBERT-base"),
    ("450MB,1.8s", "450MB,3.0s", "student-slow", "DistilBERT-base"),
    ("109.48M,109.48M,109.48M", "109.48M,109.48M,110M", "fft-varies-with-rank", "BERT-base"),
    ("109.48M,109.48M,109.48M", "109483778,109483778,109483778", "raw-count", "BERT-base"),
])
def test_impossible_figures_are_flagged(tmp_path, old, new, check, model):
    checks = ratios.sanity_checks(table_of(tmp_path, GOOD.replace(old, new)))
    assert check in [c["check"] for c in checks]
    assert next(c for c in checks if c["check"] == check)["model"] == model


def test_compare_pairs_rows_by_family_and_method():
    measured = load_table(DATA / "measured-table-ii.csv")
    paper = load_table(DATA / "kd-lora-table-ii.csv")
    comparison = ratios.compare(measured, paper)
    assert comparison["unmatched"] == []
    assert len(comparison["cells"]) == 9 * 6
    cell = next(c for c in comparison["cells"] if c["model"] == "BERT-base" and c["method"] == "LoRA"
                and c["column"] == "Rank 8 (M)")
    assert cell["reference"] == 2.9 and cell["table"] == pytest.approx(0.29645)
    assert cell["ratio"] == pytest.approx(2.9 / 0.29645)
    lora = [c["ratio"] for c in comparison["params_per_rank"] if c["method"] == "LoRA"]
    assert lora == [pytest.approx(10.02, abs=0.01)] * 3
