"""The ranges of a hyper-parameter search: an experiment's `[search]` table, parsed and checked where the
experiment file is read (`kdlora.experiment`), used by the search (`kdlora.sweep.search`). Light: no Optuna until a
range suggests a value to a trial.
"""

from __future__ import annotations

import dataclasses

from kdlora.config import TrainConfig
from kdlora.errors import UserError

SEARCH_KEYS = ("low", "high", "log", "step")
NOT_SEARCHED = ("task", "family", "method", "seed", "teacher")
"""Settings the grid sets (rank is searched: it replaces `[train] ranks`)."""


@dataclasses.dataclass(frozen=True)
class Range:
    """One setting's range: `choices`, or numbers from `low` to `high` (whole numbers when both bounds are)."""

    name: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def suggest(self, trial):
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)


def parse_space(table: dict, source: str) -> tuple[Range, ...]:
    """The `[search]` table as ranges; a bad key or range is a UserError naming the file and the key."""
    known = [name for name in TrainConfig.setting_names() if name not in NOT_SEARCHED]
    ranges = []
    for name, value in table.items():
        where = f"{source}: [search] {name}"
        if name not in known:
            raise UserError(f"{where}: not a setting a search can vary (known: {', '.join(known)})")
        if isinstance(value, list):
            if not value or not all(isinstance(v, str | int | float | bool) for v in value):
                raise UserError(f"{where} = {value!r}: a choice needs a non-empty list of values")
            ranges.append(Range(name, choices=tuple(value)))
            continue
        if not isinstance(value, dict):
            raise UserError(f"{where} = {value!r}: a list of choices or a table {{ low = .., high = .. }}")
        unknown = [k for k in value if k not in SEARCH_KEYS]
        numbers = [value.get(k) for k in ("low", "high")]
        if unknown or not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers):
            raise UserError(f"{where} = {value!r}: a range needs numbers low and high (and may say log, step)")
        low, high = numbers
        if not low < high or (value.get("log") and low <= 0):
            raise UserError(f"{where}: low {low} must be below high {high} (and above 0 with log = true)")
        ranges.append(Range(name, low=low, high=high, log=bool(value.get("log", False)), step=value.get("step")))
    if not ranges:
        raise UserError(f"{source}: [search] holds no ranges")
    return tuple(ranges)


