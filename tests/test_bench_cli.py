"""One end-to-end bench on tiny models: real worker processes, real files, read back as Table II."""

import csv
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_tiny_bench_end_to_end(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "kdlora", "bench", "--tiny", "--families", "bert", "--ranks", "8,16",
                           "--eval-size", "64", "--batch-size", "4", "--train-seq-len", "16", "--threads", "1",
                           "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| DistilBERT-base | KD-LoRA  | 0.002146M | 0.003170M |" in proc.stdout
    assert "eval MFU (merged, matrix FLOP over real tokens / the CPU's peak in the row's precision): bert/fft " \
        in proc.stdout
    result = json.loads((out / "bench.json").read_text())
    rows = {(r["method"], r["rank"]): r for r in result["rows"]}
    assert set(rows) == {("fft", None), ("lora", 8), ("lora", 16), ("kd-lora", 8), ("kd-lora", 16)}
    for key in [("fft", None), ("lora", 8), ("kd-lora", 8)]:
        row = rows[key]
        assert row["error"] is None
        assert row["memory_kind"] == "cpu-peak-rss-delta" and row["peak_memory_mb"] > 0
        assert row["eval_seconds"] > 0 and row["latency_ms_p90"] >= row["latency_ms_p50"] > 0
        assert row["throughput_per_s"] == pytest.approx(64 / row["eval_seconds"], rel=0.02)
        assert (row["eval_seconds_unmerged"] is None) == (key[0] == "fft")
        assert row["eval_flops"] > 0 and row["eval_peak"].startswith("fp32 peak")
    assert rows["lora", 16]["peak_memory_mb"] is None  # one rank measured by default
    assert result["config"]["eval_size"] == 64 and result["environment"]["torch"]
    with open(out / "table-ii.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["Model"], r["Method"]) for r in table] == [("BERT-base", "FFT"), ("BERT-base", "LoRA"),
                                                          ("DistilBERT-base", "KD-LoRA")]
    assert all(r["Memory Usage"].endswith("MB") and r["Inference Time"].endswith("s") for r in table)
    # the analysis reads it unchanged
    from kdlora.analysis.report import write_report

    report = write_report(out / "table-ii.csv", tmp_path / "report")
    assert (tmp_path / "report" / "report.md").exists()
    assert set(report["speedup"]["KD-LoRA"]) == {"BERT-base"}


def test_the_mfu_line_names_each_timed_row_and_the_peaks():
    from kdlora.commands.bench import mfu_line

    rows = [{"family": "bert", "method": "fft", "precision": "fp32", "eval_seconds": 2.0, "eval_mfu": 0.0312,
             "eval_peak": "fp32 peak 0.27 TFLOP/s"},
            {"family": "bert", "method": "kd-lora", "precision": "bf16", "eval_seconds": 0.5, "eval_mfu": None,
             "eval_peak": None},
            {"family": "bert", "method": "lora", "precision": "fp32", "eval_seconds": None}]  # counted, not timed
    assert mfu_line({"rows": rows}) == ("eval MFU (merged, matrix FLOP over real tokens / the CPU's peak in the "
                                        "row's precision): bert/fft 3.1%, bert/kd-lora/bf16 n/a; "
                                        "fp32 peak 0.27 TFLOP/s")
    assert mfu_line({"rows": rows[2:]}) is None
