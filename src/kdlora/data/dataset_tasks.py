"""A task from a `datasets` dataset (`--dataset NAME[:CONFIG]`), labelled as a task from files is: the same
--text-columns and --label-column, label rules and one-line errors (`kdlora.data.file_tasks`).

NAME is a hub dataset (`imdb`, `nyu-mll/glue:sst2`; where the hub is reachable, `--dataset-revision` pinning a
branch, tag or commit) or a local folder: one written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read
with `load_from_disk`), else a folder of CSV, JSON(L) or Parquet files whose names say their split (train.csv,
validation.csv, test.csv; read with `load_dataset(folder)`). Files given one by one are `--train-file`'s job.

The splits are chosen by --train-split / --validation-split (default `train` / `validation`) and --test-split (none
unless given: a hub test split often has no labels); each is a split name, or one with a slice (`train[:90%]`,
`train[90%:]`: how a dataset without a validation split is cut). An example's id is its row in the named split,
so the teacher's logits stay aligned however it is sliced. A ClassLabel label column keeps its class names in their
order; other labels follow the file-task rules (classes sorted). A config, split or column the dataset lacks is one
UserError naming what it has.

A run's identity holds the fingerprint `datasets` gives each split used (`FINGERPRINT`), not the name: a hub
dataset's follows its revision; a save_to_disk folder's its content, wherever the folder lies; a folder of files'
the files' paths and modification times (an edited file is a new run; a moved folder too).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from kdlora.data.tables import Table
from kdlora.errors import UserError

DATASET_SETTINGS = ("dataset_revision", "train_split", "validation_split", "test_split")
"""The settings beside `dataset` that only a task from a dataset reads."""
DEFAULT_SPLITS = {"train": "train", "validation": "validation"}
DISK_MARKERS = ("dataset_dict.json", "state.json")
"""A folder holding one of these was written by `save_to_disk`: `load_from_disk` reads it."""


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset, which of its splits and columns (the `--dataset` ... settings)."""

    dataset: str
    text_columns: tuple[str, ...]
    label_column: str = "label"
    revision: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str | None = None
    task_type: str | None = None
    metric: str | None = None
    positive_label: str | None = None

    LOCATION: ClassVar = ("dataset",)
    """The setting that says where the data lies: replaced by `FINGERPRINT` in a run's identity."""
    FINGERPRINT: ClassVar = "dataset_fingerprint"

    def splits(self) -> dict[str, str]:
        """Role (train, validation, test) -> the split expression that fills it, for the roles given."""
        found = {"train": self.train_split, "validation": self.validation_split, "test": self.test_split}
        return {role: split for role, split in found.items() if split}

    @property
    def train_where(self) -> str:
        return f"the training split {self.dataset}[{self.train_split}]"

    def table(self, role: str) -> Table:
        """The rows of the split that fills `role` (a UserError naming the dataset's splits when it has no such
        split, or the flag to pass when the role has none)."""
        split = self.splits().get(role)
        if split is None:
            raise UserError(f"--dataset {self.dataset}: no {role} split chosen (pass --{role}-split)")
        splits, part = self._part(role, split)
        data, first = splits[part.splitname].select(range(part.from_, part.to)), part.from_
        where = f"{self.dataset}[{split}]"
        frame = data.to_pandas()
        feature = data.features.get(self.label_column)
        names = getattr(feature, "names", None)  # a ClassLabel: its ids become its names
        if names is not None:
            frame[self.label_column] = [_class_name(names, v, where, row, self.label_column)
                                        for row, v in enumerate(frame[self.label_column].tolist(), start=1)]
        return Table(frame, where, tuple(names) if names is not None else None, first, header="")

    def _part(self, role: str, split: str):
        """(the dataset's splits by name, `split` as one named split's rows `from_` to `to`)."""
        from datasets import ReadInstruction

        splits = load(self.dataset, self.revision, _stamp(self.dataset))
        has = ", ".join(splits)
        try:
            parts = ReadInstruction.from_spec(split).to_absolute({n: len(d) for n, d in splits.items()})
        except (ValueError, AssertionError):
            raise UserError(f"--dataset {self.dataset}: no split {split!r} for --{role}-split (has: {has})") from None
        if len(parts) != 1:
            raise UserError(f"--{role}-split {split!r}: one split, with or without a slice (has: {has})")
        return splits, parts[0]

    def stamp(self):
        """What changes when the data may have: a local folder's files' modification times (a hub name: nothing
        here; its revision is in the spec)."""
        return _stamp(self.dataset)

    def fingerprint(self) -> str:
        """sha256 over the fingerprint `datasets` gives each split used (with its slice), and the revision asked."""
        digest = hashlib.sha256(f"revision:{self.revision}\n".encode())
        for role, split in self.splits().items():
            splits, part = self._part(role, split)
            digest.update(f"{role}:{split}:{splits[part.splitname]._fingerprint}\n".encode())
        return digest.hexdigest()


def _class_name(names, value, where: str, row: int, column: str) -> str:
    if value is None or value < 0:  # -1: `datasets`' mark of an unlabelled row (a hub test split's)
        raise UserError(f"{where}: row {row}, column {column!r}: no label (-1); an unlabelled split cannot train or "
                        "score")
    return names[value]


def dataset_spec_of(settings, text_columns: tuple[str, ...]) -> DatasetSpec:
    """The `DatasetSpec` that `settings` (a TrainConfig with `dataset`) give."""
    for key in ("train_file", "validation_file", "test_file"):
        if getattr(settings, key) is not None:
            raise UserError(f"--{key.replace('_', '-')} and --dataset: choose one (--dataset takes "
                            f"--{key.split('_')[0]}-split)")
    splits = {f"{role}_split": getattr(settings, f"{role}_split") or default
              for role, default in (*DEFAULT_SPLITS.items(), ("test", None))}
    return DatasetSpec(settings.dataset, text_columns, settings.label_column or "label", settings.dataset_revision,
                       **splits, task_type=settings.task_type, metric=settings.metric,
                       positive_label=settings.positive_label)


def name_and_config(dataset: str) -> tuple[str, str | None]:
    """`NAME[:CONFIG]` as (name, config); an existing local path is a name whole (it may hold a colon)."""
    if Path(dataset).exists():
        return dataset, None
    name, colon, config = dataset.rpartition(":")
    return (name, config or None) if colon and name else (dataset, None)


def task_name(dataset: str) -> str:
    """The task a dataset makes, by default: its name's last part, with its config (`glue-sst2`, `imdb`)."""
    name, config = name_and_config(dataset)
    last = Path(name.rstrip("/\\")).name or name
    return f"{last}-{config}" if config else last


def _stamp(dataset: str):
    folder = Path(dataset)
    if not folder.is_dir():
        return None
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()))


@functools.lru_cache(maxsize=4)
def load(dataset: str, revision: str | None = None, stamp=None) -> dict:
    """Split name -> `datasets.Dataset` of `dataset` (`NAME[:CONFIG]` or a local folder; `stamp` keys the
    in-process cache to a local folder's files); a UserError when it cannot load."""
    import datasets

    name, config = name_and_config(dataset)
    folder = Path(name)
    shown = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # "Generating train split" bars on every first read
    try:
        if folder.is_dir() and any((folder / marker).is_file() for marker in DISK_MARKERS):
            loaded = datasets.load_from_disk(str(folder))
        else:
            loaded = datasets.load_dataset(name, config, revision=revision)
    except Exception as exc:  # offline, unknown name or config, unreadable files: datasets' own first line says
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--dataset {dataset}: cannot load it ({type(exc).__name__}: {reason})") from None
    finally:
        if shown:
            datasets.enable_progress_bars()
    if isinstance(loaded, datasets.Dataset):  # save_to_disk of one split
        return {str(loaded.split or "train"): loaded}
    return dict(loaded)
