"""`kdlora analyze` through the CLI: the golden paper report, every bad-input case, the flags, no torch."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdlora.cli import main

DATA = Path(__file__).parent / "data" / "analysis"
PAPER = DATA / "kd-lora-table-ii.csv"

# The seed report's tables, transcribed from ../shared/reference/efficiency-analysis-report.md (not computed).
SEED_DATA = [
    ["BERT-base", "FFT", "110", "110", "110", "110", "1332", "6.1", "BERT-base"],
    ["BERT-base", "LoRA", "2.9", "5.9", "11.8", "23.6", "463.5", "6.22", "BERT-base"],
    ["DistilBERT-base", "KD-LoRA", "1.2", "2.4", "4.7", "9.4", "296.8", "5.36", "BERT-base"],
    ["RoBERTa-base", "FFT", "125", "125", "125", "125", "1515.9", "7.21", "RoBERTa-base"],
    ["RoBERTa-base", "LoRA", "2.9", "5.9", "11.8", "23.6", "531.9", "7.19", "RoBERTa-base"],
    ["DistilRoBERTa-base", "KD-LoRA", "1.5", "2.9", "5.9", "11.8", "358.3", "4.44", "RoBERTa-base"],
    ["DeBERTa-v3-base", "FFT", "183", "183", "183", "183", "2234.5", "14.37", "DeBERTa-v3-base"],
    ["DeBERTa-v3-base", "LoRA", "2.9", "5.9", "11.8", "23.6", "763.4", "15.62", "DeBERTa-v3-base"],
    ["DeBERTa-v3-small", "KD-LoRA", "1.5", "2.9", "5.9", "11.8", "590.3", "10.38", "DeBERTa-v3-base"],
]
SEED_LORA = [["BERT-base", "0.974", "0.946", "0.893", "0.785"], ["RoBERTa-base", "0.977", "0.953", "0.906", "0.811"],
             ["DeBERTa-v3-base", "0.984", "0.968", "0.936", "0.871"]]
SEED_KD = [["BERT-base", "0.989", "0.978", "0.957", "0.915"], ["RoBERTa-base", "0.988", "0.977", "0.953", "0.906"],
           ["DeBERTa-v3-base", "0.992", "0.984", "0.968", "0.936"]]
SEED_AVERAGE = [["Rank 8", "0.978", "0.990"], ["Rank 16", "0.956", "0.980"], ["Rank 32", "0.911", "0.959"],
                ["Rank 64", "0.823", "0.919"]]
SEED_MEMORY = [["BERT-base", "0.652", "0.777"], ["RoBERTa-base", "0.649", "0.764"],
               ["DeBERTa-v3-base", "0.658", "0.736"]]
SEED_SPEEDUP = [["BERT-base", "0.981", "1.138"], ["RoBERTa-base", "1.003", "1.624"],
                ["DeBERTa-v3-base", "0.920", "1.384"]]
# The findings' ranges: the seed's own tables give these (its prose misstates five of the eight).
RANGES = {"LoRA": ["97.4–98.4%", "94.6–96.8%", "89.3–93.6%", "78.5–87.1%"],
          "KD-LoRA": ["98.8–99.2%", "97.7–98.4%", "95.3–96.8%", "90.6–93.6%"]}
PLOTS = ["param_count_rank8.png", "memory_usage.png", "inference_time.png", "param_vs_rank.png",
         "reduction_heatmap.png"]


def section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = markdown.index(heading + "\n") + len(heading) + 1
    following = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", markdown[start:], re.M)]
    return markdown[start:start + following[0]] if following else markdown[start:]


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the first markdown table in `text`, cells stripped."""
    lines = text[text.index("\n|") + 1:].split("\n\n")[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.fixture(scope="module")
def paper_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    assert main(["analyze", str(PAPER), "--out", str(out)]) == 0
    return out


def test_golden_paper_report_matches_the_seeds_tables(paper_report):
    markdown = (paper_report / "report.md").read_text(encoding="utf-8")
    assert table_rows(section(markdown, "## 1. Data Summary")) == SEED_DATA
    assert table_rows(section(markdown, "### LoRA Reduction Ratios")) == SEED_LORA
    assert table_rows(section(markdown, "### KD-LoRA Reduction Ratios")) == SEED_KD
    assert table_rows(section(markdown, "### KD-LoRA Reduction Ratios").split("**Average")[1]) == SEED_AVERAGE
    memory = section(markdown, "## 3. Memory Reduction Ratios")
    assert table_rows(memory) == SEED_MEMORY
    assert "**Average memory reduction:** LoRA = 0.653, KD-LoRA = 0.759" in memory
    speed = section(markdown, "## 4. Inference Time Speedup")
    assert table_rows(speed) == SEED_SPEEDUP
    assert "**Average speedup:** LoRA = 0.968, KD-LoRA = 1.382" in speed


def test_golden_findings_state_the_tables_ranges(paper_report):
    findings = section((paper_report / "report.md").read_text(encoding="utf-8"), "## 6. Key Findings")
    for method, ranges in RANGES.items():
        line = next(li for li in findings.splitlines() if li.startswith(f"- **{method}** "))
        expected = ", ".join(f"**{r}** at rank {k}" for r, k in zip(ranges, (8, 16, 32, 64), strict=True))
        assert expected in line
    assert "**LoRA** reduces memory by **≈65%** on average (range 64.9–65.8% across models)" in findings
    assert "**KD-LoRA** reduces memory by **≈76%** on average (range 73.6–77.7% across models)" in findings
    assert "**0.97×** FFT's speed on average (3% slower)" in findings
    assert "RoBERTa-base 1.00×, BERT-base 0.98×, DeBERTa-v3-base 0.92×" in findings
    assert "**1.38×** FFT's speed on average (38% faster)" in findings
    assert "RoBERTa-base 1.62×, DeBERTa-v3-base 1.38×, BERT-base 1.14×" in findings
    assert "97.8–98.4" not in findings and "91.5–93.6" not in findings


def test_golden_report_keeps_the_seeds_sections_in_order(paper_report):
    markdown = (paper_report / "report.md").read_text(encoding="utf-8")
    headings = ["## 1. Data Summary", "## 2. Parameter Reduction Ratios", "## 3. Memory Reduction Ratios",
                "## 4. Inference Time Speedup", "## 5. Visualizations", "## 6. Key Findings", "### Trade-offs",
                "## 7. Notes", "## 8. KD-LoRA against LoRA", "## 9. Sanity Checks", "*Analysis generated on"]
    positions = [markdown.index(h) for h in headings]
    assert positions == sorted(positions)
    for name in PLOTS:
        assert f"(efficiency_plots/{name})" in markdown


def test_golden_plots_exist_and_decode(paper_report):
    from matplotlib.image import imread

    for name in PLOTS:
        image = imread(paper_report / "efficiency_plots" / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400


def test_golden_analysis_json(paper_report):
    analysis = json.loads((paper_report / "analysis.json").read_text())
    assert analysis["rows"][2] == {"model": "DistilBERT-base", "method": "KD-LoRA", "family": "BERT-base",
                                   "params_m": {"8": 1.2, "16": 2.4, "32": 4.7, "64": 9.4}, "memory_mb": 296.8,
                                   "inference_s": 5.36}
    assert analysis["param_reduction"]["LoRA"]["BERT-base"]["8"] == (110 - 2.9) / 110
    assert list(analysis["param_reduction"]) == ["LoRA", "KD-LoRA"]
    assert list(analysis["param_reduction"]["KD-LoRA"]) == ["BERT-base", "RoBERTa-base", "DeBERTa-v3-base"]
    assert analysis["average_param_reduction"]["KD-LoRA"]["64"] == pytest.approx(0.918554860076, abs=1e-12)
    assert analysis["memory_reduction"]["KD-LoRA"]["DeBERTa-v3-base"] == (2234.5 - 590.3) / 2234.5
    assert analysis["average_memory_reduction"]["LoRA"] == pytest.approx(0.653167978826, abs=1e-12)
    assert analysis["speedup"]["KD-LoRA"]["RoBERTa-base"] == 7.21 / 4.44
    assert analysis["average_speedup"]["LoRA"] == pytest.approx((6.1 / 6.22 + 7.21 / 7.19 + 14.37 / 15.62) / 3)


def test_paper_flag_prints_the_report_path(tmp_path, capsys):
    assert main(["analyze", "--paper", "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'r'}/report.md\n"
    assert (tmp_path / "r" / "report.md").read_text().count("## 10.") == 0


@pytest.mark.parametrize(("argv", "message"), [
    ([], "give either TABLE.csv or --paper"),
    ([str(PAPER), "--paper"], "give either TABLE.csv or --paper"),
    (["--paper", "--reference", str(PAPER), "--paper-reference"], "give either --reference or --paper-reference"),
])
def test_conflicting_flags(tmp_path, capsys, argv, message):
    assert main(["analyze", *argv, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"kdlora analyze: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_analyze_imports_neither_torch_nor_transformers(tmp_path):
    code = ("import sys; from kdlora.cli import main; "
            f"assert main(['analyze', {str(PAPER)!r}, '--out', {str(tmp_path)!r}]) == 0; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"
