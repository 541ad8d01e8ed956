"""Load a task's split as `Examples`: from the hub, a local GLUE TSV folder, CSV/JSONL/Parquet files (all read by
`kdlora.data.tables`), or the snippets.

Ids are row numbers in the full split (see `kdlora.data.examples`).
"""

from __future__ import annotations

from pathlib import Path

from kdlora.data.examples import Examples
from kdlora.data.file_tasks import load_file_split
from kdlora.data.snippets import load_snippets
from kdlora.data.tables import is_empty, read_rows, read_table, texts_of
from kdlora.data.tasks import Task
from kdlora.errors import UserError

# GLUE's own folder names, for a data_dir that holds the whole GLUE download
GLUE_DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
             "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def load_split(task: Task, split: str, data_dir: str | Path | None = None) -> Examples:
    """The `split` ("train", "validation", "validation_matched", ..., "test") of `task`, labels checked; a split
    without a data row is a UserError."""
    if task.source == "files":
        examples = load_file_split(task.files, split, task.label_names, task.regression)
    else:
        if task.source == "snippets":
            examples = load_snippets(task, split)
        elif data_dir is not None:
            examples = _load_local(task, split, Path(data_dir))
        else:
            examples = _load_hub(task, split)
        check_labels(task, examples)
    if not examples.ids:  # a header and nothing else: nothing to train on or to score
        raise UserError(f"{examples.source}: no data rows")
    return examples


def check_labels(task: Task, examples: Examples) -> None:
    """Raise a UserError naming the first label outside the task's range."""
    for i, label in enumerate(examples.labels):
        if task.regression:
            low, high = task.label_range or (float("-inf"), float("inf"))
            ok = low <= label <= high
        else:
            ok = float(label).is_integer() and 0 <= label < task.num_labels
        if not ok:
            raise UserError(f"{examples.source}: example {examples.ids[i]} has label {label!r} outside the range "
                            f"of task {task.name}")


def _load_hub(task: Task, split: str) -> Examples:
    try:
        from datasets import load_dataset

        data = load_dataset("nyu-mll/glue", task.name, split=split)
    except Exception as exc:  # offline, or the hub refused: say how to load local files instead
        raise UserError(f"cannot load GLUE {task.name}/{split} from the hub ({type(exc).__name__}); pass "
                        "--data-dir with GLUE TSV files or CSV/JSONL files") from None
    columns = [data[f] for f in task.text_fields]
    texts = list(zip(*columns, strict=True))
    return Examples(list(range(len(data))), texts, [float(x) for x in data["label"]], f"nyu-mll/glue/{task.name}")


def _local_candidates(task: Task, split: str, root: Path) -> list[Path]:
    glue_name = (task.tsv.get("names") or {}).get(split) or {"validation": "dev"}.get(split, split)
    folders = [root, root / GLUE_DIRS.get(task.name, task.name)]
    names = [f"{glue_name}.tsv", *(f"{name}.{suffix}" for name in dict.fromkeys((split, glue_name))
                                   for suffix in ("csv", "jsonl", "parquet"))]
    return [folder / name for folder in folders for name in names]


def _load_local(task: Task, split: str, root: Path) -> Examples:
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found")
    for path in _local_candidates(task, split, root):
        if path.is_file():
            return _read_tsv(task, path) if path.suffix == ".tsv" else _read_named_columns(task, path)
    raise UserError(f"{root}: no {split} file for task {task.name} (looked for train.tsv/dev.tsv, "
                    f"{split}.csv, {split}.jsonl or {split}.parquet)")


def _label_value(task: Task, raw: str, path: Path, row: int) -> float:
    names = task.tsv.get("labels")
    if names and raw in names:
        return float(names.index(raw))
    try:
        return float(raw)
    except ValueError:
        raise UserError(f"{path}: row {row}, column 'label': label {raw!r} is not one of the task's labels"
                        ) from None


def _read_tsv(task: Task, path: Path) -> Examples:
    """An original GLUE TSV file (no quoting; CoLA has no header row and positional columns)."""
    spec = task.tsv
    rows = read_rows(path)
    if spec["header"]:
        header, rows = (rows[0] if rows else []), rows[1:]
        wanted = [*spec["texts"], spec["label"]]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} for task {task.name}")
        positions = [header.index(c) for c in wanted]
    else:
        positions = [*spec["texts"], spec["label"]]
    ids, texts, labels = [], [], []
    for row_number, row in enumerate(rows, start=1):
        if len(row) <= max(positions):
            continue  # GLUE's QQP/MNLI files hold a few broken lines; the hub drops them too
        ids.append(len(ids))
        texts.append(tuple(row[p] for p in positions[:-1]))
        labels.append(_label_value(task, row[positions[-1]], path, row_number))
    return Examples(ids, texts, labels, str(path))


def _read_named_columns(task: Task, path: Path) -> Examples:
    """A CSV, JSONL or Parquet file whose columns are the task's text fields (hub names) and `label`."""
    frame = read_table(path)
    missing = [c for c in (*task.text_fields, "label") if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} for task {task.name} "
                        f"(has: {', '.join(map(str, frame.columns))})")
    texts = texts_of(frame, path, task.text_fields)
    labels = []
    for row, value in enumerate(frame["label"].tolist(), start=1):
        if is_empty(value):
            raise UserError(f"{path}: row {row}, column 'label': empty label")
        labels.append(_label_value(task, str(value).strip(), path, row))
    return Examples(list(range(len(frame))), texts, labels, str(path))
