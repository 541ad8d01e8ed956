"""Label new text with a trained run."""

from __future__ import annotations

from pathlib import Path

from kdlora.errors import UserError


def predict(run_dir: str | Path, texts: list[str], batch_size: int = 32) -> list[dict]:
    """One result per text: `{"text", "label", "score"}` (class name and its probability) or, for a regression
    task, `{"text", "value"}`. Pair tasks take the two texts of an example separated by a tab."""
    import torch

    from kdlora.data.encode import Collator, encode
    from kdlora.data.loaders import Examples
    from kdlora.data.tasks import get_task
    from kdlora.rundir import load_config, load_model, load_tokenizer

    config = load_config(run_dir)
    task = get_task(config.task)
    parts = [tuple(t.split("\t")) for t in texts]
    for text, pieces in zip(texts, parts, strict=True):
        if len(pieces) != len(task.text_fields):
            raise UserError(f"task {task.name} takes {len(task.text_fields)} text(s) per example separated by a "
                            f"tab; got {len(pieces)} in {text!r}")
    model, tokenizer = load_model(run_dir, merged=True), load_tokenizer(run_dir)
    features = encode(Examples(list(range(len(texts))), parts, [0.0] * len(texts)), tokenizer, config.max_length)
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
