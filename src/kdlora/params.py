"""Exact parameter counts of a model, adapters and trainable parts apart."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamCounts:
    adapter: int
    """The method's adapter parameters (`Method.adapter_markers`: LoRA's A and B, DoRA's magnitude vectors, ...)."""
    trainable: int
    """Everything that receives gradients: adapters + task head under LoRA, all weights under FFT."""
    total: int
    """Every parameter of the model as it stands (merge adapters first for the inference size)."""


def count_parameters(model, method=None) -> ParamCounts:
    """Count `model`'s parameters, the adapter parameters as `method` (a registered `Method`) marks them; shared
    (tied) tensors are counted once, and a PEFT model's task head once (its frozen original copy, kept beside the
    trained one for unloading, is not part of the model that runs). Without a method no parameter is an adapter's."""
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
        if method is not None and method.is_adapter_parameter(name):
            adapter += n
    return ParamCounts(adapter=adapter, trainable=trainable, total=total)
