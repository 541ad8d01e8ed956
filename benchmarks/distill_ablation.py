"""What each distillation signal adds on the main job's data: the report's ablation, over seeds, into one store.

    PYTHONPATH=src python benchmarks/distill_ablation.py --db ablation.db [--seeds 42 43 44] \
        [--transfer all 2000] [--hard-label] [--hidden-weight 1.0] [--runs-dir DIR]

The main job's data and settings (`kdlora sweep default`'s [train] params: movie snippets, all-MiniLM-L6-v2 ->
its 3-layer derived student, 2,000 labelled sentences, 2 epochs, bf16 where the CPU has bf16 units) with, per seed:
FFT (the teacher), LoRA, Student-LoRA and KD-LoRA as the paper does it, then the variants the flags ask for:
- `--transfer all 2000`: KD-LoRA with transfer data, the train split's other sentences (`transfer_samples`);
- `--hard-label`: each of those again with the teacher's hard label standing in (`transfer_hard_label`);
- `--hidden-weight W`: KD-LoRA with hidden-state KD (`kd_hidden_weight`), without and with each transfer size;
  only where that setting is registered (else one line says it is skipped).
Each group is an experiment file written to a temporary folder and run by `kdlora sweep` into the one store
(`--db`): a killed benchmark resumes where it stopped, the FFT teachers (shared by every group) run once, and the
teacher's logits are cached once per teacher. At the end it prints the report's "What each distillation signal
adds" section (`kdlora.analysis.signals`) and each variant's cost: medians over seeds of the training seconds, the
peak memory and the teacher-logit seconds. About an hour on a 2-core CPU with the defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from kdlora.analysis import signals
from kdlora.analysis.quality import records_from_runs
from kdlora.cli import main as kdlora
from kdlora.config import method_setting_fields
from kdlora.experiment import load_experiment
from kdlora.store import Store

BASE_METHODS = ("fft", "lora", "student-lora", "kd-lora")
"""The chain's rows every seed runs: the teacher, LoRA on it, the student alone and KD-LoRA as the paper."""
DISTILLER = "kd-lora"
HIDDEN = "kd_hidden_weight"
"""The hidden-state KD setting (issue 24, item 2): its variants run only where a method registers it."""


def variants(transfer: list, hard_label: bool, hidden_weight: float | None, known: set[str]) -> dict[str, dict]:
    """KD-LoRA's variants by name, each its `[train.per_method.kd-lora]` settings; hidden-state ones only where
    `known` (the registered setting names) holds `kd_hidden_weight`."""
    found = {}
    for size in transfer:
        found[f"transfer {size}"] = {"transfer_samples": size}
        if hard_label:
            found[f"transfer {size}, hard label"] = {"transfer_samples": size, "transfer_hard_label": True}
    if hidden_weight is not None and HIDDEN in known:
        found[f"hidden {hidden_weight:g}"] = {HIDDEN: hidden_weight}
        for size in transfer:
            found[f"hidden {hidden_weight:g}, transfer {size}"] = {HIDDEN: hidden_weight, "transfer_samples": size}
    return found


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def experiment_text(name: str, methods, seeds, params: dict, by_precision: dict, per_method: dict | None) -> str:
    """An experiment file: the main job's task and family, `methods` over `seeds`, its params, and `per_method`
    settings for KD-LoRA."""
    lines = [f"name = {_toml(name)}", "", "[train]", 'tasks = ["movie-snippets"]', 'families = ["minilm"]',
             f"methods = {_toml(list(methods))}", "ranks = [8]", f"seeds = {_toml(list(seeds))}", "",
             "[train.params]", *(f"{k} = {_toml(v)}" for k, v in params.items())]
    for precision, values in by_precision.items():
        lines += ["", f"[train.by_precision.{precision}]", *(f"{k} = {_toml(v)}" for k, v in values.items())]
    if per_method:
        lines += ["", f'[train.per_method."{DISTILLER}"]', *(f"{k} = {_toml(v)}" for k, v in per_method.items())]
    return "\n".join(lines) + "\n"


def variant_of(config: dict) -> str:
    """A run's variant name, from its method and the signal settings it ran with."""
    said = []
    if config.get(HIDDEN):
        said.append(f"hidden {config[HIDDEN]:g}")
    if config.get("transfer_samples"):
        said.append(f"transfer {config['transfer_samples']}")
    if config.get("transfer_hard_label"):
        said.append("hard label")
    return config["method"] + (f" ({', '.join(said)})" if said else "")


def cost_rows(records: list[dict]) -> list[dict]:
    """Per variant (`variant_of`), in first-seen order: runs, and the medians over them of the training seconds,
    the peak memory and the teacher-logit seconds (runs whose costs cover only a resumed segment left out)."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(variant_of(record["config"]), []).append(record)

    def median(runs, name):
        values = [r[name] for r in runs if r.get(name) is not None and not r.get("partial_cost")]
        return statistics.median(values) if values else None

    return [{"variant": name, "runs": len(runs), "train_seconds": median(runs, "train_seconds"),
             "peak_memory_mb": median(runs, "peak_memory_mb"),
             "teacher_logit_seconds": median(runs, "teacher_logit_seconds")} for name, runs in groups.items()]


def cost_markdown(rows: list[dict]) -> list[str]:
    def cell(value, form):
        return "–" if value is None else format(value, form)

    lines = ["| variant | runs | train s (median) | peak memory MB (median) | teacher-logit s (median) |",
             "|---|---|---|---|---|"]
    return lines + [f"| {r['variant']} | {r['runs']} | {cell(r['train_seconds'], '.1f')} | "
                    f"{cell(r['peak_memory_mb'], '.0f')} | {cell(r['teacher_logit_seconds'], '.1f')} |"
                    for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="the results store every run goes into (resumable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="seeds (default 42 43 44)")
    parser.add_argument("--transfer", nargs="*", default=[], metavar="N|all",
                        help="transfer data sizes for KD-LoRA: counts or `all` (e.g. all 2000)")
    parser.add_argument("--hard-label", action="store_true",
                        help="also each transfer size with the teacher's hard label standing in")
    parser.add_argument("--hidden-weight", type=float, metavar="W",
                        help="also KD-LoRA with hidden-state KD at this weight, without and with transfer data")
    parser.add_argument("--teacher-precision", default="fp32",
                        help="every KD run's teacher logits (default fp32, the paper's: runs stored before the main "
                             "job took `auto` keep their keys; auto: the run's precision)")
    parser.add_argument("--runs-dir", help="where run folders go (default: beside the store)")
    args = parser.parse_args(argv)
    transfer = [size if size == "all" else int(size) for size in args.transfer]
    if args.hidden_weight is not None and HIDDEN not in method_setting_fields():
        print(f"--hidden-weight {args.hidden_weight:g}: no registered method has {HIDDEN} (hidden-state KD); "
              "its variants are skipped", file=sys.stderr)
    main_job = load_experiment("default").train
    params = {**main_job.params, "teacher_precision": args.teacher_precision}
    groups = {"base": (BASE_METHODS, None)}
    groups.update({name: ((DISTILLER,), settings) for name, settings in
                   variants(transfer, args.hard_label, args.hidden_weight, set(method_setting_fields())).items()})
    runs_dir = ["--runs-dir", args.runs_dir] if args.runs_dir else []
    with tempfile.TemporaryDirectory(prefix="kdlora-ablation-") as folder:
        for name, (methods, settings) in groups.items():
            path = Path(folder) / f"{name.replace(' ', '-').replace(',', '')}.toml"
            path.write_text(experiment_text(f"distill-ablation {name}", methods, args.seeds, params,
                                            main_job.by_precision, settings))
            print(f"== {name}", file=sys.stderr, flush=True)
            code = kdlora(["sweep", str(path), "--db", args.db, "--no-progress", *runs_dir])
            if code not in (0, 1):  # 1: a run failed or collapsed, kept in the store and reported below
                return code
    with Store(args.db, readonly=True) as store:
        runs = store.runs(kind="train")
    results = {run.key: run.result or {} for run in runs}
    records = [{**r, "teacher_logit_seconds": results[r["key"]].get("teacher_logit_seconds")}
               for r in records_from_runs(runs) if r["status"] == "done"]
    print("\n".join(signals.markdown(signals.sections(runs))))
    print("\n## Cost of each signal\n")
    print("\n".join(cost_markdown(cost_rows(records))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
