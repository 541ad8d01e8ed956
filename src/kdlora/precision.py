"""Numeric precision of training and inference: the names, the hardware check, the torch dtype.

    check_precision("bf16", "cpu")   # UserError (one line) where this CPU has no bf16 units
    resolve_precision("auto", "cpu") # "bf16" on a CPU with AVX512-BF16 or AMX, else "fp32"; says which, once
    torch_dtype("bf16")              # torch.bfloat16
    with autocast("cpu", "bf16"): ...  # mixed precision for a block (a no-op for fp32)

`fp32` is plain float32; `bf16` and `fp16` are mixed precision in training (accelerate's autocast: the master
weights, the loss and the KD softmax stay float32) and the weights' dtype in inference. fp16 needs CUDA; bf16 needs
a CUDA device that supports it or a CPU with AVX512-BF16 or AMX (without them torch emulates bf16, slower than
fp32, so refusing is kinder than a silent slowdown). A GPU computes bf16 natively from compute capability 8.0 (Ampere)
on; torch's `is_bf16_supported()` also counts older GPUs that emulate it. `auto` is bf16 where the device computes it
natively and fp32 elsewhere: `auto_choice` decides from given facts (CPU flags, the GPU's compute capability), so the
decision is testable for any CPU or GPU; `resolve_precision` asks this machine. torch is imported inside the
functions: the CLI imports this module to list the choices without paying for torch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from kdlora.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
"""Every precision kdlora trains and measures in; the CLI's choices."""

AUTO = "auto"
"""The precision that picks bf16 where the device computes it natively and fp32 elsewhere (`resolve_precision`)."""

PRECISION_CHOICES = (AUTO, *PRECISIONS)
"""What a user may ask for: a precision, or auto."""

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of CPUs whose matrix kernels (oneDNN) compute bf16 in hardware: AMX's bf16 tiles and
AVX512-BF16's dot products. Without them torch emulates bf16, 50-75x slower than fp32 on an AVX2-only EPYC."""

BF16_CUDA_CAPABILITY = (8, 0)
"""The first CUDA compute capability with bf16 tensor cores (Ampere: A100, RTX 30xx); a V100 (7.0) or T4 (7.5)
emulates bf16."""

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
    return auto_reason(device)[0] == "bf16"


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


def cpu_flags() -> frozenset[str]:
    """The bf16 flags of this CPU as torch's kernels see them (torch.cpu's cpuinfo checks), named as Linux's
    /proc/cpuinfo names them: what oneDNN will use, not what a hypervisor may list but hide."""
    import torch

    return frozenset(name for name, found in (("avx512_bf16", torch.cpu._is_avx512_bf16_supported()),
                                              ("amx_bf16", torch.cpu._is_amx_tile_supported())) if found)


def auto_choice(device: str, flags: Iterable[str] = (), cuda_capability: tuple[int, int] | None = None
                ) -> tuple[str, str]:
    """What `auto` means on a device with these facts: (precision, why), e.g. ("bf16", "this CPU computes bf16
    natively: avx512_bf16").

    A pure function of its arguments: `flags` are CPU flags as /proc/cpuinfo names them (any others are ignored),
    `cuda_capability` the GPU's compute capability (major, minor) (on CUDA the CPU's flags are not consulted: the
    GPU computes)."""
    if device == "cuda":
        if cuda_capability is None:
            return "fp32", "this GPU has no bf16 support (no compute capability found)"
        named = f"compute capability {cuda_capability[0]}.{cuda_capability[1]}"
        if tuple(cuda_capability) >= BF16_CUDA_CAPABILITY:
            return "bf16", f"this GPU computes bf16 natively ({named})"
        return "fp32", f"this GPU has no bf16 support ({named}, before Ampere's 8.0: bf16 would be emulated)"
    native = [flag for flag in BF16_CPU_FLAGS if flag in set(flags)]
    if native:
        return "bf16", f"this CPU computes bf16 natively: {', '.join(native)}"
    return "fp32", "this CPU has no AVX512-BF16 or AMX (bf16 would be emulated, slower than fp32)"


_ANNOUNCED: set[str] = set()
"""Devices whose auto choice this process has printed (a sweep resolves it for every run: say it once)."""


def resolve_precision(precision: str, device: str | None = None, announce: bool = True) -> str:
    """`precision` itself, or for `auto` what this machine computes natively (`auto_choice`). The first time a
    process resolves auto for a device it prints the choice and why on stderr (unless not `announce`)."""
    if precision != AUTO:
        return precision
    choice, why = auto_reason(device)
    if announce and (where := resolve_device(device)) not in _ANNOUNCED:
        _ANNOUNCED.add(where)
        print(f"precision auto: {choice} ({why})", file=sys.stderr, flush=True)
    return choice


def auto_reason(device: str | None = None) -> tuple[str, str]:
    """(precision, why) of `auto` on this machine's `device`: the record a run keeps of the choice."""
    where = resolve_device(device)
    if where == "cuda":
        import torch

        found = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
        return auto_choice(where, cuda_capability=found)
    return auto_choice(where, cpu_flags())


def torch_dtype(precision: str):
    """The torch dtype of `precision` (float32, bfloat16, float16)."""
    import torch

    if precision not in PRECISIONS:
        raise UserError(f"precision: unknown {precision!r} (choose from {', '.join(PRECISIONS)})")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: str, precision: str):
    """bf16/fp16 mixed precision for `precision` on `device` (weights stay as they are); a no-op for fp32."""
    import torch

    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch_dtype(precision),
                          enabled=precision != "fp32")
