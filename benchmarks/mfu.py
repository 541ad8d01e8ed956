"""How close to the CPU's peak each method's training step and evaluation run on the main job's shapes (MFU).

    PYTHONPATH=src python benchmarks/mfu.py [--methods fft,lora,kd-lora,student-lora] [--out mfu.json]

The main job's shapes: the minilm family (all-MiniLM-L6-v2, 6 layers x 384; KD-LoRA and Student-LoRA on its
3-layer derived student), LoRA rank 8, batch 32, the movie-snippets sentences tokenised by MiniLM's tokenizer at
max length 64 (the first --train-samples of the main job's seeded subset for training, all dev sentences for the
evaluation). Weights are random from the bundled config: the time does not depend on their values.

For each method, in one process, one after the other: `--steps` training steps (after one untimed) as `kdlora
train` takes them — batches in a seeded random order padded to their longest, the method's loss (KD against
cached teacher logits), AdamW, the run's precision as autocast — and then one evaluation pass over the dev
sentences as a training run scores dev (batch 64, in order, adapters unmerged, under the same autocast).
Achieved FLOP/s = matrix FLOP counted from the model's Linear shapes and the real token counts, padding excluded
(`kdlora.bench.flops`: training is 3x the forward with every weight trained, about 2x with a frozen base), over
the time. MFU = that over the peak of the precision it ran in, and over the other precision's peak too (cores =
torch's threads, clock from lscpu or /proc/cpuinfo, FLOP per cycle of the matrix unit the CPU flags name; the
sources are printed). The machine and its load average are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kdlora import modeling
from kdlora.bench import evalset
from kdlora.bench.environment import describe_environment, load_average
from kdlora.bench.flops import cpu_peak, forward_flops, matrix_shapes, mfu, train_flops
from kdlora.families import get_family
from kdlora.methods import get_method
from kdlora.precision import PRECISIONS, check_precision, resolve_precision

MAIN_JOB = dict(family="minilm", task="movie-snippets", rank=8, batch_size=32, eval_batch_size=64, max_length=64,
                train_samples=2000, seed=42)
"""The main job's settings (src/kdlora/experiments/default.toml; dev batch as `kdlora train` scores it)."""


def snippet_lengths(family: str, max_length: int, train_samples: int, seed: int) -> dict[str, list[int]]:
    """Real token counts of the main job's sentences: its seeded training subset and every dev sentence."""
    from transformers import AutoTokenizer

    from kdlora.data.loaders import load_split
    from kdlora.data.tasks import get_task

    task = get_task(MAIN_JOB["task"])
    tokenizer = AutoTokenizer.from_pretrained(get_family(family).teacher.weights_path())
    splits = {"train": load_split(task, "train").subset(train_samples, seed), "dev": load_split(task, "validation")}
    return {name: [len(ids) for ids in tokenizer([t[0] for t in examples.texts], truncation=True,
                                                 max_length=max_length)["input_ids"]]
            for name, examples in splits.items()}


def tiny_lengths(max_length: int, train_samples: int, seed: int) -> dict[str, list[int]]:
    """GLUE-like lengths (kdlora.bench.evalset) cut to `max_length`, for smoke runs without the data."""
    return {name: [min(n, max_length) for n in evalset.eval_lengths(size, seed + i)]
            for i, (name, size) in enumerate((("train", train_samples), ("dev", train_samples)))}


def shuffled_batches(lengths: list[int], batch_size: int, vocab: int, seed: int, count: int) -> list[tuple]:
    """`count` training batches of the lengths in a seeded random order, each padded to its longest, as
    (batch, its real lengths)."""
    import random

    order = random.Random(seed).sample(range(len(lengths)), len(lengths))
    out = []
    for start in range(0, len(order), batch_size):
        real = [lengths[i] for i in order[start:start + batch_size]]
        [batch] = evalset.eval_batches(real, len(real), vocab, seed=seed + start)
        out.append((batch, real))
        if len(out) == count:
            break
    return out


def measure_method(name: str, lengths: dict, precision: str, steps: int, tiny: bool) -> dict:
    """Seconds and FLOP of `steps` training steps and one dev evaluation of method `name`."""
    import torch

    from kdlora.bench.worker import time_eval, train_step

    method, settings = get_method(name), MAIN_JOB
    torch.manual_seed(settings["seed"])
    _, base = modeling.build_base(get_family(settings["family"]), method, tiny=tiny)
    model = modeling.prepare(base, method, settings["rank"])
    model.train()
    shapes = matrix_shapes(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(settings["seed"])
    batches = shuffled_batches(lengths["train"], settings["batch_size"], vocab, settings["seed"], steps + 1)
    for batch, _ in batches:
        batch["labels"] = torch.randint(0, 2, (len(batch["input_ids"]),), generator=gen)
        batch["teacher_logits"] = torch.randn(len(batch["input_ids"]), 2, generator=gen)
    train_step(model, optimizer, method, batches[0][0], precision)  # untimed: allocates AdamW's state
    seconds = sum(train_step(model, optimizer, method, batch, precision) for batch, _ in batches[1:])
    flops = sum(train_flops(shapes, real) for _, real in batches[1:])
    dev = evalset.eval_batches(lengths["dev"], settings["eval_batch_size"], vocab, seed=settings["seed"])
    latency = time_eval(model, dev, "cpu", precision=precision)
    return {"method": name, "precision": precision, "trainable_params": sum(p.numel() for p in model.parameters()
                                                                             if p.requires_grad),
            "train": {"steps": len(batches) - 1, "seconds": seconds, "flops": flops,
                      "real_tokens": sum(sum(real) for _, real in batches[1:]),
                      "padded_tokens": sum(b["input_ids"].numel() for b, _ in batches[1:])},
            "eval": {"sequences": len(lengths["dev"]), "seconds": latency.total_seconds,
                     "flops": forward_flops(shapes, lengths["dev"]), "real_tokens": sum(lengths["dev"]),
                     "padded_tokens": evalset.padded_tokens(dev)}}


def utilisation(part: dict, precision: str, peaks: dict) -> dict:
    """Achieved TFLOP/s of a measured part (`flops`, `seconds`) and its MFU against each precision's peak
    (`peaks`: precision -> FLOP/s or None); `mfu` is the one of the precision it ran in."""
    achieved = part["flops"] / part["seconds"]
    by_peak = {name: mfu(part["flops"], part["seconds"], value) for name, value in peaks.items()}
    return {"tflops": achieved / 1e12, "mfu": by_peak.get(precision), "mfu_by_peak": by_peak}


def table_lines(rows: list[dict]) -> list[str]:
    """The printed table: per method and part, achieved TFLOP/s and MFU against the bf16 and fp32 peaks."""
    lines = [f"{'method':<13} {'part':<6} {'precision':<9} {'GFLOP':>9} {'seconds':>8} {'TFLOP/s':>8} "
             f"{'MFU':>7} {'of bf16':>8} {'of fp32':>8}"]

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    for row in rows:
        for part in ("train", "eval"):
            fig, use = row[part], row[f"{part}_utilisation"]
            lines.append(f"{row['method']:<13} {part:<6} {row['precision']:<9} {fig['flops'] / 1e9:>9.1f} "
                         f"{fig['seconds']:>8.2f} {use['tflops']:>8.3f} {pct(use['mfu']):>7} "
                         f"{pct(use['mfu_by_peak'].get('bf16')):>8} {pct(use['mfu_by_peak'].get('fp32')):>8}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="fft,lora,kd-lora,student-lora", help="comma-separated methods")
    parser.add_argument("--precision", default="auto", choices=("auto", *PRECISIONS[:2]),
                        help="autocast of steps and evaluation (auto: bf16 where the CPU computes it natively)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per method (default 10)")
    parser.add_argument("--train-samples", type=int, default=MAIN_JOB["train_samples"],
                        help="training sentences the batches are drawn from (default 2000)")
    parser.add_argument("--out", help="write every figure to this JSON file (e.g. mfu.json)")
    parser.add_argument("--tiny", action="store_true", help="tiny random models and made-up lengths (a smoke "
                                                             "test; figures mean nothing)")
    args = parser.parse_args(argv)
    import torch

    load_start = load_average()
    precision = check_precision(resolve_precision(args.precision, "cpu"), "cpu")
    cores = torch.get_num_threads()
    peaks = {name: cpu_peak(name, cores) for name in ("bf16", "fp32")}
    if args.tiny:
        lengths = tiny_lengths(16, args.train_samples, MAIN_JOB["seed"])
    else:
        lengths = snippet_lengths(MAIN_JOB["family"], MAIN_JOB["max_length"], args.train_samples, MAIN_JOB["seed"])
    rows = []
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        started = time.perf_counter()
        row = measure_method(name, lengths, precision, args.steps, args.tiny)
        for part in ("train", "eval"):
            row[f"{part}_utilisation"] = utilisation(row[part], precision, {k: p.flops for k, p in peaks.items()})
        row["wall_seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(f"{name}: done in {row['wall_seconds']} s (load {load_average()})", file=sys.stderr)
    env = describe_environment("cpu")
    figures = {"rows": rows, "precision": precision, "threads": cores, "settings": {**MAIN_JOB, "tiny": args.tiny,
                                                                                    "steps": args.steps},
               "peaks": {k: {"flops": p.flops, "describe": p.describe()} for k, p in peaks.items()},
               "machine": env, "load_average": [load_start, load_average()]}
    print("\n".join(table_lines(rows)))
    for p in peaks.values():
        print(p.describe())
    print(f"machine: {env['cpu_model']}, {env['cpu_count']} cores ({cores} torch threads), torch {env['torch']}; "
          f"load average {figures['load_average'][0]} -> {figures['load_average'][1]}; training FLOP: 3x forward "
          "for a trained matrix, 2x for a frozen one, attention 3x; real tokens only")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
