"""Every file kdlora writes, damaged four ways, read by every command that reads it, in-process through the CLI.

One tiny run of each method, two exports (safetensors; onnx int8), a teacher-logit cache and a results store are
built once per session; each case copies the pristine folder, damages one file (deleted, cut to half its size,
emptied, or 16 bytes in its middle inverted; the store's in its header) and runs one command: exit 2, exactly one
line on stderr naming the file, no traceback, and every other file byte for byte as it was (nothing written
either). A damaged teacher-logit cache is recomputed instead, with a line saying so. The README's reliability
paragraph counts these cases.
"""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from damage_helpers import damage, snapshot
from kdlora import store as store_module
from kdlora.cli import main
from train_helpers import DATA

torch.set_num_threads(1)

DAMAGES = ("delete", "truncate", "empty", "garble")
TOKENIZER = ["tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"]
ADAPTER_RUN = ["metrics.json", "run.json", "README.md", "adapter/README.md", "adapter/adapter_config.json",
               "adapter/adapter_model.safetensors", "adapter/tokenizer.json", "adapter/tokenizer_config.json",
               "base/config.json", "base/model.safetensors", *TOKENIZER]
FILES = {
    "fft": ["metrics.json", "run.json", "README.md", "model/config.json", "model/model.safetensors", *TOKENIZER],
    "lora": ADAPTER_RUN,
    "kd-lora": ADAPTER_RUN,
    "export": ["README.md", "config.json", "export.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json"],
    "export-onnx": ["README.md", "config.json", "export.json", "model.onnx", "tokenizer.json", "tokenizer_config.json"],
}
"""Every file each folder holds (a test checks these lists against what kdlora really writes)."""
READERS = {"fft": ("predict", "export", "teacher"), "lora": ("predict", "export"), "kd-lora": ("predict", "export"),
           "export": ("predict",), "export-onnx": ("predict",)}
"""The commands that read each folder: the FFT run is also the teacher of `train --method kd-lora`."""
TRAIN = ["train", "--task", "sst2", "--family", "bert", "--method", "kd-lora", "--tiny", "--data-dir",
         str(DATA / "sst2"), "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--learning-rate", "1e-3",
         "--quiet"]
RECOMPUTED_RTOL, RECOMPUTED_ATOL = 1e-4, 1e-5
"""Logits recomputed in another batch composition agree to this (fp32 sums of a tiny model's few hundred products
differ in their last bits, about 1e-7 relative each, on CPUs whose kernels depend on the batch's shape)."""
SMALL = Path(__file__).parent / "data" / "sweep" / "small.toml"
ROOT = Path(__file__).resolve().parents[1]

RUN_CASES = [(folder, name, how, command) for folder, names in FILES.items() for name in names
             for how in DAMAGES for command in READERS[folder]]
STORE_CASES = [(how, command) for how in ("delete", "truncate", "empty", "garble", "other-schema")
               for command in ("runs", "report", "sweep")
               if not (command == "sweep" and how in ("delete", "empty"))]  # a sweep starts a new store there
STORE_CASES.append(("locked", "sweep"))


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.splitlines()


def test_the_cases_cover_every_file_kdlora_writes(pristine):
    for folder, names in FILES.items():
        written = sorted(p.relative_to(pristine / folder).as_posix() for p in (pristine / folder).rglob("*")
                         if p.is_file())
        assert written == sorted(names), folder
    assert [p.name for p in (pristine / "cache").rglob("*") if p.is_file()] != []
    assert len(RUN_CASES) == (7 * 3 + 12 * 2 + 12 * 2 + 6 * 1 + 6 * 1) * 4  # files x readers, four damages each


@pytest.mark.parametrize("folder, name, how, command", RUN_CASES,
                         ids=[f"{f}/{n}-{h}-{c}" for f, n, h, c in RUN_CASES])
def test_a_damaged_file_is_one_line_and_changes_nothing_else(pristine, tmp_path, capsys, monkeypatch, folder, name,
                                                              how, command):
    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "w" / folder
    shutil.copytree(pristine / folder, work)
    damage(work / name, how)
    before = snapshot(tmp_path)
    argv = {"predict": ["predict", str(work), "a great film"],
            "export": ["export", str(work), "--out", str(tmp_path / "exported")],
            "teacher": [*TRAIN, "--teacher", str(work), "--out", str(tmp_path / "student")]}[command]
    code, lines = run_cli(argv, capsys)
    assert code == 2 and len(lines) == 1
    assert str(work) in lines[0] and name in lines[0]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_teacher_logit_cache_is_recomputed_with_a_line(pristine, tmp_path, capsys, monkeypatch, how):
    shutil.copytree(pristine / "cache", tmp_path / "cache")
    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    [cached] = (tmp_path / "cache").rglob("*.safetensors")
    teacher = snapshot(pristine / "fft")
    damage(cached, how)
    student = tmp_path / "student"
    code, lines = run_cli([*TRAIN, "--teacher", str(pristine / "fft"), "--out", str(student), "--max-train-samples",
                           "4", "--max-eval-samples", "4"], capsys)
    status = json.loads((student / "metrics.json").read_text())["status"]  # the student trained to the end
    assert code == {"done": 0, "collapsed": 1}[status]  # (a tiny random student often collapses: exit 1)
    if how == "delete":  # a missing cache is no damage: computed again without a word
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith(f"teacher-logit cache {cached} is damaged (")
        assert lines[0].endswith("): recomputing")
    # the cache holds the teacher's logits again: those the pristine cache held for the same examples, within
    # fp32 rounding: the pristine cache ran every training example (other batches, other padding), this one 4, and
    # oneDNN's fp32 kernels on AVX-512 and AMX CPUs are not batch-invariant in the last bits (AVX2 ones happen to be)
    new, old = load_file(cached), load_file(next((pristine / "cache").rglob("*.safetensors")))
    rows = dict(zip(old["ids"].tolist(), old["logits"], strict=True))
    assert len(new["ids"]) == 4
    torch.testing.assert_close(new["logits"], torch.stack([rows[i] for i in new["ids"].tolist()]), rtol=RECOMPUTED_RTOL,
                               atol=RECOMPUTED_ATOL)
    assert snapshot(pristine / "fft") == teacher


def _other_schema(path: Path) -> None:
    """A results database from another kdlora: schema version 99, a `runs` table of other columns."""
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, payload TEXT)")
        conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    conn.close()


@pytest.mark.parametrize("how, command", STORE_CASES, ids=[f"{h}-{c}" for h, c in STORE_CASES])
def test_a_damaged_results_store_is_one_line_and_changes_nothing(pristine, tmp_path, capsys, monkeypatch, how,
                                                                 command):
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")  # should a sweep start, it runs nothing real
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.1)
    db = tmp_path / "w" / "r.db"
    shutil.copytree(pristine / "store", db.parent)
    holder = None
    if how == "other-schema":
        _other_schema(db)
    elif how == "locked":
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    else:
        # SQLite keeps no checksums: bytes garbled in a page's free space are harmless and a flipped value cannot be
        # told from an edit, so the store is garbled where SQLite must notice, its header
        damage(db, how, garble_at=0)
    before = snapshot(tmp_path)
    argv = {"runs": ["runs", "--db", str(db)], "report": ["report", "--db", str(db), "--out", str(tmp_path / "rep")],
            "sweep": ["sweep", str(SMALL), "--db", str(db), "--no-progress"]}[command]
    try:
        code, lines = run_cli(argv, capsys)
        assert code == 2 and len(lines) == 1 and str(db) in lines[0]
        assert snapshot(tmp_path) == before
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()


def test_the_readme_counts_these_cases():
    cases = len(RUN_CASES) + len(DAMAGES) + len(STORE_CASES) + 1  # + the locked store that still reads
    assert f"{cases} damaged-input cases, none ends in a traceback" in (ROOT / "README.md").read_text()


def test_a_locked_store_still_reads(pristine, tmp_path, capsys):
    """WAL mode: `kdlora runs` reads while a sweep holds the write lock."""
    db = tmp_path / "r.db"
    shutil.copy(pristine / "store" / "r.db", db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert main(["runs", "--db", str(db), "--format", "csv"]) == 0
        assert capsys.readouterr().out.splitlines()[1].startswith("k1,train,done,sst2,bert,fft,,1,0.5,")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
