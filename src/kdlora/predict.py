"""Label new text with a trained run: `Predictor` loads the run once; `predict` labels a list in one call."""

from __future__ import annotations

from pathlib import Path

from kdlora.errors import UserError


class Predictor:
    """A trained run loaded for prediction (adapters merged): call `predict(texts)` as often as needed."""

    def __init__(self, run_dir: str | Path):
        from kdlora.data.tasks import get_task
        from kdlora.rundir import load_config, load_metrics, load_model, load_tokenizer
        from kdlora.sources import label_names

        self.run_dir = Path(run_dir)
        self.config = load_config(run_dir)
        self.metrics = load_metrics(run_dir)
        spec = self.config.file_spec()
        self.text_fields = spec.text_columns if spec else get_task(self.config.task).text_fields
        self.model, self.tokenizer = load_model(run_dir, merged=True), load_tokenizer(run_dir)
        self.label_names = label_names(self.model.config) or (
            () if spec else get_task(self.config.task).label_names)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict]:
        """One result per text: `{"text", "label", "score"}` (class name and its probability) or, for a
        regression task, `{"text", "value"}`. Pair tasks take the two texts of an example separated by a tab."""
        import torch

        from kdlora.data.encode import Collator, encode
        from kdlora.data.examples import Examples

        parts = [tuple(t.split("\t")) for t in texts]
        for text, pieces in zip(texts, parts, strict=True):
            if len(pieces) != len(self.text_fields):
                raise UserError(f"task {self.config.task} takes {len(self.text_fields)} text(s) per example "
                                f"separated by a tab; got {len(pieces)} in {text!r}")
        features = encode(Examples(list(range(len(texts))), parts, [0.0] * len(texts)), self.tokenizer,
                          self.config.max_length)
        collate = Collator(self.tokenizer, regression=True)
        results = []
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                batch = collate(features[start:start + batch_size])
                logits = self.model(**{k: v for k, v in batch.items() if k not in ("labels", "idx")}).logits
                for row in logits:
                    results.append(self._result(texts[len(results)], row))
        return results

    def _result(self, text: str, row) -> dict:
        if self.model.config.num_labels == 1:
            return {"text": text, "value": float(row[0])}
        probs = row.softmax(-1)
        label = int(probs.argmax())
        name = self.label_names[label] if self.label_names else str(label)
        return {"text": text, "label": name, "score": float(probs[label])}


def predict(run_dir: str | Path, texts: list[str], batch_size: int = 32) -> list[dict]:
    """Load `run_dir` and label `texts` (see `Predictor.predict`)."""
    return Predictor(run_dir).predict(texts, batch_size)
