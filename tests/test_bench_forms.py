"""The bench's inference-form axes: which combinations run, the one-line refusals, and a worker in each form."""

import pytest
import torch

import kdlora.precision
from kdlora.bench.forms import form_problem, plan_forms
from kdlora.bench.runner import BenchSettings, plan, worker_job
from kdlora.bench.worker import measure
from kdlora.cli import main
from kdlora.errors import UserError

torch.set_num_threads(1)


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(kdlora.precision, "bf16_supported", lambda device=None: True)


def test_the_full_product_keeps_the_four_supported_forms(bf16_cpu):
    # 2 runtimes x 2 precisions x 2 quantisations = 8; int8 needs onnxruntime, bf16 needs pytorch
    assert plan_forms(("pytorch", "onnxruntime"), ("fp32", "bf16"), ("none", "int8"), "cpu") == [
        ("pytorch", "fp32", "none"), ("pytorch", "bf16", "none"),
        ("onnxruntime", "fp32", "none"), ("onnxruntime", "fp32", "int8")]


def test_each_measured_rank_gets_a_row_per_form_and_counts_one():
    settings = BenchSettings(families=("minilm",), methods=("fft", "kd-lora"), ranks=(8, 16),
                             runtime=("pytorch", "onnxruntime"), quantize=("none", "int8"), tiny=True)
    jobs = plan(settings)
    assert [j.name for j in jobs] == [
        "minilm/fft", "minilm/fft/onnxruntime-fp32", "minilm/fft/onnxruntime-fp32-int8",
        "minilm/kd-lora/r8", "minilm/kd-lora/r8/onnxruntime-fp32", "minilm/kd-lora/r8/onnxruntime-fp32-int8",
        "minilm/kd-lora/r16"]
    assert [j.measure for j in jobs] == [True] * 6 + [False]
    job = worker_job(settings, jobs[2])
    assert (job["runtime"], job["precision"], job["quantize"]) == ("onnxruntime", "fp32", "int8")


@pytest.mark.parametrize("flags, message", [
    (["--runtime", "pytorch", "--quantize", "int8"], form_problem("pytorch", "fp32", "int8")),
    (["--runtime", "onnxruntime", "--precision", "bf16"], form_problem("onnxruntime", "bf16", "none")),
    (["--runtime", "tensorrt"], "runtime: unknown 'tensorrt' (choose from pytorch, onnxruntime)"),
    (["--precision", "bf16"], "--precision bf16: this CPU (no AVX512-BF16 or AMX) has no bf16 support; use fp32"),
])
def test_unsupported_forms_are_one_line_and_exit_2(flags, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(kdlora.precision, "bf16_supported", lambda device=None: "--runtime" in flags)
    assert main(["bench", "--params-only", "--tiny", "--out", str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err == f"kdlora bench: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_the_retired_backend_flag_is_one_line_naming_runtime_and_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--params-only", "--tiny", "--out", str(tmp_path / "out"), "--backend", "onnxruntime"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "kdlora bench: error: --backend was retired: use --runtime\n"
    assert not (tmp_path / "out").exists()


def test_int8_names_the_runtime_it_needs():
    assert form_problem("pytorch", "fp32", "int8") == ("int8 runs in ONNX Runtime only (runtime onnxruntime: its "
                                                       "dynamic quantisation; PyTorch int8 is not supported)")


def test_an_experiment_written_with_the_old_backend_and_pretrained_keys_still_reads():
    from kdlora.sweep.backends import real_bench_settings

    settings = real_bench_settings({"families": ["minilm"], "backend": ["onnxruntime"], "pretrained": True,
                                    "tiny": True})
    assert settings["runtime"] == ["onnxruntime"] and settings["load_weights"] is True
    assert "backend" not in settings and "pretrained" not in settings


def test_load_weights_keeps_a_hidden_pretrained_flag_and_its_stored_key():
    """`pretrained` was a bool here and a weights path in `kdlora train`: the bench's is `load_weights` now. The
    old flag still works (not in --help), and a bench run's key names it as stored runs' keys did."""
    from kdlora.cli import build_parser
    from kdlora.commands.bench import settings_from_args
    from kdlora.keys import run_key

    parser = build_parser()
    assert settings_from_args(parser.parse_args(["bench", "--pretrained"])).load_weights is True
    assert settings_from_args(parser.parse_args(["bench", "--load-weights"])).load_weights is True
    assert settings_from_args(parser.parse_args(["bench"])).load_weights is False
    help_text = parser._subparsers._group_actions[0].choices["bench"].format_help()
    assert "--load-weights" in help_text and "--pretrained" not in help_text and "--backend" not in help_text
    assert run_key("bench", {"load_weights": True, "seed": 0}) == run_key("bench", {"pretrained": True, "seed": 0})


def test_rows_written_before_the_rename_keep_their_form():
    from kdlora.bench.forms import row_form

    assert row_form({"backend": "onnxruntime", "precision": "fp32", "quantize": "int8"}) == (
        "onnxruntime", "fp32", "int8")
    assert row_form({"runtime": "onnxruntime", "precision": "fp32", "quantize": "none"}) == (
        "onnxruntime", "fp32", "none")
    assert row_form({}) == ("pytorch", "fp32", "none")  # before the axes existed


def test_unknown_quantisation_is_a_user_error():
    with pytest.raises(UserError, match="quantize: unknown 'int4'"):
        BenchSettings(quantize=("int4",))


def _job(form, **extra):
    settings = BenchSettings(families=("minilm",), methods=("kd-lora",), ranks=(8,), eval_size=16, batch_size=2,
                             train_seq_len=8, threads=1, tiny=True)
    job = plan(settings)[0]
    job.form = form
    return worker_job(settings, job) | extra


@pytest.mark.slow
def test_a_worker_measures_each_form(bf16_cpu):
    rows = {form: measure(_job(form)) for form in [("pytorch", "fp32", "none"), ("pytorch", "bf16", "none"),
                                                   ("onnxruntime", "fp32", "none"), ("onnxruntime", "fp32", "int8")]}
    for form, row in rows.items():
        # 16 sequences in eval_seconds; eval_seconds is rounded to 0.0001 s and throughput to 0.01/s
        assert abs(row["throughput_per_s"] * row["eval_seconds"] - 16) <= row["throughput_per_s"] * 0.00005 + 0.01
        assert (row["eval_seconds_unmerged"] is None) == (form[0] == "onnxruntime")  # unmerged: PyTorch only
        assert "error" not in row and row["size_mb"] > 0
    # bf16 weights are two bytes, fp32 four; int8 ONNX weights one (plus per-channel scales)
    assert rows["pytorch", "bf16", "none"]["size_mb"] < 0.55 * rows["pytorch", "fp32", "none"]["size_mb"]
    assert rows["onnxruntime", "fp32", "int8"]["size_mb"] < 0.7 * rows["onnxruntime", "fp32", "none"]["size_mb"]
