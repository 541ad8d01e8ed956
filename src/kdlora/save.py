"""Writing a run folder (see `kdlora.runs` for the layout) and what it records about the machine."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from kdlora.outputs import staged_output


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
            info = {"kind": "adapter" if adapter else "full", "base": base or "base", "num_labels": num_labels}
            _write_json(stage / "run.json", info)
        _write_json(stage / "metrics.json", metrics)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
