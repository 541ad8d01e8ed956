"""Model cards: the README.md of every run folder and every export, in the Hugging Face layout, written from what
the folder already holds (a run's metrics.json and run.json; an export's export.json and its run's metrics.json).
No figure is computed here: every number is one of those files', so a card says what its folder says.

The YAML front matter (read by the hub and by `huggingface_hub.ModelCard`) holds `library_name` (peft for an
adapter run, transformers for a full model or a safetensors export, onnx for an ONNX export), `base_model` (the
pretrained weights the run started from; a student cut from a teacher: that teacher's), `datasets` (the hub
dataset, where there is one), `tags` and a `model-index` whose results are the dev metrics: as trained, in fp32 for
a mixed-precision run, and an export's own dev score. The text says what the model is, how it was trained, its dev
scores, its cost and how to load it.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from kdlora.data.dataset_tasks import name_and_config
from kdlora.data.tasks import TASKS
from kdlora.families import FAMILIES
from kdlora.hidden import HiddenDistillSettings
from kdlora.methods import get_method, twin

README = "README.md"
HUB_METRICS = {"accuracy": "accuracy", "f1": "f1", "macro_f1": "f1", "mcc": "matthews_correlation",
               "pearson": "pearsonr", "spearman": "spearmanr"}
"""Our metric names as the hub's metric ids (a name not here is its own id: `pearson_spearman`, ...)."""
GLUE_HUB = "nyu-mll/glue"


def run_card(metrics: dict, info: dict, folder: str | Path) -> str:
    """The README.md of a run folder from its metrics.json (`metrics`) and run.json (`info`)."""
    config, name = metrics["config"], Path(folder).name
    library = "peft" if info.get("kind") == "adapter" else "transformers"
    sections = [_what(metrics, name), _training(metrics), _scores(metrics), _cost(metrics),
                _load_run(info.get("kind"), str(folder), metrics)]
    return _front(config, library, _tags(config), _trained_results(metrics), name) + "\n\n".join(sections) + "\n"


def export_card(export: dict, metrics: dict, folder: str | Path) -> str:
    """The README.md of an export from its export.json (`export`) and its run's metrics.json (`metrics`)."""
    config, name = metrics["config"], Path(folder).name
    onnx = export["format"] == "onnx"
    form = f"{export['format']} {export['precision']}" + (" int8" if export["quantize"] == "int8" else "")
    tags = _tags(config) + ["merged"] + (["onnx"] if onnx else []) + (["int8"] if export["quantize"] == "int8" else [])
    results = _trained_results(metrics)
    lines = [f"This folder is the run `{export['source_run']}` exported as one model ({form}), its adapters merged "
             "into the weights: it needs neither PEFT nor kdlora."]
    if "accuracy" in export:
        results.insert(0, _result(config, metrics, export["metric"], export["accuracy"], f"exported ({form})"))
        lines.append(f"On {export['dev_examples']:,} {export['dev_split']} examples its dev {export['metric']} is "
                     f"{export['accuracy']:.4f}, the run's PyTorch fp32 model's {export['reference_accuracy']:.4f}; "
                     f"their predictions agree on {export['agreement']:.2%}.")
    sections = [_what(metrics, name), "## Export\n\n" + " ".join(lines), _training(metrics), _scores(metrics),
                _cost(metrics), _load_export(export, str(folder))]
    return _front(config, "onnx" if onnx else "transformers", tags, results, name) + "\n\n".join(sections) + "\n"


def write_card(folder: Path, text: str) -> None:
    (Path(folder) / README).write_text(text, encoding="utf-8")


def base_model(config: dict) -> str | None:
    """The pretrained weights a run started from (hub name or folder): for a student cut from a teacher, the
    teacher's; None for a tiny random build."""
    from kdlora.modeling import parse_student

    role = get_method(config["method"]).role
    if config.get("model"):
        student = parse_student(config.get("student")) if role == "student" else None
        return student if isinstance(student, str) else config["model"]
    family = FAMILIES.get(config["family"])
    if config.get("tiny") or family is None:
        return None
    architecture = family.architecture(role)
    return config.get("pretrained") or (family.teacher if architecture.derived else architecture).hub_name


def _dataset(config: dict) -> tuple[str | None, str, str | None]:
    """(the hub dataset or None, the dataset's name in the model-index, its config)."""
    if config.get("dataset"):
        name, subset = name_and_config(config["dataset"])
        return (None if Path(name).exists() else name), Path(name).name or name, subset
    task = TASKS.get(config["task"])
    if task is not None and task.source == "glue":
        return GLUE_HUB, f"GLUE {config['task']}", config["task"]
    return None, config["task"], None


def _front(config: dict, library: str, tags: list[str], results: list, name: str) -> str:
    from huggingface_hub import ModelCardData

    hub, _, _ = _dataset(config)
    data = ModelCardData(library_name=library, base_model=base_model(config), datasets=[hub] if hub else None,
                         tags=tags, pipeline_tag="text-classification", model_name=name,
                         eval_results=results or None)
    return f"---\n{data.to_yaml()}\n---\n\n"


def _tags(config: dict) -> list[str]:
    method = get_method(config["method"])
    tags = ["kdlora", method.adapter or "full-fine-tuning", method.name]
    return list(dict.fromkeys(tags + (["knowledge-distillation"] if method.distills else [])))


def _result(config: dict, metrics: dict, key: str, value: float, how: str):
    from huggingface_hub import EvalResult

    hub, name, subset = _dataset(config)
    task = TASKS.get(metrics["task"])
    split = config.get("validation_split") or ",".join(task.dev_splits if task else ("validation",))
    return EvalResult(task_type="text-classification", dataset_type=hub or metrics["task"], dataset_name=name,
                      dataset_config=subset, dataset_split=split, dataset_revision=config.get("dataset_revision"),
                      metric_type=HUB_METRICS.get(key.removeprefix("matched_").removeprefix("mismatched_"), key),
                      metric_value=value, metric_name=f"dev {key}, {how}")


def _trained_results(metrics: dict) -> list:
    """The run's dev metrics as model-index results: as trained, and in fp32 for a mixed-precision run."""
    config = metrics["config"]
    results = [_result(config, metrics, k, v, f"as trained ({metrics['precision']})")
               for k, v in metrics["metrics"].items()]
    return results + [_result(config, metrics, k, v, "fp32") for k, v in (metrics.get("fp32_metrics") or {}).items()]


def _what(metrics: dict, name: str) -> str:
    method = get_method(metrics["method"])
    adapter = (twin(method, "teacher", False) or method).label
    how = ("full fine-tuning: every weight trains" if method.adapter is None else
           f"{adapter} adapters (PEFT) on the {method.role} model" +
           (", distilled from a fine-tuned teacher's logits" if method.distills else ""))
    labels = metrics.get("label_names") or []
    kind = f"{len(labels)} classes: {', '.join(labels)}" if labels else "regression"
    text = (f"# {name}\n\nA text classifier for the task **{metrics['task']}** ({kind}), trained by "
            f"kdlora with **{method.label}** ({how}), starting from {metrics['model']}.")
    if metrics["status"] != "done":
        text += f"\n\nThe run **{metrics['status']}**: {metrics.get('reason') or ', '.join(metrics['flags'])}."
    return text


def _data_line(config: dict) -> str:
    if config.get("dataset"):
        splits = config.get("train_split") or "train", config.get("validation_split") or "validation"
        return f"dataset `{config['dataset']}` (train on `{splits[0]}`, dev `{splits[1]}`)"
    if config.get("train_file"):
        return f"your files: train `{config['train_file']}`, dev `{config['validation_file']}`"
    hub, name, _ = _dataset(config)
    where = f" (local files in `{config['data_dir']}`)" if config.get("data_dir") else ""
    return f"{name} ({hub}){where}" if hub else f"the built-in task {name}"


def _training(metrics: dict) -> str:
    config, method = metrics["config"], get_method(metrics["method"])
    rows = [("method", f"{method.label} (`{method.name}`)"), ("model trained", metrics["model"]),
            ("data", f"{_data_line(config)}; {metrics['train_examples']:,} training examples")]
    if method.distills:
        logits = (metrics.get("teacher_logits") or {}).get("source")
        rows += [("teacher", f"`{config.get('teacher')}` (its logits: {logits})"),
                 ("transfer data", _transfer_line(metrics))]
    if metrics.get("lora_targets"):
        rows += [("adapters", f"on {', '.join(metrics['lora_targets'])}; also training "
                              f"{', '.join(metrics.get('trained_modules') or []) or 'nothing else'}")]
    own = [f.name for cls in method.settings if cls is not HiddenDistillSettings for f in fields(cls)
           if f.name in config]
    if own:
        rows += [("method settings", ", ".join(f"{name} {config[name]}" for name in own))]
    if metrics.get("hidden_distillation"):  # the teacher's layers taught too: the terms, weights and layer map
        hidden = metrics["hidden_distillation"]
        rows += [("hidden-state distillation", f"{hidden['terms']}; the teacher ran beside the student"
                                               + (f"; {hidden['projection_params']:,} projection parameters trained "
                                                  "and not kept" if hidden["projection_params"] else ""))]
    if metrics.get("method_details"):
        rows += [("method details", ", ".join(f"{k}: {v}" for k, v in metrics["method_details"].items()))]
    rows += [("epochs", f"{config['epochs']} ({metrics['steps']} optimiser steps; best epoch "
                        f"{metrics.get('best_epoch')})"),
             ("learning rate", f"{metrics['learning_rate']:g}, effective batch {metrics['effective_batch_size']}"),
             ("precision", metrics["precision"]), ("seed", str(metrics["seed"])), ("run key", metrics["run_key"])]
    return "## Training\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in rows)


def _transfer_line(metrics: dict) -> str:
    """The unlabelled rows the teacher labelled for a distilling run, where from, and the student's loss on them;
    `none` without (its logits were then on the labelled examples only)."""
    count = metrics.get("transfer_examples") or 0
    if not count:
        return "none"
    loss = "KD plus the teacher's hard label" if metrics["config"].get("transfer_hard_label") else "KD alone"
    return (f"{count:,} unlabelled rows the teacher labelled, from {metrics['transfer_source']}; the student's loss "
            f"there: {loss}")


def _scores(metrics: dict) -> str:
    trained, fp32 = metrics["metrics"], metrics.get("fp32_metrics")
    if not trained:
        return "## Dev scores\n\nNone: the run kept no model."
    head = f"| metric | fp32 | as trained ({metrics['precision']}) |\n|---|---|---|" if fp32 else \
        f"| metric | {metrics['precision']} (as trained) |\n|---|---|"
    rows = [f"| {k} | {fp32[k]:.4f} | {v:.4f} |" if fp32 else f"| {k} | {v:.4f} |" for k, v in trained.items()]
    text = "## Dev scores\n\n" + "\n".join([head, *rows])
    if metrics.get("test_metrics"):
        text += "\n\nTest (best checkpoint, fp32): " + ", ".join(f"{k} {v:.4f}"
                                                                 for k, v in metrics["test_metrics"].items())
    return text


def _cost(metrics: dict) -> str:
    environment = metrics.get("environment") or {}
    where = environment.get("gpu") or environment.get("cpu_model") or "unknown"
    share = metrics["trainable_params"] / metrics["total_params"] if metrics.get("total_params") else 0
    rows = [f"- **trainable parameters**: {metrics['trainable_params']:,} of {metrics['total_params']:,} "
            f"({share:.2%}); adapter parameters {metrics.get('adapter_params') or 0:,}",
            f"- **peak memory**: {metrics['peak_memory_mb']} MB ({metrics['memory_kind']}"
            + ("; the resident teacher included" if metrics.get("teacher_resident") else "") + ")",
            f"- **training time**: {metrics['train_seconds']} s on {where} ({metrics['cost_covers']}); teacher "
            f"logits {metrics.get('teacher_logit_seconds') or 0} s"]
    if metrics.get("energy_kwh") is not None:
        rows.append(f"- **energy**: {metrics['energy_kwh']} kWh, {metrics['emissions_g_co2eq']} g CO2-eq "
                    f"({metrics['energy_method']}, grid {metrics['energy_country']})")
    return "## Cost\n\n" + "\n".join(rows)


def _load_run(kind: str | None, folder: str, metrics: dict) -> str:
    if kind == "adapter":
        labels = dict(enumerate(metrics.get("label_names") or []))
        code = ("from peft import AutoPeftModelForSequenceClassification\nfrom transformers import AutoTokenizer\n\n"
                f"model = AutoPeftModelForSequenceClassification.from_pretrained(\"{folder}/adapter\", "
                f"num_labels={max(len(labels), 1)}{f', id2label={labels}' if labels else ''})\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{folder}/tokenizer\")\n"
                "model = model.merge_and_unload().eval()  # the adapters folded into the weights")
    elif kind == "full":
        code = ("from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
                f"model = AutoModelForSequenceClassification.from_pretrained(\"{folder}/model\").eval()\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{folder}/tokenizer\")")
    else:
        return "## How to load\n\nThe run kept no model."
    return (f"## How to load\n\n```python\n{code}\n```\n\nOr `kdlora predict {folder} \"a text\"`; "
            f"`kdlora export {folder} --out DIR` writes it as one merged model (safetensors or ONNX).")


def _load_export(export: dict, folder: str) -> str:
    if export["format"] == "onnx":
        code = ("import onnxruntime\nfrom transformers import AutoTokenizer\n\n"
                f"session = onnxruntime.InferenceSession(\"{folder}/{export['model_file']}\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{folder}\")\n"
                "batch = tokenizer([\"a text\"], return_tensors=\"np\", padding=True)\n"
                "inputs = {i.name: batch[i.name].astype(\"int64\") for i in session.get_inputs()}\n"
                "logits = session.run([\"logits\"], inputs)[0]")
    else:
        code = ("from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
                f"model = AutoModelForSequenceClassification.from_pretrained(\"{folder}\").eval()\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"{folder}\")")
    return f"## How to load\n\n```python\n{code}\n```\n\nOr `kdlora predict {folder} \"a text\"`."
