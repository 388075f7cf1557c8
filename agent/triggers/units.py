"""Durations ("30s", "5m", "1h30m" or seconds) and ratios ("5%" or 0.05) as validated pydantic types."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from agent.domain.durations import duration_seconds


def parse_duration(value: Any) -> Any:
    """ "30s", "5m", "1h30m", "250ms" -> seconds (agent.domain.durations: the agent's one duration syntax); numbers
    pass through. Anything else is left to pydantic."""
    if isinstance(value, str):
        return duration_seconds(value)
    return value


def parse_ratio(value: Any) -> Any:
    """ "5%" -> 0.05; numbers pass through."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"invalid ratio {value!r}: use e.g. 5% or 0.05") from None
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Ratio = Annotated[float, BeforeValidator(parse_ratio), Field(ge=0, le=1)]


@lru_cache(maxsize=4096)
def format_duration(seconds: float) -> str:
    """Seconds -> "30s", "5m", "1h30m"."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    total = round(seconds)
    if total != seconds and seconds < 60:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts) or "0s"


def format_percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def format_count(n: float) -> str:
    return f"{n:,.0f}"
