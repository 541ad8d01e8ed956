"""A sweep: expand an experiment into runs (`kdlora.sweep.expand`), skip what the store already holds, run the rest
through an executor (`kdlora.sweep.executors`), record each result.

A distilling run's teacher is resolved here, just before it runs: `run:<key>` to that run's folder, `best-of:` to
the done FFT candidate with the best dev score once all of them have finished.

Before a command starts a sweep, `check_data` reads each dataset its train runs use, as `kdlora train` reads its data
before it trains: a data mistake is one error then, not a failed run after the first runs. Only this driver writes the
store: executors hand results back. A sweep killed mid-run leaves that run `running`;
the next sweep of the same experiment reruns it (from its last checkpoint when it saved checkpoints) and keeps every
finished run as it is.

Several sweeps may run on one store at once (on one machine or on several sharing the store and the run folders):
the driver claims each run in the store before it starts it (`Store.claim`, a lease renewed by a heartbeat while
this sweep lives), passes over runs another live sweep holds, counts those another sweep finished, and waits for
them when nothing else can start. A run whose sweep died (heartbeat older than `kdlora.lease.TIMEOUT_S`, or its
process gone on this machine) is claimed again and resumed. Each sweep owns the run folders it claims: before an
attempt it removes a previous attempt's files but its checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdlora.data.file_tasks import FILE_SETTINGS
from kdlora.errors import UserError
from kdlora.experiment import Experiment
from kdlora.lease import Claimant, Heartbeat
from kdlora.rundir import check_run
from kdlora.store import CLAIMED, FINISHED, HELD, Store
from kdlora.sweep.backends import Backends
from kdlora.sweep.expand import RunSpec, expand
from kdlora.train.checkpoint import CHECKPOINTS


@dataclass
class SweepSummary:
    """What a sweep did."""

    total: int = 0
    skipped: int = 0
    """Already done (or collapsed) in the store."""
    failed_kept: int = 0
    """Failed earlier and not rerun (pass --rerun-failed)."""
    ran: dict = field(default_factory=dict)
    """Status of each run executed now, by key."""
    elsewhere: dict = field(default_factory=dict)
    """Status of each run another sweep on the store finished while this one ran, by key."""
    keys: list = field(default_factory=list)
    """Every key of the experiment, in order."""

    def line(self) -> str:
        text = f"{self.total} runs: ran {len(self.ran)} ({_counts(self.ran)}), {self.skipped} already done"
        if self.elsewhere:
            text += f", {len(self.elsewhere)} run by another sweep ({_counts(self.elsewhere)})"
        if self.failed_kept:
            text += f", {self.failed_kept} failed earlier (not rerun; pass --rerun-failed)"
        return text

    @property
    def ok(self) -> bool:
        finished = [*self.ran.values(), *self.elsewhere.values()]
        return all(status in ("done", "collapsed") for status in finished) and not self.failed_kept


def _counts(statuses: dict) -> str:
    counts = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"


def runs_dir_for(db_path: str | Path) -> Path:
    """Where run folders go by default: `<db name>-runs/` beside the database."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.stem + "-runs")


def run_folder(runs_dir: str | Path, spec: RunSpec) -> Path:
    """The run folder of `spec` under `runs_dir`: `<kind>-<key prefix>`."""
    return Path(runs_dir) / f"{spec.kind}-{spec.key[:16]}"


class Driver:
    """The executors' view of a sweep: it claims runs in the store, resolves teachers, and alone writes the store.

    An executor takes runs with `claim_next`, hands each result to `finish`, and calls `wait` when it can start
    nothing and runs nothing (other sweeps hold what remains)."""

    POLL_S = 0.5
    """How often a sweep with nothing to start looks again at the runs other sweeps hold."""

    def __init__(self, store: Store, specs: list[RunSpec], runs_dir: Path, progress_bar=None):
        self.store = store
        self.by_key = {s.key: s for s in specs}
        self.runs_dir = Path(runs_dir)
        self.bar = progress_bar
        self.ran: dict[str, str] = {}
        self.elsewhere: dict[str, str] = {}
        self.finished: set[str] = set()
        """Keys of this sweep's runs that ended, here or in another sweep."""
        self.held: set[str] = set()
        """Keys another live sweep held at the last look."""
        self.teachers: dict[str, dict] = {}
        """The teacher each claimed distilling run got (selection, key, score, candidates), by its key."""
        self.claimant = Claimant.this_process()
        looks = store.looks()
        self.seen = {key: looks.get(key) for key in self.by_key}
        """Each run's (attempts, status) when this sweep looked: changed, and not running, means another sweep ran
        it to the end."""

    @contextlib.contextmanager
    def holding(self):
        """While the executor runs: renew this sweep's leases; at the end drop those left (an interrupted run's)."""
        beats = Heartbeat(lambda: _beat(self.store.path, self.claimant.owner))
        try:
            with beats:
                yield self
        finally:
            self.store.release(self.claimant.owner)

    def out_dir(self, spec: RunSpec) -> Path:
        return run_folder(self.runs_dir, spec)

    def ready(self, spec: RunSpec) -> bool:
        """Whether every run `spec` needs that this sweep has to run has ended (here or elsewhere)."""
        return all(key not in self.by_key or key in self.finished for key in spec.needs)

    def claim_next(self, waiting: list[RunSpec], may_start=lambda spec: True) -> tuple[RunSpec, dict] | None:
        """The first run of `waiting` that is ready and that this sweep could claim, removed from `waiting`, with
        the config to run it with; None when there is none now, or when the first ready one may not start yet
        (`may_start(spec)` False: nothing passes it). Runs found finished elsewhere leave `waiting`, and a run whose
        teacher did not end done is recorded failed, as it goes."""
        self.held = set()
        for spec in list(waiting):
            if not self.ready(spec):
                continue
            if not may_start(spec):
                return None
            state = self.store.claim(spec.key, spec.kind, spec.label, spec.config, str(self.out_dir(spec)),
                                     spec.fields, self.claimant, self.seen[spec.key])
            if state == HELD:
                self.held.add(spec.key)
                continue
            waiting.remove(spec)
            if state == FINISHED:
                self._finished_elsewhere(spec)
                continue
            assert state == CLAIMED
            config, failure = self._run_config(spec)
            if failure is not None:
                self.finish(spec, failure)
                continue
            return spec, config
        return None

    def wait(self) -> None:
        """Nothing can start and nothing of this sweep runs: wait for the runs other sweeps hold."""
        if not self.held:
            raise RuntimeError("sweep: no run can start, and no other sweep holds one")
        time.sleep(self.POLL_S)

    def _finished_elsewhere(self, spec: RunSpec) -> None:
        run = self.store.get(spec.key)
        self.elsewhere[spec.key] = run.status if run else "missing"
        self.finished.add(spec.key)
        if self.bar is not None:
            self.bar.update(1)

    def _run_config(self, spec: RunSpec) -> tuple[dict | None, dict | None]:
        """(config to run with, None) — or (None, a failed result) when its teacher is not done."""
        if self.bar is not None:
            self.bar.set_postfix_str(spec.label, refresh=True)
        config = spec.config
        if spec.needs:
            teacher, failure = self._teacher(spec)
            if failure is not None:
                return None, {"status": "failed", "reason": failure}
            config = {**config, "teacher": teacher.out_dir}
            self.teachers[spec.key] = {"selection": spec.teacher_from, "key": teacher.key,
                                       "score": (teacher.metrics or {}).get("score"), "candidates": len(spec.needs)}
        out = self.out_dir(spec)
        if out.exists():  # left by an interrupted attempt: keep its checkpoints, so the run resumes from them
            for entry in out.iterdir():
                if entry.name == CHECKPOINTS and entry.is_dir():
                    continue
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        return config, None

    def _teacher(self, spec: RunSpec):
        """(the FFT run to distil from, None) — or (None, why there is none yet)."""
        candidates = [self.store.get(key) for key in spec.needs]
        if spec.teacher_from != "best":
            teacher = candidates[0]
            if teacher is None or teacher.status != "done":
                return None, f"its FFT teacher run {spec.needs[0][:12]} is {teacher.status if teacher else 'missing'}"
            return teacher, None
        unfinished = [(key, run.status if run else "missing") for key, run in zip(spec.needs, candidates, strict=True)
                      if run is None or run.status not in ("done", "collapsed")]
        if unfinished:  # the best cannot be known while a candidate may still beat it
            key, status = unfinished[0]
            return None, (f"{len(unfinished)} of its {len(spec.needs)} FFT teacher candidates are not done "
                          f"(run {key[:12]} is {status})")
        done = [run for run in candidates if run.status == "done" and (run.metrics or {}).get("score") is not None]
        if not done:
            return None, f"none of its {len(spec.needs)} FFT teacher candidates is done (all collapsed)"
        return max(done, key=lambda run: run.metrics["score"]), None  # a tie: the first listed

    def finish(self, spec: RunSpec, result: dict) -> None:
        if spec.key in self.teachers:
            result = {**result, "teacher_run": self.teachers.pop(spec.key)}
        status = self.store.finish(spec.key, result, self.claimant.owner)
        self.finished.add(spec.key)
        if status is None:  # this sweep's heartbeat lapsed and another took the run over: its result stands
            print(f"sweep: {spec.label}: another sweep took this run over (this one's lease lapsed); its result is "
                  "not recorded", file=sys.stderr)
            return
        self.ran[spec.key] = status
        if self.bar is not None:
            self.bar.update(1)
            if status != "done":
                self.bar.write(f"{spec.label}: {status}" + (f" ({result.get('reason')})" if result.get("reason")
                                                            else ""), file=sys.stderr)


def _beat(db_path: Path, owner: str) -> None:
    """One heartbeat for `owner`'s leases, through a connection of the heartbeat's own thread."""
    with Store(db_path) as store:
        store.beat(owner)


def run_sweep(experiment: Experiment, store: Store, executor, backends: Backends, runs_dir: str | Path | None = None,
              rerun_failed: bool = False, progress: bool = True) -> SweepSummary:
    """Run every run of `experiment` the store does not hold as done; returns what happened."""
    specs = expand(experiment, backends)
    statuses = store.statuses()
    summary = SweepSummary(total=len(specs), keys=[s.key for s in specs])
    pending = []
    for spec in specs:
        status = statuses.get(spec.key)
        if status in ("done", "collapsed"):
            summary.skipped += 1
        elif status == "failed" and not rerun_failed:
            summary.failed_kept += 1
        else:
            pending.append(spec)
    pending = _rerun_damaged_teachers(store, specs, pending, statuses, summary)
    bar = _progress_bar(len(pending), experiment.name) if progress and pending else None
    driver = Driver(store, pending, Path(runs_dir or runs_dir_for(store.path)), bar)
    try:
        with driver.holding():
            executor.run(pending, driver, backends, experiment.resources, progress)
    finally:
        if bar is not None:
            bar.close()
    summary.ran, summary.elsewhere = driver.ran, driver.elsewhere
    return summary


DATA_SETTINGS = ("task", "data_dir", *FILE_SETTINGS)
"""The train settings that say which data a run reads."""


def check_data(experiment: Experiment, backends: Backends) -> None:
    """Read each distinct dataset of `experiment`'s train runs as the run will (`Backends.check_data`): a missing
    data folder or file, a column that is not there, a file without data rows, an unknown positive label is one
    UserError naming the experiment, the first run that reads it and the file."""
    if backends.check_data is None or experiment.train is None:
        return
    checked = set()
    for spec in expand(experiment, backends):
        data = json.dumps({k: spec.config.get(k) for k in DATA_SETTINGS}, sort_keys=True, default=str)
        if spec.kind != "train" or data in checked:
            continue
        checked.add(data)
        try:
            backends.check_data(spec.config)
        except UserError as exc:
            raise UserError(f"{experiment.source}: {spec.label}: {exc}") from None


def _rerun_damaged_teachers(store: Store, specs: list[RunSpec], pending: list[RunSpec], statuses: dict,
                            summary: SweepSummary) -> list[RunSpec]:
    """`pending` with each done teacher whose run folder is no longer whole put back before its first pending
    student (a line on stderr names the damaged file): resuming never distils from a damaged teacher."""
    by_key = {s.key: s for s in specs}
    for spec in list(pending):
        for teacher in (by_key.get(key) for key in spec.needs):
            if teacher is None or teacher in pending or statuses.get(teacher.key) != "done":
                continue
            folder = store.get(teacher.key).out_dir
            try:
                check_run(folder or "(no folder recorded)")
            except UserError as exc:
                print(f"sweep: {teacher.label} is done but its folder is damaged ({exc}): running it again",
                      file=sys.stderr)
                pending.insert(pending.index(spec), teacher)
                summary.skipped -= 1
    return pending


def _progress_bar(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"sweep {name}", unit="run", file=sys.stderr, dynamic_ncols=True,
                bar_format="{desc}: {n}/{total} runs |{bar}| {elapsed}<{remaining} {postfix}")
