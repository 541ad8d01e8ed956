import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdlora.analysis.units import MEMORY, PARAMS, TIME, UnitError, parse_value

QUANTITIES = [PARAMS, MEMORY, TIME]


@given(quantity=st.sampled_from(QUANTITIES), data=st.data(),
       value=st.floats(min_value=1e-3, max_value=1e7, allow_nan=False), space=st.sampled_from(["", " "]),
       upper=st.booleans(), thousands=st.booleans())
def test_a_value_formatted_in_a_unit_parses_back(quantity, data, value, space, upper, thousands):
    unit = data.draw(st.sampled_from(list(quantity.scales)))
    spelled = unit.upper() if upper else unit.lower()
    number = f"{value:,.6f}" if thousands else f"{value:.6f}"
    parsed = parse_value(f"{number}{space}{spelled}", quantity)
    assert parsed == pytest.approx(round(value, 6) * quantity.scales[unit], rel=1e-12)


@pytest.mark.parametrize(("text", "quantity", "expected"), [
    ("110M", PARAMS, 110.0), ("294.912K", PARAMS, 0.294912), ("1.2B", PARAMS, 1200.0), ("2.9", PARAMS, 2.9),
    ("1,332.0MB", MEMORY, 1332.0), ("1 GB", MEMORY, 1024.0), ("1.5 GiB", MEMORY, 1536.0),
    ("512 KiB", MEMORY, 0.5), ("2048kb", MEMORY, 2.0), ("463.5", MEMORY, 463.5),
    ("6.10s", TIME, 6.1), ("850 ms", TIME, 0.85), ("2 min", TIME, 120.0), ("3 sec", TIME, 3.0),
    (" 1,234,567 ", TIME, 1234567.0), ("1e3ms", TIME, 1.0),
])
def test_examples(text, quantity, expected):
    assert parse_value(text, quantity) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("text", "quantity", "message"), [
    ("2.9X", PARAMS, "unknown unit 'X' in '2.9X' (parameters in K, M or B; a bare number is in M)"),
    ("1.2 TB", MEMORY, "unknown unit 'TB'"),
    ("6 h", TIME, "unknown unit 'h'"),
    ("1,33", PARAMS, "'1,33' is not a number"),
    ("abc", TIME, "'abc' is not a number"),
    ("nan", MEMORY, "'nan' is not a number"),
    ("", PARAMS, "'' is not a number"),
])
def test_bad_cells_say_what_is_wrong(text, quantity, message):
    with pytest.raises(UnitError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_value(text, quantity)
