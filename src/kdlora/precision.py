"""Numeric precision of training and inference: the names, the hardware check, the torch dtype.

    check_precision("bf16", "cpu")   # UserError (one line) where this CPU has no bf16 units
    torch_dtype("bf16")              # torch.bfloat16

`fp32` is plain float32; `bf16` and `fp16` are mixed precision in training (accelerate's autocast: the master
weights, the loss and the KD softmax stay float32) and the weights' dtype in inference. fp16 needs CUDA; bf16 needs
a CUDA device that supports it or a CPU with AVX512-BF16 or AMX (without them torch emulates bf16, slower than
fp32, so refusing is kinder than a silent slowdown). torch is imported inside the functions: the CLI imports this
module to list the choices without paying for torch.
"""

from __future__ import annotations

from kdlora.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
"""Every precision kdlora trains and measures in; the CLI's choices."""

ACCELERATE_MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
"""accelerate's `mixed_precision` value for each precision."""


def resolve_device(device: str | None) -> str:
    """`cpu` or `cuda`: the device given, or the one accelerate would pick (CUDA when visible)."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_supported(device: str | None = None) -> bool:
    """Whether `device` (default: the one accelerate would pick) computes in bf16 natively."""
    import torch

    if resolve_device(device) == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def check_precision(precision: str, device: str | None = None) -> str:
    """Return `precision` if `device` can run it; otherwise raise a one-line UserError saying why."""
    if precision not in PRECISIONS:
        raise UserError(f"precision: unknown {precision!r} (choose from {', '.join(PRECISIONS)})")
    where = resolve_device(device)
    if precision == "fp16" and where == "cpu":
        raise UserError("--precision fp16 needs a CUDA device; on a CPU use bf16 (where supported) or fp32")
    if precision == "bf16" and not bf16_supported(where):
        hardware = "this GPU" if where == "cuda" else "this CPU (no AVX512-BF16 or AMX)"
        raise UserError(f"--precision bf16: {hardware} has no bf16 support; use fp32")
    return precision


def default_precision(device: str | None = None) -> str:
    """bf16 where the hardware computes in it natively, else fp32. Not yet the default of `demo` or `reproduce`:
    they stay fp32 until bf16's dev accuracy has been measured against fp32 on hardware that has it."""
    return "bf16" if bf16_supported(device) else "fp32"


def torch_dtype(precision: str):
    """The torch dtype of `precision` (float32, bfloat16, float16)."""
    import torch

    if precision not in PRECISIONS:
        raise UserError(f"precision: unknown {precision!r} (choose from {', '.join(PRECISIONS)})")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
