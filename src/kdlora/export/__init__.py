"""Export a trained run as one deployable model: LoRA adapters merged, with its tokenizer and label names.

    export_run("runs/ml-kd", "exported/", ExportSettings(format="onnx", quantize="int8"))

Forms: `safetensors` (a plain transformers folder, fp32 or bf16 weights: `AutoModelForSequenceClassification.
from_pretrained` loads it without PEFT or kdlora) and `onnx` (fp32, or int8 by ONNX Runtime's dynamic quantisation;
predicting with it needs neither torch nor transformers). Every form is written to a staging folder, scored there
on the run's dev split beside the run's own PyTorch fp32 model, and moved into place only when all of it worked:
`export.json` records the form and `accuracy`, `reference_accuracy` and `agreement`; README.md is the model card
(`kdlora.card`), which the manifest covers like every other file.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from kdlora.card import export_card, write_card
from kdlora.errors import UserError
from kdlora.export.onnx_model import quantize_int8, write_onnx
from kdlora.export.scoring import score_export
from kdlora.files import staged_output, write_manifest
from kdlora.precision import AUTO, check_precision, resolve_precision, torch_dtype
from kdlora.predict import EXPORT_INFO
from kdlora.rundir import check_run, load_config, load_metrics, load_model, load_tokenizer

FORMATS = ("safetensors", "onnx")
EXPORT_PRECISIONS = ("fp32", "bf16", "auto")
QUANTIZATIONS = ("none", "int8")


@dataclass
class ExportSettings:
    """The form of an export. Each field's docstring is its CLI help."""

    format: str = "safetensors"
    """safetensors (a plain transformers model) or onnx (ONNX Runtime: predicting needs no torch)."""
    precision: str = "fp32"
    """Weights' precision: fp32, or bf16 (safetensors; needs a CPU with AVX512-BF16 or AMX), or auto (bf16 for
    safetensors where this CPU computes it natively, else fp32; ONNX is fp32 before any quantisation)."""
    quantize: str = "none"
    """int8: ONNX Runtime's dynamic quantisation of the weights (onnx only); none keeps the precision's weights."""

    def __post_init__(self):
        """Validated once, when made: one UserError for a form kdlora cannot write or this machine cannot score."""
        if self.precision == AUTO:
            self.precision = "fp32" if self.format == "onnx" else resolve_precision(AUTO, "cpu")
        for name, allowed in (("format", FORMATS), ("precision", EXPORT_PRECISIONS), ("quantize", QUANTIZATIONS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name}: unknown {getattr(self, name)!r} (choose from {', '.join(allowed)})")
        if self.quantize == "int8" and self.format != "onnx":
            raise UserError("--quantize int8 needs --format onnx (int8 is ONNX Runtime's dynamic quantisation; "
                            "PyTorch int8 is not supported)")
        if self.precision == "bf16" and self.format == "onnx":
            raise UserError("--precision bf16 with --format onnx: ONNX Runtime's CPU kernels have no fast bf16 "
                            "path; use --quantize int8, or --format safetensors --precision bf16")
        if self.format == "onnx":
            missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
            if missing:
                raise UserError(f"--format onnx needs {' and '.join(missing)}: pip install 'kdlora[onnx]'")
        check_precision(self.precision, "cpu")


def check_run_weights(run_dir: str | Path, verify: bool = True) -> dict:
    """The run's run.json, once its files are whole (checked against it unless not `verify`) and its config and
    weights are known to be there; else a UserError naming what is missing or damaged."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() and (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir}: the run has no saved model (no run.json: did it collapse?)")
    info = check_run(run_dir, verify)
    load_config(run_dir)
    kind = info.get("kind")
    if kind == "none":
        raise UserError(f"{run_dir}: the run collapsed and kept no model (see its metrics.json)")
    needed = ["model/model.safetensors"] if kind == "full" else ["adapter/adapter_model.safetensors"]
    if kind != "full" and info.get("base") == "base":
        needed.append("base/model.safetensors")
    needed.append("tokenizer/tokenizer_config.json")
    for name in needed:
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir}: the run's weights are missing (no {name})")
    return info


def export_run(run_dir: str | Path, out_dir: str | Path, settings: ExportSettings | None = None,
               score: bool = True, verify: bool = True) -> dict:
    """Write the run's merged model in `settings`' form into `out_dir` and return its export.json (which is also
    the folder's manifest: each file's size and sha256). The run folder is checked first unless not `verify`.

    `score` runs the exported model and the run's PyTorch fp32 model over the run's dev split (the figures go
    into export.json); nothing is written to `out_dir` unless writing and scoring both succeed.
    """
    settings = settings or ExportSettings()
    info = check_run_weights(run_dir, verify)
    config = load_config(run_dir)
    task = config.task_spec()
    model, tokenizer = load_model(run_dir, merged=True, info=info), load_tokenizer(run_dir)
    names = task.label_names
    if names and len(names) == model.config.num_labels:
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: i for i, name in enumerate(names)}
    with staged_output(out_dir) as stage:
        model_file = _write_model(model, tokenizer, stage, settings)
        tokenizer.save_pretrained(stage)
        info = {**dataclasses.asdict(settings), "task": task.name, "labels": list(names), "model_file": model_file,
                "text_fields": list(task.text_fields), "regression": task.regression, "metric": task.metric,
                "max_length": config.max_length, "pad_token": tokenizer.pad_token,
                "pad_token_id": tokenizer.pad_token_id, "family": config.family, "method": config.method,
                "source_run": str(run_dir), "size_bytes": (stage / model_file).stat().st_size}
        _write_info(stage, info)
        if score:
            info.update(score_export(stage, model, tokenizer, config))
        write_card(stage, export_card(info, load_metrics(run_dir), out_dir))
        _write_info(stage, info)
    return info


def _write_model(model, tokenizer, stage: Path, settings: ExportSettings) -> str:
    """Write the model's weights in the asked form into `stage`; returns the weights' file name."""
    if settings.format == "safetensors":
        copy.deepcopy(model).to(torch_dtype(settings.precision)).save_pretrained(stage)
        return "model.safetensors"

    model.config.save_pretrained(stage)  # label names and sizes, for a reader of the folder
    if settings.quantize == "int8":
        write_onnx(model, tokenizer, stage / "model-fp32.onnx")
        quantize_int8(stage / "model-fp32.onnx", stage / "model.onnx")
        (stage / "model-fp32.onnx").unlink()
    else:
        write_onnx(model, tokenizer, stage / "model.onnx")
    return "model.onnx"


def _write_info(stage: Path, info: dict) -> None:
    """export.json: `info` and the manifest of every other file in `stage` (written before scoring too, so the
    scoring reads a whole export)."""
    info.update(write_manifest(stage, EXPORT_INFO, info))
