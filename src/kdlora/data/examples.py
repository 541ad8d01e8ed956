"""One split of a task as parallel lists: ids, input texts, labels.

An example's id is its row number in the full split, so ids stay the same however the split is subsampled or
shuffled; teacher logits are stored by these ids.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Examples:
    """One split: parallel lists of ids, input texts (one or two per example) and labels."""

    ids: list[int]
    texts: list[tuple[str, ...]]
    labels: list[float]
    source: str = ""
    """Where the examples came from (file or hub name), for error messages and fingerprints."""

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, n: int | None, seed: int) -> Examples:
        """At most `n` examples drawn without replacement by `seed`, ids kept; all of them when `n` is None."""
        if n is None or n >= len(self):
            return self
        rows = sorted(random.Random(seed).sample(range(len(self)), n))
        return Examples([self.ids[i] for i in rows], [self.texts[i] for i in rows],
                        [self.labels[i] for i in rows], self.source)

    def plus(self, other: Examples) -> Examples:
        """These examples, then `other`'s, under this split's `source` (ids must not repeat: the caller's to keep
        apart)."""
        return Examples(self.ids + other.ids, self.texts + other.texts, self.labels + other.labels, self.source)
