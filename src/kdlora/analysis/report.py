"""The efficiency report of a Table II: `report.md`, `analysis.json` and `efficiency_plots/`, written all or nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from tabulate import tabulate

from kdlora.analysis import findings, ratios
from kdlora.analysis.plots import efficiency_plots
from kdlora.analysis.table import Table, load_table
from kdlora.files import staged_output
from kdlora.methods import baseline


def build_analysis(table: Table, reference: Table | None = None) -> dict:
    """The analysis.json dict: rows, ratios and averages (full precision), KD-LoRA vs LoRA, sanity checks and, with
    a reference table, the reported-vs-measured comparison."""
    analysis = {"rows": [{"model": row.model, "method": row.method, "family": row.family,
                          "params_m": {str(rank): value for rank, value in row.params_m.items()},
                          "memory_mb": row.memory_mb, "inference_s": row.inference_s} for row in table.rows]}
    analysis.update(ratios.analyse(table))
    analysis["kd_lora_vs_lora"] = ratios.kd_lora_vs_lora(table)
    analysis["sanity"] = ratios.sanity_checks(table)
    if reference is not None:
        analysis["reference"] = ratios.compare(table, reference)
    return analysis


NO_METHODS = "The table has no LoRA or KD-LoRA row: nothing to set against FFT."


def _table(rows: list[list], headers: list[str], floatfmt: str = ".3f") -> str:
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=floatfmt, missingval="—")


def _data_summary(table: Table) -> list[str]:
    rows = [[r.model, r.method, *(r.params_m[k] for k in table.ranks), r.memory_mb, r.inference_s, r.family]
            for r in table.rows]
    headers = ["Model", "Method", *(f"Rank {k}" for k in table.ranks), "Memory Usage", "Inference Time",
               "Model Family"]
    return ["## 1. Data Summary", "",
            "The table contains parameter counts (in millions), memory usage (MB), and inference time (seconds). "
            "Values have been cleaned (units converted, suffixes removed). The cleaned data:", "",
            _table(rows, headers, floatfmt="g"), ""]


def _parameter_section(table: Table, analysis: dict) -> list[str]:
    lines = ["## 2. Parameter Reduction Ratios", "",
             "Parameter reduction ratio = (FFT_params − method_params) / FFT_params. Higher values indicate greater "
             "reduction.", ""]
    if not analysis["param_reduction"]:
        lines += [NO_METHODS, ""]
    for method, by_family in analysis["param_reduction"].items():
        rows = [[family, *(ranks[str(k)] for k in table.ranks)] for family, ranks in by_family.items()]
        lines += [f"### {method} Reduction Ratios", "",
                  _table(rows, ["Model Family", *(f"Rank {k}" for k in table.ranks)]), ""]
    averages = analysis["average_param_reduction"]
    if averages:
        rows = [[f"Rank {k}", *(averages[m][str(k)] for m in averages)] for k in table.ranks]
        lines += ["**Average reduction across models:**", "", _table(rows, ["Rank", *averages]), ""]
    return lines


def _per_family_section(title: str, formula: str, values: dict, averages: dict, label: str,
                        families: tuple[str, ...]) -> list[str]:
    if not values:
        return [title, "", NO_METHODS, ""]
    rows = [[family, *(values[m].get(family) for m in values)] for family in families]
    summary = ", ".join(f"{m} = {a:.3f}" for m, a in averages.items())
    return [title, "", formula, "", _table(rows, ["Model", *values]), "", f"**{label}:** {summary}", ""]


def _visualisations(plots: list[tuple[str, str]]) -> list[str]:
    lines = ["## 5. Visualizations", "", "The following plots have been generated and saved in `efficiency_plots/`:",
             ""]
    lines += [f"{i}. **{title}** (`{name}`)" for i, (name, title) in enumerate(plots, 1)]
    lines.append("")
    for name, title in plots:
        lines += [f"![{title}](efficiency_plots/{name})", ""]
    return lines


def _key_findings(table: Table, analysis: dict) -> list[str]:
    versus = analysis["kd_lora_vs_lora"]
    return ["## 6. Key Findings", "", "### Parameter Reduction", *findings.parameter_findings(table, analysis), "",
            "### Memory Usage", *findings.memory_findings(analysis, versus), "",
            "### Inference Time", *findings.speed_findings(analysis, versus), "",
            "### Trade-offs", *findings.tradeoff_findings(table, analysis), ""]


NOTES = [
    "## 7. Notes",
    "- KD-LoRA's parameter reduction includes both distillation (a smaller base model) and LoRA (low-rank "
    "adaptation). All reduction ratios are relative to FFT of the full base model.",
    "- Trainable parameter counts include the task head, which trains under every method.",
    "- Memory and inference time are as the table reports them. The paper's memory is "
    "`torch.cuda.memory_allocated()` read at epoch end (weights and optimizer state), not the peak; "
    "`kdlora bench` measures the peak and records which kind each figure is.",
    "- LoRA inference is as fast as FFT only with the adapters merged into the weights.",
    "",
]


def _versus_section(table: Table, versus: dict) -> list[str]:
    lines = ["## 8. KD-LoRA against LoRA", ""]
    if not versus:
        return lines + ["The table has no family with both a LoRA and a KD-LoRA row.", ""]
    rows = [[family, v["memory_ratio"], v["speedup"], *(v["param_ratio"][str(k)] for k in table.ranks)]
            for family, v in versus.items()]
    headers = ["Model Family", "Memory KD-LoRA / LoRA", "Speedup over LoRA",
               *(f"Params Rank {k} KD-LoRA / LoRA" for k in table.ranks)]
    return lines + ["Ratios of the KD-LoRA row to the LoRA row of each family (speedup = LoRA time / KD-LoRA "
                    "time).", "", _table(rows, headers), ""]


def _reference_section(table: Table, comparison: dict) -> list[str]:
    name = Path(comparison["file"]).name
    lines = ["## 10. Reported vs Measured", "",
             f"Each cell: the reference (`{name}`, taken as the reported figures) / this table (the measured ones) "
             "and their ratio; ratios beyond 2× either way are bold.", ""]
    by_row: dict[tuple[str, str], dict] = {}
    for cell in comparison["cells"]:
        ratio = f"{cell['ratio']:.2f}×"
        if not 0.5 <= cell["ratio"] <= 2:
            ratio = f"**{ratio}**"
        entry = by_row.setdefault((cell["model"], cell["method"]), {})
        entry[cell["column"]] = f"{cell['reference']:.4g} / {cell['table']:.4g} ({ratio})"
    columns = list(dict.fromkeys(c["column"] for c in comparison["cells"]))
    rows = [[model, method, *(entry.get(c) for c in columns)] for (model, method), entry in by_row.items()]
    if rows:
        lines += [_table(rows, ["Model", "Method", *columns]), ""]
    groups: dict[tuple[str, str], list[float]] = {}
    for cell in comparison["cells"]:
        kind = "trainable parameters" if cell["column"].startswith("Rank") else cell["column"].split(" (")[0].lower()
        groups.setdefault((cell["method"], kind), []).append(cell["ratio"])
    for cell in comparison["params_per_rank"]:
        groups.setdefault((cell["method"], "parameters per unit of rank (adapter size)"), []).append(cell["ratio"])
    for (method, kind), values in groups.items():
        middle = median(values)
        text = f"{method} {kind}: the reference's figures are {middle:.2f}× this table's (median of {len(values)})"
        lines.append(f"- **{text}**" if not 0.5 <= middle <= 2 else f"- {text}")
    lines += [f"- {note}" for note in comparison["unmatched"]]
    if comparison["params_per_rank"]:
        rows = [[c["model"], c["method"], c["reference"], c["table"], c["ratio"]]
                for c in comparison["params_per_rank"]]
        lines += ["", "Parameters one unit of LoRA rank adds (least-squares slope over the ranks: the adapter size, "
                  "without the fixed task head):", "",
                  tabulate(rows, headers=["Model", "Method", "Reference per rank", "This table per rank",
                                          "Reference / this table"], tablefmt="pipe", floatfmt=(",.0f", "", ",.0f",
                                                                                                ",.0f", ".2f"))]
    return lines + [""]


def render_markdown(table: Table, analysis: dict, plots: list[tuple[str, str]], generated: datetime) -> str:
    """The report's markdown: the seed report's sections in order, then KD-LoRA vs LoRA, sanity and reference."""
    names = [baseline().label, *table.methods]
    methods = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    lines = ["# Efficiency Analysis of KD-LoRA", "",
             f"This report analyzes the efficiency results from `{Path(table.path).name}`, comparing {methods} across "
             f"{findings.count_words(len(table.families), 'model family')} ({', '.join(table.families)}) and "
             f"{findings.count_words(len(table.ranks), 'LoRA rank')} ({', '.join(map(str, table.ranks))}).", ""]
    lines += _data_summary(table)
    lines += _parameter_section(table, analysis)
    lines += _per_family_section("## 3. Memory Reduction Ratios",
                                 "Memory reduction ratio = (FFT_memory − method_memory) / FFT_memory.",
                                 analysis["memory_reduction"], analysis["average_memory_reduction"],
                                 "Average memory reduction", table.families)
    lines += _per_family_section("## 4. Inference Time Speedup",
                                 "Speedup = FFT_time / method_time. Values >1 indicate faster inference than FFT.",
                                 analysis["speedup"], analysis["average_speedup"], "Average speedup", table.families)
    lines += _visualisations(plots)
    lines += _key_findings(table, analysis)
    lines += NOTES
    lines += _versus_section(table, analysis["kd_lora_vs_lora"])
    lines += ["## 9. Sanity Checks", "", "Figures that cannot be right (or are suspicious) as the table states them.",
              "", *findings.sanity_lines(analysis["sanity"]), ""]
    if "reference" in analysis:
        lines += _reference_section(table, analysis["reference"])
    lines += ["---", "", f"*Analysis generated on `{generated:%Y-%m-%d %H:%M:%S} UTC`.*", ""]
    return "\n".join(lines)


def write_report(table_csv: str | Path, out_dir: str | Path, reference_csv: str | Path | None = None) -> dict:
    """Analyse the Table II at `table_csv` and write report.md, analysis.json and efficiency_plots/ into `out_dir`.

    Nothing in `out_dir` changes unless everything was written; bad input raises UserError (file, row, column).
    Returns the analysis.json dict.
    """
    table = load_table(table_csv)
    reference = load_table(reference_csv) if reference_csv is not None else None
    analysis = build_analysis(table, reference)
    with staged_output(out_dir) as stage:
        plots = efficiency_plots(table, analysis, stage / "efficiency_plots")
        (stage / "analysis.json").write_text(json.dumps(analysis, indent=2) + "\n", encoding="utf-8")
        markdown = render_markdown(table, analysis, plots, datetime.now(UTC))
        (stage / "report.md").write_text(markdown, encoding="utf-8")
    return analysis
