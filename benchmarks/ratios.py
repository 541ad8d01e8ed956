"""The efficiency ratios of Table II, measured side by side in one run, against their goals and the FLOP limit.

    PYTHONPATH=src python benchmarks/ratios.py [--families bert,roberta,deberta] [--from DIR/bench.json]

1. KD-LoRA vs FFT inference speedup per family (merged adapters), beside the teacher/student FLOP ratio, the
   paper's figure and the goal (>= 1.8x); LoRA merged vs FFT (goal >= 0.99x) and unmerged. The five models of a
   family sit in one process and take the evaluation set batch by batch in turn, so the load of other processes
   on a shared machine falls on all of them alike (separate runs on a busy machine differ by 50 %).
2. Dynamic padding vs pad-to-512 on the evaluation set (BERT-base, batch 32), with and without length grouping
   (goal >= 15x). Pad-to-512 batches all have one shape, so a few timed batches give the whole set's time.
3. KD-LoRA training step vs a plain LoRA step on the same student (goal <= 5 % overhead): alternating steps on
   one batch, teacher logits cached, median of the per-pair ratios.
4. KD-LoRA peak training memory / LoRA on the teacher (goal <= 0.6): bench workers, one per configuration.
Every figure in one process tree, one after the other; the machine and its load are printed with them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from kdlora import modeling as models
from kdlora.bench import evalset
from kdlora.bench.environment import describe_environment, load_average
from kdlora.bench.runner import run_bench
from kdlora.bench.settings import BenchSettings
from kdlora.bench.worker import train_batch, train_step
from kdlora.families import FAMILIES, PAPER_FAMILIES
from kdlora.methods import METHODS

# Table II of the paper (inference seconds, memory MB), for the "paper" column
PAPER = {"bert": dict(fft=6.10, lora=6.22, kd=5.36, lora_mb=463.5, kd_mb=296.8),
         "roberta": dict(fft=7.21, lora=7.19, kd=4.44, lora_mb=531.9, kd_mb=358.3),
         "deberta": dict(fft=14.37, lora=15.62, kd=10.38, lora_mb=763.4, kd_mb=590.3)}


def _forward_seconds(model, batch: dict) -> float:
    import torch

    with torch.inference_mode():
        start = time.perf_counter()
        model(**batch)
        return time.perf_counter() - start


def round_robin(models_by_name: dict, batch_lists: dict[str, list[dict]], warmup: int = 1) -> dict[str, float]:
    """Seconds each model takes for its batch list, timed batch by batch in turn (the start rotating), so that a
    burst of load from other processes falls on every model alike."""
    names = list(models_by_name)
    for name in names:
        models_by_name[name].eval()
        for batch in batch_lists[name][:warmup]:
            _forward_seconds(models_by_name[name], batch)
    totals = dict.fromkeys(names, 0.0)
    for i in range(max(len(b) for b in batch_lists.values())):
        for name in names[i % len(names):] + names[:i % len(names)]:
            if i < len(batch_lists[name]):
                totals[name] += _forward_seconds(models_by_name[name], batch_lists[name][i])
    return totals


def inference_seconds(family: str, size: int = 1043, tiny: bool = False) -> dict[str, float]:
    """Eval-set seconds of FFT, LoRA (merged, unmerged) and KD-LoRA (merged, unmerged), timed in turn."""
    import copy

    fam = FAMILIES[family]
    variants = {}
    for method in ("fft", "lora", "kd-lora"):
        _, base = models.build_base(fam, METHODS[method], tiny=tiny)
        model = models.prepare(base, METHODS[method], 8)
        if METHODS[method].uses_lora:
            variants[f"{method}_unmerged"] = model
            model = models.merged(copy.deepcopy(model))
        variants[method] = model
    lengths = evalset.eval_lengths(size)
    batches = {name: evalset.eval_batches(lengths, 32, m.config.vocab_size, group_by_length=True)
               for name, m in variants.items()}
    return round_robin(variants, batches)


def padding_seconds(family: str = "bert", size: int = 1043, pad_batches: int = 3, tiny: bool = False) -> dict:
    """Eval-set seconds on the family's FFT teacher: dynamic padding (grouped / in order) and pad-to-512, timed in
    turn; pad-to-512 batches all have one shape, so a few of them (`pad_batches` + the warm-up one, timed again)
    give the whole set's time."""
    fam = FAMILIES[family]
    _, model = models.build_base(fam, METHODS["fft"], tiny=tiny)
    lengths = evalset.eval_lengths(size)
    vocab = model.config.vocab_size
    batches = {"dynamic_grouped": evalset.eval_batches(lengths, 32, vocab, None, True),
               "dynamic_in_order": evalset.eval_batches(lengths, 32, vocab, None, False),
               "pad_to_512": evalset.eval_batches(lengths, 32, vocab, 128 if tiny else 512)[:pad_batches + 1]}
    seconds = round_robin(dict.fromkeys(batches, model), batches)
    seconds["pad_to_512"] *= size / sum(len(b["input_ids"]) for b in batches["pad_to_512"])
    return seconds


def kd_step_overhead(family: str, batch_size: int = 16, seq_len: int = 128, pairs: int = 4,
                     tiny: bool = False) -> dict:
    """Median ratio of a KD-LoRA step to a plain LoRA step on the same student and batch (alternating)."""
    import torch

    fam, kd, lora = FAMILIES[family], METHODS["kd-lora"], METHODS["lora"]
    _, base = models.build_base(fam, kd, tiny=tiny)
    model = models.prepare(base, kd, 8)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = train_batch(batch_size, seq_len, model.config.vocab_size, 2, 0, "cpu")
    train_step(model, optimizer, lora, batch)
    train_step(model, optimizer, kd, batch)
    ratios, kd_s, lora_s = [], [], []
    for i in range(pairs):
        order = (lora, kd) if i % 2 == 0 else (kd, lora)
        times = {m.name: train_step(model, optimizer, m, batch) for m in order}
        kd_s.append(times["kd-lora"])
        lora_s.append(times["lora"])
        ratios.append(times["kd-lora"] / times["lora"])
    return {"overhead": statistics.median(ratios) - 1, "kd_step_s": statistics.median(kd_s),
            "lora_step_s": statistics.median(lora_s), "pairs": pairs, "batch": [batch_size, seq_len]}


def _ratio(a, b):
    return None if a is None or b is None else a / b


def _flop_ratio(family: str, seq_len: int) -> float:
    fam = FAMILIES[family]
    return models.forward_flops_per_token(fam.teacher, seq_len) / models.forward_flops_per_token(fam.student, seq_len)


def measure(families: list[str], source: str | None, size: int = 1043, tiny: bool = False) -> dict:
    """Every figure, stage by stage, with the seconds each stage took."""
    figures, stage = {"families": {f: {} for f in families}}, {}
    t = time.perf_counter()
    if source:
        with open(source, encoding="utf-8") as f:
            bench = json.load(f)
    else:  # memory only: a one-batch evaluation set keeps the workers short
        bench = run_bench(BenchSettings(families=tuple(families), methods=("lora", "kd-lora"), ranks=(8,),
                                        eval_size=32, tiny=tiny))
    rows = {(r["family"], r["method"]): r for r in bench["rows"] if r["rank"] in (None, 8)}
    figures["memory"] = {"kind": bench["config"].get("memory_kind"), "source": source or "bench workers",
                         "batch": [bench["config"].get("batch_size"), bench["config"].get("train_seq_len")]}
    for f in families:
        lora, kd = rows.get((f, "lora"), {}), rows.get((f, "kd-lora"), {})
        figures["families"][f]["kd_memory_vs_lora"] = _ratio(kd.get("peak_memory_mb"),
                                                             lora.get("peak_memory_mb"))
        figures["families"][f]["memory_mb"] = [lora.get("peak_memory_mb"), kd.get("peak_memory_mb")]
    stage["memory"] = round(time.perf_counter() - t)
    lengths = evalset.eval_lengths(size)
    grouped_len = evalset.padded_tokens(evalset.eval_batches(lengths, 32, 30000, group_by_length=True)) / len(lengths)
    for f in families:
        t = time.perf_counter()
        seconds = inference_seconds(f, size, tiny)
        fig = figures["families"][f]
        fig.update(eval_seconds=seconds, flop_ratio=_flop_ratio(f, round(grouped_len)),
                   kd_vs_fft=seconds["fft"] / seconds["kd-lora"],
                   kd_unmerged_vs_fft=seconds["fft"] / seconds["kd-lora_unmerged"],
                   lora_merged_vs_fft=seconds["fft"] / seconds["lora"],
                   lora_unmerged_vs_fft=seconds["fft"] / seconds["lora_unmerged"])
        stage[f"inference {f}"] = round(time.perf_counter() - t)
    t = time.perf_counter()
    figures["padding"] = padding_seconds("bert" if "bert" in families else families[0], size, tiny=tiny)
    stage["padding"] = round(time.perf_counter() - t)
    t = time.perf_counter()
    for f in families:
        figures["families"][f]["kd_step"] = kd_step_overhead(f, tiny=tiny)
    stage["kd_step"] = round(time.perf_counter() - t)
    figures["stage_seconds"], figures["eval_size"] = stage, size
    return figures


def report_lines(figures: dict) -> list[tuple]:
    """(name, measured ratio, goal, limit, paper ratio) per printed line."""
    lines = []
    for f, fig in figures["families"].items():
        paper = PAPER.get(f, {})
        lines += [
            (f"{f}: KD-LoRA vs FFT inference speedup (merged)", fig["kd_vs_fft"], ">= 1.8x",
             f"{fig['flop_ratio']:.2f}x FLOPs", _ratio(paper.get("fft"), paper.get("kd"))),
            (f"{f}: KD-LoRA unmerged vs FFT", fig["kd_unmerged_vs_fft"], "", "", None),
            (f"{f}: LoRA merged vs FFT", fig["lora_merged_vs_fft"], ">= 0.99x", "", None),
            (f"{f}: LoRA unmerged vs FFT", fig["lora_unmerged_vs_fft"], "", "",
             _ratio(paper.get("fft"), paper.get("lora"))),
            (f"{f}: KD-LoRA step / LoRA step (same student)", 1 + fig["kd_step"]["overhead"], "<= 1.05x", "", None),
            (f"{f}: KD-LoRA / LoRA-on-teacher peak train memory", fig["kd_memory_vs_lora"], "<= 0.6x", "",
             _ratio(paper.get("kd_mb"), paper.get("lora_mb"))),
        ]
    padding = figures["padding"]
    for name in ("dynamic_grouped", "dynamic_in_order"):
        lines.append((f"pad-to-512 / {name.replace('_', ' ')} padding eval time", padding["pad_to_512"] /
                      padding[name], ">= 15x", "", None))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(PAPER_FAMILIES), help="comma-separated families")
    parser.add_argument("--from", dest="source", help="take the memory figures from this bench.json")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--eval-size", type=int, default=1043, help="sequences in the evaluation set")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke runs: figures mean nothing
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    load_start = load_average()
    figures = measure(families, args.source, args.eval_size, args.tiny)
    figures["machine"] = describe_environment("cpu")
    figures["load_average"] = [load_start, load_average()]
    print(f"{'ratio':<52} {'measured':>9}  {'goal':<9} {'limit':<13} {'paper':>6}")
    for name, value, goal, limit, paper in report_lines(figures):
        shown = "failed" if value is None else f"{value:.2f}x"
        print(f"{name:<52} {shown:>9}  {goal:<9} {limit:<13} {'' if paper is None else f'{paper:.2f}x':>6}")
    env = figures["machine"]
    print(f"\nmachine: {env['cpu_model']}, {env['cpu_count']} cores, torch "
          f"{env['torch']}, transformers {env['transformers']}, peft {env['peft']}; load average "
          f"{figures['load_average'][0]} -> {figures['load_average'][1]}")
    print(f"memory: {figures['memory']['kind']} from {figures['memory']['source']}, training batch "
          f"{figures['memory']['batch']}; inference: {figures['eval_size']} sequences, batch 32, grouped by "
          f"length, all models of a family in turn; seconds per stage: {figures['stage_seconds']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
