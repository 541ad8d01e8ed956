"""kdlora against the Trainer + PEFT script people write instead: the same runs, side by side, in one run.

    PYTHONPATH=src python benchmarks/peers.py [--methods lora,fft,kd-lora] [--seeds 42] [--out peers.json]

Three configurations of every (method, seed):
  (a) trainer-defaults: the HF Trainer + PEFT as `run_glue.py` runs by default: every example padded to
      max_seq_length 128 when tokenised (default_data_collator), random batches, fp32 (no --bf16; --defaults-bf16
      gives it the shared precision), evaluation batch 8.
  (b) trainer-best: the Trainer at its best: dynamic padding (DataCollatorWithPadding), max length 64, batches of
      similar length (transformers 5's `train_sampling_strategy="group_by_length"`, formerly `group_by_length`),
      bf16 where the CPU computes it natively (`kdlora.precision`), evaluation batch 64.
  (c) kdlora: `kdlora.api.train_run`, the Python API of `kdlora train`, as the main job runs it (max length 64).
Shared by all three: the main job's data (movie-snippets: the seeded --max-train-samples subset kdlora draws, every
dev sentence; kdlora's own loader feeds the Trainer too), the minilm family's real weights, epochs, batch 32, seed,
kdlora's per-method learning rate for small data, its schedule (10 % linear warm-up then linear decay, AdamW with
weight decay 0.01 on matrices, gradient norm clipped at 1.0), dev scored after every epoch (the best epoch's score
is each one's dev figure, the last epoch's is kept too) and LoRA's settings (kdlora's `LoraSettings` defaults:
rank, alpha, dropout; targets and trained head found by `kdlora.modeling.adaptation`): the trainable parameter
counts of the three must be equal, or the script says so and exits 1. KD-LoRA: the student is the FFT teacher cut
to every other layer (what kdlora does for minilm) and the teacher is kdlora's FFT run (c) of the same seed, for
all three; the Trainer runs it through `kdlora.hf.DistillationTrainer` with kdlora's teacher-logit cache. Every run
gets an empty cache, so each computes its teacher's logits itself, inside its wall time.

One process per run (`peer_runs.py`: what each configuration does), one after the other, (c) first (the
teacher): wall = process start to exit, timed by the parent; train examples/s = examples x epochs over the training
loop's seconds (`Trainer.train()`; kdlora's `train_seconds`: both include the per-epoch dev scoring); peak memory =
the process's peak RSS (VmHWM, polled by the parent every 50 ms, since kdlora restarts its own process's count to
measure a run); dev = accuracy. Ratios per method: kdlora over (a) and over (b) (speed-up = their wall / kdlora's).
The machine (CPU, cores) and its load average before and after are printed with the figures. --tiny: tiny random
models on a few rows of tests/data (a smoke test; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from peer_runs import Spec  # noqa: E402  (benchmarks/ is not a package)

from kdlora.bench.environment import describe_environment, load_average  # noqa: E402
from kdlora.methods import get_method  # noqa: E402

CONFIGS = ("kdlora", "trainer-defaults", "trainer-best")
"""Run order within a (method, seed): kdlora first, so its FFT run is there to teach."""

GOALS = {"trainer-defaults": 1.5, "trainer-best": 1.0}
"""Issue 27: kdlora's wall-time speed-up over each Trainer configuration."""

TINY_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "train" / "sst2"
"""--tiny's task data (sst2-like, 24 training rows)."""

CHILD = Path(__file__).resolve().parent / "peer_runs.py"
"""What each run's process executes."""


def peak_kb(status: str) -> int:
    """VmHWM (peak resident memory, kB) in the text of /proc/PID/status; 0 when absent."""
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1])


def run_child(spec: Spec, cache: Path) -> dict:
    """Run `spec` in a fresh process of this script; its figures, wall seconds and peak RSS (MB)."""
    result_file = Path(spec.out + ".result.json")
    env = {**os.environ, "KDLORA_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    log = Path(spec.out + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as output:  # a file, not a pipe: a full pipe would stall the run
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(CHILD), json.dumps(asdict(spec)), str(result_file)], env=env,
                                stdout=output, stderr=subprocess.STDOUT)
        peak = 0
        while True:
            try:
                peak = max(peak, peak_kb(Path(f"/proc/{proc.pid}/status").read_text()))
            except OSError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
    if proc.returncode != 0 or not result_file.is_file():
        last = (log.read_text(encoding="utf-8", errors="replace").strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {last[:300]}", "wall_seconds": wall}
    figures = json.loads(result_file.read_text())
    examples = figures["train_examples"] * spec.epochs
    return {**figures, "wall_seconds": wall, "peak_rss_mb": peak / 1024,
            "train_examples_per_s": examples / figures["train_seconds"]}


def fresh_cache(root: Path, name: str, tiny: bool) -> Path:
    """An empty kdlora cache for one run (no teacher logits), sharing the downloaded movie snippets."""
    from kdlora.data.snippets import cache_dir, fetch_snippets

    cache = root / f"cache-{name}"
    cache.mkdir(parents=True)
    if not tiny:
        fetch_snippets()  # once, before any timing
        (cache / "movie-snippets").symlink_to(cache_dir() / "movie-snippets")
    return cache


def summary(runs: list[dict]) -> dict:
    """Per (method, config): the medians over seeds of every figure, and the dev score's spread (max - min)."""
    out: dict = {}
    for run in runs:
        out.setdefault(run["method"], {}).setdefault(run["config"], []).append(run)
    for configs in out.values():
        for config, group in configs.items():
            ok = [r for r in group if "error" not in r]
            med = {k: statistics.median(r[k] for r in ok) if ok else None
                   for k in ("wall_seconds", "train_examples_per_s", "peak_rss_mb", "dev", "dev_last")}
            configs[config] = {**med, "seeds": len(ok), "dev_spread": max(r["dev"] for r in ok) -
                               min(r["dev"] for r in ok) if ok else None,
                               "trainable_params": sorted({r["trainable_params"] for r in ok})}
    return out


def ratio_rows(table: dict) -> list[dict]:
    """kdlora over each Trainer configuration, per method: wall speed-up (their wall / kdlora's), train examples/s
    (kdlora's / theirs), peak memory (kdlora's / theirs), dev points (kdlora's - theirs); the wall goal met or not,
    and whether the dev gap is within the seeds' spread (None with one seed)."""
    rows = []
    for method, configs in table.items():
        ours = configs.get("kdlora") or {}
        for peer in ("trainer-defaults", "trainer-best"):
            theirs = configs.get(peer) or {}
            if ours.get("wall_seconds") is None or theirs.get("wall_seconds") is None:
                rows.append({"method": method, "versus": peer, "missing": True})
                continue
            speedup = theirs["wall_seconds"] / ours["wall_seconds"]
            gap = 100 * (ours["dev"] - theirs["dev"])
            noise = 100 * max(ours["dev_spread"], theirs["dev_spread"])
            rows.append({"method": method, "versus": peer, "wall_speedup": speedup,
                         "examples_per_s": ours["train_examples_per_s"] / theirs["train_examples_per_s"],
                         "memory": ours["peak_rss_mb"] / theirs["peak_rss_mb"], "dev_points": gap,
                         "goal": GOALS[peer], "met": speedup >= GOALS[peer],
                         "dev_within_noise": None if min(ours["seeds"], theirs["seeds"]) < 2 else abs(gap) <= noise,
                         "params_equal": ours["trainable_params"] == theirs["trainable_params"]})
    return rows


def ratio_lines(rows: list[dict]) -> list[str]:
    """The printed ratio table."""
    lines = [f"{'method':<9} {'kdlora vs':<17} {'wall':>7} {'goal':>6} {'ex/s':>7} {'memory':>7} {'dev pts':>8}  "
             "verdict"]
    for r in rows:
        if r.get("missing"):
            lines.append(f"{r['method']:<9} {r['versus']:<17} {'a run failed: no ratio':>40}")
            continue
        noise = {None: "one seed: noise not judged", True: "dev within the seeds' spread",
                 False: "dev gap beyond the seeds' spread"}[r["dev_within_noise"]]
        params = "" if r["params_equal"] else "; TRAINABLE PARAMETERS DIFFER"
        lines.append(f"{r['method']:<9} {r['versus']:<17} {r['wall_speedup']:>6.2f}x {r['goal']:>5.1f}x "
                     f"{r['examples_per_s']:>6.2f}x {r['memory']:>6.2f}x {r['dev_points']:>+8.2f}  "
                     f"{'met' if r['met'] else 'NOT met'}; {noise}{params}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="lora,fft,kd-lora", help="comma-separated: lora, fft, kd-lora")
    parser.add_argument("--seeds", default="42", help="comma-separated seeds (default 42)")
    parser.add_argument("--max-train-samples", type=int, default=2000, help="training sentences (default 2000)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (default 2, the main job's)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch (default 32)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="of (b) and (c) (auto: bf16 where the CPU computes it natively)")
    parser.add_argument("--defaults-bf16", action="store_true", help="run (a) in the shared precision, not fp32")
    parser.add_argument("--work", help="folder for the run folders (default: a temporary one, removed)")
    parser.add_argument("--out", default="peers.json", help="every figure as JSON (default peers.json)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, of {', '.join(CONFIGS)} (default all; kdlora's FFT runs whenever "
                             "KD-LoRA needs its teacher)")
    parser.add_argument("--group-by-length", action="store_true",
                        help="kdlora with --group-by-length, as the Trainer at its best groups its batches")
    parser.add_argument("--tiny", action="store_true", help="tiny random models on tests/data (a smoke test)")
    args = parser.parse_args(argv)
    from kdlora.precision import check_precision, resolve_precision

    precision = check_precision(resolve_precision(args.precision, "cpu"), "cpu")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="kdlora-peers-") as scratch:
        root = Path(args.work or scratch)
        runs = []
        for seed in seeds:
            for method in (["fft"] if "kd-lora" in methods and "fft" not in methods else []) + methods:
                chosen = [c for c in CONFIGS if c in args.configs.split(",")]
                for config in chosen if method in methods else ("kdlora",):  # an FFT teacher only: kdlora's
                    name = f"{config}-{method}-seed{seed}"
                    spec = Spec(config=config, method=method, seed=seed, out=str(root / name),
                                task="sst2" if args.tiny else "movie-snippets", family="minilm",
                                epochs=args.epochs, batch_size=args.batch_size, max_length=64,
                                precision="fp32" if config == "trainer-defaults" and not args.defaults_bf16
                                else precision,
                                max_train_samples=None if args.tiny else args.max_train_samples,
                                data_dir=str(TINY_DATA) if args.tiny else None, tiny=args.tiny,
                                teacher=str(root / f"kdlora-fft-seed{seed}") if get_method(method).distills else None,
                                group_by_length=args.group_by_length and config == "kdlora")
                    run = {**asdict(spec), **run_child(spec, fresh_cache(root, name, args.tiny))}
                    runs.append(run)
                    shown = run.get("error") or f"{run['wall_seconds']:.1f} s, dev {run['dev']:.4f}"
                    print(f"{name}: {shown} (load {load_average()})", file=sys.stderr)
        runs = [r for r in runs if r["method"] in methods]
    table = summary(runs)
    rows = ratio_rows(table)
    env = describe_environment("cpu")
    figures = {"runs": runs, "summary": table, "ratios": rows, "precision": precision, "machine": env,
               "load_average": [load_start, load_average()], "goals": GOALS}
    print(f"{'method':<9} {'config':<17} {'wall s':>8} {'ex/s':>8} {'peak MB':>8} {'dev':>7} {'last':>7} "
          f"{'spread':>7} {'trainable':>11}")
    for method, configs in table.items():
        for config, s in configs.items():
            if s["wall_seconds"] is None:
                print(f"{method:<9} {config:<17} failed")
                continue
            print(f"{method:<9} {config:<17} {s['wall_seconds']:>8.1f} {s['train_examples_per_s']:>8.1f} "
                  f"{s['peak_rss_mb']:>8.0f} {s['dev']:>7.4f} {s['dev_last']:>7.4f} {s['dev_spread']:>7.4f} "
                  f"{','.join(f'{n:,}' for n in s['trainable_params']):>11}")
    print()
    print("\n".join(ratio_lines(rows)))
    print(f"\nmachine: {env['cpu_model']}, {env['cpu_count']} cores, torch {env['torch']}, transformers "
          f"{env['transformers']}, peft {env['peft']}; precision {precision} ((a) "
          f"{'the same' if args.defaults_bf16 else 'fp32'}); load average {figures['load_average'][0]} -> "
          f"{figures['load_average'][1]}; one process per run (the Python API for kdlora); KD-LoRA's teacher: "
          "kdlora's FFT run of the same seed, for all three")
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    failed = [r for r in runs if "error" in r]
    for r in failed:
        print(f"failed: {r['config']} {r['method']} seed {r['seed']}: {r['error']}", file=sys.stderr)
    mismatch = [r for r in rows if not r.get("missing") and not r["params_equal"]]
    return 1 if failed or mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
