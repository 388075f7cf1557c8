"""The one duration syntax of the agent: "250ms", "30s", "5m", "2h", "1d", "2w", "1h30m", or plain seconds.

Rule files (agent.triggers.units), the config file's `*_s` fields, the CLI's options and the ages of `--at` /
`--since` (agent.reporting.when) all read durations through here.
"""

from __future__ import annotations

import math
import re
from typing import Final

_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
HINT: Final = "use e.g. 30s, 5m, 2h, 1h30m or seconds"


def has_unit(text: str) -> bool:
    """True for a duration written with units ("90s", "1d12h"), as opposed to bare seconds."""
    return _WHOLE.fullmatch(text.strip().replace(" ", "")) is not None


def duration_seconds(text: str) -> float:
    """Seconds in `text`; ValueError naming the value and the syntax otherwise (never inf or NaN)."""
    value = text.strip().replace(" ", "")
    if _WHOLE.fullmatch(value):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"invalid duration {text!r}: {HINT}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: {HINT}")
    return seconds
