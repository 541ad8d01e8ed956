"""bf16 vs fp32 on this machine: training step and evaluation per family and method, side by side in one run, and
the demo task's dev accuracy under each.

    PYTHONPATH=src python benchmarks/precision.py [--families bert,roberta,deberta] [--demo] [--out FILE.json]

1. Training step (random-weight paper architectures from the bundled configs, batch x seq full-length tokens): an
   fp32 step and a bf16-autocast step of the same model, optimiser and batch, alternating (the order swapping
   each pair); the ratio is the median of the per-pair ratios. Goal: >= 2.0x.
2. Evaluation: the model (adapters merged) in fp32 and a bf16-weights copy take the evaluation batches in turn,
   batch by batch. Goal: >= 3.5x.
3. With --demo: `kdlora demo` (all-MiniLM-L6-v2 on the movie snippets: FFT, LoRA, KD-LoRA; 2,000 sentences, 2
   epochs by default, see --demo-* options) in fp32 and in bf16 with the same seeds (42, 43, 44); the mean dev
   accuracy of each. Goal: within 0.5 points. `--demo --no-speed` trains the demo alone.

Where the CPU has no bf16 units (no AVX512-BF16 or AMX) torch emulates bf16 and it is far slower than fp32: the
script then times one 512 x 768 x 768 matmul in each precision, records that, and skips the rest unless --force
(which measures anyway, at whatever size is asked). Every figure comes with the machine and its load average.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ratios import round_robin  # noqa: E402  (benchmarks/ is not a package)

from kdlora import modeling  # noqa: E402
from kdlora.bench import evalset  # noqa: E402
from kdlora.bench.environment import describe_environment, load_average  # noqa: E402
from kdlora.bench.worker import train_batch, train_step  # noqa: E402
from kdlora.families import FAMILIES, PAPER_FAMILIES  # noqa: E402
from kdlora.methods import METHODS  # noqa: E402
from kdlora.precision import bf16_supported  # noqa: E402

GOALS = {"train": 2.0, "eval": 3.5, "accuracy_points": 0.5}


def matmul_probe(size: tuple[int, int, int] = (512, 768, 768), repeats: int = 5) -> dict:
    """Seconds of one (m x k) @ (k x n) matmul in fp32 and bf16, alternating; the bf16 speedup."""
    import torch

    a, b = torch.randn(size[0], size[1]), torch.randn(size[1], size[2])
    pairs = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    times = {"fp32": [], "bf16": []}
    for x, y in pairs.values():
        x @ y  # warm-up
    for _ in range(repeats):
        for name, (x, y) in pairs.items():
            start = time.perf_counter()
            x @ y
            times[name].append(time.perf_counter() - start)
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    return {"shape": list(size), "fp32_s": fp32, "bf16_s": bf16, "bf16_speedup": fp32 / bf16}


def step_speedup(family: str, method: str, batch_size: int, seq_len: int, pairs: int, tiny: bool) -> dict:
    """Median fp32-step / bf16-step ratio over `pairs` alternating pairs on one model and batch."""
    import torch

    fam, meth = FAMILIES[family], METHODS[method]
    _, base = modeling.build_base(fam, meth, tiny=tiny)
    model = modeling.prepare(base, meth, 8 if meth.uses_lora else None)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = train_batch(batch_size, seq_len, model.config.vocab_size, 2, 0, "cpu")
    for precision in ("fp32", "bf16"):  # allocate the optimiser state, warm the kernels
        train_step(model, optimizer, meth, batch, precision)
    fp32, bf16 = [], []
    for i in range(pairs):
        order = ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")
        times = {p: train_step(model, optimizer, meth, batch, p) for p in order}
        fp32.append(times["fp32"])
        bf16.append(times["bf16"])
    return {"fp32_step_s": statistics.median(fp32), "bf16_step_s": statistics.median(bf16),
            "speedup": statistics.median(a / b for a, b in zip(fp32, bf16, strict=True)), "pairs": pairs}


def eval_speedup(family: str, method: str, size: int, batch_size: int, tiny: bool) -> dict:
    """Seconds of `size` evaluation sequences: the merged model in fp32 and as bf16 weights, batch by batch."""
    import torch

    fam, meth = FAMILIES[family], METHODS[method]
    _, base = modeling.build_base(fam, meth, tiny=tiny)
    model = modeling.prepare(base, meth, 8 if meth.uses_lora else None)
    if meth.uses_lora:
        model = modeling.merged(model)
    low = copy.deepcopy(model).to(torch.bfloat16)
    lengths = evalset.eval_lengths(size)
    batches = evalset.eval_batches(lengths, batch_size, model.config.vocab_size, group_by_length=True)
    seconds = round_robin({"fp32": model, "bf16": low}, {"fp32": batches, "bf16": batches})
    return {"fp32_s": seconds["fp32"], "bf16_s": seconds["bf16"], "speedup": seconds["fp32"] / seconds["bf16"],
            "sequences": size}


def demo_accuracy(out: Path, seeds: tuple[int, ...], train_samples: int, epochs: int, max_length: int) -> dict:
    """`kdlora demo` (MiniLM FFT, LoRA, KD-LoRA on the movie snippets) in fp32 and in bf16 with the same seeds:
    per precision and method, the mean dev accuracy, each seed's, and the mean train seconds."""
    from kdlora.demo import run_demo

    results = {}
    for seed in seeds:  # a seed in both precisions before the next: load drifts hit both alike
        for precision in ("fp32", "bf16"):
            summary = run_demo(out / precision / f"seed{seed}", seeds=(seed,), train_samples=train_samples,
                               epochs=epochs, max_length=max_length, progress=False, precision=precision)
            for method, row in summary.items():
                entry = results.setdefault(f"{precision}/{method}", {"accuracies": [], "seconds": []})
                entry["accuracies"].append(row["accuracy"])
                entry["seconds"].append(row["train_seconds"])
            print(f"demo seed {seed} {precision}: " + ", ".join(
                f"{m} {r['accuracy']:.4f} ({r['train_seconds']:.0f} s)" for m, r in summary.items())
                + f" (load {load_average()})", file=sys.stderr, flush=True)
    for entry in results.values():
        entry["accuracy"] = statistics.fmean(entry["accuracies"])
        entry["train_seconds"] = statistics.fmean(entry["seconds"])
    return {"seeds": list(seeds), "train_samples": train_samples, "epochs": epochs, "max_length": max_length,
            **results}


def measure(args) -> dict:
    figures = {"environment": describe_environment("cpu"), "load_average_start": load_average(),
               "bf16_supported": bf16_supported("cpu"), "probe": matmul_probe(), "goals": GOALS,
               "settings": {"batch": [args.batch_size, args.seq_len], "pairs": args.pairs,
                            "eval_size": args.eval_size, "tiny": args.tiny}}
    if not (figures["bf16_supported"] or args.force):
        figures["skipped"] = "this CPU has no bf16 units (AVX512-BF16 or AMX); pass --force to measure anyway"
        figures["load_average_end"] = load_average()
        return figures
    rows = []
    for family in args.families.split(",") if args.speed else ():
        for method in args.methods.split(","):
            started = time.perf_counter()
            row = {"family": family, "method": method,
                   "train": step_speedup(family, method, args.batch_size, args.seq_len, args.pairs, args.tiny),
                   "eval": eval_speedup(family, method, args.eval_size, args.eval_batch_size, args.tiny)}
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(f"{family}/{method}: train {row['train']['speedup']:.2f}x, eval {row['eval']['speedup']:.2f}x "
                  f"(load {load_average()})", file=sys.stderr)
    figures["rows"] = rows
    if args.demo:
        figures["demo"] = demo_accuracy(Path(args.demo_out), tuple(int(x) for x in args.demo_seeds.split(",")),
                                        args.demo_train_samples, args.demo_epochs, args.demo_max_length)
    figures["load_average_end"] = load_average()
    return figures


def verdicts(figures: dict) -> list[tuple[str, float | None, str, bool | None]]:
    """(what, measured, goal, met) per line: worst family/method for speed; demo accuracy per method."""
    rows = figures.get("rows", [])
    lines = []
    for kind in ("train", "eval"):
        worst = min((r[kind]["speedup"] for r in rows), default=None)
        lines.append((f"bf16 / fp32 {kind} speedup (worst of {len(rows)})", worst, f">= {GOALS[kind]}x",
                      None if worst is None else worst >= GOALS[kind]))
    demo = figures.get("demo", {})
    for key in sorted(k for k in demo if k.startswith("fp32/")):
        method = key.split("/", 1)[1]  # mean over the seeds
        gap = abs(demo[key]["accuracy"] - demo[f"bf16/{method}"]["accuracy"]) * 100
        lines.append((f"demo {method}: |bf16 - fp32| dev accuracy, points", gap, f"<= {GOALS['accuracy_points']}",
                      gap <= GOALS["accuracy_points"]))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(PAPER_FAMILIES), help="comma-separated families")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch (default 32)")
    parser.add_argument("--seq-len", type=int, default=64, help="training tokens per sequence (default 64)")
    parser.add_argument("--pairs", type=int, default=3, help="fp32/bf16 step pairs per model (default 3)")
    parser.add_argument("--eval-size", type=int, default=256, help="evaluation sequences (default 256)")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="evaluation batch (default 32)")
    parser.add_argument("--demo", action="store_true", help="also train the shortened demo in fp32 and bf16")
    parser.add_argument("--demo-out", default="precision-demo", help="run folders of --demo")
    parser.add_argument("--demo-seeds", default="42,43,44", help="demo seeds, each in both precisions (42,43,44)")
    parser.add_argument("--demo-train-samples", type=int, default=2000, help="demo training sentences (2000)")
    parser.add_argument("--demo-epochs", type=int, default=2, help="demo epochs (default 2)")
    parser.add_argument("--demo-max-length", type=int, default=64, help="demo tokens per sentence (64)")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="time the training steps and evaluations (--no-speed: the demo alone)")
    parser.add_argument("--force", action="store_true", help="measure bf16 even where the CPU has no bf16 units")
    parser.add_argument("--tiny", action="store_true", help="tiny architectures (a smoke test; figures mean nothing)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    figures = measure(args)
    probe = figures["probe"]
    print(f"{figures['environment'].get('cpu_model')}; bf16 units: {'yes' if figures['bf16_supported'] else 'no'}; "
          f"load {figures['load_average_start']} -> {figures['load_average_end']}")
    print(f"matmul {probe['shape']}: fp32 {probe['fp32_s'] * 1000:.1f} ms, bf16 {probe['bf16_s'] * 1000:.1f} ms "
          f"({probe['bf16_speedup']:.3g}x)")
    if "skipped" in figures:
        print(f"skipped: {figures['skipped']}")
    for row in figures.get("rows", []):
        t, e = row["train"], row["eval"]
        print(f"{row['family']:8} {row['method']:8} train step fp32 {t['fp32_step_s']:.3f} s bf16 "
              f"{t['bf16_step_s']:.3f} s ({t['speedup']:.2f}x) | eval fp32 {e['fp32_s']:.2f} s bf16 "
              f"{e['bf16_s']:.2f} s ({e['speedup']:.2f}x)")
    for name, row in figures.get("demo", {}).items():
        if "/" in name:
            print(f"demo {name}: dev accuracy {row['accuracy']:.4f} (seeds: "
                  f"{', '.join(f'{a:.4f}' for a in row['accuracies'])}), {row['train_seconds']:.0f} s per run")
    for what, value, goal, met in verdicts(figures):
        shown = "not measured" if value is None else f"{value:.2f}"
        print(f"{what}: {shown} (goal {goal}): {'met' if met else 'NOT met' if met is False else 'not measured'}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
