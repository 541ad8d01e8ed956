"""What a Table II says once divided by FFT: reductions, speedups, their averages, KD-LoRA against LoRA, and checks
for figures that cannot be right.

reduction = (FFT - method) / FFT; speedup = FFT time / method time; averages are plain means over the families that
have the method. Dictionaries are keyed by method, then family (its FFT model), then rank as a string.
"""

from __future__ import annotations

from statistics import mean

from kdlora.analysis.table import Table, name_key
from kdlora.families import FAMILIES, Architecture
from kdlora.methods import paper_trio

# the paper's three methods, as its tables label them (the labels are the registry's)
FFT, LORA, KD_LORA = (m.label for m in paper_trio())


def reduction(fft: float, value: float) -> float:
    """The fraction of the FFT figure that the method saves (negative when it needs more)."""
    return (fft - value) / fft


def _average(values: list[float]) -> float | None:
    return mean(values) if values else None


def param_reduction(table: Table) -> dict:
    """{method: {family: {rank: reduction of trainable parameters}}}."""
    return {method: {family: {str(rank): reduction(table.row(family, FFT).params_m[rank], row.params_m[rank])
                              for rank in table.ranks}
                     for family in table.families if (row := table.row(family, method))}
            for method in table.methods}


def per_family(table: Table, figure) -> dict:
    """{method: {family: figure(fft_row, method_row)}} over the families that have the method."""
    return {method: {family: figure(table.row(family, FFT), row)
                     for family in table.families if (row := table.row(family, method))}
            for method in table.methods}


def analyse(table: Table) -> dict:
    """The ratios of analysis.json: reductions, speedups and their averages (full precision)."""
    params = param_reduction(table)
    memory = per_family(table, lambda fft, row: reduction(fft.memory_mb, row.memory_mb))
    speedup = per_family(table, lambda fft, row: fft.inference_s / row.inference_s)
    return {
        "param_reduction": params,
        "average_param_reduction": {method: {str(rank): _average([ranks[str(rank)] for ranks in by_family.values()])
                                             for rank in table.ranks}
                                    for method, by_family in params.items()},
        "memory_reduction": memory,
        "average_memory_reduction": {m: _average(list(v.values())) for m, v in memory.items()},
        "speedup": speedup,
        "average_speedup": {m: _average(list(v.values())) for m, v in speedup.items()},
    }


def kd_lora_vs_lora(table: Table) -> dict:
    """{family: {"memory_ratio": KD-LoRA / LoRA memory, "speedup": LoRA time / KD-LoRA time,
    "param_ratio": {rank: KD-LoRA / LoRA parameters}}} for families with both rows."""
    result = {}
    for family in table.families:
        lora, kd = table.row(family, LORA), table.row(family, KD_LORA)
        if lora and kd:
            result[family] = {"memory_ratio": kd.memory_mb / lora.memory_mb,
                              "speedup": lora.inference_s / kd.inference_s,
                              "param_ratio": {str(r): kd.params_m[r] / lora.params_m[r] for r in table.ranks}}
    return result


def architecture(model: str) -> Architecture | None:
    """Our registry's architecture of that name (display or hub name), if we have it."""
    for family in FAMILIES.values():
        for arch in (family.teacher, family.student):
            if name_key(model) in (name_key(arch.display_name), name_key(arch.hub_name)):
                return arch
    return None


def _shape(arch: Architecture) -> tuple[int, int]:
    """(encoder layers, hidden width) of an architecture, from its bundled config."""
    config = arch.config_dict()
    layers = arch.depth or config.get("num_hidden_layers") or config["n_layers"]
    return layers, config.get("hidden_size") or config["dim"]


def lora_params_per_rank(arch: Architecture) -> int:
    """Adapter parameters one unit of rank adds with LoRA on query and value: A (d x r) and B (r x d), twice a layer."""
    layers, width = _shape(arch)
    return 2 * 2 * width * layers


def _fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of value against rank."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = mean(xs), mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


# No encoder fine-tuned here has ten billion trainable parameters: a bare cell this large is a raw count.
RAW_COUNT_M = 10_000


def _check(kind: str, row, message: str) -> dict:
    return {"check": kind, "family": row.family, "model": row.model, "method": row.method, "message": message}


def sanity_checks(table: Table) -> list[dict]:
    """Figures that cannot be right, each {"check", "family", "model", "method", "message"}."""
    found = []
    for row in table.rows:
        counts = [(rank, row.params_m[rank]) for rank in table.ranks]
        fft = table.row(row.family, FFT)
        if max(v for _, v in counts) >= RAW_COUNT_M:
            found.append(_check("raw-count", row, f"{row.model} {row.method} trains {max(v for _, v in counts):,.0f}M "
                                "parameters by the table: bare numbers are millions; write raw counts with a unit "
                                "(294912 as 294.912K or 0.294912M)"))
        if row.method == FFT:
            if len({v for _, v in counts}) > 1:
                found.append(_check("fft-varies-with-rank", row, f"FFT of {row.model} trains every weight, yet its "
                                    "count changes with the LoRA rank"))
            continue
        over = [rank for rank, value in counts if value > fft.params_m[rank]]
        if over:
            found.append(_check("more-than-fft", row, f"{row.method} on {row.model} trains more parameters than FFT "
                                f"of {row.family} at rank {', '.join(map(str, over))}"))
        if len(counts) >= 2:
            intercept, slope = _fit_line(counts)
            worst = max(abs(value - (intercept + slope * rank)) / value for rank, value in counts)
            if worst > 0.05 or intercept < -0.05 * counts[0][1]:
                found.append(_check("not-linear-in-rank", row, f"{row.method} counts of {row.model} "
                                    f"({', '.join(f'{v:g}M' for _, v in counts)} at ranks "
                                    f"{', '.join(str(r) for r, _ in counts)}) do not grow linearly with the rank, "
                                    "as LoRA adapters (plus a fixed head) do"))
            arch = architecture(row.model)
            if arch is not None and slope > 0:
                expected = lora_params_per_rank(arch)
                factor = slope * 1e6 / expected
                if not 0.9 <= factor <= 1.1:
                    layers, width = _shape(arch)
                    found.append(_check("adapter-size", row, f"LoRA on query and value of {row.model} ({layers} "
                                        f"layers, {width} wide) adds {expected:,} parameters per rank "
                                        f"({expected * table.ranks[0]:,} at rank {table.ranks[0]}); the table's "
                                        f"counts grow by {slope * 1e6:,.0f} per rank: {factor:.1f}× that"))
        if row.method == KD_LORA:
            found.extend(_speed_checks(row, fft))
    return found


def _speed_checks(row, fft) -> list[dict]:
    speedup = fft.inference_s / row.inference_s
    if speedup <= 1:
        return [_check("student-not-faster", row, f"the distilled student {row.model} is not faster than its FFT "
                       f"teacher {fft.model} ({speedup:.2f}×); a smaller model cannot be slower")]
    student, teacher = architecture(row.model), architecture(fft.model)
    if student is None or teacher is None:
        return []
    (student_layers, student_width), (teacher_layers, teacher_width) = _shape(student), _shape(teacher)
    expected = teacher_layers * teacher_width ** 2 / (student_layers * student_width ** 2)
    if speedup < 0.75 * expected:
        return [_check("student-slow", row, f"{row.model} ({student_layers} layers) does about 1/{expected:.1f} of "
                       f"the encoder work of {fft.model} ({teacher_layers} layers), yet is only {speedup:.2f}× "
                       "faster: the timing is dominated by something else (padding, data loading, overhead)")]
    return []


def compare(table: Table, reference: Table) -> dict:
    """Reported (the reference) against measured (the table), cell by cell: ratio = reference / table; and the
    parameters each unit of rank adds (the adapter size, head excluded), row by row.

    Rows pair up by family and method (model names compared loosely); ranks by number.
    """
    cells, per_rank, unmatched = [], [], []
    mine = {(name_key(row.family), row.method): row for row in table.rows}
    paired = set()
    for ref in reference.rows:
        row = mine.get((name_key(ref.family), ref.method))
        if row is None:
            unmatched.append(f"{ref.model} {ref.method} is only in the reference")
            continue
        paired.add(id(row))
        figures = [(f"Rank {r} (M)", ref.params_m[r], row.params_m[r]) for r in table.ranks if r in ref.params_m]
        figures += [("Memory (MB)", ref.memory_mb, row.memory_mb), ("Inference (s)", ref.inference_s, row.inference_s)]
        cells += [{"family": row.family, "method": row.method, "model": row.model, "reference_model": ref.model,
                   "column": column, "reference": reported, "table": measured, "ratio": reported / measured}
                  for column, reported, measured in figures]
        common = [r for r in table.ranks if r in ref.params_m]
        if row.method != FFT and len(common) >= 2:
            reported = _fit_line([(r, ref.params_m[r]) for r in common])[1] * 1e6
            measured = _fit_line([(r, row.params_m[r]) for r in common])[1] * 1e6
            if measured > 0:
                per_rank.append({"family": row.family, "method": row.method, "model": row.model,
                                 "reference": reported, "table": measured, "ratio": reported / measured})
    unmatched += [f"{row.model} {row.method} is only in this table" for row in table.rows if id(row) not in paired]
    return {"file": reference.path, "cells": cells, "params_per_rank": per_rank, "unmatched": unmatched}
