import pytest

from kdlora.analysis.findings import change, count_words, pace, percent_range
from kdlora.analysis.paper import paper_scores


@pytest.mark.parametrize(("n", "noun", "expected"), [
    (1, "model family", "one model family"), (3, "model family", "three model families"),
    (4, "LoRA rank", "four LoRA ranks"), (12, "LoRA rank", "12 LoRA ranks")])
def test_count_words(n, noun, expected):
    assert count_words(n, noun) == expected


def test_percent_range_rounds_each_end_and_collapses_equal_ends():
    assert percent_range([0.9841530, 0.9736364, 0.9768]) == "97.4–98.4%"
    assert percent_range([0.9768, 0.97681]) == "97.7%"


@pytest.mark.parametrize(("fraction", "expected"), [
    (0.6531, "≈65% less"), (-0.12, "≈12% more"), (0.9952, "≈99.5% less"), (0.0004, "≈0.0% less"), (1, "≈100% less")])
def test_change(fraction, expected):
    assert change(fraction) == expected


@pytest.mark.parametrize(("speedup", "expected"), [(1.382, "38% faster"), (0.968, "3% slower"), (1.003, "as fast")])
def test_pace(speedup, expected):
    assert pace(speedup) == expected


def test_paper_scores_come_from_the_bundled_table_i():
    assert paper_scores(("BERT-base", "bert-base-uncased", "ALBERT")) == {
        "BERT-base": {"FFT": 80.8, "LoRA": 80.1, "KD-LoRA": 78.9},
        "bert-base-uncased": {"FFT": 80.8, "LoRA": 80.1, "KD-LoRA": 78.9}}
