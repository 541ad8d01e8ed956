"""Transfer data: unlabelled text the teacher labels, on which a distilling student learns from the teacher alone.

One source per run (`kdlora.methods.base.TransferSettings`):
- `transfer_samples` N or `all`: training-split examples outside the labelled subset (`max_train_samples`), N of
  them drawn by the run's seed, or every one. Their ids are their rows in the split, so they never meet a labelled
  example's. Their labels are withheld from training; the teacher-logit cache still digests each row as the split
  holds it, so a row keeps its cached logits whether a run labels it or not (a sweep's seeds draw other subsets).
- `transfer_file`: a CSV, TSV, JSONL or Parquet file read by the one reader (`kdlora.data.tables`) holding the
  task's text column(s). A label column is ignored, and said on stderr; any other column is refused, as is a file
  without the text columns (a file of another task's shape), an empty one or one without a data row: one line each.
  Its rows get ids after the training split's last; the teacher-logit cache digests them by id and text.

In the training loader every feature of a run with transfer data carries `labelled` (False on a transfer row), and
the collated batch a bool `labelled` column (`kdlora.data.encode.Collator`); a transfer row's `labels` hold
`PLACEHOLDER_LABEL`, which the loss never reads (`kdlora.distill.kd_loss`).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

from kdlora.data.examples import Examples
from kdlora.data.file_tasks import sha256_of
from kdlora.data.tables import read_table, texts_of
from kdlora.data.tasks import Task
from kdlora.errors import UserError
from kdlora.methods.base import ALL

PLACEHOLDER_LABEL = 0.0
"""A transfer row's label in the training batch: any class id would do, since the loss never reads it."""


@dataclass(frozen=True)
class Transfer:
    """The transfer data of a run: its examples (what the teacher labels) and where they came from."""

    examples: Examples
    source: str
    """`file PATH (sha256 ...)` or `train split: N of M rows outside the labelled subset`."""

    def __len__(self) -> int:
        return len(self.examples)


def load_transfer(settings, task: Task, train_split: Examples, labelled: Examples) -> Transfer | None:
    """The run's transfer data (`settings`: a TrainConfig), or None when it has none. `train_split` is the whole
    training split, `labelled` the subset the run trains on with labels."""
    if settings.transfer_file is not None:
        return from_file(settings.transfer_file, task, first_id=max(train_split.ids, default=-1) + 1)
    if settings.transfer_samples is not None:
        return from_split(train_split, labelled, settings.transfer_samples, settings.seed)
    return None


def from_split(split: Examples, labelled: Examples, samples: int | str, seed: int) -> Transfer:
    """`samples` (a count or `all`) examples of `split` outside `labelled`, drawn by `seed`, in split order."""
    taken = set(labelled.ids)
    outside = [row for row, i in enumerate(split.ids) if i not in taken]
    if not outside:
        raise UserError(f"--transfer-samples {samples}: all {len(split):,} examples of the training split are in the "
                        f"labelled subset; set --max-train-samples below {len(split):,} to leave some unlabelled")
    if samples != ALL and samples > len(outside):
        raise UserError(f"--transfer-samples {samples}: the training split has {len(outside):,} examples outside "
                        f"the labelled {len(labelled):,}; pass at most {len(outside):,}, or all")
    rows = outside if samples == ALL else sorted(random.Random(seed).sample(outside, samples))
    examples = Examples([split.ids[r] for r in rows], [split.texts[r] for r in rows],
                        [split.labels[r] for r in rows], split.source)
    return Transfer(examples, f"train split: {len(rows):,} of {len(outside):,} rows outside the labelled subset")


def label_columns(task: Task) -> tuple[str, ...]:
    """The names a label column of `task` goes by in a file: a task from files or a dataset its own, a built-in
    task `label` (and its GLUE TSV name)."""
    if task.files is not None:
        return (task.files.label_column,)
    tsv_name = task.tsv.get("label")
    return ("label",) + ((tsv_name,) if isinstance(tsv_name, str) else ())


def from_file(path: str | Path, task: Task, first_id: int, say: bool = True) -> Transfer:
    """The texts of the transfer file at `path` for `task`, ids from `first_id`; with `say`, a line on stderr when
    its label column is ignored."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (transfer data is rows of text)")
    frame = read_table(path)
    columns, labels = task.text_fields, label_columns(task)
    shape = f"task {task.name} takes {'one text column' if len(columns) == 1 else 'two text columns'} " \
            f"({', '.join(columns)})"
    missing = next((c for c in columns if c not in frame.columns), None)
    if missing is not None:
        raise UserError(f"{path}: column {missing!r}: no such column (has: {', '.join(frame.columns)}); {shape}")
    stray = next((c for c in frame.columns if c not in columns and c not in labels), None)
    if stray is not None:
        raise UserError(f"{path}: column {stray!r}: neither a text column nor the label; {shape} (a file of "
                        "another task? keep only its text columns)")
    if len(frame) == 0:
        raise UserError(f"{path}: no data rows")
    texts = texts_of(frame, path, columns)
    ignored = [c for c in frame.columns if c in labels]
    if ignored and say:
        print(f"{path}: column {ignored[0]!r} ignored: transfer data is unlabelled (the teacher labels it)",
              file=sys.stderr)
    examples = Examples(list(range(first_id, first_id + len(texts))), texts, [PLACEHOLDER_LABEL] * len(texts),
                        str(path))
    return Transfer(examples, f"file {path} (sha256 {sha256_of(path)})")


def with_transfer(labelled: list[dict], transfer: list[dict]) -> list[dict]:
    """The training features of a run with transfer data: the labelled ones, then the transfer ones with their
    labels withheld (`PLACEHOLDER_LABEL`), each marked `labelled` (copies: encoded features are shared)."""
    return ([{**f, "labelled": True} for f in labelled]
            + [{**f, "labels": PLACEHOLDER_LABEL, "labelled": False} for f in transfer])
