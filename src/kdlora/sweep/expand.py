"""Expanding an experiment into runs: one `RunSpec` per (task, family, method, rank, seed, configuration) and one
per benched family, each keyed by its canonical config.

Expansion orders every FFT teacher before the KD-LoRA runs that distil it, and runs FFT once per (task, family,
seed) since ranks only apply to LoRA methods. A KD-LoRA config names its teacher as `run:<key of the FFT run>`
(the grid's `teacher = "first"`, or FFT has one configuration) or `best-of:<digest of the candidates' keys>` (the
default `best`: the done FFT run of the same task, family and seed with the best dev score, chosen when all of them
have finished), so its key does not depend on where run folders live; the driver (`kdlora.sweep.driver`) fills in
the path just before it runs, and the result's `teacher_run` says which run it was and how it was chosen.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from kdlora.errors import UserError
from kdlora.experiment import Experiment
from kdlora.families import FAMILIES
from kdlora.keys import run_key
from kdlora.methods import baseline, get_method
from kdlora.sweep.backends import Backends

TEACHER_REF = "run:"
BEST_TEACHER_REF = "best-of:"


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
    needs: tuple[str, ...] = ()
    """Keys of the runs that must finish first: the FFT teacher, or every candidate for the best one."""
    teacher_from: str | None = None
    """A distilling run's teacher: `first` (its one FFT run, `needs[0]`) or `best` (the best of `needs`)."""


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
        specs.append(RunSpec(run_key("bench", config), "bench", f"bench {family}", config, {"family": family}))
    return specs


def _train_specs(experiment: Experiment, backends: Backends) -> list[RunSpec]:
    grid = experiment.train
    methods = [get_method(m) for m in grid.methods]
    specs = []

    def make(task, family, method, seed, settings, rank=None, teachers=()) -> RunSpec:
        values = {**settings, **experiment.tasks.get(task, {}), "task": task, "family": family, "method": method.name,
                  "seed": seed}
        if rank is not None:
            values["rank"] = rank
        try:
            config = backends.train_config(values)
        except UserError as exc:
            section = "train.per_method" if method.name in grid.per_method else "train.params"
            raise UserError(f"{experiment.source}: [{section}] {exc}") from None
        teacher_from = None
        if len(teachers) == 1:  # `first`, or a single FFT configuration: the key a one-teacher run always had
            config, teacher_from = {**config, "teacher": TEACHER_REF + teachers[0].key}, "first"
        elif teachers:
            digest = hashlib.sha256(",".join(t.key for t in teachers).encode()).hexdigest()
            config, teacher_from = {**config, "teacher": BEST_TEACHER_REF + digest}, "best"
        # TrainConfig.key(): one local process per run (a test's fake backends: the hash of their plain config)
        key = backends.train_key(config) if backends.train_key else run_key("train", config, 1)
        fields = {"task": task, "family": family, "method": method.name, "rank": rank, "seed": seed}
        label = " ".join(["train", task, family, method.name] + ([f"r{rank}"] if rank else []) + [f"s{seed}"] +
                         [f"{name}={settings[name]}" for name in grid.axes(method.name)])
        return RunSpec(key, "train", label, config, fields, tuple(t.key for t in teachers), teacher_from)

    fft = baseline()  # the teacher of every distilling method
    for task in grid.tasks:
        for family in grid.families:
            for seed in grid.seeds:
                needs_teacher = any(_needs_teacher(m, family, grid.configurations(m.name)) for m in methods)
                ffts = [make(task, family, fft, seed, settings) for settings in grid.configurations(fft.name)]
                teachers = (ffts if grid.teacher_choice == "best" else ffts[:1]) if needs_teacher else []
                specs += ffts if fft in methods else teachers
                for method in methods:
                    if method is fft:
                        continue
                    ranks = grid.ranks if method.uses_lora else (None,)
                    for rank in ranks:
                        for settings in grid.configurations(method.name):
                            taught = _needs_teacher(method, family, [settings])
                            specs.append(make(task, family, method, seed, settings, rank,
                                              teachers if taught else ()))
    return specs


def _needs_teacher(method, family: str, configurations: list[dict]) -> bool:
    """Whether runs of `method` need the FFT run: a distilling method learns from it, and a student derived by
    cutting layers (minilm's) is cut from the trained teacher (`student_init = "trained"`) whether it distils or
    not, so that LoRA on the student without KD starts where KD-LoRA does."""
    if method.distills:
        return True
    known = FAMILIES.get(family)
    return method.role == "student" and bool(known and known.student.derived) and any(
        c.get("student_init", "trained") == "trained" and not c.get("model") for c in configurations)
