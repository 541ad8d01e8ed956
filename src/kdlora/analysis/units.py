"""Numbers with units, as Table II cells write them: `110M`, `1,332.0 MB`, `1.3 GiB`, `6.10s`, `850 ms`.

Each kind of quantity has one reported unit (parameters in millions, memory in MB, time in seconds); a bare number
is taken in that unit. Memory steps are binary for both spellings: 1 GB = 1 GiB = 1024 MB, 1 MB = 1024 KB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    """A kind of figure: the unit it is reported in and the factor that brings each accepted unit to it."""

    name: str
    reported_unit: str
    scales: dict[str, float]
    """Unit spelling -> factor to the reported unit ("" is a bare number); matched ignoring case."""

    def scale(self, unit: str) -> float | None:
        """The factor for `unit` (any case), or None when it is not one of ours."""
        return {u.lower(): f for u, f in self.scales.items()}.get(unit.lower())

    def spellings(self) -> str:
        units = [u for u in self.scales if u]
        return ", ".join(units[:-1]) + " or " + units[-1]


PARAMS = Quantity("parameters", "M", {"": 1.0, "K": 1e-3, "M": 1.0, "B": 1e3})
MEMORY = Quantity("memory", "MB", {"": 1.0, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0,
                                   "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0})
TIME = Quantity("time", "s", {"": 1.0, "ms": 1e-3, "s": 1.0, "sec": 1.0, "secs": 1.0, "min": 60.0, "mins": 60.0})

# digits with optional thousands separators (1,332 but not 1,33), optional fraction and exponent
_NUMBER = r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_CELL = re.compile(rf"\s*(?P<number>{_NUMBER})\s*(?P<unit>[A-Za-z]*)\s*")


class UnitError(ValueError):
    """A cell that is not a number in a known unit; the message says what is wrong with it."""


def parse_value(text: str, quantity: Quantity) -> float:
    """The value of `text` in `quantity`'s reported unit; UnitError when it is not a number in a known unit."""
    match = _CELL.fullmatch(text)
    if match is None:
        raise UnitError(f"{text.strip()!r} is not a number (with an optional unit)")
    scale = quantity.scale(match["unit"])
    if scale is None:
        raise UnitError(f"unknown unit {match['unit']!r} in {text.strip()!r} ({quantity.name} in "
                        f"{quantity.spellings()}; a bare number is in {quantity.reported_unit})")
    return float(match["number"].replace(",", "")) * scale
