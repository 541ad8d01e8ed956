import json
from pathlib import Path

from kdlora.analysis.report import write_report

DATA = Path(__file__).parent / "data" / "analysis"
KEYS = ["rows", "param_reduction", "average_param_reduction", "memory_reduction", "average_memory_reduction",
        "speedup", "average_speedup", "kd_lora_vs_lora", "sanity", "reference"]


def test_measured_table_against_the_paper_makes_the_tenfold_plain(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    analysis = write_report(DATA / "measured-table-ii.csv", tmp_path, reference_csv=DATA / "kd-lora-table-ii.csv")
    assert json.loads((tmp_path / "analysis.json").read_text()) == analysis
    assert list(analysis) == KEYS
    assert (tmp_path / "notes.txt").read_text() == "mine"  # unrelated files in DIR survive
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kdlora-stage")]
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    reported = markdown[markdown.index("## 10. Reported vs Measured"):]
    assert "| BERT-base          | LoRA     | 2.9 / 0.2964 (**9.78×**)" in reported
    assert ("- **LoRA parameters per unit of rank (adapter size): the reference's figures are 10.02× this table's "
            "(median of 3)**") in reported
    assert "No figure fails the checks" in markdown
    # families named by registry name in the Model Family column are keyed by their FFT model
    assert list(analysis["speedup"]["KD-LoRA"]) == ["BERT-base", "RoBERTa-base", "DeBERTa-v3-base"]
    assert analysis["rows"][1]["params_m"]["8"] == 0.29645


def test_a_table_without_rank_8_names_its_chart_by_its_smallest_rank(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("Model,Method,Rank 32,Rank 4,Memory Usage,Inference Time\n"
                     "BERT-base,FFT,110M,110M,1332MB,6s\n"
                     "BERT-base,LoRA,1.18M,0.15M,460MB,6s\n")
    analysis = write_report(table, tmp_path / "out")
    plots = sorted(p.name for p in (tmp_path / "out" / "efficiency_plots").iterdir())
    assert plots == ["inference_time.png", "memory_usage.png", "param_count_rank4.png", "param_vs_rank.png",
                     "reduction_heatmap.png"]
    assert analysis["param_reduction"] == {"LoRA": {"BERT-base": {"4": (110 - 0.15) / 110, "32": (110 - 1.18) / 110}}}
    assert analysis["param_reduction"].keys() == analysis["average_param_reduction"].keys() == {"LoRA"}
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "one model family (BERT-base) and two LoRA ranks (4, 32)" in markdown
    assert "**LoRA** reduces trainable parameters by **99.9%** at rank 4, **98.9%** at rank 32" in markdown
    assert "The table has no family with both a LoRA and a KD-LoRA row." in markdown


def test_an_fft_only_table_reports_that_there_is_nothing_to_compare(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("Model,Method,Rank 8,Memory Usage,Inference Time\nBERT-base,FFT,110M,1GB,6s\n")
    analysis = write_report(table, tmp_path / "out")
    assert analysis["param_reduction"] == analysis["speedup"] == analysis["average_speedup"] == {}
    assert analysis["rows"][0]["memory_mb"] == 1024.0
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert markdown.count("The table has no LoRA or KD-LoRA row: nothing to set against FFT.") == 3
    assert not (tmp_path / "out" / "efficiency_plots" / "reduction_heatmap.png").exists()
