"""What a fine-tuning method is: a plug-in that owns everything the rest of the toolkit asks of a method.

A `Method` says which model it starts from (`role`), what trains (`prepare`, which sees the run's settings and its
total optimiser steps), its loss (`loss`: from the model's outputs, the batch and the teacher's logits, plus the
method's own term), its optimiser's parameter groups (`parameter_groups`), an optional hook after each optimiser
step, the form its trained model is saved in (`saved`), its settings dataclasses (whose fields become `TrainConfig`
fields, CLI flags and experiment keys), its label, colour and line in tables and plots, its default
learning rates, which parameters count as adapter parameters, and what it records about itself in a run. The
training loop, the sweep, the bench and the analysis ask it and never branch on its name.

Light on purpose (the analysis imports the registry and must not pay for torch): heavy imports live in functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import ClassVar

from kdlora.errors import UserError
from kdlora.hidden import HiddenDistillSettings


def task_loss(logits, labels, regression: bool, label_smoothing: float = 0.0):
    """Cross-entropy (against labels smoothed by `label_smoothing`), or MSE for a regression head; in float32
    whatever the logits' dtype (mixed precision)."""
    import torch
    import torch.nn.functional as F

    logits = logits.to(torch.float32)
    if regression:
        return F.mse_loss(logits.view(-1), labels.view(-1).to(torch.float32))
    return F.cross_entropy(logits, labels.view(-1), label_smoothing=label_smoothing)


@dataclass
class DistillSettings:
    """How a distilling method mixes the teacher's soft targets into its loss."""

    temperature: float = 2.0
    """KD softmax temperature T."""
    kd_alpha: float = 0.5
    """Weight of the KD term: loss = alpha * KD + (1 - alpha) * task loss."""
    teacher_precision: str = "fp32"
    """What the teacher's logits are computed in (stored float32 either way): fp32 (the paper's, and every run stored
    before this setting), auto (the run's precision: bf16 where the run trains in bf16; the main job's and the demo's:
    3.2-3.8x faster logits, the same predicted class on all 2,000 main-job sentences), bf16 or fp16 (under autocast).
    Cached apart per precision."""

    def checks(self) -> dict[str, bool]:
        from kdlora.precision import PRECISION_CHOICES

        return {"temperature": self.temperature > 0, "kd_alpha": 0 <= self.kd_alpha <= 1,
                "teacher_precision": self.teacher_precision in PRECISION_CHOICES}


ALL = "all"
"""`transfer_samples = "all"`: every training example outside the labelled subset."""


@dataclass
class TransferSettings:
    """Transfer data: unlabelled text the teacher labels, beside the labelled training examples
    (`kdlora.data.transfer`). On a transfer example the student's loss is the KD term alone (no label), unless the
    teacher's hard label stands in for the missing one."""

    transfer_file: str | None = None
    """Distilling methods: unlabelled text the teacher labels (CSV, TSV, JSONL or Parquet holding the task's text
    column(s); a label column is ignored), trained on beside the labelled examples with the KD term alone."""
    transfer_samples: int | str | None = None
    """Distilling methods: N (or `all`) training-split examples outside the --max-train-samples subset, drawn by the
    seed, their labels withheld, as transfer data (0: none)."""
    transfer_hard_label: bool = False
    """Distilling methods with transfer data: the teacher's predicted class (regression: its value) stands in for a
    transfer example's missing label: its loss is then alpha * KD + (1 - alpha) * task loss against it."""

    CONTENT_KEYED: ClassVar = ("transfer_file",)
    """Settings naming a file: a run's key holds the file's content digest, not its path (`kdlora.config`)."""
    READ_BY: ClassVar = "a distilling method (kd-lora, kd-dora, ...)"
    """Who reads these settings: given to any other method they are a UserError, not ignored."""

    @staticmethod
    def canonical(values: dict) -> None:
        """Write `transfer_samples` one way in `values` (a run's settings by name): a count as an int, `all` in
        lower case, 0 as None (off, so a run without transfer data keeps the key it always had)."""
        samples = values.get("transfer_samples")
        if isinstance(samples, str) and samples.strip().isdigit():
            samples = int(samples)
        elif isinstance(samples, str):
            samples = samples.strip().lower()
        values["transfer_samples"] = None if samples == 0 else samples

    def checks(self) -> dict[str, bool]:
        samples = self.transfer_samples
        if self.transfer_file is not None and samples is not None:
            raise UserError("--transfer-file and --transfer-samples: pass one (the file, or examples of the "
                            "training split)")
        if self.transfer_hard_label and self.transfer_file is None and samples is None:
            raise UserError("--transfer-hard-label needs transfer data: --transfer-file or --transfer-samples")
        count = isinstance(samples, int) and not isinstance(samples, bool) and samples > 0
        return {"transfer_samples": samples is None or samples == ALL or count,
                "transfer_file": self.transfer_file is None or bool(self.transfer_file.strip())}


DISTILLING = (DistillSettings, TransferSettings, HiddenDistillSettings)
"""The settings every distilling method reads: how KD mixes into the loss, the transfer data it is taught on, and
the hidden-state and attention terms (`kdlora.hidden`; off by default, so a run that leaves them keys as before)."""


def decay_groups(model, settings) -> list[dict]:
    """AdamW's usual groups: matrices with the run's weight decay, vectors (biases, norms) without."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _train_everything(model, adaptation, settings, total_steps):
    for param in model.parameters():
        param.requires_grad_(True)
    return model


@dataclass(frozen=True)
class Method:
    """A fine-tuning method. The training loop asks it what to do and never branches on its name."""

    name: str
    """CLI name: `fft`, `lora`, `kd-lora`, ..."""
    label: str
    """Name in tables and plots: `FFT`, `LoRA`, `KD-LoRA`, ..."""
    summary: str
    """What it trains and how, in a few words (the `--method` help): "LoRA on the student, distilled"."""
    role: str
    """Which model of the family it fine-tunes: "teacher" or "student"."""
    learning_rates: dict
    """Default peak learning rate by data size: "glue" (thousands of steps) and "small" (~150 steps)."""
    colour: str = "#7f7f7f"
    """Its colour in every plot."""
    line: dict = field(default_factory=lambda: {"linestyle": "-", "marker": "o"})
    """Its matplotlib line style and marker."""
    distills: bool = False
    """Whether its loss needs the FFT teacher's logits."""
    teaches: bool = False
    """Whether its runs are the teachers distilling methods learn from (full fine-tuning)."""
    adapter: str | None = None
    """The adapter it adds ("lora", "dora", "adalora"; None: full fine-tuning). Methods with one adapter are set
    against each other in reports: on the teacher, on the student, on the student with KD."""
    in_paper: bool = False
    """One of the paper's three methods (the default of `kdlora bench` and of Table II)."""
    settings: tuple[type, ...] = ()
    """Settings dataclasses whose fields it reads (each field a `TrainConfig` setting, a CLI flag and an experiment
    key; in a run's key only where it reads them, at a value other than the default: `kdlora.config`). Each class
    has `checks(self) -> {field: ok}`, called with the run's config."""
    adapter_markers: tuple[str, ...] = ()
    """Parameter-name parts that mark its adapter parameters (`.lora_A.`, a DoRA magnitude vector, ...)."""
    _prepare: Callable = field(repr=False, default=_train_everything)
    _extra_loss: Callable | None = field(repr=False, default=None)
    """(model, settings) -> the method's own loss term, added to the task or KD loss."""
    _after_step: Callable | None = field(repr=False, default=None)
    """(model, step, settings) -> None, after every optimiser step (before gradients are zeroed)."""
    _record: Callable | None = field(repr=False, default=None)
    """(model, settings) -> a dict the run records about the method (AdaLoRA: its rank budget)."""
    _parameter_groups: Callable = field(repr=False, default=decay_groups)
    """(model, settings) -> the optimiser's parameter groups; a group may set its own `lr` (LoRA+: B's is higher)
    and `weight_decay`; the run's learning rate is `settings.lr`."""
    _saved: Callable | None = field(repr=False, default=None)
    """(model) -> the model as a run folder keeps it, when not as trained (PiSSA, which changed its base weights:
    plain LoRA on the original ones)."""
    _checkpointed: Callable | None = field(repr=False, default=None)
    """(model) -> an object with `state_dict`/`load_state_dict` that a checkpoint holds beyond the weights, the
    optimiser and the schedule, so a resumed run goes on as an uninterrupted one (AdaLoRA: its importance scores)."""

    @property
    def uses_lora(self) -> bool:
        """Whether adapters are added (and merged for inference)."""
        return self.adapter is not None

    def default_settings(self, rank: int | None = None) -> SimpleNamespace:
        """Every setting the method reads at its default (`rank` overriding), for the bench and counts."""
        values = {}
        for cls in self.settings:
            values.update({f.name: f.default for f in fields(cls)})
        if rank is not None and "rank" in values:
            values["rank"] = rank
        return SimpleNamespace(**values)

    def prepare(self, model, adaptation, settings=None, total_steps: int | None = None):
        """Set which parameters train (`adaptation`: where adapters go, what else trains; see
        `kdlora.modeling.adaptation`; `settings`: a TrainConfig or anything with the method's setting names;
        `total_steps`: the run's optimiser steps); returns the model to train (a PEFT wrapper for adapters)."""
        return self._prepare(model, adaptation, settings or self.default_settings(), total_steps)

    def loss(self, model, outputs, batch: dict, teacher_logits=None, settings=None, regression: bool = False):
        """The training loss of one batch: task loss (or KD against `teacher_logits`) plus the method's own term.
        `batch` holds the labels and, in a run with transfer data, `labelled` (False: a transfer example, whose loss
        is the KD term alone, or with `transfer_hard_label` KD plus the task loss against the teacher's label);
        `settings` the temperature and KD weight of a distilling method."""
        logits, labels = outputs.logits, batch["labels"]
        if not self.distills:
            loss = task_loss(logits, labels, regression)
        elif teacher_logits is None:
            raise ValueError(f"method {self.name} needs teacher logits")
        else:
            from kdlora.distill import kd_loss, teacher_labelled

            settings = settings or self.default_settings()
            labelled = batch.get("labelled")
            if labelled is not None and settings.transfer_hard_label:
                labels, labelled = teacher_labelled(labels, labelled, teacher_logits, regression), None
            loss = kd_loss(logits, teacher_logits, labels, temperature=settings.temperature,
                           alpha=settings.kd_alpha, regression=regression, labelled=labelled)
        if self._extra_loss is not None:
            loss = loss + self._extra_loss(model, settings or self.default_settings())
        return loss

    def after_step(self, model, step: int, settings=None) -> None:
        """Called after optimiser step `step` (1-based), before gradients are zeroed."""
        if self._after_step is not None:
            self._after_step(model, step, settings or self.default_settings())

    def record(self, model, settings=None) -> dict | None:
        """What a run stores about the method beyond its settings (None for most)."""
        return self._record(model, settings or self.default_settings()) if self._record else None

    def parameter_groups(self, model, settings) -> list[dict]:
        """The optimiser's parameter groups for `model` (`settings`: a TrainConfig, with `lr` and `weight_decay`)."""
        return self._parameter_groups(model, settings)

    def saved(self, model):
        """The trained `model` in the form its run folder keeps (itself for most methods; None stays None)."""
        return self._saved(model) if self._saved is not None and model is not None else model

    def checkpointed(self, model):
        """The method's own training state for checkpoints (None for most): see `_checkpointed`."""
        return self._checkpointed(model) if self._checkpointed else None

    def is_adapter_parameter(self, name: str) -> bool:
        """Whether the parameter called `name` is one of the method's adapter parameters."""
        return any(marker in name for marker in self.adapter_markers)
