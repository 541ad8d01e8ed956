"""One training run's settings: a typed dataclass validated once, whose field docstrings are the CLI help."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import get_type_hints

from kdlora.errors import UserError

DEFAULT_LEARNING_RATES = {
    # GLUE-sized data (thousands of steps): the usual values for BERT-base FFT and for LoRA.
    "glue": {"fft": 2e-5, "lora": 5e-4, "kd-lora": 5e-4},
    # A few thousand examples give ~150 steps: at 2e-5 FFT barely moves (0.54 dev accuracy on 800 snippets),
    # and LoRA/KD-LoRA need larger steps still; these were measured on the movie snippets.
    "small": {"fft": 1e-4, "lora": 2e-3, "kd-lora": 3e-3},
}


@dataclass
class TrainConfig:
    """Everything that decides one training run; `key()` identifies it in the results store."""

    task: str
    """GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli) or movie-snippets / movie-snippets-rating."""
    family: str
    """Model family: bert, roberta, deberta, or minilm (offline real weights)."""
    method: str
    """fft (full fine-tuning of the teacher), lora (LoRA on the teacher), kd-lora (LoRA on the student + KD)."""
    rank: int = 8
    """LoRA rank r."""
    lora_alpha: int = 16
    """LoRA alpha: the update is scaled by alpha / r."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA adapters' input."""
    use_rslora: bool = False
    """Rank-stabilised LoRA scaling alpha / sqrt(r) (PEFT)."""
    use_dora: bool = False
    """Weight-decomposed LoRA, DoRA (PEFT)."""
    seed: int = 42
    """Seed of initialisation, data order, dropout and subsampling."""
    epochs: int = 3
    """Passes over the training data."""
    learning_rate: float | None = None
    """Peak learning rate; default per method and data size: FFT 2e-5, LoRA/KD-LoRA 5e-4 on GLUE; on the small
    movie-snippet data (~150 steps) FFT 1e-4, LoRA 2e-3, KD-LoRA 3e-3, because 2e-5 leaves FFT under-trained."""
    batch_size: int = 32
    """Examples per batch (per device under accelerate)."""
    max_length: int = 128
    """Truncate inputs to this many tokens; batches pad only to their longest example."""
    max_train_samples: int | None = None
    """Train on a seeded random subset of this many examples."""
    max_eval_samples: int | None = None
    """Score dev on a seeded random subset of this many examples."""
    warmup_ratio: float = 0.1
    """Share of the real number of optimiser steps spent warming the learning rate up linearly."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    patience: int | None = None
    """Stop after this many evaluations (one per epoch) without a better dev score, counted after warm-up only."""
    temperature: float = 2.0
    """KD softmax temperature T."""
    kd_alpha: float = 0.5
    """Weight of the KD term: loss = alpha * KD + (1 - alpha) * task loss."""
    teacher: str | None = None
    """kd-lora: run folder of the trained FFT teacher (its logits supervise the student; a derived student is cut
    from it)."""
    online_teacher: bool = False
    """kd-lora: run the teacher on every batch instead of caching its logits once."""
    student_init: str = "trained"
    """Derived students (minilm): cut from the `trained` FFT teacher or from the `pretrained` teacher weights."""
    data_dir: str | None = None
    """Local GLUE data: a GLUE TSV folder, or train/validation CSV or JSONL files with named columns."""
    pretrained: str | None = None
    """Weights (hub name or folder) of the model the method trains, instead of the family's default."""
    tiny: bool = False
    """Random tiny model and tokenizer (tests, smoke runs)."""
    device: str | None = None
    """cpu or cuda; default: whatever accelerate picks."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise a UserError naming the first bad key and value."""
        from kdlora.data.tasks import get_task
        from kdlora.families import get_family
        from kdlora.methods import get_method

        self.task = get_task(self.task).name
        self.family = get_family(self.family).name
        self.method = get_method(self.method).name
        checks = {
            "rank": self.rank > 0, "lora_alpha": self.lora_alpha > 0, "lora_dropout": 0 <= self.lora_dropout < 1,
            "epochs": self.epochs > 0, "batch_size": self.batch_size > 0, "max_length": self.max_length >= 8,
            "learning_rate": self.learning_rate is None or self.learning_rate > 0,
            "max_train_samples": self.max_train_samples is None or self.max_train_samples > 0,
            "max_eval_samples": self.max_eval_samples is None or self.max_eval_samples > 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1, "weight_decay": self.weight_decay >= 0,
            "patience": self.patience is None or self.patience > 0, "temperature": self.temperature > 0,
            "kd_alpha": 0 <= self.kd_alpha <= 1, "student_init": self.student_init in ("trained", "pretrained"),
            "device": self.device in (None, "cpu", "cuda"),
        }
        for key, ok in checks.items():
            if not ok:
                raise UserError(f"config: bad value for {key}: {getattr(self, key)!r}")

    @property
    def lr(self) -> float:
        """The learning rate in effect (the per-method default when none was given)."""
        from kdlora.data.tasks import get_task

        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LEARNING_RATES["small" if get_task(self.task).small_data else "glue"][self.method]

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from plain values (JSON, YAML, CLI); unknown keys and wrong types are UserErrors."""
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserError(f"config: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in values]
        if missing:
            raise UserError(f"config: missing key {missing[0]!r}")
        clean = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
        return cls(**clean)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self, num_processes: int = 1) -> str:
        """The run's identity and its key in the results store: sha256 of the canonical JSON of the full config
        (precision included) and of the number of training processes, which multiplies the effective batch."""
        return run_key(self.to_dict(), num_processes)


def run_key(config: dict, num_processes: int = 1) -> str:
    """`TrainConfig.key()` of a full config dict (as the store holds it)."""
    canonical = json.dumps({"kind": "train", "config": config, "num_processes": num_processes}, sort_keys=True,
                           separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _coerce(key: str, value, hint):
    """`value` as the field's type (bool, int, float, str, or None where allowed), else a UserError."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise UserError(f"config: {key} may not be empty")
    for kind in (bool, int, float, str):
        if kind.__name__ in text.replace("None", ""):
            break
    if kind is bool and not isinstance(value, bool):
        raise UserError(f"config: {key} must be true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        raise UserError(f"config: {key} must be a number, got {value!r}")
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"config: {key} must be {kind.__name__}, got {value!r}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise UserError(f"config: {key} must be a whole number, got {value!r}")
    return converted


def field_docs(cls=TrainConfig) -> dict[str, str]:
    """Each dataclass field's docstring (the string under it in the class body): the CLI's help text.

    Used for every settings dataclass (`TrainConfig`, `BenchSettings`), so field docs and `--help` never diverge.
    """
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs
