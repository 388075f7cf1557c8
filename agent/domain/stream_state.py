"""Per-version state built from a stream of finished requests (Envoy's access log), in bounded memory.

For each version the state keeps, from the first entry on:

* cumulative counters under the same names Envoy's stats source uses (`envoy.rq_total`, `envoy.rq_5xx`,
  `envoy.rq_4xx`, `envoy.rq_code.<code>` for 400..599, `envoy.cx_connect_fail`) plus the ones only the stream
  sees (timeouts, no healthy upstream, resets);
* the latency histogram `envoy.rq_time_ms` in the bucket layout the Envoy bootstrap configures, so the rules and
  verdicts written against Envoy's stats read the stream unchanged;
* a latency sketch (DDSketch, 1 % relative accuracy) per time slot, the last few slots merged on demand, for
  quantiles with a guaranteed relative error whatever the bucket layout;
* a ring of the most recent raw entries (time, latency, error flag, confidence) for statistical judges.

Memory per version is fixed: the ring's arrays (`ring_size` x 25 bytes), `sketch_slots` sketches of at most
`_SKETCH_BINS` bins, and a few dozen counters. Entries for clusters that are not a known version are counted in
`unattributed` and dropped.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ddsketch import LogCollapsingLowestDenseDDSketch

from agent.domain.signals import Histogram, Sample, Signal

_SKETCH_ACCURACY: Final = 0.01
_SKETCH_BINS: Final = 512  # 1 % accuracy over 0.05 ms .. 60 s needs ~700 bins; the lowest bins collapse first


class StreamSignal:
    """Counters only the access-log stream provides (per version, cumulative)."""

    RQ_4XX: Final = Signal.ENVOY_RQ_4XX
    RQ_TIMEOUT: Final = "envoy.rq_timeout"  # response flag UT
    NO_HEALTHY_UPSTREAM: Final = "envoy.rq_no_healthy_upstream"  # UH
    RESET: Final = "envoy.rq_reset"  # LR, UR, UC
    CONNECT_FAIL: Final = Signal.ENVOY_CX_CONNECT_FAIL  # UF, URX: the same meaning as Envoy's counter


class Flag:
    """Response flags of one entry, as Envoy's access log reports them (the subset the agent counts)."""

    TIMEOUT: Final = 1  # UT
    CONNECT_FAILURE: Final = 2  # UF, URX
    NO_ROUTE: Final = 4  # NR
    NO_HEALTHY_UPSTREAM: Final = 8  # UH
    RESET: Final = 16  # LR, UR, UC


_FLAG_COUNTERS: Final = (
    (Flag.TIMEOUT, StreamSignal.RQ_TIMEOUT),
    (Flag.CONNECT_FAILURE, StreamSignal.CONNECT_FAIL),
    (Flag.NO_HEALTHY_UPSTREAM, StreamSignal.NO_HEALTHY_UPSTREAM),
    (Flag.RESET, StreamSignal.RESET),
)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One finished request."""

    cluster: str  # the upstream cluster (one per version); "" when none was chosen (no route)
    status: int  # HTTP response code, 0 when none was sent
    latency_ms: float | None  # upstream request time; None when the request never reached an upstream
    flags: int = 0  # Flag bits
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class RecentEntry:
    ts: float
    latency_ms: float  # NaN when unknown
    error: bool  # 5xx or no response
    confidence: float | None


class _Ring:
    """The last `size` entries of one version in flat arrays (no object per entry)."""

    __slots__ = ("_confidence", "_error", "_latency", "_next", "_ts", "count", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ts = array("d", bytes(8 * size))
        self._latency = array("d", bytes(8 * size))
        self._confidence = array("d", bytes(8 * size))
        self._error = array("b", bytes(size))
        self._next = 0
        self.count = 0

    def add(self, ts: float, latency_ms: float, error: bool, confidence: float) -> None:
        i = self._next
        self._ts[i], self._latency[i], self._confidence[i], self._error[i] = ts, latency_ms, confidence, error
        self._next = (i + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def entries(self, since: float = -math.inf) -> list[RecentEntry]:
        """Oldest first."""
        start = (self._next - self.count) % self.size
        out: list[RecentEntry] = []
        for k in range(self.count):
            i = (start + k) % self.size
            if self._ts[i] >= since:
                c = self._confidence[i]
                out.append(RecentEntry(self._ts[i], self._latency[i], bool(self._error[i]), None if c != c else c))
        return out


class _VersionState:
    __slots__ = ("counters", "cumulative", "latency_count", "latency_sum", "ring", "sketches")

    def __init__(self, n_buckets: int, ring_size: int) -> None:
        self.counters: dict[str, float] = {
            Signal.ENVOY_RQ_TOTAL: 0.0,
            Signal.ENVOY_RQ_5XX: 0.0,
            StreamSignal.RQ_4XX: 0.0,
            **{name: 0.0 for _, name in _FLAG_COUNTERS},
        }
        self.cumulative = [0.0] * n_buckets  # per-bucket counts; made cumulative when sampled
        self.latency_sum = 0.0
        self.latency_count = 0.0
        self.ring = _Ring(ring_size)
        self.sketches: dict[int, LogCollapsingLowestDenseDDSketch] = {}  # time slot -> sketch


class StreamState:
    """Everything the agent keeps from the access-log stream. Not thread-safe: one event loop feeds and reads it."""

    def __init__(
        self,
        clusters: Mapping[str, str],  # cluster name -> version
        latency_bounds_ms: Iterable[float],
        *,
        ring_size: int = 4096,
        sketch_slot_s: float = 10.0,
        sketch_slots: int = 6,
    ) -> None:
        bounds = sorted(float(b) for b in latency_bounds_ms if math.isfinite(b))
        self.bounds: tuple[float, ...] = (*bounds, math.inf)
        if ring_size < 1 or sketch_slot_s <= 0 or sketch_slots < 1:
            raise ValueError("ring_size and sketch_slots must be >= 1 and sketch_slot_s > 0")
        self._clusters = dict(clusters)
        self._slot_s = sketch_slot_s
        self._slots = sketch_slots
        self._versions = {v: _VersionState(len(self.bounds), ring_size) for v in self._clusters.values()}
        self.entries = 0  # every entry seen, attributed or not
        self.unattributed = 0  # no cluster (no route) or a cluster that is no known version
        self.last_entry_at: float | None = None

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(self._versions)

    def add(self, entry: LogEntry, now: float) -> None:
        self.entries += 1
        self.last_entry_at = now
        version = self._clusters.get(entry.cluster)
        state = self._versions.get(version) if version is not None else None
        if state is None:
            self.unattributed += 1
            return
        counters = state.counters
        counters[Signal.ENVOY_RQ_TOTAL] += 1
        if entry.status >= 500:  # as Envoy's rq_5xx; no response at all (0) is an error only for the ring
            counters[Signal.ENVOY_RQ_5XX] += 1
        elif entry.status >= 400:
            counters[StreamSignal.RQ_4XX] += 1
        if 400 <= entry.status <= 599:  # per code, as Envoy's upstream_rq_<code>: at most 200 counters
            code = Signal.envoy_code(entry.status)
            counters[code] = counters.get(code, 0.0) + 1
        if entry.flags:
            for bit, name in _FLAG_COUNTERS:
                if entry.flags & bit:
                    counters[name] += 1
        latency = entry.latency_ms
        if latency is not None and math.isfinite(latency) and latency >= 0:
            state.cumulative[bisect_left(self.bounds, latency)] += 1
            state.latency_sum += latency
            state.latency_count += 1
            self._sketch(state, now).add(max(latency, 1e-3))
        else:
            latency = math.nan
        confidence = entry.confidence
        state.ring.add(
            now, latency, entry.status >= 500 or entry.status == 0, math.nan if confidence is None else confidence
        )

    def _sketch(self, state: _VersionState, now: float) -> LogCollapsingLowestDenseDDSketch:
        slot = int(now // self._slot_s)
        sketch = state.sketches.get(slot)
        if sketch is None:
            for old in [s for s in state.sketches if s <= slot - self._slots]:
                del state.sketches[old]
            sketch = state.sketches[slot] = LogCollapsingLowestDenseDDSketch(_SKETCH_ACCURACY, _SKETCH_BINS)
        return sketch

    def sample(self, now: float) -> dict[str, Sample]:
        """Per-version cumulative counters and latency histogram (Envoy's names and layout), stamped `now`."""
        result: dict[str, Sample] = {}
        for version, state in self._versions.items():
            cumulative: list[float] = []
            running = 0.0
            for count in state.cumulative:
                running += count
                cumulative.append(running)
            histogram = Histogram(self.bounds, tuple(cumulative), state.latency_sum, state.latency_count)
            result[version] = Sample(
                ts=now, counters=dict(state.counters), histograms={Signal.ENVOY_RQ_TIME_MS: histogram}
            )
        return result

    def counters(self, version: str) -> Mapping[str, float]:
        state = self._versions.get(version)
        return dict(state.counters) if state is not None else {}

    def latency_quantile(self, version: str, q: float, window_s: float, now: float) -> float | None:
        """The q-quantile of latency (ms) over roughly the last window_s (whole sketch slots, at most all kept)."""
        state = self._versions.get(version)
        if state is None:
            return None
        first = int((now - window_s) // self._slot_s)
        merged: LogCollapsingLowestDenseDDSketch | None = None
        for slot, sketch in state.sketches.items():
            if slot >= first:
                if merged is None:
                    merged = LogCollapsingLowestDenseDDSketch(_SKETCH_ACCURACY, _SKETCH_BINS)
                merged.merge(sketch)
        if merged is None or merged.count == 0:
            return None
        value = merged.get_quantile_value(q)
        return float(value) if value is not None else None

    def recent(self, version: str, since: float = -math.inf) -> list[RecentEntry]:
        """The raw entries kept for a version (at most ring_size), oldest first."""
        state = self._versions.get(version)
        return state.ring.entries(since) if state is not None else []
