"""The report's prose, generated from the computed ratios: every number in a sentence comes from the analysis."""

from __future__ import annotations

from kdlora.analysis.paper import paper_scores
from kdlora.analysis.table import Table
from kdlora.methods import paper_trio

# the paper's three methods, as its tables label them (the labels are the registry's)
FFT, LORA, KD_LORA = (m.label for m in paper_trio())

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def count_words(n: int, noun: str) -> str:
    """`three model families`, `12 LoRA ranks`: small counts spelled out, the noun plural unless n is 1."""
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    if n == 1:
        return f"{word} {noun}"
    return f"{word} {noun[:-1]}ies" if noun.endswith("y") else f"{word} {noun}s"


def percent_range(values: list[float]) -> str:
    """`97.4–98.4%` (or `97.4%` when they round alike) of fractions, lowest first, one decimal."""
    low, high = f"{min(values) * 100:.1f}", f"{max(values) * 100:.1f}"
    return f"{low}%" if low == high else f"{low}–{high}%"


def change(fraction: float, less: str = "less", more: str = "more") -> str:
    """`≈65% less` for a reduction of 0.653, `≈12% more` for -0.12 (`≈99.5%`, not `≈100%`, for 0.995)."""
    percent = f"{abs(fraction) * 100:.0f}"
    if percent in ("0", "100") and abs(fraction) not in (0, 1):
        percent = f"{abs(fraction) * 100:.1f}"
    return f"≈{percent}% {less if fraction >= 0 else more}"


def pace(speedup: float) -> str:
    """`38% faster`, `3% slower` or `as fast` for an FFT-time / method-time ratio."""
    percent = round(abs(speedup - 1) * 100)
    return "as fast" if percent == 0 else f"{percent}% {'faster' if speedup > 1 else 'slower'}"


def parameter_findings(table: Table, analysis: dict) -> list[str]:
    lines = []
    averages = analysis["average_param_reduction"]
    for method, by_family in analysis["param_reduction"].items():
        ranges = ", ".join(f"**{percent_range([ranks[str(r)] for ranks in by_family.values()])}** at rank {r}"
                           for r in table.ranks)
        verb = "reduces trainable parameters by"
        if method == KD_LORA and LORA in averages and all(
                averages[KD_LORA][str(r)] > averages[LORA][str(r)] for r in table.ranks):
            verb = "achieves even higher reduction:"
        lines.append(f"- **{method}** {verb} {ranges} (across {count_words(len(by_family), 'model family')}).")
    students = [row.model for row in table.rows if row.method == KD_LORA]
    if students:
        lines.append(f"- KD-LoRA trains LoRA adapters on a distilled student ({', '.join(students)}), which has "
                     "fewer parameters than the base model FFT trains; its reduction combines both savings.")
    return lines


def memory_findings(analysis: dict, versus: dict) -> list[str]:
    lines = []
    for method, by_family in analysis["memory_reduction"].items():
        average = analysis["average_memory_reduction"][method]
        verb = "reduces memory" if average >= 0 else "increases memory"
        spread = f" (range {percent_range(list(by_family.values()))} across models)" if len(by_family) > 1 else ""
        lines.append(f"- **{method}** {verb} by **≈{abs(average) * 100:.0f}%** on average{spread}.")
    if versus:
        ratios = [v["memory_ratio"] for v in versus.values()]
        mean_ratio = sum(ratios) / len(ratios)
        lines.append(f"- Against LoRA directly, KD-LoRA needs {change(1 - mean_ratio)} memory on average "
                     f"(KD-LoRA / LoRA = {mean_ratio:.2f}; range {min(ratios):.2f}–{max(ratios):.2f}).")
    return lines


def speed_findings(analysis: dict, versus: dict) -> list[str]:
    lines = []
    for method, by_family in analysis["speedup"].items():
        average = analysis["average_speedup"][method]
        ranked = sorted(by_family.items(), key=lambda item: -item[1])
        per_model = ", ".join(f"{family} {value:.2f}×" for family, value in ranked)
        lines.append(f"- **{method}** runs at **{average:.2f}×** FFT's speed on average ({pace(average)}); per "
                     f"model, fastest first: {per_model}.")
    if versus:
        speedups = [v["speedup"] for v in versus.values()]
        mean_speedup = sum(speedups) / len(speedups)
        lines.append(f"- Against LoRA directly, KD-LoRA is **{mean_speedup:.2f}×** as fast on average "
                     f"(range {min(speedups):.2f}–{max(speedups):.2f}×).")
    if any(v < 1 for v in analysis["speedup"].get(LORA, {}).values()):
        lines.append("- LoRA slower than FFT means the adapters ran unmerged: merged into the weights, LoRA computes "
                     "exactly what FFT's model computes, at the same speed.")
    return lines


def tradeoff_findings(table: Table, analysis: dict) -> list[str]:
    rank = 8 if 8 in table.ranks else table.ranks[0]
    lines = []
    for method in analysis["param_reduction"]:
        params = analysis["average_param_reduction"][method][str(rank)]
        memory = analysis["average_memory_reduction"][method]
        speed = analysis["average_speedup"][method]
        lines.append(f"- **{method}**: {change(params, 'fewer')} trainable parameters at rank {rank}, "
                     f"{change(memory)} memory and inference {pace(speed)} than FFT, on average.")
    scores = paper_scores(table.families)
    if scores:
        quoted = "; ".join(f"{family} " + ", ".join(f"{m} {s:.1f}" for m, s in by_method.items())
                           for family, by_method in scores.items())
        lines.append(f"- Table II holds no accuracy. The paper's Table I (GLUE dev average) reports: {quoted}.")
    averages = analysis["average_speedup"], analysis["average_memory_reduction"]
    if all((LORA in a and KD_LORA in a) for a in averages):
        if averages[0][KD_LORA] > averages[0][LORA] and averages[1][KD_LORA] > averages[1][LORA]:
            lines.append("\nWhere inference latency and memory matter most, KD-LoRA is the cheaper choice on both "
                         "counts in this table; where the highest score matters, LoRA keeps the full base model.")
        else:
            lines.append("\nKD-LoRA is not cheaper than LoRA on both memory and inference time in this table; check "
                         "the sanity section below before drawing conclusions from it.")
    return lines


def sanity_lines(checks: list[dict]) -> list[str]:
    if not checks:
        return ["No figure fails the checks: parameter counts grow linearly with the rank, no method trains more "
                "parameters than FFT, every distilled student is faster than its teacher, and LoRA adapter counts "
                "match query+value LoRA on the architectures we know."]
    return [f"- **{check['check']}** ({check['family']}, {check['method']}): {check['message']}." for check in checks]
