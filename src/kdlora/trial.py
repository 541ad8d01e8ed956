"""How a training run talks to the hyper-parameter search trial that searches it, without knowing of the search.

The search (`kdlora.sweep.search`) names the trial in the environment (`reporting_to`), which the run's process
inherits (a sweep's child process, a Ray task); whoever starts the run turns it into a stop check
(`pruning_check`) and hands that to the training loop (`fit(..., should_stop=...)`). The loop only calls it.
Imports nothing from the sweep, so imports point one way: sweep -> trial <- the run's starter.
"""

from __future__ import annotations

import copy
import json
import os
from contextlib import contextmanager
from pathlib import Path

from kdlora.errors import UserError

TRIAL_ENV = "KDLORA_SEARCH_TRIAL"
"""JSON (storage, study, trial id, the searched runs' folders, prune) that tells a training run which trial to report
to, and under which steps."""
RUN_STEPS = 1_000_000_000
"""The step range of each searched run of a trial in its reports to Optuna: run i reports its step s as
i x RUN_STEPS + s, so that the median rule compares run i of a trial with run i of earlier trials."""


def optuna_module():
    """Optuna, quieted; a UserError naming the extra when it is not installed."""
    try:
        import optuna
    except ImportError:
        raise UserError("--search optuna needs the `search` extra: pip install 'kdlora[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def pruner(prune: bool):
    """Optuna's median rule run by run (`RUN_STEPS`), or no pruning: a run is pruned when it, or an earlier run of
    its trial at that run's last evaluation, has a best score below the median of earlier trials' same run at the
    same step (once one run of a trial is pruned, the trial is: its later runs stop at their first evaluation)."""
    optuna = optuna_module()
    if not prune:
        return optuna.pruners.NopPruner()

    class RunByRunMedian(optuna.pruners.BasePruner):
        def __init__(self):
            self.median = optuna.pruners.MedianPruner()

        def prune(self, study, trial) -> bool:
            for run in sorted({step // RUN_STEPS for step in trial.intermediate_values}):
                view = copy.copy(trial)
                view.intermediate_values = {s: v for s, v in trial.intermediate_values.items()
                                            if s // RUN_STEPS == run}
                if self.median.prune(study, view):
                    return True
            return False

    return RunByRunMedian()


@contextmanager
def reporting_to(trial_id: int, storage: str, study: str, run_dirs: list[Path], prune: bool):
    """Tell the searched runs (by their folders: a KD-LoRA run's own key names its teacher's path, not the store's
    `run:` key) which trial their evaluations go to, each under its own steps, through the environment their
    processes inherit."""
    previous = os.environ.get(TRIAL_ENV)
    os.environ[TRIAL_ENV] = json.dumps({"storage": storage, "study": study, "trial_id": trial_id,
                                        "run_dirs": [str(Path(d).resolve()) for d in run_dirs], "prune": prune})
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TRIAL_ENV, None)
        else:
            os.environ[TRIAL_ENV] = previous


def trial_env() -> dict | None:
    """The trial `$KDLORA_SEARCH_TRIAL` names (what `reporting_to` set), None when unset; anything else in it is a
    UserError (a sweep checks it before its first run: every run would fail on it)."""
    text = os.environ.get(TRIAL_ENV)
    if not text:
        return None
    try:
        where = json.loads(text)
        if not (isinstance(where, dict) and isinstance(where["storage"], str) and isinstance(where["study"], str)
                and isinstance(where["trial_id"], int) and isinstance(where["run_dirs"], list)):
            raise ValueError
    except (ValueError, KeyError):
        raise UserError(f"{TRIAL_ENV}={text[:60]!r}: not a trial a kdlora search set (it sets this variable for the "
                        "runs it starts); unset it") from None
    return where


def pruning_check(run_dir: str | Path):
    """`check(score, step) -> stop?` reporting to the trial that searches the run in `run_dir`, or None outside a
    search (or for a run the trial does not search, such as its FFT teacher)."""
    where = trial_env()
    folder = str(Path(run_dir).resolve())
    if where is None or folder not in where["run_dirs"]:
        return None
    offset = where["run_dirs"].index(folder) * RUN_STEPS
    optuna = optuna_module()
    study = optuna.load_study(study_name=where["study"], storage=where["storage"], pruner=pruner(where["prune"]))
    trial = optuna.trial.Trial(study, where["trial_id"])

    def check(score: float, step: int) -> bool:
        trial.report(float(score), offset + step)
        return trial.should_prune()

    return check
