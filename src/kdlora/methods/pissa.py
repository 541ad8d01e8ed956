"""PiSSA (PEFT's `init_lora_weights="pissa"`): LoRA whose B and A start as the principal singular vectors and values
of each adapted weight W, while the frozen base keeps the residual W_res = W - s·B₀A₀ (s = alpha / r), so training
starts from the pretrained model and moves its main directions first. On the teacher (`pissa`) and on the student
with KD (`kd-pissa`); the same settings and adapter parameters as LoRA at the same rank.

Methods rather than an `init_lora_weights` setting on the LoRA methods: reports set methods against each other (a
setting would be one more configuration of LoRA, and the top-configurations median would mix the two), and PiSSA
must be saved differently, which a method does through its own hook (`saved`).

Saving: PiSSA changes the base weights, so its adapter as trained works only on W_res. PEFT converts it to plain
LoRA on the original weights (`save_pretrained(path_initial_model_for_weight_conversion=...)`: ΔW = BA - B₀A₀ =
[B | -B₀]·[A ; A₀], rank 2r at the same scale), but in peft 0.21 that conversion drops a classifier's task head
(modules_to_save). `as_lora` does the same conversion whole, head kept, on W = W_res + s·B₀A₀: what a run folder
keeps, and what predict, export and PEFT's AutoPeftModel load onto the original base.
"""

from __future__ import annotations

import copy

from kdlora.methods.lora import lora_method, lora_options

INITIAL = "_kdlora_pissa_initial"
"""The attribute of a PiSSA model holding A₀ and B₀ (by parameter name): the original weights are W_res + s·B₀A₀."""


def add_pissa(model, adaptation, settings, total_steps=None):
    """Wrap `model` in PEFT LoRA with PiSSA's initialisation (an SVD of each adapted weight, which becomes W_res);
    only adapters and `adaptation.head_modules` train. Calling it twice adds PiSSA twice."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=settings.rank, init_lora_weights="pissa",
                                                  **lora_options(adaptation, settings)))
    initial = {name: param.detach().clone() for name, param in peft_model.named_parameters()
               if ".lora_A." in name or ".lora_B." in name}
    setattr(peft_model, INITIAL, initial)
    return peft_model


def as_lora(model):
    """A copy of a PiSSA model (trained or not) as plain PEFT LoRA of rank 2r on the original weights: the same
    function of its inputs, its task head included (see the module docstring)."""
    import torch
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    initial = getattr(model, INITIAL)
    state = get_peft_model_state_dict(model)  # trained A, B and head, by PEFT's saved names
    original = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in original.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            a0, b0 = initial[f"{name}.lora_A.default.weight"], initial[f"{name}.lora_B.default.weight"]
            weight = layer.get_base_layer().weight
            weight += (layer.scaling["default"] * (b0 @ a0)).to(weight.dtype)  # W = W_res + s·B₀A₀
            a, b = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
            state[a], state[b] = torch.cat([state[a], a0]), torch.cat([state[b], -b0], dim=1)
    config = copy.deepcopy(model.peft_config["default"])
    config.init_lora_weights, config.r = True, 2 * config.r
    config.lora_alpha *= 2 ** 0.5 if config.use_rslora else 2  # alpha / r (or / sqrt r) unchanged at rank 2r
    plain = get_peft_model(original.unload(), config)
    set_peft_model_state_dict(plain, state)
    return plain


def _record(model, settings) -> dict:
    return {"init": "pissa", "saved_as": f"LoRA rank {2 * settings.rank} on the original weights"}


_options = dict(adapter="pissa", _prepare=add_pissa, _saved=as_lora, _record=_record)
PISSA = lora_method("pissa", "PiSSA", "teacher", "#64b5cd", {"linestyle": "-", "marker": "*"}, False, **_options)
KD_PISSA = lora_method("kd-pissa", "KD-PiSSA", "student", "#8c8c8c", {"linestyle": ":", "marker": "h"}, True,
                       **_options)
