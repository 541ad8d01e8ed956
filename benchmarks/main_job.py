"""The main job's time, lever by lever (issue 27): `kdlora reproduce` from a fresh store and a fresh data cache with
every lever off, with the shipped defaults, and with each lever alone.

    PYTHONPATH=src python benchmarks/main_job.py [--only shipped,off] [--work DIR] [--out FILE.json]

Levers (off: as before issue 27):
  teacher-bf16   a bf16 KD run's teacher logits under bf16 autocast (`teacher_precision = "auto"`, shipped); off:
                 `teacher_precision = "fp32"` (an fp32 run computes them in fp32 either way)
  warm-start     each run forked from a process that imported torch and the rest once (shipped); off:
                 `--no-warm-start`, a new Python per run
  bench-eval-64  the bench times 64 evaluation sequences instead of 128 (not shipped: measured so the lead can decide)

Variants: `off` (every lever off), `shipped` (the defaults), and each lever's name (that lever on, the others off).
Each variant runs the bundled default experiment (`kdlora/experiments/default.toml`, the levers' settings written
into a copy) into its own store, with `KDLORA_CACHE` a fresh folder holding only the movie snippets (copied from
this machine's cache: run `kdlora demo` once if it has none), so no teacher logits are reused. It prints the wall time
of the whole command, of the bench (per family) and of each train run (its training loop and its teacher logits
apart), with the load average before and after. Time it alone: two jobs on two cores distort every timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdlora.bench.environment import describe_environment, load_average
from kdlora.data.snippets import cache_dir
from kdlora.store import Store

DEFAULT_EXPERIMENT = Path(__file__).resolve().parents[1] / "src" / "kdlora" / "experiments" / "default.toml"


@dataclass(frozen=True)
class Change:
    """What turning a lever one way changes: experiment settings by TOML section, and `kdlora reproduce` flags."""

    settings: dict = field(default_factory=dict)
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lever:
    name: str
    shipped: bool
    """Whether the shipped defaults have it on."""
    on: Change
    off: Change


LEVERS = (
    Lever("teacher-bf16", True, Change(), Change({"train.params": {"teacher_precision": "fp32"}})),
    Lever("warm-start", True, Change(), Change(flags=("--no-warm-start",))),
    Lever("bench-eval-64", False, Change({"bench": {"eval_size": 64}}), Change()),
)


def variants() -> dict[str, list[Change]]:
    """Every variant's changes: off, shipped, and each lever alone."""
    found = {"off": [lever.off for lever in LEVERS],
             "shipped": [lever.on if lever.shipped else lever.off for lever in LEVERS]}
    for alone in LEVERS:
        found[alone.name] = [lever.on if lever is alone else lever.off for lever in LEVERS]
    return found


def with_settings(text: str, section: str, values: dict) -> str:
    """The TOML `text` with `values` set in `[section]` (a key there replaced, else added under the header)."""
    lines = text.splitlines()
    start = lines.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for key, value in values.items():
        line = f"{key} = {json.dumps(value)}"
        at = next((i for i in range(start + 1, end) if lines[i].split("=")[0].strip() == key), None)
        if at is None:
            lines.insert(start + 1, line)
            end += 1
        else:
            lines[at] = line
    return "\n".join(lines) + "\n"


def experiment_text(changes: list[Change]) -> str:
    text = DEFAULT_EXPERIMENT.read_text(encoding="utf-8")
    for change in changes:
        for section, values in change.settings.items():
            text = with_settings(text, section, values)
    return text


def run_variant(name: str, changes: list[Change], work: Path) -> dict:
    """`kdlora reproduce` of the variant from a fresh store and cache; its wall time and the store's timings."""
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "cache").mkdir(parents=True)
    shutil.copytree(cache_dir() / "movie-snippets", folder / "cache" / "movie-snippets")
    (folder / "default.toml").write_text(experiment_text(changes), encoding="utf-8")
    flags = [flag for change in changes for flag in change.flags]
    command = [sys.executable, "-m", "kdlora", "reproduce", str(folder / "default.toml"), "--db",
               str(folder / "results.db"), "--out", str(folder / "report"), "--no-progress", *flags]
    load_before = load_average()
    started = time.monotonic()
    code = subprocess.run(command, env={**os.environ, "KDLORA_CACHE": str(folder / "cache")}).returncode
    figures = {"command": " ".join(command[1:]), "exit_code": code,
               "wall_seconds": round(time.monotonic() - started, 1), "load_before": load_before,
               "load_after": load_average(), "bench": {}, "train": {}}
    with Store(folder / "results.db", readonly=True) as store:
        for run in store.runs(kind="bench"):
            figures["bench"][run.label] = (run.timings or {}).get("wall_seconds")
        for run in store.runs(kind="train"):
            result = run.result or {}
            figures["train"][f"{run.method}/{run.seed}"] = {
                "wall_seconds": (run.timings or {}).get("wall_seconds"),
                "train_seconds": result.get("train_seconds"),
                "teacher_logit_seconds": result.get("teacher_logit_seconds"),
                "score": (run.metrics or {}).get("score")}
    return figures


def lines(name: str, figures: dict) -> list[str]:
    """The variant's figures as text: the whole, the bench, each train run."""
    train = figures["train"].values()
    total = {k: round(sum(r[k] or 0 for r in train), 1) for k in ("wall_seconds", "train_seconds",
                                                                   "teacher_logit_seconds")}
    found = [f"{name}: {figures['wall_seconds']} s wall (exit {figures['exit_code']}; load "
             f"{figures['load_before']} -> {figures['load_after']}); bench {round(sum(figures['bench'].values()), 1)} s"
             f", train runs {total['wall_seconds']} s (training loops {total['train_seconds']} s, teacher logits "
             f"{total['teacher_logit_seconds']} s)"]
    found += [f"  bench {label}: {seconds} s" for label, seconds in figures["bench"].items()]
    found += [f"  {run}: {r['wall_seconds']} s wall, {r['train_seconds']} s training, "
              f"{r['teacher_logit_seconds']} s teacher logits, score {r['score']}"
              for run, r in figures["train"].items()]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    known = variants()
    parser.add_argument("--only", default=",".join(known), metavar="A,B",
                        help=f"variants to run, in this order (default: all: {','.join(known)})")
    parser.add_argument("--work", default="main-job-work", help="folder of the variants' stores and caches")
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        parser.error(f"--only: unknown variant {unknown[0]!r} (known: {', '.join(known)})")
    if not (cache_dir() / "movie-snippets").is_dir():
        parser.error(f"no movie snippets in {cache_dir()}: run `kdlora demo` once (it fetches them)")
    figures = {"environment": describe_environment("cpu"), "variants": {}}
    for name in chosen:
        figures["variants"][name] = run_variant(name, known[name], Path(args.work))
        print("\n".join(lines(name, figures["variants"][name])), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
