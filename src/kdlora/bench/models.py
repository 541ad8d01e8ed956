"""The models a bench row measures: the method's base model (teacher or student), prepared by the method.

Parameter counts need no weights at all, so `on_meta=True` builds on PyTorch's meta device (no memory, no init):
the three paper families at every rank count in about a second.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kdlora.families import Architecture, Family, derive_student
from kdlora.methods import LoraSettings, Method


@dataclass(frozen=True)
class Counts:
    """Exact parameter counts of one (family, method, rank)."""

    adapter_params: int
    """LoRA A and B matrices only."""
    trainable_params: int
    """Adapters + head under LoRA methods; every weight under FFT."""
    total_params: int
    """The model as it runs inference: adapters merged, no duplicate head copies."""


def build_base(family: Family, method: Method, num_labels: int = 2, pretrained: bool = False, tiny: bool = False,
               on_meta: bool = False):
    """The architecture `method` fine-tunes and an untouched model of it (random init unless `pretrained`)."""
    import torch

    arch = family.architecture(method.role)
    device = torch.device("meta") if on_meta else contextlib.nullcontext()
    with device:
        if pretrained and arch.derived:
            teacher = _build(family.teacher, num_labels, pretrained=True)
            return arch, derive_student(teacher)
        return arch, _build(arch, num_labels, pretrained, tiny)


def _build(arch: Architecture, num_labels: int, pretrained: bool, tiny: bool = False):
    if not pretrained:
        return arch.build(num_labels, tiny=tiny)
    source = arch.weights_path() if arch.weights_package else arch.hub_name
    try:
        return arch.build(num_labels, pretrained=source)
    except OSError as exc:
        from kdlora.errors import UserError

        raise UserError(f"cannot load {source!r} weights ({exc}); run without --pretrained to build from the "
                        "bundled config") from None


def prepare(model, arch: Architecture, method: Method, rank: int | None):
    """The model as `method` trains it (a PEFT wrapper for LoRA methods; `rank` is ignored for FFT)."""
    return method.prepare(model, arch, LoraSettings(rank=rank or 8))


def merged(model):
    """The inference model: LoRA adapters folded into the base weights (PEFT's merge_and_unload); FFT as is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def count(family: Family, method: Method, rank: int | None, num_labels: int = 2, tiny: bool = False) -> Counts:
    """Exact counts for one row, built on the meta device (no weights are allocated)."""
    import torch

    from kdlora.params import count_parameters

    arch, base = build_base(family, method, num_labels, tiny=tiny, on_meta=True)
    with torch.device("meta"):
        model = prepare(base, arch, method, rank)
        trained = count_parameters(model)
        inference = count_parameters(merged(model))
    return Counts(trained.adapter, trained.trainable, inference.total)


def forward_flops_per_token(arch: Architecture, seq_len: int, tiny: bool = False) -> float:
    """Multiply-adds x 2 of one token through the encoder (embeddings and head are negligible).

    Per layer: Q, K, V, O projections 8h², feed-forward 4hi, attention scores and weighted sum 4sh; DeBERTa's
    disentangled attention adds content-to-position and position-to-content scores, another 4sh.
    """
    config = arch.config(tiny=tiny).to_dict()
    hidden = config.get("hidden_size") or config["dim"]
    inner = config.get("intermediate_size") or config["hidden_dim"]
    layers = config.get("num_hidden_layers") or config["n_layers"]
    attention = 4 * seq_len * hidden * (2 if config.get("relative_attention") else 1)
    return float(layers * (8 * hidden * hidden + 4 * hidden * inner + attention))
