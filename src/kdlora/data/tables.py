"""The one reader of local data files: CSV, TSV, JSONL or Parquet (by suffix) as a table of strings.

Both kinds of local data read through it: a task from the user's files (`kdlora.data.file_tasks`) and the GLUE-layout
files of a `--data-dir` (`kdlora.data.loaders`). Every cell is text as written (no value is guessed to be missing:
an empty cell is "", a JSON null None, both empty to `is_empty`); errors are one UserError naming the file and,
where there is one, the row (data rows count from 1, the header not counted) and the column. A column name that
occurs twice is one too (pandas would rename the second `name.1`, JSON keep the last).

A TSV is read with no quote processing, as GLUE's files are written: a text that begins with a double quote is
text, not the start of a quoted field running over the next rows. CSV goes through pandas (quoted commas and line
breaks), Parquet through pandas and pyarrow (which `datasets` installs). JSONL is read line by line here rather
than by `datasets` or pandas: their errors name no row.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from kdlora.errors import UserError


@dataclass(frozen=True)
class Table:
    """One split as read: its rows (a pandas DataFrame), where it came from (for messages), the class names the data
    declares (a ClassLabel column's; None: found from the values) and the id of its first row."""

    frame: object
    where: str
    class_names: tuple[str, ...] | None = None
    first_id: int = 0
    header: str = "header row, "
    """Where a file names its columns, for messages (a dataset's features: none)."""


FORMATS = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSONL", ".json": "JSONL", ".parquet": "Parquet"}


def file_format(path: str | Path) -> str:
    """`CSV`, `TSV`, `JSONL` or `Parquet` by the file's suffix; another suffix or no file is a UserError."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: unknown file type {path.suffix!r} (use .csv, .tsv, .jsonl or .parquet)")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return kind


def read_table(path: str | Path):
    """The file as a pandas DataFrame of strings (format by suffix, a header row or JSON keys naming the columns);
    a file that does not parse is a UserError."""
    import pandas as pd

    path = Path(path)
    kind = file_format(path)
    try:
        if kind == "Parquet":
            frame = pd.read_parquet(path)
        elif kind == "JSONL":
            frame = pd.DataFrame.from_records(_json_lines(path))
        elif kind == "TSV":
            rows = [cells for cells in read_rows(path) if cells]  # blank lines hold no row
            header = rows[0] if rows else []
            for row, cells in enumerate(rows[1:], start=1):
                if len(cells) != len(header):
                    raise UserError(f"{path}: row {row}: {len(cells)} tab-separated fields where the header has "
                                    f"{len(header)}")
            frame = pd.DataFrame(rows[1:], columns=header, dtype=str)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            # pandas renames a repeated column `name.1`: read the header as written
            header = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", header=None, nrows=1)
            names = [str(c) for c in header.iloc[0]] if len(header) else []
    except UserError:
        raise
    except Exception as exc:  # pandas raises many types; the message names the line where it has one
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: cannot parse as {kind}: {reason}") from None
    frame.columns = [str(c) for c in frame.columns]
    repeated = _repeated(names if kind == "CSV" else list(frame.columns))
    if repeated is not None:
        raise UserError(f"{path}: header row, column {repeated!r}: named twice (which one is meant?); rename one")
    return frame


def _repeated(names: list[str]) -> str | None:
    """The first name that occurs twice in `names`, or None."""
    seen = set()
    return next((name for name in names if name in seen or seen.add(name)), None)


def read_rows(path: str | Path) -> list[list[str]]:
    """A TSV file's lines as lists of fields, quotes kept as text (GLUE's layout; MRPC's files begin with a
    byte-order mark, hence utf-8-sig)."""
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as handle:
            return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot parse as TSV: not UTF-8 text (byte {exc.object[exc.start]:#x})") from None


def _json_lines(path: Path) -> list[dict]:
    """One JSON object per non-blank line; a bad line is a UserError naming its row."""
    rows = []
    lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    for row, line in enumerate(lines, start=1):
        try:
            value = json.loads(line, object_pairs_hook=_no_repeated_keys)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: row {row}: cannot parse as JSONL: {exc.msg} (column {exc.colno})") from None
        except KeyError as exc:
            raise UserError(f"{path}: row {row}, column {exc.args[0]!r}: named twice (which one is meant?); "
                            "rename one") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}: row {row}: cannot parse as JSONL: expected an object, got {value!r:.40}")
        rows.append(value)
    return rows


def _no_repeated_keys(pairs: list[tuple]) -> dict:
    """A JSON object as a dict; a key that occurs twice raises KeyError (json keeps the last one silently)."""
    repeated = _repeated([key for key, _ in pairs])
    if repeated is not None:
        raise KeyError(repeated)
    return dict(pairs)


def is_empty(value) -> bool:
    """An empty cell: "", blanks, a JSON null, or a Parquet NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def texts_of(frame, path, columns) -> list[tuple[str, ...]]:
    """The text columns' cells row by row; an empty one is a UserError naming its row and column."""
    values = [frame[c].tolist() for c in columns]
    for name, cells in zip(columns, values, strict=True):
        for row, value in enumerate(cells, start=1):
            if is_empty(value):
                raise UserError(f"{path}: row {row}, column {name!r}: empty text")
    return [tuple(str(v) for v in row) for row in zip(*values, strict=True)]
