"""Score an exported model against the run's own PyTorch fp32 model on the run's dev split (the examples training
scored, `max_eval_samples` subset included).

`accuracy` and `reference_accuracy` hold the task's headline metric (accuracy, or MCC, Pearson/Spearman ... for a
task scored otherwise, named by `metric`); `agreement` is the share of dev examples on which the two predict the
same class (regression: the same value within `REGRESSION_AGREEMENT` of the label range).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdlora.data.loaders import load_split
from kdlora.metrics import compute_metrics, task_score
from kdlora.predict import TorchPredictor, load_predictor
from kdlora.train import DEV_SUBSET_SEED

REGRESSION_AGREEMENT = 0.01
"""Two regression predictions agree when they differ by at most this share of the task's label range."""


def agreement(task, exported: np.ndarray, reference: np.ndarray) -> float:
    """Share of rows whose predictions agree (see REGRESSION_AGREEMENT for a regression task)."""
    if len(reference) == 0:
        return 1.0
    if task.regression:
        low, high = task.label_range
        return float(np.mean(np.abs(exported[:, 0] - reference[:, 0]) <= REGRESSION_AGREEMENT * (high - low)))
    return float(np.mean(exported.argmax(axis=1) == reference.argmax(axis=1)))


def predictions(task, logits: np.ndarray) -> list[float]:
    return logits[:, 0].tolist() if task.regression else logits.argmax(axis=1).tolist()


def score_export(folder: Path, reference_model, tokenizer, config) -> dict:
    """The export.json scores of the exported model in `folder` against `reference_model` (fp32, merged)."""
    task = config.task_spec()
    split = task.dev_splits[0]
    # the dev subset training scored (its seed, not the run's): reference_accuracy is then the run's own score
    examples = load_split(task, split, config.data_dir).subset(config.max_eval_samples, DEV_SUBSET_SEED)
    reference = TorchPredictor(task, reference_model, tokenizer, config.max_length, batch_size=64)
    reference_logits = reference.logits(examples.texts)
    exported_logits = load_predictor(folder, batch_size=64).logits(examples.texts)

    def headline(logits):
        return task_score(task, compute_metrics(task, predictions(task, logits), examples.labels))

    return {"metric": task.metric, "dev_split": split, "dev_examples": len(examples),
            "accuracy": round(headline(exported_logits), 6), "reference_accuracy": round(headline(reference_logits), 6),
            "agreement": round(agreement(task, exported_logits, reference_logits), 6)}
