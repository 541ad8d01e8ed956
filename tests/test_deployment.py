import pytest

from kdlora.analysis.deployment import deployment_plot, deployment_table, markdown
from kdlora.analysis.tradeoff import family_tradeoffs, pareto_front
from test_tradeoff import _aggregates


def row(method, runtime, precision, quantize, throughput, size, rank=None, family="minilm"):
    return {"family": family, "model": {"fft": "MiniLM-L6"}.get(method, "MiniLM-L3"), "method": method, "rank": rank,
            "runtime": runtime, "precision": precision, "quantize": quantize, "throughput_per_s": throughput,
            "size_mb": size, "eval_seconds": 1.0, "peak_train_memory_mb": 1.0}


BENCH = [row("fft", "pytorch", "fp32", "none", 100.0, 90.9),
         row("fft", "onnxruntime", "fp32", "int8", 300.0, 23.1),  # the teacher's other forms are not rows
         row("kd-lora", "pytorch", "fp32", "none", 200.0, 69.6, rank=8),
         row("kd-lora", "onnxruntime", "fp32", "none", 250.0, 69.6, rank=8),
         row("kd-lora", "onnxruntime", "fp32", "int8", 800.0, 17.6, rank=8),
         row("kd-lora", "pytorch", "fp32", "none", None, None, rank=16)]  # unmeasured rank: no row


def test_teacher_is_one_and_each_student_form_is_its_throughput_over_the_teacher():
    table = deployment_table(family_tradeoffs(_aggregates(), BENCH), BENCH)
    assert [(r["role"], r["form"], r["speedup"], r["size_mb"]) for r in table] == [
        ("teacher", "PyTorch fp32", 1.0, 90.9), ("student", "PyTorch fp32", 2.0, 69.6),
        ("student", "ONNX Runtime fp32", 2.5, 69.6), ("student", "ONNX Runtime int8", 8.0, 17.6)]
    # _aggregates: FFT median 0.90, KD-LoRA 0.86 -> 4 points given up by every student form
    assert [r["score"] for r in table] == pytest.approx([0.90, 0.86, 0.86, 0.86])
    assert [r["given_up_points"] for r in table] == pytest.approx([None, 4.0, 4.0, 4.0])


def test_a_family_without_train_runs_has_speed_and_size_only(tmp_path):
    table = deployment_table([], BENCH)
    assert [r["score"] for r in table] == [None] * 4 and table[-1]["speedup"] == 8.0
    assert deployment_plot(table, tmp_path / "d.png") is None
    assert "| minilm | MiniLM-L3 | ONNX Runtime int8 | 8.00× | 17.6 | – | – |" in markdown(table, None)


def test_rows_from_before_the_axes_are_pytorch_fp32():
    old = [{k: v for k, v in r.items() if k not in ("runtime", "precision", "quantize")} for r in BENCH[:3:2]]
    table = deployment_table([], old)
    assert [(r["form"], r["speedup"]) for r in table] == [("PyTorch fp32", 1.0), ("PyTorch fp32", 2.0)]
    assert "Only the paper's form (PyTorch fp32) was benched" in "\n".join(markdown(table, None))


def test_plot_marks_the_front_of_higher_speedup_and_score(tmp_path):
    table = deployment_table(family_tradeoffs(_aggregates(), BENCH), BENCH)
    path = deployment_plot(table, tmp_path / "d.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = [{"label": n, "method": "kd-lora", "cost": c, "score": s}
              for n, c, s in (("a", 1.0, 0.9), ("b", 2.0, 0.86), ("c", 8.0, 0.86), ("d", 4.0, 0.8))]
    assert [p["label"] for p in pareto_front(points, higher_is_better=True)] == ["c", "a"]


def test_the_score_says_what_precision_dev_was_scored_in():
    """Finding: the report called every trained run's score fp32, though bf16 runs score dev under autocast."""
    table = deployment_table(family_tradeoffs(_aggregates(), BENCH), BENCH)
    assert "(PyTorch, as scored in training: fp32; median over seeds, %)" in markdown(table, None)[0]
    assert "as scored in training: bf16 autocast and fp32;" in markdown(table, None, ["fp32", "bf16"])[0]
