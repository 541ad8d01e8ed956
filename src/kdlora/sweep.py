"""A sweep: expand an experiment into runs, skip what the store already holds, run the rest, record each result.

Expansion orders every FFT teacher before the KD-LoRA runs that distil it, and runs FFT once per (task, family,
seed) since ranks only apply to LoRA methods. A KD-LoRA config names its teacher as `run:<key of the FFT run>`, so
its key does not depend on where run folders live; the path is filled in just before it runs.

Only this driver writes the store: executors hand results back. A sweep killed mid-run leaves that run `running`;
the next sweep of the same experiment reruns it (from its last checkpoint when it saved checkpoints) and keeps every
finished run as it is.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kdlora.backends import Backends
from kdlora.checkpoint import CHECKPOINTS
from kdlora.config import keyed_settings, run_key
from kdlora.errors import UserError
from kdlora.experiment import Experiment
from kdlora.methods import baseline, get_method
from kdlora.rundir import check_run
from kdlora.store import Store, config_key

TEACHER_REF = "run:"


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep."""

    key: str
    """sha256 of (kind, canonical config): the store's key."""
    kind: str
    """`train` or `bench`."""
    label: str
    """Short human name: `train movie-snippets minilm kd-lora r8 s42`."""
    config: dict
    """Full canonical config; a distilling run's `teacher` is `run:<key>`."""
    fields: dict = field(default_factory=dict)
    """task, family, method, rank, seed (the store's filter columns)."""
    needs: str | None = None
    """Key of the run that must be done first (the FFT teacher)."""


def expand(experiment: Experiment, backends: Backends) -> list[RunSpec]:
    """Every run of `experiment`, in execution order: bench runs, then train runs with teachers first."""
    specs = []
    if experiment.bench is not None:
        specs += _bench_specs(experiment, backends)
    if experiment.train is not None:
        specs += _train_specs(experiment, backends)
    return specs


def _bench_specs(experiment: Experiment, backends: Backends) -> list[RunSpec]:
    settings = dict(experiment.bench)
    try:
        full = backends.bench_settings(settings)
    except UserError as exc:
        raise UserError(f"{experiment.source}: [bench] {exc}") from None
    specs = []
    for family in full["families"]:
        # one run per family: each can finish, fail or resume on its own
        config = backends.bench_settings({**settings, "families": [family]})
        specs.append(RunSpec(config_key("bench", config), "bench", f"bench {family}", config, {"family": family}))
    return specs


def train_identity(config: dict) -> dict:
    """What identifies a train run in the store: its config, a task from files by its data's hash (see
    `TrainConfig.identity`), not by where the files lie."""
    if not config.get("train_file"):
        return keyed_settings(config)
    from kdlora.config import TrainConfig

    return TrainConfig.from_dict(config).identity()


def _train_specs(experiment: Experiment, backends: Backends) -> list[RunSpec]:
    grid = experiment.train
    methods = [get_method(m) for m in grid.methods]
    specs = []

    def make(task, family, method, seed, settings, rank=None, teacher=None) -> RunSpec:
        values = {**settings, **experiment.tasks.get(task, {}), "task": task, "family": family, "method": method.name,
                  "seed": seed}
        if rank is not None:
            values["rank"] = rank
        try:
            config = backends.train_config(values)
        except UserError as exc:
            section = "train.per_method" if method.name in grid.per_method else "train.params"
            raise UserError(f"{experiment.source}: [{section}] {exc}") from None
        if teacher is not None:
            config = {**config, "teacher": TEACHER_REF + teacher.key}
        # TrainConfig.key(): one local process per run (fake backends: the same hash without building the config)
        key = backends.train_key(config) if backends.train_key else run_key(train_identity(config))
        fields = {"task": task, "family": family, "method": method.name, "rank": rank, "seed": seed}
        label = " ".join(["train", task, family, method.name] + ([f"r{rank}"] if rank else []) + [f"s{seed}"] +
                         [f"{name}={settings[name]}" for name in grid.axes(method.name)])
        return RunSpec(key, "train", label, config, fields, teacher.key if teacher else None)

    fft = baseline()  # the teacher of every distilling method
    for task in grid.tasks:
        for family in grid.families:
            for seed in grid.seeds:
                needs_teacher = any(_needs_teacher(m, family, grid.configurations(m.name)) for m in methods)
                ffts = [make(task, family, fft, seed, settings) for settings in grid.configurations(fft.name)]
                teacher = ffts[0] if needs_teacher else None  # FFT's first configuration teaches
                specs += ffts if fft in methods else [teacher] if teacher else []
                for method in methods:
                    if method is fft:
                        continue
                    ranks = grid.ranks if method.uses_lora else (None,)
                    for rank in ranks:
                        for settings in grid.configurations(method.name):
                            taught = _needs_teacher(method, family, [settings])
                            specs.append(make(task, family, method, seed, settings, rank,
                                              teacher if taught else None))
    return specs


def _needs_teacher(method, family: str, configurations: list[dict]) -> bool:
    """Whether runs of `method` need the FFT run: a distilling method learns from it, and a student derived by
    cutting layers (minilm's) is cut from the trained teacher (`student_init = "trained"`) whether it distils or
    not, so that LoRA on the student without KD starts where KD-LoRA does."""
    if method.distills:
        return True
    from kdlora.families import FAMILIES

    known = FAMILIES.get(family)
    return method.role == "student" and bool(known and known.student.derived) and any(
        c.get("student_init", "trained") == "trained" and not c.get("model") for c in configurations)


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


class Driver:
    """The executors' view of a sweep: it resolves teachers and alone writes the store."""

    def __init__(self, store: Store, specs: list[RunSpec], runs_dir: Path, progress_bar=None):
        self.store = store
        self.by_key = {s.key: s for s in specs}
        self.runs_dir = Path(runs_dir)
        self.bar = progress_bar
        self.ran: dict[str, str] = {}

    def out_dir(self, spec: RunSpec) -> Path:
        return self.runs_dir / f"{spec.kind}-{spec.key[:16]}"

    def prepare(self, spec: RunSpec) -> tuple[dict | None, dict | None]:
        """(config to run with, None) — or (None, a failed result) when its teacher is not done."""
        self.store.start(spec.key, spec.kind, spec.label, spec.config, str(self.out_dir(spec)), spec.fields)
        if self.bar is not None:
            self.bar.set_postfix_str(spec.label, refresh=True)
        config = spec.config
        if spec.needs is not None:
            teacher = self.store.get(spec.needs)
            if teacher is None or teacher.status != "done":
                status = teacher.status if teacher else "missing"
                return None, {"status": "failed", "reason": f"its FFT teacher run {spec.needs[:12]} is {status}"}
            config = {**config, "teacher": teacher.out_dir}
        out = self.out_dir(spec)
        if out.exists():  # left by an interrupted attempt: keep its checkpoints, so the run resumes from them
            for entry in out.iterdir():
                if entry.name == CHECKPOINTS and entry.is_dir():
                    continue
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        return config, None

    def finish(self, spec: RunSpec, result: dict) -> None:
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
        teacher = by_key.get(spec.needs)
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
