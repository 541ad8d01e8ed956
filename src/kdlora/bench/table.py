"""The bench's outputs: `bench.json` (every figure) and `table-ii.csv` (the paper's Table II layout).

`table-ii.csv` has exactly the paper's columns (Model, Method, Rank 8.., Memory Usage, Inference Time) plus a
`Model Family` column, so `kdlora analyze DIR/table-ii.csv` reads it unchanged. Rank cells are exact trainable
parameter counts written in millions as the paper does (`0.296450M`: every digit kept; a bare number would read
as millions); Memory Usage is the peak training memory (`1332.0MB`); Inference Time is the evaluation set's time
with adapters merged (`6.10s`). A cell that was not measured, or whose measurement failed, is left empty.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from kdlora.bench.forms import DEFAULT_FORM, row_form
from kdlora.families import get_family
from kdlora.files import staged_output
from kdlora.methods import get_method


def millions(count: int) -> str:
    """An exact parameter count in the paper's unit: 294912 -> `0.294912M` (a bare number would read as millions)."""
    return f"{count / 1e6:.6f}M"


def _by_family_method(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    grouped: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["family"], row["method"]), []).append(row)
    return grouped


def _measured(rows: list[dict]) -> dict | None:
    """The row whose memory and time stand for the method in Table II: the first measured rank, in the paper's
    form (PyTorch fp32, not quantised) when it was measured, else the first form measured."""
    measured = [r for r in rows if r.get("eval_seconds") is not None or r.get("peak_memory_mb") is not None]
    paper = [r for r in measured if row_form(r) == DEFAULT_FORM]
    return (paper or measured or [None])[0]


def table_ii_rows(result: dict) -> list[dict]:
    """The Table II rows of a bench result, in the paper's order and layout (values as strings)."""
    ranks = result["config"]["ranks"]
    out = []
    for (family_name, method_name), rows in _by_family_method(result["rows"]).items():
        family, method = get_family(family_name), get_method(method_name)
        by_rank = {r["rank"]: r for r in rows}
        line = {"Model": family.architecture(method.role).display_name, "Method": method.label}
        for rank in ranks:
            # FFT has no rank: every rank column holds its one count, as in the paper
            row = rows[0] if not method.uses_lora else by_rank.get(rank)
            line[f"Rank {rank}"] = "" if row is None or row.get("trainable_params") is None \
                else millions(row["trainable_params"])
        measured = _measured(rows) or {}
        memory, seconds = measured.get("peak_memory_mb"), measured.get("eval_seconds")
        line["Memory Usage"] = "" if memory is None else f"{memory:.1f}MB"
        line["Inference Time"] = "" if seconds is None else f"{seconds:.2f}s" if seconds >= 0.1 else f"{seconds:.3g}s"
        line["Model Family"] = family_name
        out.append(line)
    return out


def empty_cells(table: list[dict]) -> list[str]:
    """`Model/Method: column` for every empty cell (unmeasured or failed)."""
    return [f"{line['Model']} {line['Method']}: {column}" for line in table for column, value in line.items()
            if value == ""]


def write_table_ii(table: list[dict], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def output_table(result: dict) -> tuple[str, list[dict]]:
    """The file name and rows of the bench's table: `table-ii.csv`, or `params.csv` for a `--params-only` run."""
    table = table_ii_rows(result)
    if not result["config"].get("params_only"):
        return "table-ii.csv", table
    # counts only: a Table II with empty memory and time cells would read as a broken one in `kdlora analyze`
    return "params.csv", [{k: v for k, v in line.items() if k not in ("Memory Usage", "Inference Time")}
                          for line in table]


def write_bench_outputs(result: dict, out_dir: str | Path) -> None:
    """Write `bench.json` and the table (`output_table`) into `out_dir` (both or neither: staged)."""
    name, table = output_table(result)
    with staged_output(out_dir) as stage:
        (stage / "bench.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        write_table_ii(table, stage / name)
