"""A task from the user's own data, with chosen text and label columns: files (CSV, TSV, JSONL or Parquet, read by
`kdlora.data.tables`; `FileTaskSpec`) or a `datasets` dataset (`kdlora.data.dataset_tasks.DatasetSpec`). Both specs
hand this module each split as a `Table`; the labelling below is the one path for both.

The training split decides the task: its label column's distinct values, sorted (numbers by value, text
alphabetically: `class_names`, which examples/trainer_kd.py numbers classes by too), are the classes 0..K-1 and their
names, unless the data declares its classes (a `datasets` ClassLabel column: its names, in its order); a regression
task's labels are numbers. A label column mixing numbers and words is refused. Every other split is checked against
it. Each mistake is one UserError naming the file (or dataset split), the row (data rows count from 1) and the
column: a file that does not parse, a missing column, an empty text or label, a label the training split never saw,
a regression label that is not a number.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from kdlora.data.dataset_tasks import DATASET_SETTINGS, dataset_spec_of
from kdlora.data.examples import Examples
from kdlora.data.tables import Table, is_empty, read_table, texts_of
from kdlora.data.tasks import Task
from kdlora.errors import UserError

TASK_TYPES = ("classification", "regression")
METRICS = ("accuracy", "macro_f1", "f1", "mcc", "pearson_spearman")
MAX_INT_CLASSES = 1000
"""An integer label column with more distinct values than this is a regression target, not classes."""


@dataclass(frozen=True)
class FileTaskSpec:
    """Where a file task's data is and how to read it (the `--train-file` ... settings)."""

    train_file: str
    validation_file: str
    text_columns: tuple[str, ...]
    label_column: str
    test_file: str | None = None
    task_type: str | None = None
    """classification or regression; default: regression when the labels are non-integer numbers."""
    metric: str | None = None
    positive_label: str | None = None
    """--metric f1: the class F1 counts as positive (default the second class in sorted order)."""

    LOCATION: ClassVar = ("train_file", "validation_file", "test_file")
    """The settings that say where the data lies: replaced by `FINGERPRINT` in a run's identity."""
    FINGERPRINT: ClassVar = "data_sha256"

    def splits(self) -> dict[str, str]:
        """Split name -> path, for the splits given."""
        found = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return {split: path for split, path in found.items() if path}

    @property
    def train_where(self) -> str:
        return f"the training file {self.train_file}"

    def table(self, split: str) -> Table:
        """The `split` file's rows (a UserError when the task has no such file or it does not parse)."""
        path = self.splits().get(split)
        if path is None:
            raise UserError(f"this task has no {split} file (pass --{split}-file)")
        return Table(read_table(path), str(path))

    def stamp(self) -> tuple:
        """What changes when the data may have: each file's modification time."""
        return tuple((p, Path(p).stat().st_mtime_ns if Path(p).is_file() else 0) for p in self.splits().values())

    def fingerprint(self) -> str:
        """sha256 over every file's bytes: a task's identity is its data, not its files' names."""
        digest = hashlib.sha256()
        for split, path in self.splits().items():
            digest.update(f"{split}:{sha256_of(path)}\n".encode())
        return digest.hexdigest()


FILE_SETTINGS = ("train_file", "validation_file", "test_file", "text_columns", "label_column", "task_type", "metric",
                 "positive_label")
"""The settings (TrainConfig fields, `[tasks.NAME]` keys) that make a task from files."""
SHARED_SETTINGS = ("text_columns", "label_column", "task_type", "metric", "positive_label")
"""Of those, the ones a task from a dataset (`--dataset`) reads too."""


def spec_of(settings):
    """The spec of the task from data that `settings` (a TrainConfig) give: a `FileTaskSpec` (--train-file ...), a
    `DatasetSpec` (--dataset ...), or None for a built-in task; incomplete ones are a UserError naming the missing
    flag."""
    if settings.dataset is not None:
        if not settings.text_columns:
            raise UserError("--dataset needs --text-columns (and --label-column unless it is `label`)")
        return dataset_spec_of(settings, text_columns_of(settings))
    stray = [k for k in DATASET_SETTINGS if getattr(settings, k) is not None]
    if stray:
        raise UserError(f"--{stray[0].replace('_', '-')} needs --dataset")
    if settings.train_file is None:
        given = [k for k in FILE_SETTINGS if getattr(settings, k) is not None]
        if given:
            also = " (or --dataset)" if given[0] in SHARED_SETTINGS else ""
            raise UserError(f"--{given[0].replace('_', '-')} needs --train-file{also}")
        return None
    for key in ("validation_file", "text_columns", "label_column"):
        if not getattr(settings, key):
            raise UserError(f"--train-file needs --{key.replace('_', '-')}")
    return FileTaskSpec(settings.train_file, settings.validation_file, text_columns_of(settings),
                        settings.label_column, settings.test_file, settings.task_type, settings.metric,
                        settings.positive_label)


def text_columns_of(settings) -> tuple[str, ...]:
    """--text-columns as a tuple of one or two names (a UserError otherwise)."""
    columns = tuple(c.strip() for c in (settings.text_columns or "").split(","))
    if not settings.text_columns or not 1 <= len(columns) <= 2 or not all(columns):
        raise UserError(f"--text-columns {settings.text_columns!r}: one column or two separated by a comma")
    return columns


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    return digest.hexdigest()


def _columns(table: Table, spec) -> None:
    for column in (*spec.text_columns, spec.label_column):
        if column not in table.frame.columns:
            raise UserError(f"{table.where}: {table.header}column {column!r}: no such column (has: "
                            f"{', '.join(table.frame.columns)})")


def _number(value, path, row: int, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{path}: row {row}, column {column!r}: label {value!r} is not a number") from None
    if not math.isfinite(number):
        raise UserError(f"{path}: row {row}, column {column!r}: label {value!r} is not a finite number")
    return number


def _class_key(value: str):
    """Numbers sort by value (2 before 10), text alphabetically; numbers first."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def infer_labels(spec, table: Table) -> tuple[str, tuple[str, ...]]:
    """(task type, class names in id order) from the training split's `table`; regression has no class names."""
    frame, path = table.frame, table.where
    _columns(table, spec)
    raw = frame[spec.label_column].tolist()
    for row, value in enumerate(raw, start=1):
        if is_empty(value):
            raise UserError(f"{path}: row {row}, column {spec.label_column!r}: empty label")
    if not raw:
        raise UserError(f"{path}: no data rows")
    values = [label_text(v) for v in raw]
    kind = spec.task_type
    if table.class_names is not None and kind != "regression":
        kind = "classification"  # the data names its classes: they are the classes, in their order
    if kind is None:
        numbers = [_maybe_number(v) for v in values]
        continuous = all(n is not None for n in numbers) and (
            any(not n.is_integer() for n in numbers) or len(set(numbers)) > MAX_INT_CLASSES)
        kind = "regression" if continuous else "classification"
    if kind == "regression":
        for row, value in enumerate(values, start=1):
            _number(value, path, row, spec.label_column)
        return kind, ()
    names = table.class_names or class_names(values, f"{path}: column {spec.label_column!r}")
    if len(names) < 2:
        raise UserError(f"{path}: column {spec.label_column!r}: one class only ({names[0]!r}); a classifier needs "
                        "two or more")
    return kind, names


def class_names(values, where: str) -> tuple[str, ...]:
    """The classes of a label column in id order: its distinct values as text (`label_text`), numbers by value
    (-2 before 10), words alphabetically. `kdlora train` and examples/trainer_kd.py both number classes by it, so a
    kdlora teacher's logits line up with a student's labels. Numbers mixed with words are a UserError (`where`
    names the column): a stray row, most likely, and no order of the two kinds is the obvious one."""
    names = tuple(sorted({label_text(v) for v in values}, key=_class_key))
    numbers = [n for n in names if _maybe_number(n) is not None]
    if numbers and len(numbers) < len(names):
        word = next(n for n in names if _maybe_number(n) is None)
        raise UserError(f"{where}: labels mix numbers and words ({numbers[0]!r}, {word!r}): write every class "
                        "the same way")
    return names


def label_text(value) -> str:
    """A label as text: 1.0 read from JSON or Parquet is the class "1", as in a CSV."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _maybe_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def load_file_split(spec, split: str, label_names: tuple[str, ...], regression: bool) -> Examples:
    """One split of a task from data (`spec`: files or a dataset), labels as class ids (or values), every row
    checked."""
    table = spec.table(split)
    frame, path = table.frame, table.where
    _columns(table, spec)
    texts = texts_of(frame, path, spec.text_columns)
    index = {name: i for i, name in enumerate(label_names)}
    labels = []
    for row, value in enumerate(frame[spec.label_column].tolist(), start=1):
        if is_empty(value):
            raise UserError(f"{path}: row {row}, column {spec.label_column!r}: empty label")
        if regression:
            labels.append(_number(value, path, row, spec.label_column))
            continue
        text = label_text(value)
        if text not in index:
            raise UserError(f"{path}: row {row}, column {spec.label_column!r}: label {text!r} does not occur in "
                            f"{spec.train_where} (its labels: {', '.join(label_names)})")
        labels.append(float(index[text]))
    return Examples([table.first_id + i for i in range(len(texts))], texts, labels, str(path))


SMALL_DATA_ROWS = 20_000
"""A training file with fewer rows gets the small-data default learning rates (see TrainConfig)."""


def file_task(name: str, spec) -> Task:
    """The Task a user's data define (`spec`: files or a dataset; reads the training split once per version)."""
    return _file_task(name, spec, spec.stamp())


@functools.lru_cache(maxsize=32)
def _file_task(name: str, spec, stamp) -> Task:
    if spec.task_type is not None and spec.task_type not in TASK_TYPES:
        raise UserError(f"--task-type {spec.task_type!r}: choose {' or '.join(TASK_TYPES)}")
    if spec.metric is not None and spec.metric not in METRICS:
        raise UserError(f"--metric {spec.metric!r}: choose one of {', '.join(METRICS)}")
    table = spec.table("train")
    kind, names = infer_labels(spec, table)
    regression = kind == "regression"
    metric = spec.metric or ("pearson_spearman" if regression else "accuracy")
    if regression != (metric == "pearson_spearman"):
        raise UserError(f"--metric {metric}: not a metric of a {kind} task")
    if metric == "f1" and len(names) != 2:
        raise UserError(f"--metric f1 needs two classes; {table.where} has {len(names)} (use macro_f1)")
    return Task(name, spec.text_columns, 1 if regression else len(names), metric, names, source="files",
                small_data=len(table.frame) < SMALL_DATA_ROWS, files=spec,
                positive_class=_positive_class(spec, metric, names, table.where))


def _positive_class(spec, metric: str, names: tuple[str, ...], where: str) -> int:
    """The class id binary F1 counts as positive: --positive-label's, else the second in sorted order."""
    if spec.positive_label is None:
        return 1
    if metric != "f1":
        raise UserError(f"--positive-label {spec.positive_label!r}: only --metric f1 has a positive class")
    if spec.positive_label not in names:
        raise UserError(f"--positive-label {spec.positive_label!r}: not a label of {where} (its labels: "
                        f"{', '.join(names)})")
    return names.index(spec.positive_label)
