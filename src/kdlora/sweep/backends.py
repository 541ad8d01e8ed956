"""What a sweep runs: thin adapters from run configs (plain dicts) to `kdlora.train` and `kdlora.bench`.

The sweep only knows a `Backends` object, so tests inject fakes (`KDLORA_BACKENDS=module:attribute` selects one
for a whole process, which is how the kill-and-resume test drives a real `kdlora sweep` subprocess). torch and
transformers are imported only when a run needs them (inside `kdlora.train` and `kdlora.bench`).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdlora.bench.runner import run_bench
from kdlora.bench.settings import FORMER_NAMES, BenchSettings
from kdlora.bench.table import write_bench_outputs
from kdlora.config import TrainConfig
from kdlora.data.transfer import from_file
from kdlora.errors import UserError
from kdlora.train import load_data, run_training
from kdlora.train.checkpoint import checkpoint_dir, has_checkpoint, resume_source
from kdlora.trial import pruning_check

BACKENDS_ENV = "KDLORA_BACKENDS"


@dataclass(frozen=True)
class Backends:
    """How to validate and run each kind of run. Every callable must be picklable (Ray ships it to workers)."""

    train_config: Callable[[dict], dict]
    """Validate a partial train config; return the full canonical config (every field, defaults filled in)."""
    train: Callable[[dict, Path, bool], dict]
    """Run one training (config, out_dir, progress) and return its metrics dict (status done/collapsed/failed)."""
    bench_settings: Callable[[dict], dict]
    """Validate partial bench settings; return the full canonical settings."""
    bench: Callable[[dict, Path, bool], dict]
    """Run one bench (settings, out_dir, progress), write its outputs into out_dir, return the bench.json dict."""
    train_key: Callable[[dict], str] | None = None
    """The store key of a full train config (`TrainConfig.key()`); default: `config.run_key` of the dict."""
    check_data: Callable[[dict], None] | None = None
    """Read a full train config's data as its run will, raising a UserError for a mistake in it (None: no check)."""


def real_train_config(values: dict) -> dict:
    return TrainConfig.from_dict(values).to_dict()


def real_train_key(config: dict) -> str:
    return TrainConfig.from_dict(config).key()


def real_check_data(config: dict) -> None:
    """The task and every split a run of `config` loads from local files (`--data-dir`, a task from files, a
    transfer file), read as it will read them (`kdlora.train.load_data`). Hub and bundled datasets are left to the
    run (it fetches them)."""
    settings = TrainConfig.from_dict(config)
    if settings.data_dir is not None or settings.train_file is not None:
        load_data(settings, settings.task_spec())
    elif settings.transfer_file is not None:
        from_file(settings.transfer_file, settings.task_spec(), first_id=0, say=False)


def real_train(config: dict, out_dir: Path, progress: bool) -> dict:
    """Train; an interrupted attempt that left a checkpoint of this very config resumes from it."""
    settings = TrainConfig.from_dict(config)
    resume = has_checkpoint(out_dir)
    if resume:
        try:
            resume_source(out_dir, settings.key())
        except UserError:  # another config's checkpoint (the run folder was reused): start afresh
            shutil.rmtree(checkpoint_dir(out_dir))
            resume = False
    # inside a hyper-parameter search each evaluation goes to the trial searching this run, which may prune it
    return run_training(settings, out_dir, progress=progress, resume=resume,
                        should_stop=pruning_check(out_dir)).to_dict()


def real_bench_settings(values: dict) -> dict:
    values = {FORMER_NAMES.get(k, k) if FORMER_NAMES.get(k) not in values else k: v for k, v in values.items()}
    known = {f.name for f in dataclasses.fields(BenchSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown bench setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    try:
        settings = BenchSettings(**_tuples(values))
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad bench setting: {exc}") from None
    return _plain(dataclasses.asdict(settings))


def real_bench(settings: dict, out_dir: Path, progress: bool) -> dict:
    result = run_bench(BenchSettings(**_tuples(settings)), progress=progress)
    write_bench_outputs(result, out_dir)
    return result


def _plain(value):
    """Tuples to lists, recursively: the canonical JSON of a config must not depend on the container type."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _tuples(value: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}


REAL = Backends(real_train_config, real_train, real_bench_settings, real_bench, real_train_key, real_check_data)


def get_backends() -> Backends:
    """The real backends, or the ones `$KDLORA_BACKENDS` (`module:attribute`) names (tests)."""
    spec = os.environ.get(BACKENDS_ENV)
    if not spec:
        return REAL
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute or "BACKENDS")
    except (ImportError, AttributeError) as exc:
        raise UserError(f"{BACKENDS_ENV}={spec}: cannot load backends ({exc})") from None
