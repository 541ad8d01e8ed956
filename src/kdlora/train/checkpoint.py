"""Step checkpoints of one training run: save the last and the best, and find the one to resume from.

    RUN_DIR/checkpoints/best/   the state at the best evaluation so far
    RUN_DIR/checkpoints/last/   the same at the latest evaluation

Each holds the trainable weights only (`model.safetensors`; a resumed run rebuilds the frozen rest and loads these
non-strictly), the optimiser (`optimizer.bin`), every RNG state accelerate knows (`random_states_<process>.pkl`;
`scaler.pt` under fp16), the LR schedule and the method's own state (`training_state.pt`), and `checkpoint.json`:
`Position` (where in the data the run stood and what it had seen: history, best evaluation, patience count) and
the manifest of the other files. That is enough for a resumed run to end exactly as an uninterrupted one, on as
many training processes as wrote it (another count is refused). A new best is written before `last`, and each
folder is written beside its place and renamed into it, so a kill at any moment leaves checkpoints that agree:
resume from whichever is further along, and take the best weights from `best`.

A run folder may come from anyone, so loading a checkpoint runs no pickle code. Accelerate 1.16's `load_state`
loads the weights from safetensors and the optimiser, scheduler, sampler, scaler and RNG states with
`torch.load(weights_only=True)`, but the states registered with `register_for_checkpointing` with
`weights_only=False`: so kdlora registers none, and saves its own states as JSON (the position) and as plain
tensors and numbers (`training_state.pt`, read with `weights_only=True`). Before anything is read, every file in
`checkpoints/` must be one a checkpoint holds and listed in its manifest, whole; anything else (a pickle beside the
files, a checkpoint of an older kdlora, which pickled its states) is one UserError naming the file.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdlora.errors import UserError
from kdlora.files import verify, write_manifest

CHECKPOINTS = "checkpoints"
"""The checkpoints' folder inside a run folder."""
SLOTS = ("last", "best")
MANIFEST = "checkpoint.json"
"""The position and the manifest of the other files, in each checkpoint."""
STATES = "training_state.pt"
"""The LR schedule's and the method's state dicts (tensors, numbers, lists): read with weights_only=True."""
HELD = re.compile(r"model\.safetensors|optimizer\.bin|scaler\.pt|random_states_\d+\.pkl|training_state\.pt")
"""The files a checkpoint holds besides its manifest: what accelerate's `save_state` writes with nothing
registered for checkpointing (one model, one optimiser, no prepared scheduler), and kdlora's states."""


@dataclass
class Position:
    """Where a run stands: saved as JSON in each checkpoint's manifest."""

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


def save_checkpoint(accelerator, run_dir: str | Path, is_best: bool, position: Position, states: dict) -> None:
    """Save the accelerator's state, `states` (name -> object with `state_dict`) and `position` as `last` (and
    first as `best` when this evaluation is the best)."""
    import torch

    root = checkpoint_dir(run_dir)
    for name in (["best"] if is_best else []) + ["last"]:
        staging = root / f".{name}-partial"
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            torch.save({key: state.state_dict() for key, state in states.items()}, staging / STATES)
            write_manifest(staging, MANIFEST, {"position": position.state_dict()})
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        accelerator.wait_for_everyone()


def _fresh_start(run_dir: str | Path) -> str:
    return f"remove {checkpoint_dir(run_dir)} to start afresh"


def _vouched_position(folder: Path) -> dict:
    """The position in `folder`'s manifest, once every file there is one a checkpoint holds, listed in the manifest
    and whole; nothing is unpickled. A UserError names the first file that is not."""
    fresh = _fresh_start(folder.parent.parent)
    for path in sorted(folder.iterdir()):
        if path.name != MANIFEST and not (HELD.fullmatch(path.name) and path.is_file() and not path.is_symlink()):
            raise UserError(f"{path}: not a file a kdlora checkpoint holds (a pickle put there, or a checkpoint of an "
                            f"older kdlora, whose pickled states could run code): nothing was loaded; {fresh}")
    manifest = verify(folder, MANIFEST, "checkpoint", older_ok=False, hint=fresh)
    unlisted = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST and p.name not in manifest["files"])
    position = manifest.get("position")
    if unlisted:
        raise UserError(f"{folder / unlisted[0]}: not listed in {folder / MANIFEST}: nothing was loaded; {fresh}")
    if not isinstance(position, dict) or not isinstance(position.get("run_key"), str) or \
            not isinstance(position.get("step"), int):
        raise UserError(f"{folder / MANIFEST}: no position of a kdlora run in it; {fresh}")
    return position


def _checkpoints(run_dir: str | Path) -> list[tuple[dict, Path]]:
    """(position, folder) of each checkpoint in the run folder, each checked by `_vouched_position`."""
    root = checkpoint_dir(run_dir)
    return [(_vouched_position(root / name), root / name) for name in SLOTS if (root / name).is_dir()]


def _resumable(run_dir: str | Path, run_key: str, num_processes: int | None) -> tuple[dict, Path]:
    """(position, folder) of the checkpoint to resume from: see `resume_source`."""
    found = _checkpoints(run_dir)
    if not found:
        raise UserError(f"--resume: no checkpoint in {checkpoint_dir(run_dir)} (train with --save-checkpoints first)")
    saved, folder = max(found, key=lambda item: item[0]["step"])
    key = saved["run_key"]
    if key != run_key:
        raise UserError(f"--resume: {folder} was written by another config (key {key[:12]}, this run "
                        f"{run_key[:12]}): use the same settings, or a fresh --out")
    written_by = saved.get("num_processes", 1)
    if num_processes is not None and written_by != num_processes:
        raise UserError(f"--resume: {folder} was written by {written_by} training process(es), this run has "
                        f"{num_processes}: resume with `accelerate launch --num_processes {written_by}`, or a "
                        "fresh --out")
    return saved, folder


def resume_source(run_dir: str | Path, run_key: str, num_processes: int | None = None) -> Path:
    """The checkpoint to resume from: `last`, or `best` where a kill left it further along. UserError if none, if
    a file in either is not one a checkpoint holds, if another config wrote it, or (given `num_processes`) if
    another number of training processes did."""
    return _resumable(run_dir, run_key, num_processes)[1]


def load_checkpoint(accelerator, run_dir: str | Path, position: Position, states: dict) -> None:
    """Resume: load the checkpoint `resume_source` picks into the accelerator's model and optimiser, the RNGs,
    `states` (name -> object with `load_state_dict`) and `position`. Every pickled file is read with
    weights_only=True, first on its own so that one that is not plain tensors and numbers is a UserError naming it
    (accelerate would skip an unreadable RNG state without a word)."""
    from accelerate.utils import load

    saved_position, folder = _resumable(run_dir, position.run_key, accelerator.num_processes)
    fresh = _fresh_start(run_dir)
    saved = None
    for path in sorted(folder.iterdir()):
        if path.suffix in (".bin", ".pkl", ".pt"):
            try:  # mmap: checking the optimiser's state reads no tensor data
                state = load(path, map_location="cpu", mmap=path.name != STATES)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UserError(f"{path}: cannot load ({type(exc).__name__}: {first[:160]}); nothing of it ran; "
                                f"{fresh}") from None
            saved = state if path.name == STATES else saved
    if not isinstance(saved, dict) or set(saved) != set(states):
        held = ", ".join(sorted(saved)) if isinstance(saved, dict) else "none"
        raise UserError(f"{folder}: the checkpoint holds the states {held} where this run saves "
                        f"{', '.join(sorted(states))} (another kdlora wrote it); {fresh}")
    try:
        accelerator.load_state(str(folder), strict=False)
        for key, state in states.items():
            state.load_state_dict(saved[key])
    except Exception as exc:  # another model's weights or optimiser: the checkpoint does not fit this run
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{folder}: cannot resume from it ({type(exc).__name__}: {first[:160]}); {fresh}") from None
    position.load_state_dict(saved_position)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether a run folder holds a checkpoint a resumed run could start from (a UserError for a file in one that
    no checkpoint holds)."""
    return bool(_checkpoints(run_dir))


def best_weights(run_dir: str | Path) -> dict:
    """The trainable weights saved at the best evaluation (name -> tensor), from its checked checkpoint."""
    from safetensors.torch import load_file

    folder = checkpoint_dir(run_dir) / "best"
    if not folder.is_dir():
        raise UserError(f"--resume: {folder} is missing; the best weights cannot be restored")
    _vouched_position(folder)
    return load_file(str(folder / "model.safetensors"))


def best_state(run_dir: str | Path, name: str = "method") -> dict | None:
    """The state saved as `name` in `training_state.pt` at the best evaluation (the method's own: AdaLoRA's rank
    pattern, which the best weights go with), read with weights_only=True from its checked checkpoint; None if
    that checkpoint holds no such state."""
    import torch

    folder = checkpoint_dir(run_dir) / "best"
    if not folder.is_dir():
        raise UserError(f"--resume: {folder} is missing; the best state cannot be restored")
    _vouched_position(folder)
    return torch.load(folder / STATES, map_location="cpu", weights_only=True).get(name)
