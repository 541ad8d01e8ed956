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


def test_bad_selection_settings_are_user_errors():
    with pytest.raises(UserError, match="--select-epoch: 'first' is not one of best, last"):
        Selection(select_epoch="first").validate()
    with pytest.raises(UserError, match="--k: 0 is not a positive integer"):
        Selection(k=0).validate()
