"""The paper's tables as bundled with the package (`resources/paper-table-{i,ii}.csv`), and readers of them.

Table I: GLUE dev scores per task and (model, method) column, the Score row their average. Table II: trainable
parameters per rank, memory and inference time. Everything that reads a bundled paper figure goes through here.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

from kdlora.analysis.table import name_key


def paper_table(number: str):
    """The paper's Table `number` ("i": GLUE scores, "ii": efficiency) as bundled with the package (a Traversable)."""
    return resources.files("kdlora").joinpath("resources", f"paper-table-{number}.csv")


def load_reference_table_i(path=None) -> dict[tuple[str, str], float]:
    """The paper's Table I as {(row, column): value in %}."""
    source = Path(path) if path else paper_table("i")
    with source.open(encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return {(row["Task"], column): float(value) for row in reader
                for column, value in row.items() if column not in ("Task", "Metric") and value}


def paper_scores(families: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The paper's Table I GLUE averages ({family: {method: score}}) of those of `families` that it reports."""
    text = paper_table("i").read_text(encoding="utf-8")
    score_row = next(row for row in csv.DictReader(io.StringIO(text)) if row["Task"] == "Score")
    scores: dict[str, dict[str, float]] = {}
    for column, value in score_row.items():
        model, _, method = column.rpartition(" ")
        for family in families:
            if model and name_key(model) == name_key(family):
                scores.setdefault(family, {})[method] = float(value)
    return scores
