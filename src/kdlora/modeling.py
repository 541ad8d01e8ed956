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
import warnings
from dataclasses import dataclass

from kdlora.errors import UserError
from kdlora.params import ParamCounts, count_parameters

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


def load_pretrained(source: str, num_labels: int, architecture=None, flag: str = "--pretrained"):
    """(model, tokenizer, missing) from a hub name or folder with a `num_labels` head; `missing` names the
    parameters the checkpoint did not provide (a new head: they must train). Errors name the source."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        with new_head_expected():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as exc:
        hint = f" (the {architecture.display_name} weights)" if architecture else ""
        raise UserError(f"cannot load {source}{hint}: {str(exc).splitlines()[0]}; pass {flag} with a local "
                        "folder") from None
    mismatched = [entry[0] if isinstance(entry, tuple | list) else entry
                  for entry in info.get("mismatched_keys", ())]
    return model, tokenizer, tuple(sorted({*info.get("missing_keys", ()), *mismatched}))


def default_source(architecture) -> str:
    """Where an architecture's pretrained weights come from: its pip package when it has one, else the hub."""
    return architecture.weights_path() if architecture.weights_package else architecture.hub_name


def encoder_layers(model):
    """The `nn.ModuleList` of transformer blocks inside a (possibly PEFT-wrapped) encoder model."""
    import torch

    candidates = [m for name, m in model.named_modules()
                  if isinstance(m, torch.nn.ModuleList) and name.endswith(("encoder.layer", "transformer.layer"))]
    if len(candidates) != 1:
        raise UserError(f"cannot cut layers from {type(model).__name__}: it has no single list of encoder layers "
                        "(ALBERT shares one layer across depth); pass --student NAME_OR_PATH instead")
    return candidates[0]


def parse_student(spec: str | None) -> str | int | tuple[int, ...] | None:
    """`derive:N` -> N, `derive:I,J,K` -> (I, J, K), a name or folder as it is; None (every other layer) stays."""
    if spec is None or not spec.startswith("derive:"):
        return spec
    parts = [p.strip() for p in spec.removeprefix("derive:").split(",")]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"--student {spec!r}: derive:N (a number of layers) or derive:I,J,K (layer indices)")
    numbers = [int(p) for p in parts]
    if len(numbers) == 1 and "," not in spec:
        return numbers[0]
    return tuple(numbers)


def layers_to_keep(depth: int, how: int | tuple[int, ...] | None) -> list[int]:
    """Which of `depth` layers a student keeps: every other one (None), N evenly spaced ones starting at 0 (an int:
    12 -> 6 keeps 0, 2, ..., 10 as DistilBERT did), or exactly the indices given (a tuple)."""
    if how is None:
        how = (depth + 1) // 2
    if isinstance(how, int):
        if not 1 <= how <= depth:
            raise UserError(f"--student derive:{how}: the teacher has {depth} layers; keep 1 to {depth}")
        return [i * depth // how for i in range(how)]
    keep = list(how)
    if not keep or any(not 0 <= i < depth for i in keep) or len(set(keep)) != len(keep):
        raise UserError(f"--student derive:{','.join(map(str, keep))}: layer indices must be distinct and within "
                        f"0..{depth - 1}")
    return keep


def derive_student(model, keep=None):
    """A copy of `model` keeping encoder layers `keep` (see `layers_to_keep`: every other one by default, N evenly
    spaced, or exact indices); `model` is untouched.

    This is how DistilBERT was initialised from BERT; embeddings and head are copied as they are.
    """
    import torch

    student = copy.deepcopy(model)
    layers = encoder_layers(student)
    keep = layers_to_keep(len(layers), keep)
    kept = torch.nn.ModuleList(layers[i] for i in keep)
    parent_name = next(n for n, m in student.named_modules() if m is layers).rsplit(".", 1)
    parent = student.get_submodule(parent_name[0])
    setattr(parent, parent_name[1], kept)
    depth_key = "n_layers" if hasattr(student.config, "n_layers") else "num_hidden_layers"
    setattr(student.config, depth_key, len(keep))
    return student


def build_base(family, method, num_labels: int = 2, load_weights: bool = False, tiny: bool = False,
               on_meta: bool = False):
    """The architecture `method` fine-tunes and an untouched model of it (random init unless `load_weights`: its real
    weights, from the family's offline package or the hub)."""
    import torch

    arch = family.architecture(method.role)
    device = torch.device("meta") if on_meta else contextlib.nullcontext()
    with device:
        if load_weights and arch.derived:
            teacher = _build(family.teacher, num_labels, load_weights=True)
            return arch, derive_student(teacher, arch.keep)
        return arch, _build(arch, num_labels, load_weights, tiny)


def _build(arch, num_labels: int, load_weights: bool, tiny: bool = False):
    if not load_weights:
        return arch.build(num_labels, tiny=tiny)
    source = arch.weights_path() if arch.weights_package else arch.hub_name
    try:
        return arch.build(num_labels, pretrained=source)
    except OSError as exc:
        raise UserError(f"cannot load {source!r} weights ({exc}); run without --load-weights to build from the "
                        "bundled config") from None


def prepare(model, method, rank: int | None, targets=None):
    """The model as `method` trains it at its default settings (a PEFT wrapper for the adapter methods; `rank` is
    ignored for FFT)."""
    where = adaptation(model, targets=targets) if method.uses_lora else None
    return method.prepare(model, where, method.default_settings(rank))


def merged(model):
    """The inference model: LoRA adapters folded into the base weights (PEFT's merge_and_unload); FFT as is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def count(family, method, rank: int | None, num_labels: int = 2, tiny: bool = False) -> ParamCounts:
    """Exact counts for one row, built on the meta device (no weights are allocated): adapters and trainable as the
    method trains, total as the model runs inference (adapters merged). The trainable count is checked against PEFT's
    own (`get_nb_trainable_parameters`) for an adapter method."""
    import torch

    arch, base = build_base(family, method, num_labels, tiny=tiny, on_meta=True)
    with torch.device("meta"):
        model = prepare(base, method, rank)
        trained = count_parameters(model, method)
        if hasattr(model, "get_nb_trainable_parameters") and \
                model.get_nb_trainable_parameters()[0] != trained.trainable:
            raise RuntimeError(f"{method.name}: {trained.trainable:,} trainable parameters counted, PEFT counts "
                               f"{model.get_nb_trainable_parameters()[0]:,}")
        inference = count_parameters(merged(model), method)
    return ParamCounts(adapter=trained.adapter, trainable=trained.trainable, total=inference.total)


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


QUERY_NAMES = ("query", "query_proj", "q_proj", "q_lin", "q")
VALUE_NAMES = ("value", "value_proj", "v_proj", "v_lin", "v")
"""How encoders name the attention's query and value projections (BERT, DeBERTa, BART-style, DistilBERT, MPNet)."""


@dataclass(frozen=True)
class Adaptation:
    """Where LoRA goes in one model and which of its other modules train (PEFT's modules_to_save)."""

    lora_targets: tuple[str, ...]
    """Module names LoRA adapts (PEFT matches them against the end of each module's name)."""
    head_modules: tuple[str, ...]
    """The task head and every module holding parameters the checkpoint did not provide."""


def lora_targets(model) -> tuple[str, ...]:
    """PEFT's default LoRA targets for the model type where it has one, else the attention's query and value
    Linear layers found by name; a model with neither is a UserError saying what to pass."""
    import torch
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model_type = model.config.model_type
    if PEFT_DEFAULTS.get(model_type):
        return tuple(PEFT_DEFAULTS[model_type])
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and name}
    query = next((n for n in QUERY_NAMES if n in linear), None)
    value = next((n for n in VALUE_NAMES if n in linear), None)
    if query and value:
        return (query, value)
    head = set(head_names(model))
    candidates = sorted(linear - head)
    raise UserError(f"{model_type}: no attention query/value Linear layers found (looked for "
                    f"{'/'.join(QUERY_NAMES)} and {'/'.join(VALUE_NAMES)}); pass --lora-targets with two of its "
                    f"Linear layer names: {', '.join(candidates[:12]) or 'none found'}")


def head_names(model) -> tuple[str, ...]:
    """The task head: the top-level modules with parameters outside the encoder (`base_model_prefix`), e.g.
    BERT's classifier, DistilBERT's pre_classifier and classifier, DeBERTa's pooler and classifier."""
    prefix = getattr(model, "base_model_prefix", "")
    return tuple(name for name, child in model.named_children()
                 if name != prefix and any(True for _ in child.parameters()))


def new_modules(model, missing: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The task head plus the modules of parameters the checkpoint did not provide (`missing`, the loading
    report's missing keys: a checkpoint without BERT's pooler, say); pretrained parts stay out."""
    params = dict(model.named_parameters())
    extra = sorted({key.rsplit(".", 1)[0] for key in missing if key in params})
    head = head_names(model)
    inside_head = [m for m in extra if m.split(".")[0] not in head]
    return (*head, *inside_head)


def adaptation(model, missing: tuple[str, ...] = (), targets: str | tuple[str, ...] | None = None) -> Adaptation:
    """Where LoRA goes in `model` (`targets` overrides: a comma list or names) and which modules train besides."""
    if isinstance(targets, str):
        targets = tuple(t.strip() for t in targets.split(",") if t.strip())
    if targets:
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()} | {n for n, _ in model.named_modules()}
        unknown = [t for t in targets if t not in names]
        if unknown:
            raise UserError(f"--lora-targets: {type(model).__name__} has no module named {unknown[0]!r}")
    return Adaptation(tuple(targets) if targets else lora_targets(model), new_modules(model, missing))


def name_labels(model, names) -> None:
    """Write the task's class names into the model's config, so saved and exported models print them."""
    if names and len(names) == model.config.num_labels:
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: i for i, name in enumerate(names)}


def quiet_peft_deprecation() -> None:
    """PEFT calls a transformers alias that 5.x deprecates: noise, not news, for a user."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
