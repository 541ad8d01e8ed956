"""What a fine-tuning method is: which model it starts from, which parameters train, and its loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters, passed to PEFT as they are."""

    rank: int = 8
    """Rank r of the update B·A."""
    alpha: int = 16
    """Scaling numerator: the update is multiplied by alpha / r (alpha / sqrt(r) with rsLoRA)."""
    dropout: float = 0.1
    """Dropout on the adapter's input."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r) (PEFT's `use_rslora`)."""
    use_dora: bool = False
    """Weight-decomposed LoRA (PEFT's `use_dora`)."""

    def __post_init__(self):
        if self.rank <= 0:
            from kdlora.errors import UserError

            raise UserError(f"rank must be a positive integer, got {self.rank}")


def task_loss(logits, labels, regression: bool):
    """Cross-entropy, or MSE for a regression head; in float32 whatever the logits' dtype (mixed precision)."""
    import torch
    import torch.nn.functional as F

    logits = logits.to(torch.float32)
    if regression:
        return F.mse_loss(logits.view(-1), labels.view(-1).to(torch.float32))
    return F.cross_entropy(logits, labels.view(-1))


def add_lora(model, adaptation, lora: LoraSettings):
    """Wrap `model` in PEFT LoRA on `adaptation.lora_targets`; only adapters and `adaptation.head_modules` train
    (`kdlora.modeling.adaptation` finds both)."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(adaptation.lora_targets),
        modules_to_save=list(adaptation.head_modules),
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
    )
    return get_peft_model(model, config)


def _train_everything(model, adaptation, lora):
    for param in model.parameters():
        param.requires_grad_(True)
    return model


@dataclass(frozen=True)
class Method:
    """A fine-tuning method. The training loop asks it what to do and never branches on its name."""

    name: str
    """CLI name: `fft`, `lora`, `kd-lora`."""
    label: str
    """Name in the paper's tables: `FFT`, `LoRA`, `KD-LoRA`."""
    role: str
    """Which model of the family it fine-tunes: "teacher" or "student"."""
    distills: bool
    """Whether its loss needs the FFT teacher's logits."""
    uses_lora: bool
    """Whether adapters are added (and can be merged for inference)."""
    _prepare: Callable = field(repr=False, default=_train_everything)

    def prepare(self, model, adaptation, lora: LoraSettings | None = None):
        """Set which parameters train (`adaptation`: where LoRA goes, what else trains; see
        `kdlora.modeling.adaptation`); returns the model to train (a PEFT wrapper for LoRA methods)."""
        return self._prepare(model, adaptation, lora or LoraSettings())

    def loss(self, logits, labels, teacher_logits=None, regression: bool = False, temperature: float = 2.0,
             alpha: float = 0.5):
        """The training loss of one batch."""
        if not self.distills:
            return task_loss(logits, labels, regression)
        if teacher_logits is None:
            raise ValueError(f"method {self.name} needs teacher logits")
        from kdlora.distill import kd_loss

        return kd_loss(logits, teacher_logits, labels, temperature=temperature, alpha=alpha,
                       regression=regression)
