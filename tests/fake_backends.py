"""Fake train and bench backends for sweep tests: instant (or sleepy), deterministic, no torch.

Select them in a subprocess with KDLORA_BACKENDS=fake_backends:BACKENDS (tests/ on PYTHONPATH).
FAKE_SLEEP (seconds per run) slows runs down; FAKE_KILL makes a train run SIGKILL its own process;
FAKE_ALLOC_MB makes a train run hold that many MiB and report its measured peak; FAKE_LOG (a file) gets a
"start KEY" and "end KEY" line per run; FAKE_GATE (a file) holds every run after its start until the file exists.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from kdlora.errors import UserError
from kdlora.files import write_manifest
from kdlora.sweep.backends import Backends

TRAIN_DEFAULTS = {"task": None, "family": None, "method": None, "rank": 8, "lora_alpha": 16, "seed": 42,
                  "epochs": 1, "learning_rate": None, "max_train_samples": None, "teacher": None, "fail": False}
BENCH_DEFAULTS = {"families": ["bert", "roberta", "deberta"], "methods": ["fft", "lora", "kd-lora"],
                  "ranks": [8, 16], "eval_size": 1043, "params_only": False}

# score = BASE[method] + 0.01 * (seed % 3) - 0.001 * rank (LoRA methods) + 10 * learning_rate (when set): easy to
# hand-compute medians; the last epoch's score is 0.005 lower
BASE = {"fft": 0.90, "lora": 0.88, "kd-lora": 0.86}
MEMORY = {"fft": 1000.0, "lora": 600.0, "kd-lora": 400.0}
PARAMS = {"fft": 22_000_000, "lora": 74_000, "kd-lora": 37_000}


def _log(event: str, key: str) -> None:
    if os.environ.get("FAKE_LOG"):
        with open(os.environ["FAKE_LOG"], "a") as f:
            f.write(f"{event} {key}\n")


def _wait_at_gate() -> None:
    gate, deadline = os.environ.get("FAKE_GATE"), time.monotonic() + 60
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)


def train_config(values: dict) -> dict:
    unknown = sorted(set(values) - set(TRAIN_DEFAULTS))
    if unknown:
        raise UserError(f"unknown setting {unknown[0]!r}")
    epochs = values.get("epochs", 1)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise UserError(f"epochs = {epochs!r} is not a positive integer")
    return {**TRAIN_DEFAULTS, **values}


def train(config: dict, out_dir: Path, progress: bool) -> dict:
    ident = f"{config['task']}/{config['family']}/{config['method']}/{config['rank']}/{config['seed']}"
    _log("start", ident)
    _wait_at_gate()
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    if os.environ.get("FAKE_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    measured = None
    if os.environ.get("FAKE_ALLOC_MB"):  # a run's own memory: this many MiB held at once, measured as a run's peak
        from kdlora.meters import MB, track_memory

        with track_memory() as memory:
            block = b"\x01" * (int(os.environ["FAKE_ALLOC_MB"]) * MB)  # written: resident
            del block
        measured = memory.peak_mb
    if config["fail"]:
        raise RuntimeError("asked to fail")
    if config["method"] == "kd-lora" and not (Path(config["teacher"]) / "metrics.json").is_file():
        raise UserError(f"teacher {config['teacher']} has no metrics.json")
    method = config["method"]
    rank = config["rank"] if method != "fft" else 0
    score = BASE[method] + 0.01 * (config["seed"] % 3) - 0.001 * rank + 10 * (config["learning_rate"] or 0)
    result = {"status": "done", "reason": None, "flags": [], "task": config["task"], "family": config["family"],
              "method": method, "rank": config["rank"], "seed": config["seed"],
              "metrics": {"accuracy": score}, "score": score, "last_score": score - 0.005,
              "last_metrics": {"accuracy": score - 0.005}, "last_flags": [], "trainable_params": PARAMS[method],
              "total_params": 22_700_000, "train_seconds": MEMORY[method] / 100,
              "peak_memory_mb": MEMORY[method] if measured is None else measured,
              "memory_kind": "cpu-peak-rss-delta", "best_epoch": 1, "config": config,
              "environment": {"fake": True, "pid": os.getpid(),
                                                  "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}}
    if config["seed"] == 13 and method == "lora":  # dev predictions all one class: flagged, still done
        result.update(flags=["constant_predictions", "majority_class"])
    if config["seed"] == 14 and method == "lora":
        result.update(status="collapsed", reason="non-finite loss (nan) at step 3", score=None, metrics={})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result))
    write_manifest(out_dir, "run.json", {"kind": "none"})  # as a real run folder: resuming sweeps check it
    _log("end", ident)
    return result


def bench_settings(values: dict) -> dict:
    unknown = sorted(set(values) - set(BENCH_DEFAULTS))
    if unknown:
        raise UserError(f"unknown bench setting {unknown[0]!r}")
    return {**BENCH_DEFAULTS, **values}


def bench(settings: dict, out_dir: Path, progress: bool) -> dict:
    _log("start", "bench/" + ",".join(settings["families"]))
    _wait_at_gate()
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    rows = []
    for family in settings["families"]:
        for method in settings["methods"]:
            for rank in settings["ranks"]:
                rows.append({"family": family, "model": f"{family}-model", "method": method, "rank": rank,
                             "adapter_params": 0 if method == "fft" else 9216 * rank,
                             "trainable_params": PARAMS[method] + 1000 * rank, "total_params": 110_000_000,
                             "peak_memory_mb": MEMORY[method] * 2,
                             "eval_seconds": 10.0 / (1 + (method == "kd-lora")),
                             "eval_seconds_unmerged": 12.0, "latency_ms_p50": 5.0, "latency_ms_p90": 6.0,
                             "throughput_per_s": 100.0, "memory_kind": "cpu-peak-rss-delta"})
    _log("end", "bench/" + ",".join(settings["families"]))
    return {"rows": rows, "config": settings, "environment": {"fake": True}}


BACKENDS = Backends(train_config, train, bench_settings, bench)
