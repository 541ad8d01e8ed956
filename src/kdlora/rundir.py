"""A trained run folder: writing it (and what it records about the machine), and reading back its config,
metrics, tokenizer and model.

Layout written by `kdlora train`:
    metrics.json   status, task metrics, sizes, timings, the full config
    run.json       how to rebuild the model: {"kind": "full" | "adapter", "base": hub name, folder or "base"}
    tokenizer/     the tokenizer the run encoded with
    model/         FFT: the whole fine-tuned model (safetensors)
    adapter/       LoRA methods: the PEFT adapter (save_pretrained), head included
    base/          the adapter's base weights when they exist nowhere else (tiny builds, derived students)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from kdlora.errors import UserError
from kdlora.files import read_json, staged_output
from kdlora.modeling import new_head_expected


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
            base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=info["num_labels"],
                                                                      **_labels(info))
    except OSError:
        raise UserError(f"{run_dir}: cannot load the adapter's base model {base_path}") from None
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    return (model.merge_and_unload() if merged else model).eval()


def _labels(info: dict) -> dict:
    """The run's class names (run.json `id2label`, written since runs name a file task's labels) as kwargs."""
    if not info.get("id2label"):
        return {}
    id2label = {int(i): name for i, name in info["id2label"].items()}
    return {"id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}


def peak_memory() -> dict:
    """CUDA: max_memory_allocated since the run's reset. CPU: the process's peak RSS so far (every run in the
    process counts, so run configurations in separate processes to compare them)."""
    import torch

    if torch.cuda.is_available():
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "memory_kind": "cuda-max-allocated"}
    import resource

    return {"peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "memory_kind": "cpu-peak-rss-process"}


def environment(accelerator=None) -> dict:
    """Where the run trained: the bench's machine description plus the training processes and threads."""
    import accelerate
    import torch

    from kdlora.bench.environment import describe_environment

    device = str(accelerator.device) if accelerator else "cpu"
    return {**describe_environment(device), "accelerate": accelerate.__version__, "device": device,
            "num_processes": accelerator.num_processes if accelerator else 1,
            "torch_threads": torch.get_num_threads()}


def save_run(out_dir, metrics: dict, model, tokenizer, base: str | None, num_labels: int) -> None:
    """Write metrics.json, run.json, the tokenizer and the model: full weights, or the PEFT adapter (plus its base
    weights when `base` is None). A run without a model (collapsed early) writes metrics.json only."""
    with staged_output(out_dir) as stage:
        if model is not None:
            adapter = hasattr(model, "peft_config")
            if adapter:
                model.save_pretrained(stage / "adapter")
                if base is None:
                    # a tiny or derived base exists only in memory: keep its untouched weights beside the adapter
                    copy.deepcopy(model).unload().save_pretrained(stage / "base")
            else:
                model.save_pretrained(stage / "model")
            tokenizer.save_pretrained(stage / "tokenizer")
            info = {"kind": "adapter" if adapter else "full", "base": base or "base", "num_labels": num_labels,
                    "id2label": {str(i): n for i, n in model.config.id2label.items()}}
            _write_json(stage / "run.json", info)
        _write_json(stage / "metrics.json", metrics)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
