"""LoRA+ (Hayou et al. 2024; PEFT's `create_loraplus_optimizer`): LoRA whose B matrices learn `loraplus_lr_ratio`
times faster than A, on the teacher (`lora-plus`) and on the student with KD (`kd-lora-plus`). The adapters and
their count are LoRA's; only the optimiser's parameter groups differ, which the method gives the loop through
`Method.parameter_groups`. A keeps LoRA's learning rate (the per-method default or --learning-rate), so a run
against LoRA's changes B's rate alone.

PEFT's grouping is kept as it is: B matrices and every vector (biases, the head's bias) at lr x ratio, A matrices
and the head's weight matrices at lr, all with the run's weight decay but the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlora.methods.lora import lora_method


@dataclass
class LoraPlusSettings:
    """LoRA+'s learning-rate ratio."""

    loraplus_lr_ratio: float = 16.0
    """LoRA+: B's learning rate over A's (the paper's and PEFT's suggested 2^4)."""

    def checks(self) -> dict[str, bool]:
        return {"loraplus_lr_ratio": self.loraplus_lr_ratio >= 1}


def _groups_only(groups, **options):
    """Stands in for PEFT's optimiser class: returns the parameter groups PEFT builds (the loop builds AdamW)."""
    return groups


def loraplus_groups(model, settings) -> list[dict]:
    """The optimiser's parameter groups as PEFT's `create_loraplus_optimizer` makes them (B at lr x ratio)."""
    from peft.optimizers import create_loraplus_optimizer

    groups = create_loraplus_optimizer(model, _groups_only, lr=settings.lr,
                                       loraplus_lr_ratio=settings.loraplus_lr_ratio,
                                       loraplus_weight_decay=settings.weight_decay)
    return [group for group in groups if group["params"]]  # no embedding adapters here: that group is empty


_options = dict(adapter="lora-plus", own_settings=(LoraPlusSettings,), _parameter_groups=loraplus_groups)
LORA_PLUS = lora_method("lora-plus", "LoRA+", "teacher", "#b07aa1", {"linestyle": "-", "marker": "p"}, False,
                        **_options)
KD_LORA_PLUS = lora_method("kd-lora-plus", "KD-LoRA+", "student", "#9c755f", {"linestyle": ":", "marker": "8"}, True,
                           **_options)
