"""A run's key: its identity in the results store, the only hash of settings in the toolkit.

The key is the sha256 of the canonical JSON (sorted keys, no spaces) of the run's kind (`train` or `bench`), the
settings that identify it (`identity`: for a train run `TrainConfig.identity()`, for a bench run its full
settings) and, for a train run, its number of training processes (they multiply the effective batch). The same
settings give the same key on every machine and in every process, so a sweep finds what the store already holds;
a setting renamed after runs were stored enters the key under its first name (`FIRST_NAMES`), so they keep theirs.
"""

from __future__ import annotations

import hashlib
import json

FIRST_NAMES = {"bench": {"load_weights": "pretrained"}}
"""By run kind: settings renamed after runs of that kind were stored, each with the name the stored keys hold."""


def run_key(kind: str, identity: dict, num_processes: int | None = None) -> str:
    """sha256 of the canonical JSON of (kind, identity[, num_processes]), renamed settings by their first names."""
    first = FIRST_NAMES.get(kind, {})
    what = {"kind": kind, "config": {first.get(name, name): value for name, value in identity.items()}}
    if num_processes is not None:
        what["num_processes"] = num_processes
    canonical = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
