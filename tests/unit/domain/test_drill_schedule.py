"""The drill schedule: the documented five-field cron subset, in UTC."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain.drill_schedule import Schedule, ScheduleError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_monthly_drill_fires_at_3_on_the_first():
    s = Schedule.parse("0 3 1 * *")
    assert s.next_after(at("2026-11-30T14:00")) == at("2026-12-01T03:00")
    assert s.next_after(at("2026-12-01T03:00")) == at("2027-01-01T03:00")  # strictly after


def test_day_of_week_with_sunday_as_0_and_7():
    tuesday_after = at("2026-12-01T10:00")  # a Tuesday
    assert Schedule.parse("30 2 * * 0").next_after(tuesday_after) == at("2026-12-06T02:30")
    assert Schedule.parse("30 2 * * 7").next_after(tuesday_after) == at("2026-12-06T02:30")


def test_restricted_day_of_month_and_week_fire_on_either_as_cron_does():
    s = Schedule.parse("0 0 15 * 1")  # the 15th, or any Monday
    assert s.next_after(at("2026-12-01T00:00")) == at("2026-12-07T00:00")  # Monday before the 15th


def test_lists_ranges_and_steps():
    s = Schedule.parse("*/20 9-10 * * 1-5")
    assert s.minutes == frozenset({0, 20, 40})
    assert s.hours == frozenset({9, 10})
    assert s.next_after(at("2026-12-04T10:45")) == at("2026-12-07T09:00")  # Friday 10:45 -> Monday 09:00
    assert Schedule.parse("5,35 * * * *").minutes == frozenset({5, 35})


def test_a_date_that_never_comes_gives_none():
    assert Schedule.parse("0 0 30 2 *").next_after(at("2026-01-01T00:00")) is None


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("0 3 1 *", "5 fields"),
        ("60 3 1 * *", "minute"),
        ("0 24 * * *", "hour"),
        ("0 0 0 * *", "day of month"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * 8", "day of week"),
        ("0 0 * * MON", "day of week"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "minute"),
        ("@monthly", "5 fields"),
    ],
)
def test_bad_expressions_are_refused_naming_the_field(expression: str, names: str):
    with pytest.raises(ScheduleError, match=names):
        Schedule.parse(expression)


def _brute_force(s: Schedule, after: datetime, limit: timedelta) -> datetime | None:
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t < after + limit:
        weekday = (t.weekday() + 1) % 7
        in_month, in_week = t.day in s.days, weekday in s.weekdays
        day = (in_month and in_week) if (s.any_day or s.any_weekday) else (in_month or in_week)
        if t.minute in s.minutes and t.hour in s.hours and t.month in s.months and day:
            return t
        t += timedelta(minutes=1)
    return None


field = st.sampled_from(["*", "*/2", "0", "1-3", "5,7"])


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")) // 10 or 1, deadline=None)
@given(
    minute=st.sampled_from(["*/15", "0", "7,59"]),
    hour=st.sampled_from(["*", "3", "22-23"]),
    day=field,
    weekday=st.sampled_from(["*", "0", "1-5", "6"]),
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
)
def test_next_after_is_the_first_matching_minute(minute, hour, day, weekday, start):
    s = Schedule.parse(f"{minute} {hour} {day if day != '0' else '1'} * {weekday}")
    after = start.replace(tzinfo=UTC)
    expected = _brute_force(s, after, timedelta(days=62))
    got = s.next_after(after)
    if expected is not None:
        assert got == expected
    else:
        assert got is None or got >= after + timedelta(days=62)
