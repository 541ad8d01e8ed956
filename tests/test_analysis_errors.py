"""Every kind of bad Table II through the CLI: one line naming file, row and column; exit 2; DIR untouched."""

from pathlib import Path

import pytest

from kdlora.cli import main

PAPER_TEXT = (Path(__file__).parent / "data" / "analysis" / "kd-lora-table-ii.csv").read_text(encoding="utf-8")
LINES = PAPER_TEXT.splitlines()


def replaced(old: str, new: str) -> bytes:
    assert old in PAPER_TEXT
    return PAPER_TEXT.replace(old, new, 1).encode()


def without(*prefixes: str) -> bytes:
    return ("\n".join(line for line in LINES if not line.startswith(prefixes)) + "\n").encode()


def with_header(header: str) -> bytes:
    return ("\n".join([header, *LINES[1:]]) + "\n").encode()


CASES = [
    ("empty file", b"", "the file is empty"),
    ("blank file", b" \n\n", "the file is empty"),
    ("not utf-8", replaced("DistilRoBERTa-base", "DistilRoBERTa-b\xe9se").replace(b"\xc3\xa9", b"\xe9"),
     "row 7: not UTF-8 text (byte 0xe9)"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "row 3: not a text file (binary content)"),
    ("no data rows", (LINES[0] + "\n").encode(), "no data rows under the header"),
    ("missing column", with_header("Model,Method,Rank 8,Rank 16,Rank 32,Rank 64,Memory,Inference Time"),
     "row 1, column 'Memory Usage': missing (the header has Model, Method, Rank 8, Rank 16, Rank 32, Rank 64, "
     "Memory, Inference Time)"),
    ("no rank column", with_header("Model,Method,R8,R16,R32,R64,Memory Usage,Inference Time"),
     "row 1, column 'Rank N': missing (one column per LoRA rank, e.g. 'Rank 8')"),
    ("column twice", with_header("Model,Method,Rank 8,Rank 16,rank 16,Rank 64,Memory Usage,Inference Time"),
     "row 1, column 'rank 16': the column appears twice"),
    ("short row", replaced("463.5MB,6.22s", "463.5MB"), "row 3, column 'Inference Time': the row has 7 cells, "
     "the header 8"),
    ("long row", replaced("463.5MB,6.22s", "463.5MB,6.22s,x"), "row 3, column '#9': the row has 9 cells, the header 8"),
    ("empty cell", replaced("2.9M,5.9M", "2.9M, "), "row 3, column 'Rank 16': the cell is empty"),
    ("empty model", replaced("DistilBERT-base,", ","), "row 4, column 'Model': the cell is empty"),
    ("unparseable", replaced("2.9M", "two"), "row 3, column 'Rank 8': 'two' is not a number (with an optional unit)"),
    ("unknown unit", replaced("463.5MB", "463.5 XB"), "row 3, column 'Memory Usage': unknown unit 'XB' in "
     "'463.5 XB' (memory in KB, MB, GB, KiB, MiB or GiB; a bare number is in MB)"),
    ("zero", replaced("6.22s", "0s"), "row 3, column 'Inference Time': '0s' must be positive"),
    ("negative", replaced("1.2M", "-1.2M"), "row 4, column 'Rank 8': '-1.2M' must be positive"),
    ("unknown method", replaced("BERT-base,LoRA", "BERT-base,QLoRA"),
     "row 3, column 'Method': unknown method 'QLoRA' (FFT, LoRA, KD-LoRA, Student-LoRA, DoRA, KD-DoRA, AdaLoRA, "
     "KD-AdaLoRA, PiSSA, KD-PiSSA, LoRA+, KD-LoRA+, VeRA, KD-VeRA)"),
    ("duplicate row", (PAPER_TEXT + LINES[2] + "\n").encode(),
     "row 11, column 'Method': a second LoRA row for BERT-base (the first is row 3)"),
    ("lora without fft", without("RoBERTa-base,FFT"), "row 5, column 'Model': LoRA row for RoBERTa-base, which has "
     "no FFT row (LoRA trains the FFT model; name its family in a 'Model Family' column)"),
    ("teacher without fft", without("DeBERTa-v3-base"), "row 8, column 'Model': KD-LoRA row for DeBERTa-v3-small: its "
     "teacher DeBERTa-v3-base has no FFT row"),
    ("family cell without fft", (PAPER_TEXT.replace("\n", ",\n").replace("Inference Time,", "Inference Time,Model "
                                 "Family").replace("5.36s,", "5.36s,ALBERT-base")).encode(),
     "row 4, column 'Model Family': family 'ALBERT-base' has no FFT row"),
    ("kd-lora without family", replaced("DistilBERT-base", "MyStudent"), "row 4, column 'Model': KD-LoRA row for "
     "MyStudent: no family (not a known student; name its teacher's FFT model in a 'Model Family' column)"),
    ("two students, one family", (PAPER_TEXT + "TinyBERT,KD-LoRA,1M,2M,4M,8M,200MB,2s\n").encode(),
     "row 11, column 'Model': a second KD-LoRA row in family BERT-base (the first is DistilBERT-base, row 4)"),
    ("no fft at all", without("BERT-base,FFT", "RoBERTa-base,FFT", "DeBERTa-v3-base,FFT"),
     "row 2, column 'Method': the table has no FFT row: reductions and speedups are relative to FFT"),
    ("huge cell", b'Model,Method,Rank 8,Memory Usage,Inference Time\n"' + b"x" * 200_000 + b'",FFT,1M,1MB,1s\n',
     "row 2: not CSV (field larger than field limit (131072))"),
    ("unclosed quote", b'Model,Method,Rank 8,Memory Usage,Inference Time\n"BERT,FFT,1M,1MB,1s\n',
     "row 2, column 'Method': the row has 1 cell, the header 5"),
]


@pytest.fixture
def out_dir(tmp_path):
    """An output folder that already holds a report: a failed run must leave it exactly as it is."""
    out = tmp_path / "out"
    (out / "efficiency_plots").mkdir(parents=True)
    (out / "report.md").write_text("an earlier report\n")
    (out / "efficiency_plots" / "memory_usage.png").write_bytes(b"earlier plot")
    return out


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(("content", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_table_is_one_line_exit_2_and_out_untouched(tmp_path, out_dir, capsys, content, message):
    table = tmp_path / "table.csv"
    table.write_bytes(content)
    before = snapshot(out_dir)
    assert main(["analyze", str(table), "--out", str(out_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"kdlora analyze: error: {table}: {message}\n"
    assert captured.out == ""
    assert snapshot(out_dir) == before


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_missing_file_or_folder(tmp_path, out_dir, capsys, kind):
    path = tmp_path / "nothing.csv"
    if kind == "folder":
        path.mkdir()
    before = snapshot(out_dir)
    assert main(["analyze", str(path), "--out", str(out_dir)]) == 2
    problem = "no such file" if kind == "missing" else "is a folder, not a CSV file"
    assert capsys.readouterr().err == f"kdlora analyze: error: {path}: {problem}\n"
    assert snapshot(out_dir) == before


def test_bad_reference_leaves_out_untouched(tmp_path, out_dir, capsys):
    reference = tmp_path / "ref.csv"
    reference.write_bytes(replaced("2.9M", "2.9Q"))
    before = snapshot(out_dir)
    table = Path(__file__).parent / "data" / "analysis" / "kd-lora-table-ii.csv"
    assert main(["analyze", str(table), "--reference", str(reference), "--out", str(out_dir)]) == 2
    assert capsys.readouterr().err.startswith(f"kdlora analyze: error: {reference}: row 3, column 'Rank 8': "
                                              "unknown unit 'Q'")
    assert snapshot(out_dir) == before
