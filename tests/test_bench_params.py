"""Exact parameter counts of the six paper architectures, built from their bundled configs on the meta device."""

import pytest

from kdlora.families import FAMILIES
from kdlora.methods import METHODS
from kdlora.modeling import count, forward_flops_per_token
from kdlora.params import ParamCounts

# (family, method) -> (adapters r8, adapters r64, trainable r8, trainable r64, total with adapters merged)
EXPECTED = {
    ("bert", "lora"): (294_912, 2_359_296, 296_450, 2_360_834, 109_483_778),
    ("bert", "kd-lora"): (147_456, 1_179_648, 739_586, 1_771_778, 66_955_010),
    ("roberta", "lora"): (294_912, 2_359_296, 887_042, 2_951_426, 124_647_170),
    ("roberta", "kd-lora"): (147_456, 1_179_648, 739_586, 1_771_778, 82_119_938),
    ("deberta", "lora"): (294_912, 2_359_296, 887_042, 2_951_426, 184_423_682),
    ("deberta", "kd-lora"): (147_456, 1_179_648, 739_586, 1_771_778, 141_896_450),
}


@pytest.mark.parametrize("family,method", list(EXPECTED))
def test_lora_counts_are_exact_at_ranks_8_and_64(family, method):
    adapters8, adapters64, trainable8, trainable64, total = EXPECTED[family, method]
    assert count(FAMILIES[family], METHODS[method], 8) == ParamCounts(adapters8, trainable8, total)
    assert count(FAMILIES[family], METHODS[method], 64) == ParamCounts(adapters64, trainable64, total)
    # the head trains at every rank; only the adapters scale, exactly 8x from rank 8 to 64
    assert trainable8 - adapters8 == trainable64 - adapters64
    assert adapters64 == 8 * adapters8


@pytest.mark.parametrize("family,total", [("bert", 109_483_778), ("roberta", 124_647_170),
                                          ("deberta", 184_423_682)])
def test_fft_trains_everything_and_ignores_rank(family, total):
    assert count(FAMILIES[family], METHODS["fft"], 8) == ParamCounts(0, total, total)
    assert count(FAMILIES[family], METHODS["fft"], 64) == ParamCounts(0, total, total)


def test_query_value_lora_is_two_rank_r_matrix_pairs_per_layer():
    # 12 layers x (query, value) x (A: 768 x r + B: r x 768): the paper's "2.9M" at rank 8 is 10x this
    assert 12 * 2 * (768 * 8 + 8 * 768) == 294_912


def test_minilm_student_is_derived_with_half_the_layers():
    teacher = count(FAMILIES["minilm"], METHODS["lora"], 8)
    student = count(FAMILIES["minilm"], METHODS["kd-lora"], 8)
    assert teacher.adapter == 6 * 2 * 2 * 384 * 8
    assert student.adapter == 3 * 2 * 2 * 384 * 8


@pytest.mark.parametrize("family", list(FAMILIES))
def test_student_does_half_the_teachers_flops(family):
    fam = FAMILIES[family]
    assert forward_flops_per_token(fam.teacher, 32) == 2 * forward_flops_per_token(fam.student, 32)
