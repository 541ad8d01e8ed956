"""Step checkpoints of one training run: save the last and the best, and find the one to resume from.

    RUN_DIR/checkpoints/best/   accelerate's `save_state` at the best evaluation so far
    RUN_DIR/checkpoints/last/   the same at the latest evaluation

Each holds the trainable weights only (`model.safetensors`; a resumed run rebuilds the frozen rest and loads these
non-strictly), the optimiser, the LR scheduler, every RNG state accelerate knows, and `Position`: where in the data
the run stood and what it had seen (history, best evaluation, patience count). That is enough for a resumed run to
end exactly as an uninterrupted one, on as many training processes as wrote it (another count is refused). A new
best is written before `last`, and each folder is written beside its place and renamed into it, so a kill at any
moment leaves checkpoints that agree: resume from whichever is further along, and take the best weights from `best`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdlora.errors import UserError

CHECKPOINTS = "checkpoints"
"""The checkpoints' folder inside a run folder."""


@dataclass
class Position:
    """Where a run stands: registered with accelerate so it is saved and loaded with every checkpoint."""

    run_key: str = ""
    """The run's config key: a checkpoint resumes only the run that wrote it."""
    num_processes: int = 1
    """Training processes that wrote it: the data position, RNG states and optimiser are per process, so a
    checkpoint resumes only on as many."""
    epoch: int = 1
    """The epoch in progress (1-based)."""
    batch: int = 0
    """Batches of that epoch already trained."""
    step: int = 0
    """Optimiser steps done."""
    history: list = field(default_factory=list)
    """Every evaluation so far: epoch, step, score."""
    best: dict | None = None
    """The best evaluation so far: metrics, score, predictions."""
    best_epoch: int | None = None
    best_step: int | None = None
    stale: int = 0
    """Evaluations since the best one (after warm-up): early stopping's count."""
    tracker_run_ids: dict = field(default_factory=dict)
    """Tracker run ids (mlflow) so that a resumed run logs into the same tracker run."""

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def keep_trainable_only(model, trainable_names: set[str]):
    """A save-state hook: drop frozen weights from what accelerate writes (they are rebuilt on resume)."""

    def hook(models, weights, output_dir):
        for index, state in enumerate(weights):
            if models[index] is model:
                weights[index] = {k: v for k, v in state.items() if k in trainable_names}

    return hook


def save_checkpoint(accelerator, run_dir: str | Path, is_best: bool) -> None:
    """Save the accelerator's state as `last` (and first as `best` when this evaluation is the best)."""
    root = checkpoint_dir(run_dir)
    for name in (["best"] if is_best else []) + ["last"]:
        staging = root / f".{name}-partial"
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        accelerator.wait_for_everyone()


def _saved_position(folder: Path) -> dict | None:
    import torch

    files = sorted(folder.glob("custom_checkpoint_*.pkl"))
    if not files:
        return None
    for path in files:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "run_key" in state and "step" in state:
            return state
    return None


def resume_source(run_dir: str | Path, run_key: str, num_processes: int | None = None) -> Path:
    """The checkpoint to resume from: `last`, or `best` where a kill left it further along. UserError if none, if
    another config wrote it, or (given `num_processes`) if another number of training processes did."""
    root = checkpoint_dir(run_dir)
    found = [(state["step"], folder) for folder in (root / "last", root / "best")
             if folder.is_dir() and (state := _saved_position(folder)) is not None]
    if not found:
        raise UserError(f"--resume: no checkpoint in {root} (train with --save-checkpoints first)")
    step, folder = max(found, key=lambda item: item[0])
    saved = _saved_position(folder)
    key = saved["run_key"]
    if key != run_key:
        raise UserError(f"--resume: {folder} was written by another config (key {key[:12]}, this run "
                        f"{run_key[:12]}): use the same settings, or a fresh --out")
    # checkpoints from before Position kept the count: accelerate writes one RNG state file per process
    written_by = saved.get("num_processes") or max(1, len(list(folder.glob("random_states_*.pkl"))))
    if num_processes is not None and written_by != num_processes:
        raise UserError(f"--resume: {folder} was written by {written_by} training process(es), this run has "
                        f"{num_processes}: resume with `accelerate launch --num_processes {written_by}`, or a "
                        "fresh --out")
    return folder


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether a run folder holds a checkpoint a resumed run could start from."""
    root = checkpoint_dir(run_dir)
    return any(_saved_position(root / name) is not None for name in ("last", "best") if (root / name).is_dir())


def best_weights(run_dir: str | Path) -> dict:
    """The trainable weights saved at the best evaluation (name -> tensor)."""
    from safetensors.torch import load_file

    path = checkpoint_dir(run_dir) / "best" / "model.safetensors"
    if not path.exists():
        raise UserError(f"--resume: {path} is missing; the best weights cannot be restored")
    return load_file(str(path))
