"""The results store: one SQLite file holding every train and bench run, keyed by a hash of its full config.

Only the sweep driver writes (executors hand results back to it), each write is one transaction, and the file is
in WAL mode so `kdlora runs` can read while a sweep writes. A locked or corrupt file is a UserError naming it.

Schema versions: 2 added `flags` (e.g. `constant_predictions`: a done run whose dev predictions are one class).
A version-1 store is upgraded when opened: the column is added, and runs that version 1 marked `collapsed` for
constant dev predictions become `done` with that flag, which is what they are. A store from a newer kdlora is
refused with a UserError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kdlora.errors import UserError

DEFAULT_DB = "kdlora-results.db"
"""Where the store lives unless `--db` or the KDLORA_DB environment variable says otherwise."""

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another process's lock before giving up with a UserError."""

STATUSES = ("running", "done", "failed", "collapsed")
KINDS = ("train", "bench")
SCHEMA_VERSION = 2

FLAGS = ("constant_predictions", "majority_class", "pruned")
"""What a done run may be flagged with: every dev prediction one class (or value); that class dev's majority."""

# JSON columns: what each run result contributes to them (the whole result is kept in `result` as well).
_JSON_COLUMNS = ("config", "metrics", "params", "memory", "timings", "environment", "result", "flags")

_CONSTANT_REASON = "constant predictions on dev"
"""How schema version 1 named the runs it marked collapsed for constant predictions."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('train', 'bench')),
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'collapsed')),
    reason TEXT,
    label TEXT NOT NULL,
    task TEXT, family TEXT, method TEXT, rank INTEGER, seed INTEGER,
    out_dir TEXT,
    config TEXT NOT NULL, metrics TEXT, params TEXT, memory TEXT, timings TEXT, environment TEXT, result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
    flags TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def default_db_path() -> str:
    """`$KDLORA_DB` when set, else `./kdlora-results.db`."""
    return os.environ.get("KDLORA_DB") or DEFAULT_DB


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Run:
    """One row of the store, JSON columns decoded."""

    key: str
    kind: str
    status: str
    reason: str | None
    label: str
    task: str | None
    family: str | None
    method: str | None
    rank: int | None
    seed: int | None
    out_dir: str | None
    config: dict
    metrics: dict | None
    params: dict | None
    memory: dict | None
    timings: dict | None
    environment: dict | None
    result: dict | None
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    flags: list | None = None
    """Flags of a done run (`FLAGS`); empty when none."""

    def summary(self) -> dict:
        """The fields `kdlora runs` shows, flat."""
        metrics = self.metrics or {}
        return {
            "key": self.key[:12], "kind": self.kind, "status": self.status, "task": self.task,
            "family": self.family, "method": self.method, "rank": self.rank, "seed": self.seed,
            "score": metrics.get("score"),
            "trainable_params": (self.params or {}).get("trainable_params"),
            "peak_memory_mb": (self.memory or {}).get("peak_memory_mb"),
            "seconds": (self.timings or {}).get("wall_seconds"),
            "finished_at": self.finished_at, "reason": self.reason, "flags": ",".join(self.flags or []),
        }


def split_result(result: dict) -> dict:
    """Spread a backend's result dict over the store's JSON columns."""
    metrics = dict(result.get("metrics") or {})
    for name in ("score", "best_epoch"):
        if result.get(name) is not None:
            metrics[name] = result[name]
    return {
        "metrics": metrics,
        "params": {k: result[k] for k in ("trainable_params", "total_params", "adapter_params") if k in result},
        "memory": {k: result[k] for k in ("peak_memory_mb", "memory_kind") if k in result},
        # energy sits with the time it was spent in (kWh, g CO2-eq; None unless the run tracked it)
        "timings": {k: result[k] for k in ("train_seconds", "wall_seconds", "energy_kwh", "emissions_g_co2eq",
                                           "energy_method") if k in result},
        "environment": result.get("environment"),
        "result": result,
        "flags": [f for f in result.get("flags") or [] if f in FLAGS],
    }


class Store:
    """The SQLite results store at `path` (created on first use)."""

    def __init__(self, path: str | Path | None = None, readonly: bool = False):
        self.path = Path(path or default_db_path())
        if readonly and not self.path.exists():
            raise UserError(f"{self.path}: no results database here (run `kdlora sweep` first, or pass --db)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"{self.path}: cannot open the results database ({exc})") from None
        self._conn.row_factory = sqlite3.Row
        try:
            with self._guard():
                existing = self._tables()
                if existing or readonly:  # check before anything writes to a file that may not be ours
                    self._check_schema(existing)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                if not existing and not readonly:
                    with self._transaction():
                        for statement in _SCHEMA.strip().split(";"):
                            if statement.strip():
                                self._conn.execute(statement)
                        self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                           (str(SCHEMA_VERSION),))
                elif existing:
                    self._upgrade()
        except BaseException:
            self._conn.close()  # leaves no -wal / -shm file beside a database it refused
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite's locked/corrupt errors into one-line UserErrors naming the file."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise UserError(f"{self.path}: the results database is locked by another process "
                                f"(waited {BUSY_TIMEOUT_S:g} s); is another sweep running?") from None
            raise UserError(f"{self.path}: results database error ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: not a usable kdlora results database ({exc})") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _check_schema(self, tables: set[str]) -> None:
        """A UserError for a file that is not a kdlora store, or a store of a schema this kdlora cannot read or
        upgrade; checked before anything is written to it."""
        if "runs" not in tables:
            raise UserError(f"{self.path}: not a kdlora results database (no `runs` table)")
        version = self._version()
        if version > SCHEMA_VERSION:
            raise UserError(f"{self.path}: results database schema version {version} is newer than this kdlora's "
                            f"({SCHEMA_VERSION}); upgrade kdlora to read it")
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)")}
        added_since = {"flags"} if version < 2 else set()  # what `_upgrade` adds to an older store
        missing = sorted({f.name for f in dataclasses.fields(Run)} - columns - added_since)
        if missing:
            raise UserError(f"{self.path}: a results database of another schema (schema version {version}, no "
                            f"column {missing[0]}; this kdlora reads version {SCHEMA_VERSION}): pass another --db")

    def _version(self) -> int:
        if "meta" not in self._tables():
            return 1
        row = self._conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        try:
            return int(row[0]) if row else 1
        except ValueError:
            raise UserError(f"{self.path}: a results database of another schema (schema version {row[0]!r}): pass "
                            "another --db") from None

    def _upgrade(self) -> None:
        """Bring a store written by an older kdlora to SCHEMA_VERSION (see the module docstring)."""
        version = self._version()
        if version > SCHEMA_VERSION:
            raise UserError(f"{self.path}: results database schema version {version} is newer than this kdlora's "
                            f"({SCHEMA_VERSION}); upgrade kdlora to read it")
        if version == SCHEMA_VERSION:
            return
        try:
            with self._transaction():
                columns = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)")}
                if "flags" not in columns:
                    self._conn.execute("ALTER TABLE runs ADD COLUMN flags TEXT")
                self._conn.execute(
                    "UPDATE runs SET status = 'done', flags = ?, reason = NULL WHERE status = 'collapsed' AND "
                    "reason LIKE ?", (_dump(["constant_predictions"]), _CONSTANT_REASON + "%"))
                self._conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                                   (str(SCHEMA_VERSION),))
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise UserError(f"{self.path}: results database schema version {version} needs an upgrade to "
                                f"{SCHEMA_VERSION}, and the file is read-only here") from None
            raise

    # -- writes (the sweep driver only) --

    def start(self, key: str, kind: str, label: str, config: dict, out_dir: str | None = None,
              fields: dict | None = None) -> None:
        """Record that run `key` is starting: status running, attempts + 1 (inserted if new)."""
        fields = fields or {}
        stamp = now()
        with self._guard(), self._transaction():
            self._conn.execute(
                """INSERT INTO runs (key, kind, status, label, task, family, method, rank, seed, out_dir, config,
                                     attempts, created_at, started_at)
                   VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
                   ON CONFLICT(key) DO UPDATE SET status='running', reason=NULL, attempts=attempts+1,
                       started_at=excluded.started_at, finished_at=NULL, out_dir=excluded.out_dir""",
                (key, kind, label, fields.get("task"), fields.get("family"), fields.get("method"),
                 fields.get("rank"), fields.get("seed"), out_dir, _dump(config), stamp, stamp))

    def finish(self, key: str, result: dict) -> str:
        """Record a run's result (status from result["status"], default done); returns the status stored."""
        status = result.get("status") or "done"
        if status not in STATUSES or status == "running":
            status, result = "failed", {**result, "reason": f"backend returned status {status!r}"}
        columns = split_result(result)
        with self._guard(), self._transaction():
            updated = self._conn.execute(
                f"""UPDATE runs SET status=?, reason=?, finished_at=?,
                        {", ".join(f"{c}=?" for c in columns)} WHERE key=?""",
                (status, result.get("reason"), now(), *(_dump(v) for v in columns.values()), key)).rowcount
        if updated != 1:
            raise KeyError(f"run {key} was never started")
        return status

    # -- reads --

    def runs(self, kind: str | None = None, status: str | None = None, keys=None, **filters) -> list[Run]:
        """Runs matching every given filter (task=, family=, method=, rank=, seed=), oldest first."""
        clauses, values = [], []
        for name, value in (("kind", kind), ("status", status), *filters.items()):
            if value is not None:
                clauses.append(f"{name} = ?")
                values.append(value)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self._guard():
            rows = self._conn.execute(sql + " ORDER BY created_at, rowid", values).fetchall()
        found = [_decode(r, self.path) for r in rows]
        if keys is not None:
            keys = set(keys)
            found = [r for r in found if r.key in keys]
        return found

    def get(self, key: str) -> Run | None:
        with self._guard():
            row = self._conn.execute("SELECT * FROM runs WHERE key = ?", (key,)).fetchone()
        return _decode(row, self.path) if row else None

    def statuses(self) -> dict[str, str]:
        """Every run's status, by key."""
        with self._guard():
            return dict(self._conn.execute("SELECT key, status FROM runs").fetchall())


def _dump(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _decode(row: sqlite3.Row, path: Path) -> Run:
    values = dict(row)
    for name in _JSON_COLUMNS:
        try:
            values[name] = json.loads(values[name]) if values[name] is not None else None
        except (TypeError, ValueError):
            raise UserError(f"{path}: run {str(values.get('key'))[:12]} has a damaged `{name}` column (not JSON); "
                            "the results database is damaged") from None
    values["flags"] = values.get("flags") or []
    return Run(**{f.name: values.get(f.name) for f in dataclasses.fields(Run)})
