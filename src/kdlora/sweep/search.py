"""Hyper-parameter search (`kdlora sweep EXP --search optuna --trials N`): Optuna picks each trial's settings from
the experiment's `[search]` ranges, and each trial runs as a small sweep, so its runs land in the results store like
grid runs (`report` and the top-k median read them unchanged) on the local or the Ray executor.

```toml
[search]                                         # one range per setting: a table is numeric, a list is a choice
learning_rate = { low = 1e-4, high = 1e-3, log = true }
rank = [8, 16, 32]
lora_alpha = [16, 32]
lora_dropout = { low = 0.0, high = 0.1 }
epochs = { low = 2, high = 5 }                   # integer bounds: whole numbers
```

A trial's settings apply to the grid's LoRA methods (FFT stays as `[train]` says and teaches every trial, so its run
is trained once), or to FFT when it is the only method; its objective is the mean dev score of those runs. The
study lives in SQLite beside the results store (`<db name>-search.db`): a killed search, run again, marks the trial
it was in as interrupted, runs that trial's settings again (its run resumes from the store like a sweep's) and goes
on until N trials have finished. The sampler (TPE) is seeded from `--search-seed` and each trial's position among
the finished trials, so a resumed search picks what an uninterrupted one would have. Pruning (Optuna's median rule)
reads each run's dev evaluations (`eval_steps` and every epoch's end) while it trains: a pruned run stops like an
early-stopped one, keeps its best state, and is stored done with the flag `pruned`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path

from kdlora.errors import UserError
from kdlora.methods import baseline
from kdlora.sweep.driver import run_folder, run_sweep, runs_dir_for
from kdlora.sweep.expand import expand
from kdlora.trial import optuna_module, pruner, reporting_to


def searched_methods(grid) -> tuple[str, ...]:
    """The methods a trial's settings apply to: every method but FFT, which teaches; FFT when it is alone."""
    teacher = baseline().name
    others = tuple(m for m in grid.methods if m != teacher)
    return others or (teacher,)


def trial_experiment(experiment, point: dict):
    """The experiment one trial runs: its settings win over `[train.params]` and `[train.per_method]` for the
    searched methods; a searched rank is the grid's only rank. No bench runs."""
    grid = experiment.train
    values = dict(point)
    rank = values.pop("rank", None)
    per_method = dict(grid.per_method)
    for method in searched_methods(grid):
        per_method[method] = {**per_method.get(method, {}), **values}
    grid = dataclasses.replace(grid, per_method=per_method, ranks=(rank,) if rank is not None else grid.ranks)
    return dataclasses.replace(experiment, train=grid, bench=None)


def study_path(db_path: str | Path) -> Path:
    """The search's Optuna storage: `<db name>-search.db` beside the results store."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.stem + "-search.db")


def study_name(experiment, space: tuple, seed: int) -> str:
    """The experiment's name and a hash of its grid, ranges and seed: editing any of them starts another study."""
    what = json.dumps([dataclasses.asdict(experiment.train), [dataclasses.asdict(r) for r in space], seed],
                      sort_keys=True, default=str)
    return f"{experiment.name}-{hashlib.sha256(what.encode()).hexdigest()[:12]}"


def _interrupted(trial) -> bool:
    """A trial that never told its outcome: killed (still `RUNNING`) or failed by an exception mid-run."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.RUNNING, TrialState.FAIL) and not trial.user_attrs.get("finished")


def _finished(trials) -> list:
    from optuna.trial import TrialState

    return [t for t in trials if t.state != TrialState.WAITING and not _interrupted(t)]


def position_seeded_sampler(seed: int):
    """TPE seeded by (seed, the trial's position among the trials that were not interrupted): a resumed search
    samples what an uninterrupted one would have (one sampler's random state would restart at its seed)."""
    from optuna.samplers import BaseSampler, TPESampler

    class PositionSeeded(BaseSampler):
        def __init__(self):
            self._by_trial = {}

        def _for(self, study, trial):
            if trial.number not in self._by_trial:
                position = sum(1 for t in study.get_trials(deepcopy=False)
                               if t.number < trial.number and not _interrupted(t))
                self._by_trial = {trial.number: TPESampler(seed=seed * 1_000_003 + position)}
            return self._by_trial[trial.number]

        def infer_relative_search_space(self, study, trial):
            return self._for(study, trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(study, trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(study, trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self._for(study, trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._for(study, trial).after_trial(study, trial, state, values)

    return PositionSeeded()


@dataclasses.dataclass
class SearchSummary:
    """What a search did: its trials by state, and the best one."""

    study: str
    trials: int = 0
    states: dict = dataclasses.field(default_factory=dict)
    best: dict | None = None
    """number, score, params and run keys of the best complete trial."""
    ok: bool = True

    def line(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()))
        text = f"{self.trials} trials ({counts})"
        if self.best is not None:
            settings = " ".join(f"{k}={_shown(v)}" for k, v in self.best["params"].items())
            text += f"; best: trial {self.best['number']}, score {self.best['score']:.4f} ({settings})"
        return text


def _shown(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_search(experiment, store, executor, backends, trials: int, seed: int = 0, prune: bool = True,
               runs_dir=None, progress: bool = True) -> SearchSummary:
    """Run trials until `trials` have finished (resuming a stored study); each trial is a sweep into `store`."""
    if experiment.train is None or experiment.search is None:
        raise UserError(f"{experiment.source}: --search needs a [train] and a [search] section")
    optuna = optuna_module()
    space = experiment.search
    storage = f"sqlite:///{study_path(store.path).resolve()}"
    name = study_name(experiment, space, seed)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=position_seeded_sampler(seed), pruner=pruner(prune))
    _requeue_interrupted(study)
    searched = set(searched_methods(experiment.train))
    while len(_finished(study.get_trials(deepcopy=False))) < trials:
        trial = study.ask()
        point = {r.name: r.suggest(trial) for r in space}
        trial_exp = trial_experiment(experiment, point)
        specs = [s for s in expand(trial_exp, backends) if s.fields.get("method") in searched]
        trial.set_user_attr("run_keys", [s.key for s in specs])
        # one searched run reports its evaluations; several would report over each other
        reporter = run_folder(runs_dir or runs_dir_for(store.path), specs[0]) if len(specs) == 1 else None
        with reporting_to(trial._trial_id, storage, name, reporter, prune):
            run_sweep(trial_exp, store, executor, backends, runs_dir=runs_dir, progress=progress)
        runs = [store.get(s.key) for s in specs]
        scores = [r.metrics["score"] for r in runs
                  if r is not None and r.status == "done" and (r.metrics or {}).get("score") is not None]
        trial.set_user_attr("finished", True)
        settings = " ".join(f"{k}={_shown(v)}" for k, v in point.items())
        if any("pruned" in (r.flags or []) for r in runs if r is not None):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            outcome = "pruned"
        elif len(scores) != len(specs):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            outcome = "failed (a run did not finish: see `kdlora runs`)"
        else:
            study.tell(trial, sum(scores) / len(scores))
            outcome = f"score {sum(scores) / len(scores):.4f}"
        print(f"trial {trial.number}: {settings} -> {outcome}", file=sys.stderr)
    return _summary(study, trials)


def _requeue_interrupted(study) -> None:
    """Fail each trial a killed search left running, and queue its settings again unless a later trial has them."""
    from optuna.trial import TrialState

    all_trials = study.get_trials(deepcopy=False)
    for trial in all_trials:
        if trial.state == TrialState.RUNNING:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    for trial in all_trials:
        params = trial.params
        later = [t.params or t.system_attrs.get("fixed_params", {}) for t in all_trials if t.number > trial.number]
        if _interrupted(study._storage.get_trial(trial._trial_id)) and params and params not in later:
            study.enqueue_trial(params, skip_if_exists=False)


def _summary(study, trials: int) -> SearchSummary:
    from optuna.trial import TrialState

    finished = _finished(study.get_trials(deepcopy=False))
    summary = SearchSummary(study.study_name, len(finished))
    for trial in finished:
        summary.states[trial.state.name.lower()] = summary.states.get(trial.state.name.lower(), 0) + 1
    complete = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None
                and not math.isnan(t.value)]
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        summary.best = {"number": best.number, "score": best.value, "params": best.params,
                        "run_keys": best.user_attrs.get("run_keys", [])}
    summary.ok = bool(complete)
    return summary
