"""Exact parameter counts of a model, adapters and trainable parts apart."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamCounts:
    adapter: int
    """LoRA A and B matrices only."""
    trainable: int
    """Everything that receives gradients: adapters + task head under LoRA, all weights under FFT."""
    total: int
    """Every parameter of the model as it stands (merge adapters first for the inference size)."""


def count_parameters(model) -> ParamCounts:
    """Count `model`'s parameters; shared (tied) tensors are counted once, and a PEFT model's task head once (its
    frozen original copy, kept beside the trained one for unloading, is not part of the model that runs)."""
    seen: set[int] = set()
    adapter = trainable = total = 0
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen or ".original_module." in name:  # PEFT keeps the untrained head beside the trained
            continue
        seen.add(id(param))
        n = param.numel()
        total += n
        if param.requires_grad:
            trainable += n
        if ".lora_A." in name or ".lora_B." in name:
            adapter += n
    return ParamCounts(adapter=adapter, trainable=trainable, total=total)
