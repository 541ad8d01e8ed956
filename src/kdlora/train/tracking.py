"""Experiment trackers for one training run: TensorBoard and MLflow through accelerate's trackers.

    RUN_DIR/tracking/kdlora/   TensorBoard event files (`tensorboard --logdir RUN_DIR/tracking`)
    RUN_DIR/tracking/mlruns/   MLflow file store, unless $MLFLOW_TRACKING_URI names another store

One tracker run per kdlora run (a resumed run logs into the same MLflow run): the config as hyper-parameters,
`train/loss` and `train/lr` at every optimiser step, and `eval/<metric>` at every evaluation. A tracker whose extra
is missing is one line naming the extra. MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set:
a file store needs no server and no database, which is what an offline run wants, so it is set for that store.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from kdlora.errors import UserError

PROJECT = "kdlora"
"""accelerate's project name: the TensorBoard sub-folder and the MLflow experiment."""
TRACKING = "tracking"
"""The trackers' folder inside a run folder."""
_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def require_trackers(names: tuple[str, ...]) -> None:
    """UserError (one line) naming the extra to install for the first tracker whose package is missing."""
    for name in names:
        if importlib.util.find_spec(_MODULES[name]) is None:
            raise UserError(f"--report-to {name} needs the `{name}` extra: pip install 'kdlora[{name}]'")


def accelerator_options(names: tuple[str, ...], run_dir: str | Path) -> dict:
    """Keyword arguments for `Accelerator(...)` that enable the trackers `names` under `run_dir`."""
    if not names:
        return {}
    from accelerate.utils import ProjectConfiguration

    folder = Path(run_dir).resolve() / TRACKING
    return {"log_with": list(names), "project_config": ProjectConfiguration(project_dir=str(run_dir),
                                                                            logging_dir=str(folder))}


def hyperparameters(config: dict) -> dict:
    """The config as tracker hyper-parameters: numbers, strings and booleans (None becomes "none")."""
    return {k: ("none" if v is None else v) for k, v in config.items()}


def start_trackers(accelerator, names: tuple[str, ...], config: dict, run_name: str, run_ids: dict) -> None:
    """Start the trackers and log the config; `run_ids` gets (or gives, on resume) the MLflow run id."""
    if not names:
        return
    init = {}
    if "mlflow" in names:
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
            mlflow.set_tracking_uri((Path(accelerator.logging_dir) / "mlruns").as_uri())
        init["mlflow"] = {"run_name": run_name, "run_id": run_ids.get("mlflow")}
    accelerator.init_trackers(PROJECT, config=hyperparameters(config), init_kwargs=init)
    if "mlflow" in names and accelerator.is_main_process:
        run_ids["mlflow"] = accelerator.get_tracker("mlflow").tracker.info.run_id


def log_evaluation(accelerator, metrics: dict, score: float, step: int) -> None:
    """Log one evaluation's metrics and score as `eval/<name>` at optimiser step `step`."""
    values = {f"eval/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    accelerator.log({**values, "eval/score": float(score)}, step=step)
