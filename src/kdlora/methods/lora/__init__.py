"""LoRA (PEFT) on the attention's query and value plus the task head: on the teacher (`lora`), on the smaller
student with KD (`kd-lora`), and on the student with the task loss only (`student-lora`, the ablation that says how
much of KD-LoRA's score is the distillation and how much the smaller model)."""

from __future__ import annotations

from dataclasses import dataclass

from kdlora.errors import UserError
from kdlora.methods.base import DISTILLING, Method

LORA_MARKERS = (".lora_A.", ".lora_B.")
"""PEFT's names of the A and B matrices of a LoRA update B·A."""

# GLUE-sized data (thousands of steps): the usual LoRA value. The movie snippets (~150 steps) need larger steps,
# measured there: 2e-3 for LoRA on the teacher, 3e-3 on the student.
TEACHER_RATES = {"glue": 5e-4, "small": 2e-3}
STUDENT_RATES = {"glue": 5e-4, "small": 3e-3}


@dataclass
class LoraSettings:
    """LoRA hyper-parameters, passed to PEFT as they are."""

    rank: int = 8
    """LoRA rank r (AdaLoRA: the initial rank of every adapted matrix)."""
    lora_alpha: int = 16
    """LoRA alpha: the update is scaled by alpha / r."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA adapters' input."""
    use_rslora: bool = False
    """Rank-stabilised LoRA scaling alpha / sqrt(r) (PEFT)."""

    def __post_init__(self):
        if self.rank <= 0:
            raise UserError(f"rank must be a positive integer, got {self.rank}")

    def checks(self) -> dict[str, bool]:
        return {"rank": self.rank > 0, "lora_alpha": self.lora_alpha > 0, "lora_dropout": 0 <= self.lora_dropout < 1}


def lora_options(adaptation, settings) -> dict:
    """The LoraConfig arguments every LoRA variant shares."""
    from peft import TaskType

    return dict(task_type=TaskType.SEQ_CLS, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                target_modules=list(adaptation.lora_targets), modules_to_save=list(adaptation.head_modules),
                use_rslora=settings.use_rslora)


def add_lora(model, adaptation, settings, total_steps=None, use_dora: bool = False):
    """Wrap `model` in PEFT LoRA on `adaptation.lora_targets`; only adapters and `adaptation.head_modules` train
    (`kdlora.modeling.adaptation` finds both). Calling it twice adds LoRA twice."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=settings.rank, use_dora=use_dora, **lora_options(adaptation, settings)))


def lora_method(name: str, label: str, role: str, colour: str, line: dict, distills: bool, own_settings: tuple = (),
                **options) -> Method:
    """A method of the LoRA kind (LoRA's settings, then `own_settings`, then `DISTILLING`'s if it distils: KD's,
    the transfer data's and the hidden terms'; its adapters and learning rates); `options` override."""
    adapter = label.removeprefix("KD-").removeprefix("Student-")
    summary = f"{adapter} on the {role}, " + ("distilled from the FFT teacher" if distills else "task loss only")
    values = dict(name=name, label=label, summary=summary, role=role, colour=colour, line=line, distills=distills,
                  adapter="lora",
                  learning_rates=STUDENT_RATES if role == "student" else TEACHER_RATES,
                  settings=(LoraSettings, *own_settings, *(DISTILLING if distills else ())),
                  adapter_markers=LORA_MARKERS, _prepare=add_lora)
    return Method(**{**values, **options})


LORA = lora_method("lora", "LoRA", "teacher", "#dd8452", {"linestyle": "-", "marker": "o"}, False, in_paper=True)
KD_LORA = lora_method("kd-lora", "KD-LoRA", "student", "#55a868", {"linestyle": ":", "marker": "^"}, True,
                      in_paper=True)
STUDENT_LORA = lora_method("student-lora", "Student-LoRA", "student", "#8172b3", {"linestyle": "-.", "marker": "v"},
                           False)
