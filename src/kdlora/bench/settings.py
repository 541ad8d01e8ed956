"""What `kdlora bench` measures: `BenchSettings`, validated once when made. Each field's docstring is its CLI help
(`kdlora.settings`); a sweep's bench run is keyed by these settings in full (`kdlora.keys.run_key`)."""

from __future__ import annotations

from dataclasses import dataclass

from kdlora.bench.forms import plan_forms
from kdlora.errors import UserError
from kdlora.families import PAPER_FAMILIES, get_family, model_pair
from kdlora.meters import require_energy
from kdlora.methods import get_method, paper_methods
from kdlora.precision import resolve_precision

FORMER_NAMES = {"backend": "runtime", "pretrained": "load_weights"}
"""Bench settings an experiment's `[bench]` may still name by an earlier name: that name -> today's."""


@dataclass
class BenchSettings:
    """What `kdlora bench` measures. Each field's docstring is its CLI help."""

    families: tuple[str, ...] = PAPER_FAMILIES
    """Model families (teacher -> student) to measure."""
    methods: tuple[str, ...] = paper_methods()
    """Methods: the paper's FFT and LoRA on the teacher, KD-LoRA on the student; any registered one (`kdlora
    train --help` lists them)."""
    ranks: tuple[int, ...] = (8, 16, 32, 64)
    """LoRA ranks: exact counts at every rank; memory and latency at the first unless --all-ranks."""
    device: str = "cpu"
    """Where to measure: cpu or cuda."""
    num_labels: int = 2
    """Classes of the classification head."""
    params_only: bool = False
    """Only the exact parameter counts (seconds): no training or timing."""
    all_ranks: bool = False
    """Measure memory and latency at every rank, not only the first."""
    load_weights: bool = False
    """Load real weights (hub names, or the family's offline package) instead of building from the bundled configs."""
    batch_size: int = 32
    """Training batch size of the memory measurement."""
    train_seq_len: int = 128
    """Training sequence length of the memory measurement (every sequence full length)."""
    train_steps: int = 1
    """Full-size training steps measured, after one short step that allocates the optimiser state."""
    eval_size: int = 1043
    """Sequences in the evaluation set (1,043: CoLA's dev set)."""
    eval_batch_size: int = 32
    """Evaluation batch size."""
    pad_to: int | None = None
    """Pad every evaluation sequence to this length (512 reproduces the official code); default: dynamic padding."""
    group_by_length: bool = True
    """Batch evaluation sequences of similar length together (less padding); --no-group-by-length batches in order."""
    seed: int = 0
    """Seed of the evaluation set, the training batch and the random weights."""
    threads: int | None = None
    """CPU threads per worker (default: PyTorch's, one per core)."""
    runtime: tuple[str, ...] = ("pytorch",)
    """Inference runtimes: pytorch (eager) and onnxruntime (the merged model traced to ONNX, CPU)."""
    precision: tuple[str, ...] = ("fp32",)
    """Precisions: fp32, bf16 (bf16 weights at inference, bf16 autocast in the training step; pytorch runtime, on a
    CPU with AVX512-BF16 or AMX or a CUDA GPU), auto (bf16 where the device computes it natively, else fp32)."""
    quantize: tuple[str, ...] = ("none",)
    """none, or int8: ONNX Runtime's dynamic int8 quantisation (onnxruntime runtime). Unsupported combinations of
    the three axes are skipped; a value in no supported one is an error."""
    tiny: bool = False
    """Tiny test-sized architectures (for tests and smoke runs; figures mean nothing)."""
    model: str | None = None
    """Any encoder instead of --families: a hub name, a folder or a config.json (counts need no weights)."""
    student: str | None = None
    """With --model: the KD-LoRA student, a hub name, folder or config.json, or derive:N / derive:I,J,K."""
    track_energy: bool = False
    """Energy (Wh) and emissions (g CO2-eq) of each evaluation, also per 1,000 predictions (codecarbon, offline;
    extra `energy`)."""

    def family_names(self) -> tuple[str, ...]:
        """The families measured: --families, or the one pair --model/--student name (registered here)."""
        if self.model is None:
            return self.families
        return (model_pair(self.model, self.student).name,)

    def __post_init__(self):
        """Check every field once, when made: a UserError naming the field and value."""
        if self.student is not None and self.model is None:
            raise UserError("--student needs --model")
        if self.track_energy:
            require_energy()
        for name in self.family_names():
            get_family(name)
        for name in self.methods:
            get_method(name)
        if not self.families or not self.methods or not self.ranks:
            raise UserError("families, methods and ranks must each name at least one")
        for rank in self.ranks:
            if rank <= 0:
                raise UserError(f"ranks: {rank} is not a positive integer")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"device: unknown device {self.device!r} (cpu or cuda)")
        for name in ("num_labels", "batch_size", "train_seq_len", "train_steps", "eval_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name}: {getattr(self, name)} is not a positive integer")
        if self.threads is not None and self.threads <= 0:
            raise UserError(f"threads: {self.threads} is not a positive integer")
        self.precision = tuple(dict.fromkeys(resolve_precision(p, self.device) for p in self.precision))
        self.forms()
        if self.pad_to is not None and self.pad_to < 128:
            raise UserError(f"pad_to: {self.pad_to} is shorter than the longest evaluation sentence (128 tokens)")

    def forms(self) -> list[tuple[str, str, str]]:
        """The supported (runtime, precision, quantize) combinations of the three axes (UserError if a value is in
        none; see `kdlora.bench.forms`)."""
        return plan_forms(self.runtime, self.precision, self.quantize, self.device)

