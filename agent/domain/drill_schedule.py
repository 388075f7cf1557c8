"""When scheduled drills run: a five-field cron expression (minute hour day-of-month month day-of-week), in UTC.

The documented subset (docs/drills.md): each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a
comma-separated list of those; day of week 0-6 with 0 = Sunday (7 is Sunday too). No names (`MON`, `JAN`), no
`L`/`W`/`#`, no `@monthly`. As in cron, when both day of month and day of week are restricted, a day matching either
one fires. The subset covers the monthly or weekly slot a drill needs; it is small enough that a library is not
worth the dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


class ScheduleError(ValueError):
    """A schedule that is not a valid expression of the subset; the message names the field."""


_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_SEARCH_LIMIT = timedelta(days=366 * 5)  # "0 0 30 2 *" (30 February) never fires


def _parse_field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        spec, _, step_text = part.partition("/")
        if _ and not step_text.isdigit():
            raise ScheduleError(f"{name}: step in {part!r} must be a positive number")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ScheduleError(f"{name}: step in {part!r} must be a positive number")
        if spec == "*":
            start, end = lo, hi
        else:
            first, dash, last = spec.partition("-")
            if not first.isdigit() or (dash and not last.isdigit()):
                raise ScheduleError(f"{name}: {part!r} is not *, a number, a range a-b or a step (*/n, a-b/n)")
            start, end = int(first), int(last) if dash else int(first)
            if step_text and not dash:
                end = hi  # "5/15" means 5-max/15, as in most crons
            if not (lo <= start <= hi and lo <= end <= hi) or start > end:
                raise ScheduleError(f"{name}: {part!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Schedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is `*`
    any_weekday: bool  # day of week is `*`

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        parts = expression.split()
        if len(parts) != 5:
            raise ScheduleError(
                f"schedule {expression!r} must have 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)}"
            )
        fields = [_parse_field(p, n, lo, hi) for p, (n, lo, hi) in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in fields[4])
        return cls(expression, fields[0], fields[1], fields[2], fields[3], weekdays, parts[2] == "*", parts[4] == "*")

    def _day_matches(self, at: datetime) -> bool:
        in_month = at.day in self.days
        weekday = (at.weekday() + 1) % 7  # Python: Monday = 0; cron: Sunday = 0
        in_week = weekday in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, after: datetime) -> datetime | None:
        """The first minute strictly after `after` (timezone-aware; compared in UTC) that the schedule names, or
        None when it names none in the next five years."""
        at = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = at + _SEARCH_LIMIT
        while at < limit:
            if at.month not in self.months:
                at = (at.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(at):
                at = at.replace(hour=0, minute=0) + timedelta(days=1)
                continue
            if at.hour not in self.hours:
                at = at.replace(minute=0) + timedelta(hours=1)
                continue
            if at.minute not in self.minutes:
                at += timedelta(minutes=1)
                continue
            return at
        return None
