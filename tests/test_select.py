"""Which figure a cell shows: the best configuration's median, or the median of the top k (the paper's)."""

import pytest

from kdlora.analysis.quality import aggregate, table_i
from kdlora.analysis.select import Selection, select
from kdlora.errors import UserError
from test_quality import rec

# eight configurations of one cell, two seeds each: configuration i scores 0.80 + i / 100 and 0.80 + i / 100 + 0.02
RECORDS = [rec("rte", "bert", "lora", 8, seed, 0.80 + i / 100 + 0.02 * (seed - 1), configuration=f"c{i}",
               config={"learning_rate": i}) for i in range(8) for seed in (1, 2)]


def test_default_lists_every_configuration_and_shows_the_best():
    configurations = aggregate(RECORDS)
    assert len(configurations) == 8 and configurations[3].median == pytest.approx(0.84)  # 0.83 and 0.85
    [cell] = select(configurations)
    assert (cell.configuration, cell.median, cell.configurations, cell.selected) == ("c7", pytest.approx(0.88), 8, 1)


def test_top_k_median_is_the_median_of_the_k_best_configurations():
    [cell] = select(aggregate(RECORDS), "top-k-median", k=6)
    # configuration medians 0.81 .. 0.88; the best six are 0.83 .. 0.88, their median (0.85 + 0.86) / 2
    assert cell.median == pytest.approx(0.855) and cell.selected == 6 and cell.configurations == 8
    assert cell.runs == 12 and table_i([cell]).rows[0][2]["BERT-base LoRA"] == pytest.approx(85.5)
    [few] = select(aggregate(RECORDS[:4]), "top-k-median", k=6)  # two configurations: both kept
    assert few.selected == 2 and few.median == pytest.approx((0.81 + 0.82) / 2)


def test_a_lora_cell_ranks_all_its_configurations_over_every_rank():
    """Finding: cells were (task, family, method, rank): a LoRA cell of paper.toml ranked 8 configurations, not 24."""
    # the paper's LoRA grid: ranks 8, 16, 32 x 8 configurations, one seed; rank r's configuration i scores
    # 0.80 + i / 100 + r / 1000. The best six: r32 i7 .902, r32 i6 .892, r16 i7 .886, r32 i5 .882, r8 i7 .878,
    # r16 i6 .876: their median (.886 + .882) / 2
    grid = [rec("rte", "bert", "lora", r, 42, 0.80 + i / 100 + r / 1000, configuration=f"r{r}c{i}",
                config={"rank": r, "lora_alpha": i}) for r in (8, 16, 32) for i in range(8)]
    configurations = aggregate(grid)
    assert len(configurations) == 24 and {a.configurations for a in configurations} == {24}
    [cell] = select(configurations, "top-k-median", k=6)
    assert cell.configurations == 24 and cell.selected == 6 and cell.ranks == [8, 16, 32] and cell.rank is None
    assert cell.median == pytest.approx((0.886 + 0.882) / 2)
    [best] = select(configurations)  # median: the one best configuration of the 24
    assert (best.configuration, best.rank, best.ranks, best.configurations) == ("r32c7", 32, [32], 24)
    table = table_i([cell])
    assert table.ranks == {"BERT-base LoRA": [8, 16, 32]} and table.rows[0][2]["BERT-base LoRA"] == \
        pytest.approx(88.4)


def test_bad_selection_settings_are_user_errors():
    with pytest.raises(UserError, match="--select-epoch: 'first' is not one of best, last"):
        Selection(select_epoch="first")
    with pytest.raises(UserError, match="--k: 0 is not a positive integer"):
        Selection(k=0)
