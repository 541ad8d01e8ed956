import sqlite3

import pytest

from kdlora import store as store_module
from kdlora.cli import main
from kdlora.errors import UserError
from kdlora.keys import run_key
from kdlora.store import Store

TRAIN = {"task": "sst2", "family": "bert", "method": "lora", "rank": 8, "seed": 1}


def test_run_key_is_canonical():
    assert run_key("train", {"a": 1, "b": [1, 2]}) == run_key("train", {"b": [1, 2], "a": 1})
    assert run_key("train", {"a": 1}) != run_key("train", {"a": 2})
    assert run_key("train", {"a": 1}) != run_key("bench", {"a": 1})
    assert run_key("train", {"a": 1}, 1) != run_key("train", {"a": 1}, 2) != run_key("train", {"a": 1})
    assert len(run_key("train", {})) == 64


def test_start_finish_round_trip(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.start("k1", "train", "train sst2", TRAIN, out_dir="/x", fields=TRAIN)
        assert store.get("k1").status == "running" and store.get("k1").attempts == 1
        status = store.finish("k1", {"status": "done", "metrics": {"accuracy": 0.9}, "score": 0.9,
                                     "trainable_params": 10, "peak_memory_mb": 5.5, "memory_kind": "rss",
                                     "train_seconds": 3.0, "wall_seconds": 4.0, "environment": {"torch": "x"}})
        assert status == "done"
        run = store.get("k1")
        assert (run.kind, run.task, run.method, run.rank, run.seed) == ("train", "sst2", "lora", 8, 1)
        assert run.metrics == {"accuracy": 0.9, "score": 0.9}
        assert run.params == {"trainable_params": 10}
        assert run.memory == {"peak_memory_mb": 5.5, "memory_kind": "rss"}
        assert run.timings == {"train_seconds": 3.0, "wall_seconds": 4.0}
        assert run.environment == {"torch": "x"} and run.config == TRAIN and run.finished_at
        # a second attempt of the same key updates the one row
        store.start("k1", "train", "train sst2", TRAIN, fields=TRAIN)
        store.finish("k1", {"status": "collapsed", "reason": "non-finite loss (nan) at step 1"})
        assert [(r.status, r.reason, r.attempts) for r in store.runs()] == [
            ("collapsed", "non-finite loss (nan) at step 1", 2)]
    with Store(tmp_path / "r.db", readonly=True) as again:
        assert again.statuses() == {"k1": "collapsed"}


def test_filters_and_unknown_status(tmp_path):
    with Store(tmp_path / "r.db") as store:
        for key, method in (("a", "fft"), ("b", "lora"), ("c", "lora")):
            store.start(key, "train", key, {}, fields={**TRAIN, "method": method})
        store.finish("a", {"status": "done"})
        store.finish("b", {"status": "weird"})
        assert [r.key for r in store.runs(method="lora")] == ["b", "c"]
        assert [r.key for r in store.runs(status="running")] == ["c"]
        assert store.get("b").status == "failed" and "weird" in store.get("b").reason
        with pytest.raises(KeyError):
            store.finish("nope", {"status": "done"})


def test_wal_mode(tmp_path):
    Store(tmp_path / "r.db").close()
    assert sqlite3.connect(tmp_path / "r.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_corrupt_database_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all, just text " * 100)
    with pytest.raises(UserError, match="bad.db"):
        Store(bad)
    assert main(["runs", "--db", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.db" in err and "not a usable kdlora results database" in err


def test_other_sqlite_file_is_refused(tmp_path, capsys):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)")
    assert main(["runs", "--db", str(other)]) == 2
    assert "no `runs` table" in capsys.readouterr().err


def test_missing_database_for_reading(tmp_path, capsys):
    assert main(["runs", "--db", str(tmp_path / "none.db")]) == 2
    assert "no results database" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_locked_database_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.1)
    path = tmp_path / "r.db"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UserError, match="locked by another process"):
            with Store(path) as store:
                store.start("k", "train", "k", {})
        assert main(["sweep", "default", "--db", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "r.db" in err and "locked" in err
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _version_1_store(path):
    """A store as schema version 1 wrote it: no flags column; a constant-prediction run marked collapsed."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE runs (key TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
            label TEXT NOT NULL, task TEXT, family TEXT, method TEXT, rank INTEGER, seed INTEGER, out_dir TEXT,
            config TEXT NOT NULL, metrics TEXT, params TEXT, memory TEXT, timings TEXT, environment TEXT, result TEXT,
            attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO runs (key, kind, status, reason, label, config, created_at) VALUES
            ('wnli', 'train', 'collapsed', 'constant predictions on dev (every example labelled 0)', 'w', '{}', 't'),
            ('nan', 'train', 'collapsed', 'non-finite loss (nan) at step 3', 'n', '{}', 't');
    """)
    conn.commit()
    conn.close()


def test_a_version_1_store_is_upgraded_and_its_constant_runs_become_flagged_done_runs(tmp_path):
    """Finding: constant predictions were `collapsed` and dropped; an old store must still open."""
    _version_1_store(tmp_path / "old.db")
    with Store(tmp_path / "old.db", readonly=True) as store:
        runs = {r.key: r for r in store.runs()}
    assert (runs["wnli"].status, runs["wnli"].flags, runs["wnli"].reason) == ("done", ["constant_predictions"], None)
    assert (runs["nan"].status, runs["nan"].flags) == ("collapsed", [])
    assert sqlite3.connect(tmp_path / "old.db").execute(
        "SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == (str(store_module.SCHEMA_VERSION),)


def test_flags_are_stored_and_a_newer_schema_is_refused(tmp_path):
    with Store(tmp_path / "r.db") as store:
        store.start("k", "train", "k", TRAIN, fields=TRAIN)
        store.finish("k", {"status": "done", "flags": ["constant_predictions", "majority_class"]})
        assert store.get("k").flags == ["constant_predictions", "majority_class"]
    conn = sqlite3.connect(tmp_path / "r.db")
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match=r"r.db: results database schema version 99 is newer than this kdlora's"):
        Store(tmp_path / "r.db")
