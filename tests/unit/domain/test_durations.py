"""One duration syntax: the config's and the CLI's parser reads exactly what rule files read."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain.durations import duration_seconds
from agent.triggers.units import parse_duration

_parts = st.lists(
    st.tuples(st.integers(min_value=0, max_value=999), st.sampled_from(["ms", "s", "m", "h", "d"])),
    min_size=1,
    max_size=3,
)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(parts=_parts)
def test_with_units_it_reads_what_rule_files_read(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert duration_seconds(text) == pytest.approx(parse_duration(text))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(text=st.text(max_size=12))
def test_anything_else_is_seconds_or_a_clear_error(text: str) -> None:
    try:
        seconds = duration_seconds(text)
    except ValueError as exc:
        assert "use e.g. 30s, 5m, 2h, 1h30m or seconds" in str(exc)
    else:
        assert math.isfinite(seconds)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200), ("1h30m", 5400), ("90", 90)])
def test_examples(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["inf", "nan", "5 minutes", "", "-"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        duration_seconds(text)
