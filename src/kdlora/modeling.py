"""Building, loading and cutting models, for train, bench and export alike.

- `build_config` / `TINY_SIZES`: a transformers config from a plain dict (tiny sizes for tests).
- `load_pretrained`: (model, tokenizer) from a hub name or folder with a fresh task head.
- `build_base` / `count`: the model a method fine-tunes, on the meta device for exact counts (no weights).
- `derive_student`: a student cut from a teacher by keeping some of its encoder layers.
- `prepare` / `merged`: the model as a method trains it, and as it runs inference.

Nothing here reads run folders (that is `kdlora.rundir`); heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

from kdlora.errors import UserError
from kdlora.methods import LoraSettings

# Small sizes per model type for tests and smoke runs: same code paths, seconds instead of minutes.
TINY_SIZES = {
    "bert": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                 vocab_size=1000, max_position_embeddings=128),
    "roberta": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                    vocab_size=1000, max_position_embeddings=130),
    "distilbert": dict(dim=32, n_heads=2, hidden_dim=64, vocab_size=1000,
                       max_position_embeddings=128),
    "deberta-v2": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                       vocab_size=1000, pooler_hidden_size=32, position_buckets=16,
                       max_position_embeddings=128),
}


def build_config(values: dict, num_labels: int = 2, tiny: bool = False, depth: int | None = None,
                 tiny_depth: int | None = None, **overrides):
    """A transformers config from a config.json dict with a `num_labels` head; `tiny` shrinks it for tests."""
    from transformers import AutoConfig

    values = dict(values)
    model_type = values.pop("model_type")
    depth_key = "n_layers" if "n_layers" in values else "num_hidden_layers"
    values[depth_key] = depth or values[depth_key]
    if tiny:
        # keep the teacher/student depth ratio: 12 layers -> 2, 6 -> 1
        values[depth_key] = tiny_depth or max(1, values[depth_key] // 6)
        values.update(TINY_SIZES[model_type])
    values.update(overrides)
    config = AutoConfig.for_model(model_type, **values)
    config.num_labels = num_labels
    return config


@contextlib.contextmanager
def new_head_expected():
    """Silence transformers' load report while loading an encoder whose task head is new by design."""
    from transformers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def load_pretrained(source: str, num_labels: int, architecture=None):
    """(model, tokenizer) from a hub name or folder, with a fresh `num_labels` head; errors name the source."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        with new_head_expected():
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
    except OSError as exc:
        hint = f" (the {architecture.display_name} weights)" if architecture else ""
        raise UserError(f"cannot load {source}{hint}: {str(exc).splitlines()[0]}; pass --pretrained with a local "
                        "folder") from None
    return model, tokenizer


def default_source(architecture) -> str:
    """Where an architecture's pretrained weights come from: its pip package when it has one, else the hub."""
    return architecture.weights_path() if architecture.weights_package else architecture.hub_name


def encoder_layers(model):
    """The `nn.ModuleList` of transformer blocks inside a (possibly PEFT-wrapped) encoder model."""
    import torch

    candidates = [m for name, m in model.named_modules()
                  if isinstance(m, torch.nn.ModuleList) and name.endswith(("encoder.layer", "transformer.layer"))]
    if len(candidates) != 1:
        raise ValueError(f"cannot find the encoder layers of {type(model).__name__}")
    return candidates[0]


def derive_student(model, keep: list[int] | None = None):
    """A copy of `model` keeping encoder layers `keep` (default every other one: 0, 2, 4, ...); `model` is untouched.

    This is how DistilBERT was initialised from BERT; embeddings and head are copied as they are.
    """
    import torch

    student = copy.deepcopy(model)
    layers = encoder_layers(student)
    keep = list(range(0, len(layers), 2)) if keep is None else list(keep)
    if not keep or any(not 0 <= i < len(layers) for i in keep):
        raise ValueError(f"layers to keep {keep} are not within 0..{len(layers) - 1}")
    kept = torch.nn.ModuleList(layers[i] for i in keep)
    parent_name = next(n for n, m in student.named_modules() if m is layers).rsplit(".", 1)
    parent = student.get_submodule(parent_name[0])
    setattr(parent, parent_name[1], kept)
    depth_key = "n_layers" if hasattr(student.config, "n_layers") else "num_hidden_layers"
    setattr(student.config, depth_key, len(keep))
    return student


@dataclass(frozen=True)
class Counts:
    """Exact parameter counts of one (family, method, rank)."""

    adapter_params: int
    """LoRA A and B matrices only."""
    trainable_params: int
    """Adapters + head under LoRA methods; every weight under FFT."""
    total_params: int
    """The model as it runs inference: adapters merged, no duplicate head copies."""


def build_base(family, method, num_labels: int = 2, pretrained: bool = False, tiny: bool = False,
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


def _build(arch, num_labels: int, pretrained: bool, tiny: bool = False):
    if not pretrained:
        return arch.build(num_labels, tiny=tiny)
    source = arch.weights_path() if arch.weights_package else arch.hub_name
    try:
        return arch.build(num_labels, pretrained=source)
    except OSError as exc:
        raise UserError(f"cannot load {source!r} weights ({exc}); run without --pretrained to build from the "
                        "bundled config") from None


def prepare(model, arch, method, rank: int | None):
    """The model as `method` trains it (a PEFT wrapper for LoRA methods; `rank` is ignored for FFT)."""
    return method.prepare(model, arch, LoraSettings(rank=rank or 8))


def merged(model):
    """The inference model: LoRA adapters folded into the base weights (PEFT's merge_and_unload); FFT as is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def count(family, method, rank: int | None, num_labels: int = 2, tiny: bool = False) -> Counts:
    """Exact counts for one row, built on the meta device (no weights are allocated)."""
    import torch

    from kdlora.params import count_parameters

    arch, base = build_base(family, method, num_labels, tiny=tiny, on_meta=True)
    with torch.device("meta"):
        model = prepare(base, arch, method, rank)
        trained = count_parameters(model)
        inference = count_parameters(merged(model))
    return Counts(trained.adapter, trained.trainable, inference.total)


def forward_flops_per_token(arch, seq_len: int, tiny: bool = False) -> float:
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
