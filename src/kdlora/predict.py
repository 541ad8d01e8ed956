"""Label new text with a trained run or a safetensors export (`kdlora export`); either is checked first."""

from __future__ import annotations

from pathlib import Path

from kdlora.errors import UserError


def predict(run_dir: str | Path, texts: list[str], batch_size: int = 32, verify: bool = True) -> list[dict]:
    """One result per text: `{"text", "label", "score"}` (class name and its probability) or, for a regression
    task, `{"text", "value"}`. Pair tasks take the two texts of an example separated by a tab. The run folder is
    checked against its manifest first unless `verify` is False."""
    import torch

    from kdlora.data.encode import Collator, encode
    from kdlora.data.loaders import Examples
    from kdlora.data.tasks import get_task

    task_name, max_length, load = _source(Path(run_dir), verify)
    task = get_task(task_name)
    parts = [tuple(t.split("\t")) for t in texts]
    for text, pieces in zip(texts, parts, strict=True):
        if len(pieces) != len(task.text_fields):
            raise UserError(f"task {task.name} takes {len(task.text_fields)} text(s) per example separated by a "
                            f"tab; got {len(pieces)} in {text!r}")
    model, tokenizer = load()
    features = encode(Examples(list(range(len(texts))), parts, [0.0] * len(texts)), tokenizer, max_length)
    collate = Collator(tokenizer, regression=True)
    results = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = collate(features[start:start + batch_size])
            logits = model(**{k: v for k, v in batch.items() if k not in ("labels", "idx")}).logits
            for row in logits:
                text = texts[len(results)]
                if task.regression:
                    results.append({"text": text, "value": float(row[0])})
                    continue
                probs = row.softmax(-1)
                label = int(probs.argmax())
                name = task.label_names[label] if task.label_names else str(label)
                results.append({"text": text, "label": name, "score": float(probs[label])})
    return results


def _source(folder: Path, verify: bool):
    """(task, max length, a loader of (model, tokenizer)) of a run folder or an export, checked unless not `verify`."""
    from kdlora.export import EXPORT_INFO, check_export, load_export

    if (folder / EXPORT_INFO).is_file():
        info = check_export(folder, verify)
        if not isinstance(info.get("task"), str) or not isinstance(info.get("max_length"), int):
            raise UserError(f"{folder / EXPORT_INFO}: no task or max_length in it; export the run again")
        return info["task"], info["max_length"], lambda: load_export(folder)
    from kdlora.rundir import MANIFEST, check_run, load_config, load_model, load_tokenizer

    if not (folder / MANIFEST).is_file():
        raise UserError(f"{folder}: neither a kdlora run folder nor an exported model (no {MANIFEST} or "
                        f"{EXPORT_INFO})")
    info = check_run(folder, verify)
    config = load_config(folder)
    return config.task, config.max_length, lambda: (load_model(folder, merged=True, info=info),
                                                     load_tokenizer(folder))
