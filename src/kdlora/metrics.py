"""GLUE metrics with scikit-learn and scipy, the paper's GLUE score, and the dev predictions a run keeps for paired
tests between runs (`kept_predictions` writes them, `unpack_predictions` reads them back)."""

from __future__ import annotations

from statistics import fmean

from kdlora.data.tasks import get_task


def compute_metrics(task, predictions, labels) -> dict:
    """The task's metrics on one dev split; `predictions` are class ids (or values for regression).

    CoLA: Matthews correlation. STS-B and the rating task: Pearson, Spearman and their mean. MRPC, QQP: accuracy,
    F1 and their mean. The rest: accuracy. Every classification task also reports accuracy; a task from the
    user's files also macro-F1 (and binary F1 or MCC when its `--metric` asks for them). Binary F1 counts
    `task.positive_class` as positive (`task.positive_label` names it).
    """
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    task = get_task(task) if isinstance(task, str) else task
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task.regression:
        pearson = float(pearsonr(predictions, labels)[0]) if np.ptp(predictions) > 0 else 0.0
        spearman = float(spearmanr(predictions, labels)[0]) if np.ptp(predictions) > 0 else 0.0
        return {"pearson": pearson, "spearman": spearman, "pearson_spearman": (pearson + spearman) / 2}
    labels = labels.astype(int)
    out = {"accuracy": float(accuracy_score(labels, predictions))}
    if task.metric == "mcc":
        out["mcc"] = float(matthews_corrcoef(labels, predictions))
    if task.metric in ("accuracy_f1", "f1"):
        out["f1"] = float(f1_score(labels, predictions, pos_label=task.positive_class))
    if task.metric == "accuracy_f1":
        out["accuracy_f1"] = (out["accuracy"] + out["f1"]) / 2
    if task.metric == "macro_f1" or task.source == "files":
        out["macro_f1"] = float(f1_score(labels, predictions, average="macro",
                                         labels=list(range(task.num_labels)), zero_division=0))
    return out


def task_score(task, metrics: dict) -> float:
    """The task's one headline score (0..1): pairs averaged first (MNLI: matched and mismatched accuracy)."""
    task = get_task(task) if isinstance(task, str) else task
    if "matched_accuracy" in metrics and "mismatched_accuracy" in metrics:
        return (metrics["matched_accuracy"] + metrics["mismatched_accuracy"]) / 2
    return float(metrics[task.metric])


def glue_score(per_task_scores: dict) -> float:
    """The paper's GLUE score: the plain mean of its Table I rows, MNLI-m and MNLI-mm apart (ten rows for GLUE).

    A value may be a task's headline score or its metrics dict; MNLI's metrics dict gives two rows (matched and
    mismatched accuracy), every other task one (`task_score`, e.g. MRPC's mean of accuracy and F1).
    """
    if not per_task_scores:
        raise ValueError("no task scores to average")
    rows = []
    for task, value in per_task_scores.items():
        if isinstance(value, dict) and "matched_accuracy" in value and "mismatched_accuracy" in value:
            rows += [value["matched_accuracy"], value["mismatched_accuracy"]]
        else:
            rows.append(task_score(task, value) if isinstance(value, dict) else float(value))
    return fmean(rows)


def kept_predictions(task, split: str, predictions, labels) -> dict:
    """One dev split's predictions and gold labels as a run keeps them (`TrainResult.dev_predictions`), with how the
    split is scored, for paired tests between runs (`kdlora.analysis.paired`). Predictions and labels are each one
    string of space-separated numbers (class ids; for regression values to 7 significant digits, about a float32's
    precision): a few thousand examples stay one line of metrics.json, not one line each."""
    def packed(values) -> str:
        return " ".join(f"{v:.7g}" if task.regression else str(int(v)) for v in values)

    return {"split": split, "metric": task.metric, "classes": task.num_labels, "positive_class": task.positive_class,
            "predictions": packed(predictions), "labels": packed(labels)}


def unpack_predictions(kept: dict):
    """(predictions, labels) of a `kept_predictions` dict as numpy arrays: int class ids, or floats for regression."""
    import numpy as np

    dtype = float if kept["classes"] == 1 else int
    return (np.array(kept["predictions"].split(), dtype=dtype), np.array(kept["labels"].split(), dtype=dtype))
