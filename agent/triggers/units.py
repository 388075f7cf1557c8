"""Durations ("30s", "5m", "1h30m" or seconds) and ratios ("5%" or 0.05) as validated pydantic types."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field

_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(value: Any) -> Any:
    """ "30s", "5m", "1h30m", "250ms" -> seconds; numbers pass through. Anything else is left to pydantic."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _DURATION.fullmatch(text):
            return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m or seconds") from None
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
