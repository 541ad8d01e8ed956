"""The combined report of a results store: quality (Table I), efficiency (Table II), the trade-off between them,
the ablations (`kdlora.analysis.ablation`, what each distillation signal adds: `kdlora.analysis.signals`) and the
deployment table.

Writes into DIR (staged: a failure leaves DIR as it was): `report.md`, `results.json`, `plots/pareto_*.png`, and
when the store holds bench runs `bench/` (bench.json, table-ii.csv from `kdlora.bench.table`) and `efficiency/`
(the `kdlora analyze` report of that table, beside the paper's figures).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

from kdlora.analysis import ablation, deployment, quality, signals, tradeoff
from kdlora.analysis.paper import load_reference_table_i, paper_table
from kdlora.analysis.report import write_report
from kdlora.analysis.select import Selection, select
from kdlora.bench.table import output_table, write_bench_outputs
from kdlora.errors import UserError
from kdlora.files import staged_output
from kdlora.methods import baseline, labels
from kdlora.store import PRUNED, Run, Store


def merged_bench_result(runs: list[Run]) -> dict | None:
    """One bench.json dict from the store's done bench runs (one per family): rows concatenated."""
    results = [r.result for r in runs if r.kind == "bench" and r.status == "done" and r.result]
    if not results:
        return None
    rows = [_renamed(row) for result in results for row in result.get("rows", [])]
    return {"rows": rows, "config": results[0].get("config", {}), "environment": results[0].get("environment", {})}


def _renamed(row: dict) -> dict:
    """A bench row as it is written now: stores from before BenchRow call peak memory `peak_train_memory_mb`."""
    if "peak_train_memory_mb" in row:
        row = {**row, "peak_memory_mb": row.get("peak_memory_mb", row["peak_train_memory_mb"])}
        del row["peak_train_memory_mb"]
    return row


def write_study_report(store: Store, out_dir: str | Path, keys=None, title: str = "KD-LoRA results",
                       selection: Selection | None = None) -> dict:
    """Write the report of the store's runs (only `keys` when given) into `out_dir`; returns results.json's dict."""
    selection = selection or Selection()
    runs = store.runs(keys=keys)
    records = quality.records_from_runs(runs, epoch=selection.select_epoch)
    configurations = quality.aggregate(records, exclude_flagged=selection.exclude_flagged)
    aggregates = select(configurations, selection.select, selection.k)
    table = quality.table_i(aggregates)
    bench = merged_bench_result(runs)
    bench_rows = bench["rows"] if bench else []
    trades = tradeoff.family_tradeoffs(aggregates, bench_rows, rank=table.rank)
    deploy = deployment.deployment_table(trades, bench_rows)
    ablations = ablation.ablations(aggregates)
    steps = signals.sections(runs, exclude_flagged=selection.exclude_flagged)
    reference_path = paper_table("i")
    compared = quality.reported_vs_measured(table, load_reference_table_i(reference_path))
    results = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"), "store": str(store.path),
        "runs": _counts(runs), "flags": _flag_counts(records, selection),
        "resumed_costs_left_out": sum(bool(r.get("partial_cost")) for r in records if r["status"] == "done"),
        "teachers": _teacher_counts(runs),
        "selection": dataclasses.asdict(selection), "configurations": [a.to_dict() for a in configurations],
        "aggregates": [a.to_dict() for a in aggregates],
        "table_i": table.to_dict(), "table_i_vs_paper": compared, "tradeoffs": trades, "ablation": ablations,
        "distillation_steps": steps, "deployment": deploy,
    }
    with staged_output(out_dir) as stage:
        plots = _pareto_plots(aggregates, bench_rows, stage / "plots")
        deploy_plot = "plots/deployment.png" if deployment.deployment_plot(deploy, stage / "plots" /
                                                                             "deployment.png") else None
        efficiency = _efficiency(bench, stage) if bench else None
        results["efficiency"] = efficiency
        lines = _markdown(title, results, runs, configurations, table, compared, trades, plots, efficiency,
                          selection)
        lines += ablation.markdown(ablations, aggregates)
        lines += signals.markdown(steps)
        lines += ["", "## Deployment: the student in each form against the teacher", "",
                  *deployment.markdown(deploy, deploy_plot, _dev_precisions(records))]
        (stage / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (stage / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return results


TRAINING_SIZE = ("precision", "max_train_samples", "epochs", "max_length")
"""The settings `what_trained` names: what a main job that adapts to its machine may have chosen."""


def what_trained(runs: list[Run]) -> str:
    """One sentence on what the train runs ran: their precision (and why, where `auto` could have chosen it), the
    training sentences, epochs and length, and the CPU; "" without train runs."""
    trained = [r for r in runs if r.kind == "train" and r.status == "done"]
    if not trained:
        return ""
    said = []
    for name in TRAINING_SIZE:
        values = sorted({str(r.config[name]) for r in trained if name in r.config})
        if values:  # None: no limit (every training sentence)
            said.append(f"{name.replace('_', ' ')} {' / '.join('all' if v == 'None' else v for v in values)}")
    machines = sorted({(r.environment or {}).get("cpu_model") for r in trained} - {None})
    said += [f"CPU {', '.join(machines)}"] if machines else []
    autos = sorted({f"{env['precision_auto']} ({env['precision_auto_why']})" for env in
                    (r.environment or {} for r in trained) if env.get("precision_auto")})
    auto = f"; precision auto there: {'; '.join(autos)}" if autos else ""
    # `parallel_runs`: the most runs that ran at once while this one ran (1 or none recorded: alone)
    shared = [(r.result or {}).get("parallel_runs") or 1 for r in trained]
    sharing = [n for n in shared if n > 1]
    together = (f"; {len(sharing)} of them ran beside other runs (`--jobs`, up to {max(sharing)} at once), their "
                "seconds measured sharing the CPU" if sharing else "")
    return f"\nWhat the {len(trained)} train runs ran: {', '.join(said)}{auto}{together}."


def _flag_counts(records: list[dict], selection: Selection) -> dict:
    """How many counted train runs are flagged, and whether the report left them out."""
    done = [r for r in records if r["status"] == "done"]
    return {"train_runs": len(records), "done": len(done),
            "constant_predictions": sum("constant_predictions" in r["flags"] for r in done),
            "majority_class": sum("majority_class" in r["flags"] for r in done),
            "excluded": selection.exclude_flagged}


def _dev_precisions(records: list[dict]) -> list[str]:
    """What the done train runs' dev scores were scored in (`fp32`, `bf16`, `fp16`: the latter two under autocast)."""
    return sorted({r["dev_precision"] for r in records if r["status"] == "done"})


def _teacher_counts(runs: list[Run]) -> dict:
    """How the distilling runs' FFT teachers were chosen: `best` (by dev score), `first` (FFT's first configuration)
    or `given` (a teacher run passed by hand, outside a sweep), counted over the train runs that distil."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.kind == "train" and (run.config or {}).get("teacher"):
            how = ((run.result or {}).get("teacher_run") or {}).get("selection") or "given"
            counts[how] = counts.get(how, 0) + 1
    return counts


def _teachers_said(counts: dict) -> str:
    said = {"best": "FFT's best configuration by dev score (of the same task, family and seed)",
            "first": "FFT's first configuration (the experiment's `teacher = \"first\"`)",
            "given": "a teacher run given by hand"}
    return "KD-LoRA's teacher: " + "; ".join(f"{said[how]} for {n} run{'s' if n != 1 else ''}"
                                             for how, n in sorted(counts.items())) + "."


def _counts(runs: list[Run]) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for run in runs:
        counts.setdefault(run.kind, {}).setdefault(run.status, 0)
        counts[run.kind][run.status] += 1
    return counts


def _pareto_plots(aggregates, bench_rows, folder: Path) -> dict[str, str | None]:
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for axis, (_, name) in tradeoff.PARETO_AXES.items():
        points = tradeoff.pareto_points(aggregates, bench_rows, axis)
        made[axis] = f"plots/{name}" if points and tradeoff.pareto_plot(points, axis, folder / name) else None
    return made


def _efficiency(bench: dict, stage: Path) -> dict:
    """Table II from the bench runs, and the `kdlora analyze` report of it beside the paper's Table II."""
    name, _ = output_table(bench)
    write_bench_outputs(bench, stage / "bench")
    with open(stage / "bench" / name, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    found = {"table_ii": f"bench/{name}", "table_ii_rows": rows, "report": None, "skipped": None,
             "memory_kind": sorted({r.get("memory_kind") for r in bench["rows"] if r.get("memory_kind")})}
    if name != "table-ii.csv":
        found["skipped"] = "the bench counted parameters only: no memory or inference time to analyse"
        return found
    try:
        analysis = write_report(stage / "bench" / "table-ii.csv", stage / "efficiency",
                                reference_csv=paper_table("ii"))
    except UserError as exc:  # e.g. a params-only bench: no memory or time to analyse
        found["skipped"] = str(exc).replace(str(stage) + "/", "")
        return found
    found.update(report="efficiency/report.md", average_speedup=analysis.get("average_speedup"),
                 average_memory_reduction=analysis.get("average_memory_reduction"))
    return found


def _fmt(value, digits=1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _percent(value):
    return None if value is None else 100 * value


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def _cell(table, name, column, value) -> str:
    note = table.notes.get((name, column))
    return _fmt(value) + (f" ({note})" if note and value is not None else "")


def _ranks_said(table) -> str:
    """Which LoRA ranks Table I's LoRA and KD-LoRA figures come from (rank is a configuration they select over)."""
    if not table.ranks:
        return "no LoRA method"
    said = "; ".join(f"{column} {', '.join(map(str, ranks))}" for column, ranks in table.ranks.items())
    return f"the LoRA rank one of the configurations each cell selects from (the ranks its figures come from: {said})"


def _params(agg) -> str:
    return ", ".join(f"{k}={v}" for k, v in agg.params.items()) or "–"


def _markdown(title, results, runs, aggregates, table, compared, trades, plots, efficiency, selection) -> list[str]:
    lines = [f"# {title}", "", f"Generated {results['generated']} from `{results['store']}`.", ""]
    lines += ["## Runs", ""]
    lines += _table(["kind", "status", "runs"], [[k, s, n] for k, by in results["runs"].items() for s, n in by.items()])
    lines += [line for line in [what_trained(runs)] if line]
    problems = [r for r in runs if r.status in ("failed", "collapsed")]
    if problems:
        lines += ["", "Not averaged in:", ""]
        lines += [f"- {r.label}: {r.status} — {r.reason or 'no reason given'}" for r in problems]
    pruned = sum(r.status == PRUNED for r in runs)
    if pruned:
        lines += ["", f"{pruned} run{'s' * (pruned != 1)} stopped early by a search's pruner (status `pruned`): left "
                  "out of every figure, since a pruned run stands for no full run (a plain sweep runs it again)."]
    flags = results["flags"]
    lines += ["", f"{flags['constant_predictions']} of {flags['done']} train runs predict one constant class or "
              f"value on dev (flag `constant_predictions`; {flags['majority_class']} of them the majority class, "
              "WNLI's expected outcome): " + ("left out of every figure (--exclude-flagged)." if flags["excluded"]
                                              else "counted in every figure, their share shown in Table I's cells "
                                              "(`2/3 constant`).")]
    lines += ["", "## Quality: Table I (measured)", ""]
    if table.rows:
        lines += [f"In %; one figure per task, family and method, {_ranks_said(table)}; Score = mean of the rows "
                  f"(as the paper averages its ten rows, MNLI-m and MNLI-mm apart). {selection.describe()} "
                  "Collapsed and failed runs excluded." +
                  (f" {_teachers_said(results['teachers'])}" if results["teachers"] else ""), ""]
        lines += _table(["Task", "Metric", *table.columns],
                        [[name, label, *(_cell(table, name, c, cells.get(c)) for c in table.columns)]
                         for name, label, cells in table.rows])
        lines += ["", "### Every configuration (median over seeds)", ""]
        lines += _table(["task", "family", "method", "rank", "configuration", "median %", "mean ± std %", "seeds",
                         "constant", "collapsed", "failed", "train s", "peak MB", "energy Wh", "g CO2-eq"],
                        [[a.task, a.family, labels().get(a.method, a.method), a.rank or "–",
                          _params(a), _fmt(_percent(a.median), 2),
                          f"{_fmt(_percent(a.mean), 2)} ± {_fmt(_percent(a.std), 2)}" if a.n else "–",
                          a.n, a.constant + a.left_out, a.collapsed, a.failed, _fmt(a.train_seconds),
                          _fmt(a.peak_memory_mb), _fmt(a.energy_kwh * 1000 if a.energy_kwh is not None else None, 3),
                          _fmt(a.emissions_g_co2eq, 3)] for a in aggregates])
        resumed = sum(a.partial_costs for a in aggregates)
        if resumed:
            lines += ["", f"{resumed} resumed run{'s' if resumed != 1 else ''}: {'their' if resumed != 1 else 'its'} "
                      "training time, energy and peak memory cover only the segment after the resume (the peak "
                      "including loading the checkpoint), so they are left out of every cost figure here and in the "
                      "trade-off; the scores count."]
        methods = sorted({a.energy_method for a in aggregates if a.energy_method})
        if methods:
            lines += ["", f"Energy and emissions: codecarbon, offline ({'; '.join(methods)}): an estimate where it "
                      "could not read the hardware's power, not a meter reading."]
        lines += ["", "### Reported vs measured (Table I)", ""]
        if compared:
            lines += _table(["row", "column", "paper %", "measured %", "difference (points)"],
                            [[c["row"], c["column"], _fmt(c["reported"]), _fmt(c["measured"]),
                              f"{c['difference']:+.1f}"] for c in compared])
        else:
            lines += ["No cell of this run's Table I is in the paper's (the paper covers GLUE on BERT-base, "
                      "RoBERTa-base and DeBERTa-v3-base); the paper's Score row, for scale: " +
                      ", ".join(f"{c} {v:.1f}" for (r, c), v in load_reference_table_i().items()
                                if r == quality.SCORE_ROW) + "."]
    else:
        lines += ["No finished train runs."]
    lines += ["", "## Efficiency: Table II (measured)", ""]
    if efficiency:
        intro = (f"Measured by `kdlora bench` ({', '.join(efficiency['memory_kind']) or 'no memory measured'}); "
                 f"the table is [`{efficiency['table_ii']}`]({efficiency['table_ii']})")
        if efficiency["report"]:
            intro += (f" and its full analysis, beside the paper's figures, is "
                      f"[`{efficiency['report']}`]({efficiency['report']}).")
        else:
            intro += f". It was not analysed: {efficiency['skipped']}."
        header, *rows = efficiency["table_ii_rows"]
        lines += [intro, "", "Rank columns: trainable parameters (exact); Memory Usage: peak training memory of the "
                  "bench step; Inference Time: the bench eval set, adapters merged.", "", *_table(header, rows)]
        speed = efficiency.get("average_speedup") or {}
        memory = efficiency.get("average_memory_reduction") or {}
        if speed or memory:
            base = baseline().label
            shown = [m for m in labels().values() if m != base and (m in speed or m in memory)]
            lines += ["", *(f"- {m}: average memory reduction vs {base} {_fmt(_percent(memory.get(m)))} %, "
                            f"average inference speedup vs {base} {_fmt(speed.get(m), 2)}×" for m in shown)]
    else:
        lines += ["No bench runs in the store."]
    lines += ["", "## Trade-off: score next to cost", ""]
    lines += ["Quality figures are medians over seeds from the train runs. `[train runs]` costs are what those runs "
              "measured themselves (trainable parameters, peak training memory, training time); `[bench]` costs come "
              "from `kdlora bench` on the same family's architectures (random weights; memory of a fixed training "
              "step, inference time of the bench eval set with merged adapters). Families differ: the benched paper "
              "families were not trained here unless they appear in Table I.", ""]
    lines += [f"- {t['sentence']}" for t in trades] or ["No family has quality for all three methods or bench rows."]
    lines += [""]
    for axis, path in plots.items():
        label = tradeoff.PARETO_AXES[axis][0]
        lines += [f"![score vs {label}]({path})" if path else f"(No score-vs-{axis} plot: no family has both a score "
                  f"and this figure.)", ""]
    return lines
