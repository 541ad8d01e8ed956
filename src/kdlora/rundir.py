"""A trained run folder: writing it (and what it records about the machine), and reading back its config,
metrics, tokenizer and model — each reader checks the folder is whole first (`check_run`).

Layout written by `kdlora train`:
    metrics.json   status, task metrics, sizes, timings, the full config, the best evaluation's dev predictions
    README.md      the model card (Hugging Face layout, `kdlora.card`), written from metrics.json and run.json
    run.json       how to rebuild the model: {"kind": "full" | "adapter" | "none", "base", "num_labels"}, and the
                   manifest of every other file (size, sha256; see `kdlora.files`)
    tokenizer/     the tokenizer the run encoded with
    model/         FFT: the whole fine-tuned model (safetensors)
    adapter/       LoRA methods: the PEFT adapter (save_pretrained), head included, and the tokenizer; its
                   adapter_config.json names the base below (or the hub name / folder the base was loaded from),
                   so PEFT's AutoPeftModel loads the run with PEFT alone
    base/          the adapter's base weights when they exist nowhere else (tiny builds, derived students)

A collapsed run that kept no model has kind "none". Loading a damaged file with --no-verify is still one
UserError naming the folder, never a traceback.

A run folder may come from anyone: it names nothing outside itself. Every file its manifest lists, and each folder
above that is read, resolves inside it; an adapter's `base` is "base" (the folder's own `base/`), a model hub name
(never a folder of the working directory), or the folder of a weights package kdlora installs (MiniLM's); a run
trained on any other local folder keeps its base weights in `base/`. Anything else is one UserError.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path

from kdlora.bench.environment import describe_environment
from kdlora.card import run_card, write_card
from kdlora.config import TrainConfig
from kdlora.data.dataset_tasks import task_name
from kdlora.errors import UserError
from kdlora.families import model_label, weights_folders
from kdlora.files import (
    inside,
    read_json,
    read_manifest,
    staged_output,
    unreadable_is_damage,
    verify,
    write_json,
    write_manifest,
)
from kdlora.modeling import new_head_expected

MANIFEST = "run.json"
WHAT = "kdlora run folder"


def check_run(run_dir: str | Path, verify_files: bool = True) -> dict:
    """run.json of `run_dir`, after checking every file it lists (unless `verify_files` is False)."""
    if verify_files:
        return verify(run_dir, MANIFEST, WHAT)
    return read_manifest(run_dir, MANIFEST, WHAT)


def load_metrics(run_dir: str | Path) -> dict:
    metrics = read_json(run_dir, "metrics.json")
    if not isinstance(metrics, dict):
        raise UserError(f"{Path(run_dir) / 'metrics.json'}: not the metrics of a kdlora run (a JSON "
                        f"{type(metrics).__name__}); re-run it")
    return metrics


def is_run_folder(ref: str | Path) -> bool:
    """Whether `ref` is a run folder (rather than a hub name or a model folder)."""
    return (Path(ref) / MANIFEST).is_file() or (Path(ref) / "metrics.json").is_file()


def fill_defaults(values: dict) -> None:
    """A task from files is called `custom` unless named, one from a dataset by the dataset's name; an encoder
    given by --model labels its own family; with --teacher RUN and neither --model nor --family, the model and its
    label are the teacher run's."""
    if values.get("train_file") and "task" not in values:
        values["task"] = "custom"
    if values.get("dataset") and "task" not in values:
        values["task"] = task_name(values["dataset"])
    # only when nothing names the model: reading a teacher run's config before it is verified (train does that
    # first) is kept to the case that needs it
    if values.get("teacher") and "model" not in values and "family" not in values:
        if is_run_folder(values["teacher"]):
            teacher = load_config(values["teacher"])
            values["family"] = teacher.family
            if teacher.model is not None:
                values["model"] = teacher.model
            elif teacher.tiny and "tiny" not in values:
                values["tiny"] = True  # a named family's tiny build is the model too
    if values.get("model") and "family" not in values:
        values["family"] = model_label(values["model"])


def load_config(run_dir: str | Path) -> TrainConfig:
    """The settings a run folder was trained with (its metrics.json's `config`)."""
    values = load_metrics(run_dir).get("config")
    path = Path(run_dir) / "metrics.json"
    if not isinstance(values, dict):
        raise UserError(f"{path}: no training config in it (key 'config'); not written by `kdlora train`: re-run it")
    try:
        return TrainConfig.from_dict(values)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def load_tokenizer(run_dir: str | Path):
    from transformers import AutoTokenizer

    path = inside(run_dir, "tokenizer", f"{run_dir} holds")
    with unreadable_is_damage(path, "tokenizer"):
        return AutoTokenizer.from_pretrained(str(path))


def load_model(run_dir: str | Path, merged: bool = False, info: dict | None = None):
    """The run's trained model in eval mode: FFT's full model, or the base with its PEFT adapter (`merged`: the
    adapter folded into the weights, a plain transformers model). `info`: run.json when already read."""
    from transformers import AutoModelForSequenceClassification

    run_dir = Path(run_dir)
    info = info if info is not None else check_run(run_dir, verify_files=False)
    kind = info.get("kind")
    if kind == "none":
        raise UserError(f"{run_dir}: the run collapsed and kept no model (see its metrics.json)")
    if kind == "full":
        folder = inside(run_dir, "model", f"{run_dir} holds")
        with unreadable_is_damage(folder, "model"):
            return AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    if kind != "adapter" or not isinstance(info.get("num_labels"), int):
        raise UserError(f"{run_dir / MANIFEST}: not a kdlora run.json (kind {kind!r}); re-run it")
    from peft import PeftModel

    local = info.get("base") == "base"
    base_path = base_source(run_dir, info)
    adapter = inside(run_dir, "adapter", f"{run_dir} holds")
    try:
        # the adapter carries the trained head: the base's new one is expected
        with unreadable_is_damage(Path(base_path), "adapter's base model"), new_head_expected():
            base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=info["num_labels"],
                                                                      **_labels(info))
    except UserError:
        if local:
            raise
        raise UserError(f"{run_dir}: cannot load the adapter's base model {base_path}") from None
    with unreadable_is_damage(adapter, "adapter"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PEFT asks transformers a deprecated question on loading
        model = PeftModel.from_pretrained(base, str(adapter))
        return (model.merge_and_unload() if merged else model).eval()


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""A model hub repository id: `name` or `owner/name`."""


def base_source(run_dir: str | Path, info: dict) -> str:
    """What an adapter run's base weights load from: its own `base/`, a hub name, or a weights package's folder
    (see the module docstring); a UserError for any other path run.json names."""
    run_dir, base = Path(run_dir), info.get("base")
    if base == "base":
        return str(inside(run_dir, "base", f"{run_dir} holds"))
    if isinstance(base, str) and Path(base).is_absolute() and Path(base).resolve() in weights_folders():
        return base
    if isinstance(base, str) and HUB_NAME.fullmatch(base) and ".." not in base and not Path(base).exists():
        return base
    raise UserError(f"{run_dir / MANIFEST}: base {base!r} is not the run's own base/ or a model hub name (a folder "
                    "outside the run, or a name a folder here shadows): a run folder may only name its own files; "
                    "nothing was loaded")


def _labels(info: dict) -> dict:
    """The run's class names (run.json `id2label`, written since runs name a file task's labels) as kwargs."""
    if not info.get("id2label"):
        return {}
    id2label = {int(i): name for i, name in info["id2label"].items()}
    return {"id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}


def _point_adapter_at(adapter_dir: Path, base: str) -> None:
    """Make adapter_config.json name the weights the adapter was trained on, so that PEFT's own loaders
    (`AutoPeftModelForSequenceClassification.from_pretrained(RUN/"adapter")`) build the right model: PEFT writes
    the name the model was loaded from, which for a student cut from a teacher is the teacher's. `base` is a hub
    name or an absolute folder (a run moved elsewhere then fails to load its base, loudly)."""
    path = adapter_dir / "adapter_config.json"
    values = json.loads(path.read_text(encoding="utf-8"))
    values["base_model_name_or_path"] = base
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def environment(accelerator=None) -> dict:
    """Where the run trained: the bench's machine description plus the training processes and threads."""
    import accelerate
    import torch

    device = str(accelerator.device) if accelerator else "cpu"
    return {**describe_environment(device), "accelerate": accelerate.__version__, "device": device,
            "num_processes": accelerator.num_processes if accelerator else 1,
            "torch_threads": torch.get_num_threads()}


def save_run(out_dir, metrics: dict, model, tokenizer, base: str | None, num_labels: int) -> None:
    """Write metrics.json, the tokenizer and the model: full weights, or the PEFT adapter (plus its base weights
    when `base` is None); then run.json, the manifest of them all. A run without a model (collapsed early) writes
    metrics.json and run.json only."""
    with staged_output(out_dir) as stage:
        if model is not None:
            adapter = hasattr(model, "peft_config")
            if adapter:
                model.save_pretrained(stage / "adapter")
                if base is None:
                    # a tiny or derived base exists only in memory: keep its untouched weights beside the adapter
                    copy.deepcopy(model).unload().save_pretrained(stage / "base")
                _point_adapter_at(stage / "adapter", base or str((Path(out_dir) / "base").resolve()))
                tokenizer.save_pretrained(stage / "adapter")  # PEFT's AutoPeftModel loads the tokenizer it finds here
            else:
                model.save_pretrained(stage / "model")
            tokenizer.save_pretrained(stage / "tokenizer")
            info = {"kind": "adapter" if adapter else "full", "base": base or "base", "num_labels": num_labels,
                    "id2label": {str(i): n for i, n in model.config.id2label.items()}}
        else:
            info = {"kind": "none"}
        write_json(stage / "metrics.json", metrics)
        card = run_card(metrics, info, out_dir)
        write_card(stage, card)
        if (stage / "adapter").is_dir():
            write_card(stage / "adapter", card)  # in place of PEFT's empty template: the adapter folder is shareable
        write_manifest(stage, MANIFEST, info)
