"""precision.py: the names, the hardware check (one-line UserError), the dtype."""

import pytest
import torch

from kdlora import precision
from kdlora.errors import UserError


def _cpu(monkeypatch, avx512_bf16: bool, amx: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_precisions_are_the_three_names():
    assert precision.PRECISIONS == ("fp32", "bf16", "fp16")


@pytest.mark.parametrize(("name", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                             ("fp16", torch.float16)])
def test_torch_dtype(name, dtype):
    assert precision.torch_dtype(name) is dtype


def test_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="unknown 'fp8'"):
        precision.check_precision("fp8", "cpu")
    with pytest.raises(UserError, match="unknown 'int4'"):
        precision.torch_dtype("int4")


def test_fp16_on_cpu_is_one_line(monkeypatch):
    _cpu(monkeypatch, avx512_bf16=True, amx=True)
    with pytest.raises(UserError) as caught:
        precision.check_precision("fp16", "cpu")
    assert "needs a CUDA device" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(True, False), (False, True), (True, True)])
def test_bf16_on_a_cpu_with_bf16_units(monkeypatch, avx512_bf16, amx):
    _cpu(monkeypatch, avx512_bf16, amx)
    assert precision.bf16_supported("cpu")
    assert precision.check_precision("bf16", None) == "bf16"
    assert precision.resolve_precision("auto", None, announce=False) == "bf16"


def test_bf16_on_a_cpu_without_bf16_units(monkeypatch):
    _cpu(monkeypatch, avx512_bf16=False, amx=False)
    assert not precision.bf16_supported()
    with pytest.raises(UserError, match=r"this CPU \(no AVX512-BF16 or AMX\) has no bf16 support"):
        precision.check_precision("bf16", "cpu")
    assert precision.resolve_precision("auto", "cpu", announce=False) == "fp32"


def test_bf16_on_a_gpu_without_it(monkeypatch):
    """Finding: torch.cuda.is_bf16_supported() is True on a T4 (compute capability 7.5), which emulates bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: (7, 5))
    with pytest.raises(UserError, match="this GPU has no bf16 support"):
        precision.check_precision("bf16", None)
    assert precision.check_precision("fp16", "cuda") == "fp16"
    assert precision.auto_reason("cuda") == ("fp32", "this GPU has no bf16 support (compute capability 7.5, before "
                                                     "Ampere's 8.0: bf16 would be emulated)")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args: (8, 0))
    assert precision.auto_reason("cuda") == ("bf16", "this GPU computes bf16 natively (compute capability 8.0)")


def test_fp32_is_always_allowed(monkeypatch):
    _cpu(monkeypatch, avx512_bf16=False, amx=False)
    assert precision.check_precision("fp32", "cpu") == "fp32"


# /proc/cpuinfo flag lists (abridged to the vector and matrix extensions) of the CPUs this project runs on
AVX2_EPYC = "sse4_2 avx f16c fma avx2 bmi2 sha_ni".split()
AMX_XEON = "avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8".split()
ZEN5_EPYC = "avx2 avx512f avx512bw avx_vnni avx512_bf16 avx512_vnni avx512_vp2intersect".split()


@pytest.mark.parametrize(("flags", "expected"), [
    (AVX2_EPYC, ("fp32", "this CPU has no AVX512-BF16 or AMX (bf16 would be emulated, slower than fp32)")),
    (AMX_XEON, ("bf16", "this CPU computes bf16 natively: amx_bf16, avx512_bf16")),
    (ZEN5_EPYC, ("bf16", "this CPU computes bf16 natively: avx512_bf16")),
    (["avx512_vnni", "amx_int8"], ("fp32", "this CPU has no AVX512-BF16 or AMX (bf16 would be emulated, slower "
                                            "than fp32)")),
])
def test_auto_choice_on_each_cpu(flags, expected):
    assert precision.auto_choice("cpu", flags) == expected


def test_auto_choice_on_a_gpu_ignores_the_cpu():
    assert precision.auto_choice("cuda", AVX2_EPYC, cuda_capability=(9, 0)) == (
        "bf16", "this GPU computes bf16 natively (compute capability 9.0)")
    assert precision.auto_choice("cuda", AMX_XEON, cuda_capability=(7, 0)) == (
        "fp32", "this GPU has no bf16 support (compute capability 7.0, before Ampere's 8.0: bf16 would be emulated)")


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"), [(False, False, "fp32"), (True, False, "bf16"),
                                                                (False, True, "bf16")])
def test_auto_resolves_from_what_torch_sees_and_says_so_once(monkeypatch, capsys, avx512_bf16, amx, expected):
    _cpu(monkeypatch, avx512_bf16, amx)
    monkeypatch.setattr(precision, "_ANNOUNCED", set())
    assert [precision.resolve_precision("auto", "cpu") for _ in range(3)] == [expected] * 3
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"precision auto: {expected} (this CPU ")
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert precision.bf16_supported("cpu") is (expected == "bf16")


def test_a_train_config_resolves_auto_so_its_key_names_what_ran(monkeypatch):
    from kdlora.config import TrainConfig

    _cpu(monkeypatch, avx512_bf16=False, amx=False)
    avx2 = TrainConfig(task="sst2", family="bert", method="fft", precision="auto", device="cpu")
    assert avx2.precision == "fp32"
    assert avx2.key() == TrainConfig(task="sst2", family="bert", method="fft", device="cpu").key()
    _cpu(monkeypatch, avx512_bf16=True, amx=True)
    amx = TrainConfig.from_dict({"task": "sst2", "family": "bert", "method": "fft", "precision": "auto"})
    assert amx.precision == "bf16" and amx.key() != avx2.key()


def test_bench_and_export_resolve_auto(monkeypatch):
    from kdlora.bench.settings import BenchSettings
    from kdlora.export import ExportSettings

    _cpu(monkeypatch, avx512_bf16=False, amx=False)
    assert BenchSettings(precision=("auto", "fp32")).precision == ("fp32",)
    assert ExportSettings(precision="auto").precision == "fp32"
    _cpu(monkeypatch, avx512_bf16=True, amx=False)
    assert BenchSettings(precision=("fp32", "auto")).precision == ("fp32", "bf16")
    assert ExportSettings(precision="auto").precision == "bf16"
    # ONNX Runtime has no fast bf16 path on CPU: auto exports ONNX in fp32 (before any int8 quantisation)
    assert ExportSettings(format="onnx", precision="auto", quantize="int8").precision == "fp32"


def test_the_environment_of_a_run_records_what_auto_picks_and_why(monkeypatch):
    from kdlora.bench.environment import describe_environment

    _cpu(monkeypatch, avx512_bf16=False, amx=True)
    described = describe_environment("cpu")
    assert (described["precision_auto"], described["precision_auto_why"]) == (
        "bf16", "this CPU computes bf16 natively: amx_bf16")
