"""How a training run talks to the hyper-parameter search trial that searches it, without knowing of the search.

The search (`kdlora.sweep.search`) names the trial in the environment (`reporting_to`), which the run's process
inherits (a sweep's child process, a Ray task); whoever starts the run turns it into a stop check
(`pruning_check`) and hands that to the training loop (`fit(..., should_stop=...)`). The loop only calls it.
Imports nothing from the sweep, so imports point one way: sweep -> trial <- the run's starter.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from kdlora.errors import UserError

TRIAL_ENV = "KDLORA_SEARCH_TRIAL"
"""JSON (storage, study, trial id, run folder, prune) that tells a training run which trial to report to."""


def optuna_module():
    """Optuna, quieted; a UserError naming the extra when it is not installed."""
    try:
        import optuna
    except ImportError:
        raise UserError("--search optuna needs the `search` extra: pip install 'kdlora[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def pruner(prune: bool):
    """Optuna's median rule, or no pruning."""
    optuna = optuna_module()
    return optuna.pruners.MedianPruner() if prune else optuna.pruners.NopPruner()


@contextmanager
def reporting_to(trial_id: int, storage: str, study: str, run_dir: Path | None, prune: bool):
    """Tell the searched run (by its folder: a KD-LoRA run's own key names its teacher's path, not the store's
    `run:` key) which trial its evaluations go to, through the environment its process inherits."""
    previous = os.environ.get(TRIAL_ENV)
    if run_dir is not None:
        os.environ[TRIAL_ENV] = json.dumps({"storage": storage, "study": study, "trial_id": trial_id,
                                            "run_dir": str(Path(run_dir).resolve()), "prune": prune})
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TRIAL_ENV, None)
        else:
            os.environ[TRIAL_ENV] = previous


def pruning_check(run_dir: str | Path):
    """`check(score, step) -> stop?` reporting to the trial that searches the run in `run_dir`, or None outside a
    search (or for a run the trial does not search, such as its FFT teacher)."""
    text = os.environ.get(TRIAL_ENV)
    if not text:
        return None
    where = json.loads(text)
    if where["run_dir"] != str(Path(run_dir).resolve()):
        return None
    optuna = optuna_module()
    study = optuna.load_study(study_name=where["study"], storage=where["storage"], pruner=pruner(where["prune"]))
    trial = optuna.trial.Trial(study, where["trial_id"])

    def check(score: float, step: int) -> bool:
        trial.report(float(score), step)
        return trial.should_prune()

    return check
