"""The evaluation set: seeded token ids with a realistic GLUE sentence-length distribution.

Efficiency does not depend on what the tokens say, only on how many there are and how they are padded, so the
set is random ids whose lengths follow a log-normal fitted by eye to GLUE single-sentence tasks (SST-2 dev has a
median of about 23 tokens with a long right tail), clipped to [4, 128].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

EVAL_SIZE = 1043
"""CoLA's dev set size: the paper's inference time is for one pass over a dev set."""


@dataclass(frozen=True)
class LengthDistribution:
    """Token counts (special tokens included) of the evaluation sentences."""

    median: float = 22.0
    """Median tokens per sentence."""
    sigma: float = 0.5
    """Log-normal shape: ln(length) has this standard deviation."""
    min_length: int = 4
    max_length: int = 128

    def describe(self) -> dict:
        return {"kind": "log-normal", **asdict(self)}


def eval_lengths(size: int = EVAL_SIZE, seed: int = 0, dist: LengthDistribution = LengthDistribution()) -> list[int]:
    """`size` sentence lengths drawn from `dist` with `seed` (the same lengths on every machine)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    normal = torch.randn(size, generator=gen, dtype=torch.float64)
    lengths = torch.exp(math.log(dist.median) + dist.sigma * normal).round().long()
    return lengths.clamp(dist.min_length, dist.max_length).tolist()


def first_plain_id(vocab_size: int) -> int:
    """The lowest token id used: above every real vocabulary's special tokens (tiny vocabularies: the upper half)."""
    return min(1000, vocab_size // 2)


def padded_length(lengths: list[int], pad_to: int | None) -> int:
    """The length a batch of `lengths` is padded to: its longest (dynamic padding) or a fixed `pad_to`."""
    longest = max(lengths)
    if pad_to is None:
        return longest
    if pad_to < longest:
        raise ValueError(f"pad_to={pad_to} is shorter than a sentence of {longest} tokens")
    return pad_to


def eval_batches(lengths: list[int], batch_size: int, vocab_size: int, pad_to: int | None = None,
                 group_by_length: bool = False, seed: int = 0) -> list[dict]:
    """Model inputs (`input_ids`, `attention_mask`) in batches of `batch_size`, padded per `padded_length`.

    `group_by_length` sorts the sentences by length first, so each batch pads to a near neighbour.
    """
    import torch

    order = sorted(range(len(lengths)), key=lengths.__getitem__) if group_by_length else range(len(lengths))
    order = list(order)
    gen = torch.Generator().manual_seed(seed + 1)
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [lengths[i] for i in order[start:start + batch_size]]
        width = padded_length(chunk, pad_to)
        ids = torch.randint(first_plain_id(vocab_size), vocab_size, (len(chunk), width), generator=gen)
        positions = torch.arange(width)
        mask = (positions[None, :] < torch.tensor(chunk)[:, None]).long()
        batches.append({"input_ids": ids * mask, "attention_mask": mask})
    return batches


def padded_tokens(batches: list[dict]) -> int:
    """Tokens the model processes, padding included."""
    return sum(b["input_ids"].numel() for b in batches)
