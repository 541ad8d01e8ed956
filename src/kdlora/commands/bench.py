"""Measure Table II on the real architectures, built offline from their bundled configs.

For each family x method x rank: exact parameter counts (adapters, trainable, total with adapters merged), the
peak memory of the method's real training step (each configuration in its own process: CUDA max_memory_allocated,
or on CPU the process's peak RSS less its RSS before the model was built), and the time of a fixed evaluation set
(1,043 sequences, realistic lengths, batch 32, dynamic padding) with LoRA adapters merged and unmerged, and the
merged evaluation's MFU: its matrix FLOP over the real tokens per second over this CPU's peak in its precision.

Writes DIR/table-ii.csv (the paper's layout: `kdlora analyze DIR/table-ii.csv` reads it) and DIR/bench.json;
--params-only writes DIR/params.csv (the counts alone) instead of the table.

examples:
  kdlora bench --params-only                 exact counts of the three paper families (seconds)
  kdlora bench --out bench-results           the full table on this machine
  kdlora bench --families minilm --pad-to 512
  kdlora bench --families bert --methods fft,kd-lora --runtime pytorch,onnxruntime --quantize none,int8
                                             the teacher and the student in each deployed form (rows in
                                             bench.json with runtime, precision, quantize, size_mb)
"""

from __future__ import annotations

import argparse
import sys

from kdlora import settings
from kdlora.bench.runner import run_bench
from kdlora.bench.settings import BenchSettings
from kdlora.bench.table import empty_cells, output_table, write_bench_outputs
from kdlora.errors import UserError
from kdlora.settings import add_settings_arguments

HELP = "measure Table II (exact parameters, peak training memory, merged/unmerged inference) on this machine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench-results", metavar="DIR",
                        help="folder for table-ii.csv (params.csv with --params-only) and bench.json "
                             "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_arguments(parser, BenchSettings, hidden=("tiny",), aliases={"load_weights": ["--pretrained"]},
                           retired={"--backend": "--runtime"})


def settings_from_args(args: argparse.Namespace):
    return BenchSettings(**settings.settings_from_args(BenchSettings, args))


def adapter_rows(result: dict) -> list[dict]:
    """Per family and LoRA method: adapter parameters at each rank and the merged model's total."""
    lines: dict[tuple[str, str], dict] = {}
    for row in result["rows"]:
        if row["rank"] is not None:
            line = lines.setdefault((row["family"], row["method"]), {"Model": row["model"], "Method": row["method"]})
            line[f"adapters r{row['rank']}"] = row["adapter_params"]
            line["_total"] = row["total_params"]
    return [{**{k: v for k, v in line.items() if k != "_total"}, "total (merged)": line["_total"]}
            for line in lines.values()]


def mfu_line(result: dict) -> str | None:
    """One line: each measured row's evaluation MFU (merged model, real tokens) and the peaks it is measured
    against; None when no row was timed."""
    timed = [r for r in result["rows"] if r.get("eval_seconds") is not None]
    if not timed:
        return None
    shown = [f"{r['family']}/{r['method']}" + (f"/{r['precision']}" if r["precision"] != "fp32" else "") + " " +
             ("n/a" if r.get("eval_mfu") is None else f"{100 * r['eval_mfu']:.1f}%") for r in timed]
    peaks = sorted({r["eval_peak"] for r in timed if r.get("eval_peak")})
    return (f"eval MFU (merged, matrix FLOP over real tokens / the CPU's peak in the row's precision): "
            f"{', '.join(shown)}" + (f"; {'; '.join(peaks)}" if peaks else ""))


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    settings = settings_from_args(args)
    result = run_bench(settings, progress=not args.no_progress)
    write_bench_outputs(result, args.out)
    table_name, table = output_table(result)
    print(tabulate(table, headers="keys", tablefmt="github", disable_numparse=True))
    print("\nAdapter parameters (LoRA's A and B, DoRA's magnitudes, AdaLoRA's singular values, VeRA's vectors) and "
          "the inference model's total (adapters merged):")
    print(tabulate(adapter_rows(result), headers="keys", tablefmt="github", intfmt=",", disable_numparse=False))
    config, env = result["config"], result["environment"]
    print(f"\nwrote {args.out}/{table_name} and {args.out}/bench.json in {config['wall_seconds']:.0f} s "
          f"(memory: {config['memory_kind'] or 'not measured'}; {env['cpu_model']}, load "
          f"{env['load_average_start']} -> {env['load_average_end']})")
    stages = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in config["stage_seconds"].items())
    print(f"time per stage: {stages}")
    line = mfu_line(result)
    if line:
        print(line)
    failed = [r for r in result["rows"] if r["error"]]
    for row in failed:
        print(f"failed: {row['family']}/{row['method']}" + (f"/r{row['rank']}" if row["rank"] else "") +
              f": {row['error']}", file=sys.stderr)
    missing = empty_cells(table)
    if missing:
        print("empty cells: " + "; ".join(missing), file=sys.stderr)
    return 1 if failed else 0


__all__ = ["HELP", "add_arguments", "run", "UserError"]
