"""Each version's resident memory against its memory limit, and whether an exit was an OOM.

The model server's resident memory (`process_resident_memory_bytes`) divided by the version's configured limit
(the container's memory limit) is the `model.memory_ratio` gauge. When the version then exits (stops answering,
or comes back as a new process) and its last reading was at or above `oom_ratio` of the limit, or the growth
between its last two readings, carried on to the moment the exit was noticed, reaches the limit, the exit counts as
an OOM (`health.oom`). A reading can be missed while a leaking server is busy allocating, which is why the trend
counts too. What the watch still cannot see: memory that jumps to the limit from a flat trend between readings
(one huge allocation) stays a plain crash.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

MB = 1024 * 1024


class MemoryWatch:
    def __init__(
        self, limits_mb: Mapping[str, float], oom_ratio: float = 0.9, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not 0 < oom_ratio <= 1:
            raise ValueError(f"oom_ratio must be in (0, 1], got {oom_ratio}")
        bad = {v: mb for v, mb in limits_mb.items() if not (math.isfinite(mb) and mb > 0)}
        if bad:
            raise ValueError(f"memory limits must be positive MB, got {bad}")
        self._limits = {v: mb * MB for v, mb in limits_mb.items()}
        self.oom_ratio = oom_ratio
        self._clock = clock
        # version -> the last two (time, ratio) readings of the running process, oldest first
        self._last: dict[str, list[tuple[float, float]]] = {}
        self._ooms: dict[str, float] = dict.fromkeys(self._limits, 0.0)

    def limit_bytes(self, version: str) -> float | None:
        return self._limits.get(version)

    def reading(self, version: str, resident_bytes: float | None) -> float | None:
        """Record a reading; the ratio to the limit, or None without a limit or a valid reading."""
        limit = self._limits.get(version)
        if limit is None or resident_bytes is None or not math.isfinite(resident_bytes) or resident_bytes < 0:
            return None
        ratio = resident_bytes / limit
        readings = self._last.setdefault(version, [])
        readings.append((self._clock(), ratio))
        del readings[:-2]
        return ratio

    def exited(self, version: str, how: str) -> bool:
        """The version's process went away (`how`: for the log). True when it counts as an OOM."""
        readings = self._last.pop(version, None)  # one exit is counted once, however it is noticed afterwards
        if not readings:
            return False
        last = readings[-1][1]
        projected = last
        if len(readings) == 2:
            (t0, r0), (t1, r1) = readings
            if t1 > t0 and r1 > r0:
                projected = r1 + (r1 - r0) / (t1 - t0) * max(self._clock() - t1, 0.0)
        if last < self.oom_ratio and projected < 1.0:
            return False
        self._ooms[version] += 1
        log.error(
            "version %s %s with its last memory reading at %.1f%% of its limit (%.1f%% projected at the exit, "
            "limit for an OOM %.0f%% read or 100%% projected): counted as an OOM",
            version,
            how,
            last * 100,
            projected * 100,
            self.oom_ratio * 100,
        )
        return True

    def oom_count(self, version: str) -> float | None:
        """OOM exits so far; None for a version without a limit (nothing is known, not zero)."""
        return self._ooms.get(version)
