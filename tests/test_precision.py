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
    assert precision.default_precision() == "bf16"


def test_bf16_on_a_cpu_without_bf16_units(monkeypatch):
    _cpu(monkeypatch, avx512_bf16=False, amx=False)
    assert not precision.bf16_supported()
    with pytest.raises(UserError, match=r"this CPU \(no AVX512-BF16 or AMX\) has no bf16 support"):
        precision.check_precision("bf16", "cpu")
    assert precision.default_precision("cpu") == "fp32"


def test_bf16_on_a_gpu_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.raises(UserError, match="this GPU has no bf16 support"):
        precision.check_precision("bf16", None)
    assert precision.check_precision("fp16", "cuda") == "fp16"


def test_fp32_is_always_allowed(monkeypatch):
    _cpu(monkeypatch, avx512_bf16=False, amx=False)
    assert precision.check_precision("fp32", "cpu") == "fp32"
