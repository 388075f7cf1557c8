"""Times in reports: RFC 3339 in UTC, and parsing what operators type (`--at`, `--since`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from agent.domain.durations import duration_seconds, has_unit


def format_time(at: datetime | None) -> str:
    """RFC 3339 in UTC with a Z, seconds precision unless there are fractions; "-" for None."""
    if at is None:
        return "-"
    at = at.astimezone(UTC)
    text = at.isoformat(timespec="milliseconds" if at.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def from_pb(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def from_unix(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def require_aware(at: datetime, name: str = "time") -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{name} {at.isoformat()} has no timezone; give one (e.g. a trailing Z for UTC)")
    return at


def parse_when(text: str, now: datetime) -> datetime:
    """An RFC 3339 time ("2024-08-12T09:30:00Z", a timezone is required), or an age before `now` ("7d", "12h",
    "30m", "90s", "2w", "1d12h": the agent's one duration syntax). Raises ValueError with an example of each form."""
    value = text.strip()
    if has_unit(value):
        return now - timedelta(seconds=duration_seconds(value))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r}; use RFC 3339 (2024-08-12T09:30:00Z) or an age (90s, 30m, 12h, 7d, 2w)"
        ) from None
    return require_aware(parsed, repr(text))
