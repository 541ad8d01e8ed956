"""Does `torch.compile` of the training step pay on the main job? Compile time against the per-step gain.

    PYTHONPATH=src python benchmarks/compile_step.py [--family minilm] [--methods fft,lora] [--steps 30]

The main job's training step (issue 27): the family's teacher (FFT, LoRA) or student (KD-LoRA) from its bundled
config (random weights: the cost is the same), batch 32, dynamically padded to lengths drawn like the movie
snippets' (seeded, 12-64 tokens), bf16 autocast where the CPU computes bf16 natively (else fp32), AdamW. For each
method: `--steps` eager steps, then the same steps through `torch.compile(model, dynamic=True)`; the compiled
model's first steps (until its time per step settles) carry the compilation. It prints the compile overhead, the
steady time per step of each, and the break-even: how many steps a run needs before compiling has paid (a main job
run has 2 epochs x 63 batches = 126 steps). Time it alone: two jobs on two cores distort every timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from kdlora import modeling  # noqa: E402
from kdlora.bench.environment import describe_environment, load_average  # noqa: E402
from kdlora.bench.worker import train_step  # noqa: E402
from kdlora.families import get_family  # noqa: E402
from kdlora.methods import get_method  # noqa: E402
from kdlora.precision import default_precision  # noqa: E402

MAIN_JOB_STEPS = 2 * 63
"""Optimiser steps of one main-job run: 2 epochs of 2,000 sentences in batches of 32."""


def batches(steps: int, vocab: int, seed: int = 0) -> list[dict]:
    """`steps` training batches of 32, each padded to its longest of lengths drawn between 12 and 64 tokens."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    found = []
    for _ in range(steps):
        length = int(torch.randint(12, 65, (1,), generator=gen))
        found.append({"input_ids": torch.randint(1000, vocab, (32, length), generator=gen),
                      "attention_mask": torch.ones(32, length, dtype=torch.long),
                      "labels": torch.randint(0, 2, (32,), generator=gen),
                      "teacher_logits": torch.randn(32, 2, generator=gen)})
    return found


def measure(family: str, method_name: str, steps: int, precision: str, compiled: bool) -> list[float]:
    """Seconds of each of `steps` training steps, eager or compiled (the first compiled ones include compiling)."""
    import torch

    method = get_method(method_name)
    torch.manual_seed(0)
    model = modeling.prepare(modeling.build_base(get_family(family), method, 2, None, False)[1], method, 8)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    runner = torch.compile(model, dynamic=True) if compiled else model
    return [train_step(runner, optimizer, method, batch, precision)
            for batch in batches(steps, model.config.vocab_size)]


def summary(eager: list[float], compiled: list[float], settle: int = 5) -> dict:
    """The compile overhead (the compiled run's extra seconds over its steady pace before it settled), the steady
    seconds per step of each (median after `settle` steps) and the steps after which compiling has paid."""
    steady_eager, steady_compiled = statistics.median(eager[settle:]), statistics.median(compiled[settle:])
    overhead = sum(compiled[:settle]) - settle * steady_compiled
    gain = steady_eager - steady_compiled
    return {"eager_step_s": round(steady_eager, 4), "compiled_step_s": round(steady_compiled, 4),
            "compile_overhead_s": round(overhead, 1), "speedup": round(steady_eager / steady_compiled, 3),
            "break_even_steps": round(overhead / gain) if gain > 0 else None,
            "pays_in_a_main_job_run": gain > 0 and overhead / gain < MAIN_JOB_STEPS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="minilm")
    parser.add_argument("--methods", default="fft,lora,kd-lora")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    precision = default_precision("cpu")
    figures = {"environment": describe_environment("cpu"), "precision": precision, "rows": {}}
    for name in args.methods.split(","):
        eager = measure(args.family, name, args.steps, precision, compiled=False)
        compiled = measure(args.family, name, args.steps, precision, compiled=True)
        figures["rows"][name] = summary(eager, compiled)
        print(f"{args.family} {name} ({precision}): {json.dumps(figures['rows'][name])}", flush=True)
    figures["load_average_end"] = load_average()
    print(f"load average at the end: {figures['load_average_end']}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
