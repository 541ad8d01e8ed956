"""A trained run folder, read back: its config, metrics, tokenizer and model.

Layout written by `kdlora train`:
    metrics.json   status, task metrics, sizes, timings, the full config
    run.json       how to rebuild the model: {"kind": "full" | "adapter", "base": hub name, folder or "base"}
    tokenizer/     the tokenizer the run encoded with
    model/         FFT: the whole fine-tuned model (safetensors)
    adapter/       LoRA methods: the PEFT adapter (save_pretrained), head included
    base/          the adapter's base weights when they exist nowhere else (tiny builds, derived students)
"""

from __future__ import annotations

import json
from pathlib import Path

from kdlora.errors import UserError
from kdlora.modeling import new_head_expected


def read_json(run_dir: str | Path, name: str) -> dict:
    path = Path(run_dir) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a kdlora run folder (no {name})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def load_metrics(run_dir: str | Path) -> dict:
    return read_json(run_dir, "metrics.json")


def load_config(run_dir: str | Path):
    from kdlora.config import TrainConfig

    return TrainConfig.from_dict(load_metrics(run_dir)["config"])


def load_tokenizer(run_dir: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(run_dir) / "tokenizer"))


def load_model(run_dir: str | Path, merged: bool = False):
    """The run's trained model in eval mode: FFT's full model, or the base with its PEFT adapter (`merged`: the
    adapter folded into the weights, a plain transformers model)."""
    from transformers import AutoModelForSequenceClassification

    run_dir = Path(run_dir)
    info = read_json(run_dir, "run.json")
    if info["kind"] == "full":
        return AutoModelForSequenceClassification.from_pretrained(str(run_dir / "model")).eval()
    from peft import PeftModel

    base_path = str(run_dir / "base") if info["base"] == "base" else info["base"]
    try:
        with new_head_expected():  # the adapter carries the trained head
            base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=info["num_labels"])
    except OSError:
        raise UserError(f"{run_dir}: cannot load the adapter's base model {base_path}") from None
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    return (model.merge_and_unload() if merged else model).eval()
