"""Small matplotlib charts (Agg, no pyplot: safe in threads and without a display) and the report's five plots."""

from __future__ import annotations

from pathlib import Path

from kdlora.analysis.table import Table
from kdlora.methods import baseline, by_label, colour_of, labels


def new_figure(width: float = 8.0, height: float = 4.5):
    """A Figure drawn by the Agg canvas (matplotlib imported here, so importing this module stays cheap)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure, path: str | Path) -> Path:
    """Write `figure` as a PNG at `path` (its folder must exist)."""
    figure.savefig(path, dpi=120)
    return Path(path)


def bar_chart(path, groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str,
              log: bool = False) -> Path:
    """Grouped bars: one group per entry of `groups`, one bar per series (None leaves a gap), values on top."""
    figure = new_figure()
    ax = figure.add_subplot()
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        kept = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        bars = ax.bar([x for x, _ in kept], [v for _, v in kept], width, label=label, color=colour_of(label))
        ax.bar_label(bars, labels=[f"{v:.3g}" for _, v in kept], fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.legend()
    return save(figure, path)


def line_chart(path, xs: list[float], series: dict[str, list[float]], title: str, xlabel: str, ylabel: str,
               log: bool = False, styles: dict[str, dict] | None = None) -> Path:
    """One line with markers per series over `xs` (log scale on both axes when `log`); `styles` holds extra
    `Axes.plot` keywords per series label."""
    figure = new_figure()
    ax = figure.add_subplot()
    for label, values in series.items():
        ax.plot(xs, values, label=label, **{"marker": "o", **(styles or {}).get(label, {})})
    if log:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=2)
    return save(figure, path)


def heatmaps(path, panels: list[tuple[str, list[list[float]], list[str], list[str]]], fmt: str = ".3f") -> Path:
    """Side-by-side annotated heatmaps, one per (title, matrix, row labels, column labels), on one colour scale."""
    values = [v for _, matrix, _, _ in panels for row in matrix for v in row]
    low, high = min(values), max(values)
    figure = new_figure(5.0 * len(panels), 0.5 * max(len(p[2]) for p in panels) + 2.0)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, matrix, rows, columns) in zip(axes, panels, strict=True):
        image = ax.imshow(matrix, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(columns)), columns)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_title(title)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                # viridis is light at the top of the scale: dark text there
                light = high > low and (value - low) / (high - low) > 0.6
                ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=8,
                        color="black" if light else "white")
    figure.colorbar(image, ax=list(axes), shrink=0.8)
    return save(figure, path)


def plot_rank(table: Table) -> int:
    """The rank the per-model parameter chart shows: 8, or the smallest rank when the table has no 8."""
    return 8 if 8 in table.ranks else table.ranks[0]


def line_styles(table: Table) -> dict[str, dict]:
    """Per `model method` line: one colour per family, one line style and marker per method."""
    palette = [f"C{i % 10}" for i in range(len(table.families))]
    colour = dict(zip(table.families, palette, strict=True))
    return {f"{r.model} {r.method}": dict(color=colour[r.family], **by_label(r.method).line) for r in table.rows}


def efficiency_plots(table: Table, analysis: dict, folder: str | Path) -> list[tuple[str, str]]:
    """Write the report's five PNGs into `folder`; return (file name, title) of each, in report order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    methods = [m for m in labels().values() if m == baseline().label or m in table.methods]

    def by_method(figure):
        return {m: [figure(row) if (row := table.row(f, m)) else None for f in table.families] for m in methods}

    rank = plot_rank(table)
    plots = [
        (f"param_count_rank{rank}.png", f"Trainable parameters (rank {rank}) by model and method",
         lambda path, title: bar_chart(path, list(table.families), by_method(lambda r: r.params_m[rank]), title,
                                       "trainable parameters (M, log scale)", log=True)),
        ("memory_usage.png", "Memory usage by model and method",
         lambda path, title: bar_chart(path, list(table.families), by_method(lambda r: r.memory_mb), title, "MB")),
        ("inference_time.png", "Inference time by model and method",
         lambda path, title: bar_chart(path, list(table.families), by_method(lambda r: r.inference_s), title,
                                       "seconds")),
        ("param_vs_rank.png", "Trainable parameters vs LoRA rank",
         lambda path, title: line_chart(path, list(table.ranks),
                                        {f"{r.model} {r.method}": [r.params_m[k] for k in table.ranks]
                                         for r in table.rows}, title, "LoRA rank", "trainable parameters (M)",
                                        log=True, styles=line_styles(table))),
        ("reduction_heatmap.png", "Parameter reduction ratio by family and rank",
         lambda path, title: heatmaps(path, [(f"{method} reduction", [[by_rank[str(k)] for k in table.ranks]
                                                                      for by_rank in by_family.values()],
                                              list(by_family), [f"Rank {k}" for k in table.ranks])
                                             for method, by_family in analysis["param_reduction"].items()])),
    ]
    written = []
    for name, title, draw in plots:
        if name == "reduction_heatmap.png" and not analysis["param_reduction"]:
            continue
        draw(folder / name, title)
        written.append((name, title))
    return written
