"""A sweep: expand an experiment into runs (`kdlora.sweep.expand`), skip what the store already holds, run the rest
through an executor (`kdlora.sweep.executors`), record each result.

A distilling run's teacher is resolved here, just before it runs: `run:<key>` to that run's folder, `best-of:` to
the done FFT candidate with the best dev score once all of them have finished.

Only this driver writes the store: executors hand results back. A sweep killed mid-run leaves that run `running`;
the next sweep of the same experiment reruns it (from its last checkpoint when it saved checkpoints) and keeps every
finished run as it is.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kdlora.errors import UserError
from kdlora.experiment import Experiment
from kdlora.rundir import check_run
from kdlora.store import Store
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
    keys: list = field(default_factory=list)
    """Every key of the experiment, in order."""

    def line(self) -> str:
        counts = {}
        for status in self.ran.values():
            counts[status] = counts.get(status, 0) + 1
        ran = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
        text = f"{self.total} runs: ran {len(self.ran)} ({ran}), {self.skipped} already done"
        if self.failed_kept:
            text += f", {self.failed_kept} failed earlier (not rerun; pass --rerun-failed)"
        return text

    @property
    def ok(self) -> bool:
        return all(status in ("done", "collapsed") for status in self.ran.values()) and not self.failed_kept


def runs_dir_for(db_path: str | Path) -> Path:
    """Where run folders go by default: `<db name>-runs/` beside the database."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.stem + "-runs")


def run_folder(runs_dir: str | Path, spec: RunSpec) -> Path:
    """The run folder of `spec` under `runs_dir`: `<kind>-<key prefix>`."""
    return Path(runs_dir) / f"{spec.kind}-{spec.key[:16]}"


class Driver:
    """The executors' view of a sweep: it resolves teachers and alone writes the store."""

    def __init__(self, store: Store, specs: list[RunSpec], runs_dir: Path, progress_bar=None):
        self.store = store
        self.by_key = {s.key: s for s in specs}
        self.runs_dir = Path(runs_dir)
        self.bar = progress_bar
        self.ran: dict[str, str] = {}
        self.teachers: dict[str, dict] = {}
        """The teacher each prepared distilling run got (selection, key, score, candidates), by its key."""

    def out_dir(self, spec: RunSpec) -> Path:
        return run_folder(self.runs_dir, spec)

    def prepare(self, spec: RunSpec) -> tuple[dict | None, dict | None]:
        """(config to run with, None) — or (None, a failed result) when its teacher is not done."""
        self.store.start(spec.key, spec.kind, spec.label, spec.config, str(self.out_dir(spec)), spec.fields)
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
        status = self.store.finish(spec.key, result)
        self.ran[spec.key] = status
        if self.bar is not None:
            self.bar.update(1)
            if status != "done":
                self.bar.write(f"{spec.label}: {status}" + (f" ({result.get('reason')})" if result.get("reason")
                                                            else ""), file=sys.stderr)


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
        executor.run(pending, driver, backends, experiment.resources, progress)
    finally:
        if bar is not None:
            bar.close()
    summary.ran = driver.ran
    return summary


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
