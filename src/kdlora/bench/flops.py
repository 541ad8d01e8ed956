"""How much matrix work a step does, and how much this CPU could do: the two halves of MFU (model FLOP utilisation).

    shapes = matrix_shapes(model)                  # every Linear the forward uses, and the attention's size
    forward_flops(shapes, lengths)                 # one forward pass over sequences of these real lengths
    train_flops(shapes, lengths)                   # forward + backward (the rule below)
    peak = cpu_peak("bf16", threads)               # cores x clock x FLOP/cycle of the matrix unit, with its source
    mfu(flops, seconds, peak.flops)                # achieved FLOP/s over the peak

What is counted: matrix multiplications only (2 FLOP per multiply-add), from the model's own Linear shapes and the
real token counts: a Linear inside the encoder runs once per token, one in the head (BERT's pooler, the
classifier, DistilBERT's pre_classifier, DeBERTa's pooler) once per sequence, on its first token. Attention's
Q·Kᵀ and A·V cost 2·L²·width each per layer for a sequence of L tokens; DeBERTa's disentangled attention adds
content-to-position and position-to-content scores, counted as two more such terms (an approximation: their real
size follows the relative-position span, not L). Padding is never counted, nor embeddings, norms, softmax, GELU,
dropout or the optimiser (they are not matrix work).

The training rule: backward recomputes nothing; each matrix product's backward costs one forward for the gradient
of its input and, only when its weight trains, one more for the weight's gradient. So a fully trained model costs
3x its forward, and a frozen base (the LoRA methods) about 2x: its frozen matrices' weight gradients are never
computed, the adapters and the head (trained) cost 3x. Attention's products have two activation inputs: 3x always.
(An upper bound by a little: the first layer's frozen projections need no input gradient, and autograd skips it.)

Pure functions of shapes, lengths, flags and text, except `matrix_shapes` (reads a model) and `cpu_peak` (reads
this machine): both import nothing heavy at the top.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Matrix:
    """One weight matrix as the forward uses it: `inputs` x `outputs`, and whether its weight trains."""

    inputs: int
    outputs: int
    trains: bool = False

    @property
    def macs(self) -> int:
        """Multiply-adds per row it is applied to."""
        return self.inputs * self.outputs


@dataclass(frozen=True)
class MatrixShapes:
    """The matrix work of one model: what runs per token, what per sequence, and the attention's size."""

    per_token: tuple[Matrix, ...]
    """Every Linear applied to each token (the encoder's projections and feed-forward, LoRA's A and B)."""
    per_sequence: tuple[Matrix, ...]
    """Every Linear applied once per sequence (the head on the first token)."""
    layers: int
    """Encoder layers, each with one attention."""
    attention_width: int
    """Heads x head size: the width of Q, K and V."""
    attention_terms: int = 2
    """L x L products per layer: Q·Kᵀ and A·V (4 with DeBERTa's two relative-position score terms)."""


def forward_flops(shapes: MatrixShapes, lengths: list[int]) -> int:
    """FLOP of one forward pass over sequences of these real lengths (no padding)."""
    tokens = sum(lengths)
    squares = sum(length * length for length in lengths)
    return (2 * tokens * sum(m.macs for m in shapes.per_token)
            + 2 * len(lengths) * sum(m.macs for m in shapes.per_sequence)
            + 2 * shapes.layers * shapes.attention_terms * squares * shapes.attention_width)


def train_flops(shapes: MatrixShapes, lengths: list[int]) -> int:
    """FLOP of one training step (forward and backward) over sequences of these lengths, by the module's rule:
    a matrix costs 2x its forward (3x when its weight trains), attention's products 3x."""
    tokens = sum(lengths)
    squares = sum(length * length for length in lengths)
    return (2 * tokens * sum(m.macs * (3 if m.trains else 2) for m in shapes.per_token)
            + 2 * len(lengths) * sum(m.macs * (3 if m.trains else 2) for m in shapes.per_sequence)
            + 3 * 2 * shapes.layers * shapes.attention_terms * squares * shapes.attention_width)


def matrix_shapes(model) -> MatrixShapes:
    """The `MatrixShapes` of a transformers encoder classifier, plain or PEFT-wrapped (LoRA's A and B count where
    they are active; PEFT's kept copy of an original head does not run, so it does not count)."""
    import torch

    from kdlora.modeling import encoder_layers, head_names

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inside = {id(m) for m in encoder_layers(base).modules()}
    head = set(head_names(base))
    per_token, per_sequence = [], []
    for name, module in base.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".original_module" in f".{name}":
            continue
        matrix = Matrix(module.in_features, module.out_features, module.weight.requires_grad)
        in_head = name.split(".")[0] in head or "pooler" in name.split(".")
        (per_sequence if in_head and id(module) not in inside else per_token).append(matrix)
    config = base.config
    width = getattr(config, "hidden_size", None) or config.dim
    terms = 4 if getattr(config, "relative_attention", False) else 2
    return MatrixShapes(tuple(per_token), tuple(per_sequence), len(encoder_layers(base)), width, terms)


@dataclass(frozen=True)
class Unit:
    """A CPU's matrix unit for one precision: its /proc/cpuinfo flag, its name and its FLOP per cycle per core."""

    flag: str
    name: str
    flop_per_cycle: int
    source: str
    """Where `flop_per_cycle` comes from."""


BF16_UNITS = (
    Unit("amx_bf16", "AMX", 1024, "Intel AMX (Sapphire Rapids on): one TMUL per core, 1,024 bf16 FLOP per cycle "
         "(Intel's figure: 2,048 int8 or 1,024 bf16 operations per cycle per core)"),
    Unit("avx512_bf16", "AVX512-BF16", 128, "VDPBF16PS: 16 fp32 lanes x 2 bf16 products x 2 FLOP = 64 per "
         "instruction, 2 FMA ports (a core that splits 512-bit operations in two, as Zen 4 does, reaches half)"),
)
"""bf16 matrix units, best first: the first whose flag the CPU has gives the bf16 peak (none: bf16 is emulated,
no peak)."""

FP32_UNITS = (
    Unit("avx512f", "AVX512", 64, "2 FMA ports x 16 fp32 lanes x 2 FLOP (a one-port Xeon reaches half)"),
    Unit("avx2", "AVX2", 32, "2 FMA ports x 8 fp32 lanes x 2 FLOP"),
)
"""fp32 vector units, best first (AMX has no fp32: an AMX CPU's fp32 peak is its AVX512's)."""


def matrix_unit(precision: str, flags) -> Unit | None:
    """The unit that computes `precision` (bf16 or fp32) on a CPU with these /proc/cpuinfo flags, or None."""
    units = {"bf16": BF16_UNITS, "fp32": FP32_UNITS}.get(precision, ())
    present = set(flags)
    return next((unit for unit in units if unit.flag in present), None)


def clock_ghz(lscpu: str, cpuinfo: str) -> tuple[float | None, str]:
    """(GHz, where it came from): lscpu's `CPU max MHz`, else the GHz in the model name, else /proc/cpuinfo's
    `cpu MHz` (the current clock, or under a hypervisor the nominal one); (None, "unknown") without any."""
    found = re.search(r"^CPU max MHz:\s*([\d.]+)", lscpu, re.MULTILINE)
    if found and float(found.group(1)) > 0:
        return float(found.group(1)) / 1000, "lscpu CPU max MHz"
    found = re.search(r"^model name\s*:.*?([\d.]+)\s*GHz", cpuinfo, re.MULTILINE)
    if found:
        return float(found.group(1)), "the model name's GHz"
    found = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.MULTILINE)
    if found:
        return float(found.group(1)) / 1000, "/proc/cpuinfo cpu MHz"
    return None, "unknown"


def cpuinfo_flags(cpuinfo: str) -> frozenset[str]:
    """The first CPU's flags in /proc/cpuinfo text."""
    found = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
    return frozenset(found.group(1).split()) if found else frozenset()


@dataclass(frozen=True)
class Peak:
    """The peak FLOP/s of `cores` cores in one precision, and how it was found."""

    precision: str
    flops: float | None
    """cores x GHz x 1e9 x FLOP per cycle; None where the CPU has no unit for the precision or no known clock."""
    cores: int
    ghz: float | None
    clock_source: str
    unit: Unit | None

    def describe(self) -> str:
        if self.flops is None:
            why = "no clock found" if self.unit else f"no {self.precision} unit (emulated)"
            return f"{self.precision} peak unknown: {why}"
        return (f"{self.precision} peak {self.flops / 1e12:.2f} TFLOP/s = {self.cores} cores x {self.ghz:.2f} GHz "
                f"({self.clock_source}) x {self.unit.flop_per_cycle} FLOP/cycle ({self.unit.name}: "
                f"{self.unit.source})")


def peak(precision: str, cores: int, flags, ghz: float | None, clock_source: str) -> Peak:
    """The peak of `precision` on `cores` cores of a CPU with these flags at `ghz`."""
    unit = matrix_unit(precision, flags)
    flops = cores * ghz * 1e9 * unit.flop_per_cycle if unit and ghz else None
    return Peak(precision, flops, cores, ghz, clock_source, unit)


def cpu_peak(precision: str, cores: int) -> Peak:
    """`peak` on this machine: flags from /proc/cpuinfo, clock from lscpu or /proc/cpuinfo (`clock_ghz`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpuinfo = f.read()
    except OSError:
        cpuinfo = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                               env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    return peak(precision, cores, cpuinfo_flags(cpuinfo), *clock_ghz(lscpu, cpuinfo))


def mfu(flops: float, seconds: float, peak_flops: float | None) -> float | None:
    """Achieved FLOP/s over the peak (a fraction), None without a peak or a time."""
    if not peak_flops or not seconds:
        return None
    return flops / seconds / peak_flops
