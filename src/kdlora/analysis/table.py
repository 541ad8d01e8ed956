"""Reading a Table II CSV: columns found by name, cells parsed with their units, every row given a family.

A family is named by its FFT row's model. LoRA rows of that model belong to it; a KD-LoRA row belongs to its
`Model Family` cell when there is one, else to the teacher of its (known) student model. Every mistake in the file
raises a UserError naming the file, the row (numbered as a spreadsheet does: the header is row 1) and the column.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from kdlora.analysis.units import MEMORY, PARAMS, TIME, Quantity, UnitError, parse_value
from kdlora.errors import UserError
from kdlora.families import FAMILIES
from kdlora.methods import baseline, by_label, labels

# Distilled student -> the teacher it was distilled from (by the names papers and hubs use). Our registry's pairs
# are added below, so a new family needs no entry here.
STUDENT_TEACHER = {
    "DistilBERT": "BERT-base",
    "DistilBERT-base": "BERT-base",
    "DistilBERT-base-uncased": "BERT-base-uncased",
    "DistilBERT-base-cased": "BERT-base-cased",
    "DistilBERT-base-multilingual-cased": "BERT-base-multilingual-cased",
    "DistilRoBERTa": "RoBERTa-base",
    "DistilRoBERTa-base": "RoBERTa-base",
    "DeBERTa-v3-small": "DeBERTa-v3-base",
    "DeBERTa-v3-xsmall": "DeBERTa-v3-base",
    "TinyBERT": "BERT-base",
    "TinyBERT-General-4L-312D": "BERT-base",
    "TinyBERT-General-6L-768D": "BERT-base",
    "MiniLM-L3 (derived)": "MiniLM-L6",
}
for _family in FAMILIES.values():
    for _student, _teacher in ((_family.student.display_name, _family.teacher.display_name),
                               (_family.student.hub_name, _family.teacher.hub_name)):
        STUDENT_TEACHER.setdefault(_student, _teacher)


def name_key(name: str) -> str:
    """What two spellings of one model share: no hub owner, case, punctuation or cased/uncased suffix."""
    key = re.sub(r"[^a-z0-9]", "", name.rsplit("/", 1)[-1].lower())
    return re.sub(r"(un)?cased$", "", key)


_TEACHER_OF: dict[str, str] = {}
for _student, _teacher in STUDENT_TEACHER.items():
    _TEACHER_OF.setdefault(name_key(_student), _teacher)  # the first spelling (the paper's) names the teacher


@dataclass(frozen=True)
class Row:
    """One model and method, its figures in the reported units."""

    line: int
    """Row number in the file (the header is row 1)."""
    model: str
    method: str
    """FFT, LoRA or KD-LoRA."""
    family: str
    """The model of the family's FFT row."""
    params_m: dict[int, float]
    """Trainable parameters in millions, by LoRA rank."""
    memory_mb: float
    inference_s: float


@dataclass(frozen=True)
class Table:
    """A validated Table II: rows, the ranks of its columns, its families (FFT models) in file order."""

    path: str
    rows: tuple[Row, ...]
    ranks: tuple[int, ...]
    families: tuple[str, ...]

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods other than FFT that have at least one row, in the registry's order (LoRA, KD-LoRA, ...)."""
        present = {row.method for row in self.rows}
        return tuple(m for m in labels().values() if m in present and m != baseline().label)

    def row(self, family: str, method: str) -> Row | None:
        return next((r for r in self.rows if r.family == family and r.method == method), None)


def _normal_header(text: str) -> str:
    return " ".join(text.split()).lower()


def read_text(path: str | Path) -> str:
    """The file's text; UserError when it is missing, empty, binary or not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a CSV file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not data.strip():
        raise UserError(f"{path}: the file is empty")
    if b"\0" in data:
        row = data[:data.index(b"\0")].count(b"\n") + 1
        raise UserError(f"{path}: row {row}: not a text file (binary content)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}: row {row}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


class _Columns:
    """Where each column of a Table II sits in the header."""

    def __init__(self, path: str, header: list[str]):
        self.path = path
        self.names = [h.strip() for h in header]
        self.index: dict[str, int] = {}
        self.ranks: dict[int, int] = {}
        for i, name in enumerate(self.names):
            normal = _normal_header(name)
            rank = re.fullmatch(r"rank\s*(\d+)", normal)
            key = int(rank[1]) if rank else normal
            if key in self.index or key in self.ranks:
                raise UserError(f"{path}: row 1, column {name!r}: the column appears twice")
            if rank:
                if int(rank[1]) <= 0:
                    raise UserError(f"{path}: row 1, column {name!r}: a LoRA rank must be positive")
                self.ranks[int(rank[1])] = i
            else:
                self.index[normal] = i
        for required in ("Model", "Method", "Memory Usage", "Inference Time"):
            if required.lower() not in self.index:
                raise UserError(f"{path}: row 1, column {required!r}: missing (the header has "
                                f"{', '.join(self.names)})")
        if not self.ranks:
            raise UserError(f"{path}: row 1, column 'Rank N': missing (one column per LoRA rank, e.g. 'Rank 8')")

    def cell(self, cells: list[str], line: int, column: str | int, required: bool = True) -> str:
        """The stripped text of `column` (a header name or a rank); empty cells of required columns are errors."""
        i = self.ranks[column] if isinstance(column, int) else self.index.get(column.lower())
        if i is None:
            return ""
        text = cells[i].strip()
        if required and not text:
            raise self.error(line, i, "the cell is empty")
        return text

    def number(self, cells: list[str], line: int, column: str | int, quantity: Quantity) -> float:
        text = self.cell(cells, line, column)
        i = self.ranks[column] if isinstance(column, int) else self.index[column.lower()]
        try:
            value = parse_value(text, quantity)
        except UnitError as exc:
            raise self.error(line, i, str(exc)) from None
        if value <= 0:
            raise self.error(line, i, f"{text!r} must be positive")
        return value

    def error(self, line: int, i: int, problem: str) -> UserError:
        return UserError(f"{self.path}: row {line}, column {self.names[i]!r}: {problem}")


def _method(columns: _Columns, cells: list[str], line: int) -> str:
    text = columns.cell(cells, line, "Method")
    method = by_label(text)  # the paper's labels are data; what they mean is the registry's
    if method is None:
        raise columns.error(line, columns.index["method"], f"unknown method {text!r} "
                            f"({', '.join(labels().values())})")
    return method.label


def load_table(path: str | Path) -> Table:
    """Parse and validate the Table II CSV at `path`; UserError (file, row, column) on any mistake in it."""
    name = str(path)
    records = [(line, cells) for line, cells in _records(name, read_text(path)) if any(c.strip() for c in cells)]
    if not records:
        raise UserError(f"{name}: the file is empty")
    columns = _Columns(name, records[0][1])
    if len(records) == 1:
        raise UserError(f"{name}: no data rows under the header")
    raw = []
    seen: dict[tuple[str, str], int] = {}
    for line, cells in records[1:]:
        if len(cells) != len(columns.names):
            missing = len(cells) < len(columns.names)
            column = columns.names[len(cells)] if missing else f"#{len(columns.names) + 1}"
            count = f"{len(cells)} cell{'s' * (len(cells) != 1)}"
            raise UserError(f"{name}: row {line}, column {column!r}: the row has {count}, "
                            f"the header {len(columns.names)}")
        model = columns.cell(cells, line, "Model")
        method = _method(columns, cells, line)
        if (name_key(model), method) in seen:
            raise columns.error(line, columns.index["method"], f"a second {method} row for {model} "
                                f"(the first is row {seen[name_key(model), method]})")
        seen[name_key(model), method] = line
        params = {rank: columns.number(cells, line, rank, PARAMS) for rank in sorted(columns.ranks)}
        figures = dict(model=model, method=method, params_m=params,
                       memory_mb=columns.number(cells, line, "Memory Usage", MEMORY),
                       inference_s=columns.number(cells, line, "Inference Time", TIME))
        raw.append((line, cells, figures))
    base = baseline().label
    families = {name_key(f["model"]): f["model"] for _, _, f in raw if f["method"] == base}
    if not families:
        raise columns.error(raw[0][0], columns.index["method"], "the table has no FFT row: reductions and "
                            "speedups are relative to FFT")
    rows = tuple(Row(line=line, family=_family(columns, cells, line, f, families), **f) for line, cells, f in raw)
    owners: dict[tuple[str, str], Row] = {}
    for row in rows:
        first = owners.setdefault((row.family, row.method), row)
        if first is not row:
            raise columns.error(row.line, columns.index["model"], f"a second {row.method} row in family "
                                f"{row.family} (the first is {first.model}, row {first.line})")
    return Table(path=name, rows=rows, ranks=tuple(sorted(columns.ranks)), families=tuple(families.values()))


def _records(name: str, text: str):
    """(row number, cells) per CSV record; a record's number is that of the line it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for cells in reader:
            yield start, cells
            start = reader.line_num + 1
    except csv.Error as exc:
        raise UserError(f"{name}: row {start}: not CSV ({exc})") from None


def _family(columns: _Columns, cells: list[str], line: int, figures: dict, families: dict[str, str]) -> str:
    """The FFT model whose family this row belongs to."""
    model, method = figures["model"], figures["method"]
    if method == baseline().label:
        return model
    named = columns.cell(cells, line, "Model Family", required=False)
    if named:
        registered = FAMILIES.get(named.lower())
        for candidate in (named, registered.teacher.display_name if registered else None):
            if candidate and name_key(candidate) in families:
                return families[name_key(candidate)]
        raise columns.error(line, columns.index["model family"], f"family {named!r} has no FFT row")
    if name_key(model) in families:
        return families[name_key(model)]
    model_column = columns.index["model"]
    if by_label(method).role == "teacher":
        raise columns.error(line, model_column, f"{method} row for {model}, which has no FFT row ({method} trains "
                            "the FFT model; name its family in a 'Model Family' column)")
    teacher = _TEACHER_OF.get(name_key(model))
    if teacher is None:
        raise columns.error(line, model_column, f"{method} row for {model}: no family (not a known student; name "
                            "its teacher's FFT model in a 'Model Family' column)")
    if name_key(teacher) not in families:
        raise columns.error(line, model_column, f"{method} row for {model}: its teacher {teacher} has no FFT row")
    return families[name_key(teacher)]
