"""AdaLoRA (PEFT's AdaLoraConfig): SVD-shaped adapters P·Λ·Q whose rank budget shrinks from `rank` per matrix to
`target_rank` on average while training, on the teacher (`adalora`) and on the student with KD (`kd-adalora`).

What PEFT leaves to the training loop, done here: the total step count goes into the config (`prepare` is given
it), `update_and_allocate` runs after every optimiser step (before gradients are zeroed: it scores importance from
them), and the orthogonal regulariser is added to our own loss (PEFT's `AdaLoraModel.forward` adds it to
`outputs.loss` only when the labels go into the model, and our loss is computed outside it). The rank budget
(initial, target, final) is recorded in the run. A checkpoint holds the budget's importance scores (their moving
averages) and the rank pattern, so a resumed run allocates as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlora.methods.lora import LORA_MARKERS, lora_method, lora_options

ADALORA_MARKERS = (*LORA_MARKERS, ".lora_E.")
"""P (lora_A), Q (lora_B) and the singular values Λ (lora_E) of each adapted matrix."""

NOMINAL_STEPS = 1000
"""The step count a model built only to be counted or benched is configured with (no schedule runs there)."""


@dataclass
class AdaLoraSettings:
    """AdaLoRA's rank budget and regulariser (its initial rank is --rank)."""

    target_rank: int = 4
    """AdaLoRA: the average rank per adapted matrix the budget shrinks to (from --rank)."""
    adalora_tinit: float = 0.1
    """AdaLoRA: share of the optimiser steps trained at the full budget before it starts to shrink."""
    adalora_tfinal: float = 0.2
    """AdaLoRA: share of the optimiser steps at the end trained with the final budget fixed."""
    adalora_delta_t: int = 1
    """AdaLoRA: optimiser steps between two budget allocations."""
    orth_reg_weight: float = 0.5
    """AdaLoRA: weight of the orthogonal regulariser (mean of ||PPᵀ - I|| and ||QᵀQ - I||) in the loss."""

    def checks(self) -> dict[str, bool]:
        return {"target_rank": 0 < self.target_rank <= getattr(self, "rank", self.target_rank),
                "adalora_tinit": 0 <= self.adalora_tinit < 1, "adalora_tfinal": 0 <= self.adalora_tfinal < 1,
                "adalora_delta_t": self.adalora_delta_t > 0, "orth_reg_weight": self.orth_reg_weight >= 0} | (
            {"adalora_tfinal": self.adalora_tinit + self.adalora_tfinal < 1} if self.adalora_tfinal else {})


def schedule(settings, total_steps: int) -> dict:
    """PEFT's (total_step, tinit, tfinal) from shares of the run's optimiser steps; a budgeting phase remains."""
    total = max(1, total_steps)
    return {"total_step": total, "tinit": int(settings.adalora_tinit * total),
            "tfinal": int(settings.adalora_tfinal * total)}


def add_adalora(model, adaptation, settings, total_steps=None):
    """Wrap `model` in PEFT AdaLoRA on `adaptation.lora_targets` for a run of `total_steps` optimiser steps."""
    from peft import AdaLoraConfig, get_peft_model

    options = {k: v for k, v in lora_options(adaptation, settings).items() if k != "use_rslora"}
    config = AdaLoraConfig(init_r=settings.rank, target_r=settings.target_rank, deltaT=settings.adalora_delta_t,
                           orth_reg_weight=settings.orth_reg_weight,
                           **schedule(settings, total_steps or NOMINAL_STEPS), **options)
    return get_peft_model(model, config)


def orthogonal_regulariser(model, settings):
    """`orth_reg_weight` x the mean over adapted matrices of ||PPᵀ - I||_F and ||QᵀQ - I||_F (PEFT's formula)."""
    import torch

    terms = []
    for name, param in model.named_parameters():
        if param.requires_grad and (".lora_A." in name or ".lora_B." in name):
            p = param.float()
            cov = p @ p.T if ".lora_A." in name else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(*cov.shape, device=cov.device), ord="fro"))
    return settings.orth_reg_weight * torch.stack(terms).mean() if terms else 0.0


def _peft_model(model):
    return model.base_model  # the AdaLoraModel inside the PeftModel


def update_and_allocate(model, step: int, settings) -> None:
    """PEFT's budget update after optimiser step `step` (1-based, so the budget is fixed at total - tfinal)."""
    _peft_model(model).update_and_allocate(step)


class BudgetState:
    """The rank allocator's state a checkpoint must hold: the importance scores' moving averages (PEFT keeps them
    on the allocator, outside the model and the optimiser) and the rank pattern of the final allocation."""

    def __init__(self, model):
        self.peft = _peft_model(model)

    def state_dict(self) -> dict:
        allocator = self.peft.rankallocator
        config = self.peft.peft_config[self.peft.trainable_adapter_name]
        return {"ipt": dict(allocator.ipt), "exp_avg_ipt": dict(allocator.exp_avg_ipt),
                "exp_avg_unc": dict(allocator.exp_avg_unc), "rank_pattern": config.rank_pattern}

    def load_state_dict(self, state: dict) -> None:
        allocator = self.peft.rankallocator
        allocator.ipt, allocator.exp_avg_ipt = dict(state["ipt"]), dict(state["exp_avg_ipt"])
        allocator.exp_avg_unc = dict(state["exp_avg_unc"])
        self.peft.peft_config[self.peft.trainable_adapter_name].rank_pattern = state["rank_pattern"]


def rank_budget(model, settings) -> dict:
    """The budget as it went: initial and target totals, the schedule, and the ranks the saved adapter keeps per
    matrix (the best evaluation's: `kdlora.train.loop` restores its rank pattern with its weights)."""
    peft = _peft_model(model)
    config = peft.peft_config[peft.trainable_adapter_name]
    pattern = config.rank_pattern or {}
    kept = {name: int(sum(bool(x) for x in mask)) for name, mask in pattern.items()}
    return {"init_rank": config.init_r, "target_rank": config.target_r, "total_step": config.total_step,
            "tinit": config.tinit, "tfinal": config.tfinal, "delta_t": config.deltaT,
            "initial_budget": peft.rankallocator.init_bgt, "target_budget": peft.rankallocator.target_bgt,
            "final_budget": sum(kept.values()) if kept else None, "ranks_kept": kept}


_options = dict(adapter="adalora", adapter_markers=ADALORA_MARKERS, _prepare=add_adalora,
                _extra_loss=orthogonal_regulariser, _after_step=update_and_allocate, _record=rank_budget,
                _checkpointed=BudgetState)
ADALORA = lora_method("adalora", "AdaLoRA", "teacher", "#da8bc3", {"linestyle": "-", "marker": "P"}, False,
                      own_settings=(AdaLoraSettings,), **_options)
KD_ADALORA = lora_method("kd-adalora", "KD-AdaLoRA", "student", "#ccb974", {"linestyle": ":", "marker": "X"}, True,
                         own_settings=(AdaLoraSettings,), **_options)
