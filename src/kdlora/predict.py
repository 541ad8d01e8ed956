"""Label new text with a trained run or an exported model folder (`kdlora export`).

    load_predictor(folder).logits([("a great film",), ...])  ->  float32 array, one row per example
    predict(folder, ["a great film", ...])                    ->  [{"text", "label", "score"}, ...]

A run folder and a safetensors export run in PyTorch; an ONNX export runs in ONNX Runtime and tokenises with the
`tokenizers` library, so predicting with it imports neither torch nor transformers (a test checks this).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdlora import files
from kdlora.data.encode import Collator, encode
from kdlora.data.examples import Examples
from kdlora.data.tasks import TASKS, Task, get_task
from kdlora.errors import UserError
from kdlora.rundir import MANIFEST, check_run, load_config, load_model, load_tokenizer
from kdlora.train.start import label_names

EXPORT_INFO = "export.json"
"""What `kdlora export` writes beside the model: task, form, tokenizer settings, scores, and the manifest of the
folder's files (`kdlora.files`)."""
EXPORTED = "exported model"


class TorchPredictor:
    """A transformers model (a run's, adapters merged, or a safetensors export) and its tokenizer."""

    def __init__(self, task: Task, model, tokenizer, max_length: int, batch_size: int = 32):
        self.task, self.model, self.tokenizer = task, model, tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    def logits(self, parts: list[tuple[str, ...]]) -> np.ndarray:
        import torch

        features = encode(Examples(list(range(len(parts))), parts, [0.0] * len(parts)), self.tokenizer,
                          self.max_length)
        collate, rows = Collator(self.tokenizer, regression=True), []
        with torch.inference_mode():
            for start in range(0, len(features), self.batch_size):
                batch = collate(features[start:start + self.batch_size])
                inputs = {k: v for k, v in batch.items() if k not in ("labels", "idx")}
                rows.append(self.model(**inputs).logits.float().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.task.num_labels), dtype=np.float32)


class OnnxPredictor:
    """An ONNX export in ONNX Runtime, tokenised by the `tokenizers` library: no torch, no transformers."""

    def __init__(self, task: Task, folder: Path, info: dict, batch_size: int = 32, threads: int | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        self.task, self.batch_size = task, batch_size
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(info["max_length"])
        self.tokenizer.enable_padding(pad_id=info["pad_token_id"], pad_token=info["pad_token"])
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(folder / info["model_file"]), options,
                                                    providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def feeds(self, parts: list[tuple[str, ...]]) -> dict:
        """The session's inputs for one batch (padded to its longest example)."""
        encoded = self.tokenizer.encode_batch([p[0] if len(p) == 1 else tuple(p) for p in parts])
        columns = {"input_ids": [e.ids for e in encoded], "attention_mask": [e.attention_mask for e in encoded],
                   "token_type_ids": [e.type_ids for e in encoded]}
        return {name: np.asarray(columns[name], dtype=np.int64) for name in self.inputs}

    def logits(self, parts: list[tuple[str, ...]]) -> np.ndarray:
        rows = [self.session.run(["logits"], self.feeds(parts[start:start + self.batch_size]))[0]
                for start in range(0, len(parts), self.batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, self.task.num_labels), dtype=np.float32)


def read_export_info(folder: str | Path, verify: bool = True) -> dict:
    """export.json of an exported folder, after checking every file it lists (unless not `verify`): a UserError
    names the first file missing, truncated or changed. An export.json without its list of files is damaged."""
    folder = Path(folder)
    if verify:
        info = files.verify(folder, EXPORT_INFO, EXPORTED, older_ok=False)
    else:
        info = files.read_manifest(folder, EXPORT_INFO, EXPORTED)
    wanted = {"task": str, "format": str, "max_length": int}
    if info.get("format") == "onnx":
        wanted.update(model_file=str, pad_token=str, pad_token_id=int)
    for key, kind in wanted.items():
        if not isinstance(info.get(key), kind):
            raise UserError(f"{folder / EXPORT_INFO}: no {key} in it; the {EXPORTED} is damaged: export the run "
                            "again")
    if "model_file" in info:  # the one file export.json names that a predictor opens by that name
        files.inside(folder, info["model_file"], f"{folder / EXPORT_INFO} names model_file")
    return info


def load_predictor(folder: str | Path, batch_size: int = 32, verify: bool = True):
    """The predictor of a run folder (run.json) or an exported folder (export.json), each checked against its
    manifest first unless not `verify`; else a UserError."""
    folder = Path(folder)
    if (folder / EXPORT_INFO).is_file():
        info = read_export_info(folder, verify)
        task = export_task(info)
        if info["format"] == "onnx":
            try:
                with files.unreadable_is_damage(folder, EXPORTED, EXPORTED):
                    return OnnxPredictor(task, folder, info, batch_size)
            except ImportError:
                raise UserError(f"{folder}: an ONNX export needs onnxruntime: pip install 'kdlora[onnx]'") from None
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        with files.unreadable_is_damage(folder, EXPORTED, EXPORTED):
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype="auto").eval()
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        return TorchPredictor(task, model, tokenizer, info["max_length"], batch_size)

    if not (folder / MANIFEST).is_file():
        raise UserError(f"{folder}: neither a kdlora run folder nor an exported model (no {MANIFEST} or "
                        f"{EXPORT_INFO})")
    info = check_run(folder, verify)
    config = load_config(folder)
    model = load_model(folder, merged=True, info=info)
    return TorchPredictor(run_task(config, model.config), model, load_tokenizer(folder), config.max_length,
                          batch_size)


def run_task(config, model_config) -> Task:
    """The task a run predicts for: a built-in one by name, or a task from files rebuilt from what the run saved
    (text columns in its config, class names in its model's id2label), so the training files need not exist."""
    spec = config.file_spec()
    if spec is None:
        return get_task(config.task)
    names = label_names(model_config) or ()
    metric = config.metric or ("pearson_spearman" if model_config.num_labels == 1 else "accuracy")
    return Task(config.task, spec.text_columns, model_config.num_labels, metric, names, source="files")


def export_task(info: dict) -> Task:
    """The task of an exported folder: built in by name, else from the text fields and labels export.json keeps."""
    if info["task"] in TASKS:
        return get_task(info["task"])
    try:
        fields, names, regression = tuple(info["text_fields"]), tuple(info["labels"]), bool(info["regression"])
    except KeyError as missing:
        raise UserError(f"{EXPORT_INFO}: task {info['task']!r} is not built in and the file lacks {missing}") from None
    return Task(info["task"], fields, 1 if regression else len(names), info.get("metric", "accuracy"), names,
                source="files")


def split_pairs(task: Task, texts: list[str]) -> list[tuple[str, ...]]:
    """Each text as the task's one or two inputs (a pair separated by a tab); a UserError for a wrong count."""
    parts = [tuple(t.split("\t")) for t in texts]
    for text, pieces in zip(texts, parts, strict=True):
        if len(pieces) != len(task.text_fields):
            raise UserError(f"task {task.name} takes {len(task.text_fields)} text(s) per example separated by a "
                            f"tab; got {len(pieces)} in {text!r}")
    return parts


def predict(folder: str | Path, texts: list[str], batch_size: int = 32, verify: bool = True) -> list[dict]:
    """One result per text: `{"text", "label", "score"}` (class name and its probability) or, for a regression
    task, `{"text", "value"}`. Pair tasks take the two texts of an example separated by a tab. The folder is
    checked against its manifest first unless not `verify`."""
    return label_texts(load_predictor(folder, batch_size, verify), texts)


def label_texts(predictor, texts: list[str]) -> list[dict]:
    """`predict`'s results from an already loaded predictor (`load_predictor`)."""
    task = predictor.task
    logits = predictor.logits(split_pairs(task, texts))
    if task.regression:
        return [{"text": text, "value": float(row[0])} for text, row in zip(texts, logits, strict=True)]
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    results = []
    for text, row in zip(texts, probs, strict=True):
        label = int(row.argmax())
        name = task.label_names[label] if task.label_names else str(label)
        results.append({"text": text, "label": name, "score": float(row[label])})
    return results
