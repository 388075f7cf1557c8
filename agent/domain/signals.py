"""Measurements of one model version: samples, canonical signal names, and a bounded history with window queries.

Storage design (why it stays small and fast):

* Each appended `Sample` becomes a *frame*: one flat `array('d')` of values, addressed through a shared, immutable
  `_Layout` (signal name -> offset). A frame with 50 feature histograms of ~12 buckets is ~7 KB, against ~50 KB
  for the same data kept as Python objects.
* Counters and histograms are stored *reset-adjusted*: the history adds each sample's increase (a decrease means
  the process restarted, so the increase is the new raw value, as Prometheus' `increase()`), which makes every
  window delta a single subtraction `end - start`, independent of how many resets happened in between.
* Because stored counters are cumulative, dropping intermediate frames loses nothing for deltas between the
  frames that are kept. Older frames are therefore downsampled: full resolution for the last 5 minutes, one frame
  per 10 s up to 1 h, one per 60 s beyond (configurable in `HistoryLimits`). One hour at 1 sample/s keeps ~630
  frames (~4 MB for 50 features); a 6 h window adds only 300 more.
* Coverage (seconds actually covered by samples, gaps longer than `max_gap_s` excluded) and gauge time-integrals
  are cumulative values too, so they also survive downsampling exactly. Boolean health gauges additionally get a
  derived counter of 1 -> 0 transitions (e.g. `health.ready_lost`), so a one-second readiness failure is never
  lost to downsampling.

A window's start is the last kept frame at or before `now - window_s` (so a window is never shorter than asked;
in the downsampled region it can be longer by at most one step, and rates use the real span).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

_NAN: Final = math.nan


class Signal:
    """Canonical signal names. Sources translate what they scrape into these; rules refer to them."""

    # Envoy, per version cluster.
    ENVOY_RQ_TOTAL: Final = "envoy.rq_total"
    ENVOY_RQ_5XX: Final = "envoy.rq_5xx"
    ENVOY_RQ_4XX: Final = "envoy.rq_4xx"
    ENVOY_RQ_CODE_PREFIX: Final = "envoy.rq_code."  # counter per response code 400..599, reported once seen
    ENVOY_CX_CONNECT_FAIL: Final = "envoy.cx_connect_fail"
    ENVOY_RQ_TIME_MS: Final = "envoy.rq_time_ms"  # histogram, milliseconds

    # The model server's /metrics.
    MODEL_REQUESTS: Final = "model.requests"
    MODEL_ERRORS: Final = "model.errors"
    MODEL_LATENCY_S: Final = "model.latency_s"  # histogram, seconds
    MODEL_CONFIDENCE: Final = "model.confidence"  # histogram of the top-class confidence
    MODEL_OUTCOMES_CORRECT: Final = "model.outcomes_correct"
    MODEL_OUTCOMES_INCORRECT: Final = "model.outcomes_incorrect"
    MODEL_MEMORY_BYTES: Final = "model.memory_bytes"  # gauge
    MODEL_MEMORY_RATIO: Final = "model.memory_ratio"  # gauge: resident memory / the version's memory limit
    FEATURE_PREFIX: Final = "model.feature."  # histogram per feature, bucket edges frozen from the reference
    FEATURE_SEEN_PREFIX: Final = "model.feature_seen."  # counter: rows inspected for the feature
    FEATURE_MISSING_PREFIX: Final = "model.feature_missing."  # counter: of those, rows where it was missing
    BUSINESS_PREFIX: Final = "model.business."  # gauge per business metric

    # Health probes.
    HEALTH_READY: Final = "health.ready"  # gauge 1/0
    HEALTH_GOLDEN_OK: Final = "health.golden_ok"  # gauge 1/0: golden-set predictions still match
    HEALTH_GOLDEN_CHECKS: Final = "health.golden_checks"  # counter: golden inferences judged
    HEALTH_GOLDEN_FAILING: Final = "health.golden_failing"  # gauge: consecutive failed golden inferences (0: passed)
    HEALTH_PIPELINE_OK: Final = "health.pipeline_ok"  # gauge 1/0
    HEALTH_CRASHES: Final = "health.crashes"
    HEALTH_OOM: Final = "health.oom"  # counter: exits (stopped answering or restarted) near the memory limit
    HEALTH_RESTARTS: Final = "health.restarts"

    # Derived by SignalHistory: counters of 1 -> 0 transitions of the boolean health gauges.
    HEALTH_READY_LOST: Final = "health.ready_lost"
    HEALTH_GOLDEN_FAILED: Final = "health.golden_failed"
    HEALTH_PIPELINE_FAILED: Final = "health.pipeline_failed"

    @staticmethod
    def envoy_code(code: int) -> str:
        return f"{Signal.ENVOY_RQ_CODE_PREFIX}{code}"

    @staticmethod
    def feature(name: str) -> str:
        return Signal.FEATURE_PREFIX + name

    @staticmethod
    def feature_seen(name: str) -> str:
        return Signal.FEATURE_SEEN_PREFIX + name

    @staticmethod
    def feature_missing(name: str) -> str:
        return Signal.FEATURE_MISSING_PREFIX + name

    @staticmethod
    def business(name: str) -> str:
        return Signal.BUSINESS_PREFIX + name


# Boolean health gauge -> derived counter of its 1 -> 0 transitions.
HEALTH_TRANSITIONS: Final[Mapping[str, str]] = {
    Signal.HEALTH_READY: Signal.HEALTH_READY_LOST,
    Signal.HEALTH_GOLDEN_OK: Signal.HEALTH_GOLDEN_FAILED,
    Signal.HEALTH_PIPELINE_OK: Signal.HEALTH_PIPELINE_FAILED,
}


class BaselineKey:
    """Keys of `Baseline.numbers`, as the registry records them for a version."""

    CONFIDENCE_MEAN: Final = "confidence_mean"
    THROUGHPUT_RPS_MEAN: Final = "throughput_rps_mean"
    THROUGHPUT_RPS_STD: Final = "throughput_rps_std"
    MISSING_RATE_PREFIX: Final = "missing_rate."

    @staticmethod
    def missing_rate(feature: str) -> str:
        return BaselineKey.MISSING_RATE_PREFIX + feature


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative Prometheus-style histogram: ascending upper bounds (the last may be +inf) -> cumulative counts."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float
    count: float

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.cumulative):
            raise ValueError(f"{len(self.bounds)} bounds but {len(self.cumulative)} cumulative counts")

    def bucket_counts(self) -> tuple[float, ...]:
        """Per-bucket (non-cumulative) counts, plus the overflow above the last bound when it is finite."""
        counts: list[float] = []
        previous = 0.0
        for c in self.cumulative:
            counts.append(max(0.0, c - previous))
            previous = c
        if self.bounds and not math.isinf(self.bounds[-1]):
            counts.append(max(0.0, self.count - previous))
        return tuple(counts)

    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """Estimate the q-quantile as Prometheus' histogram_quantile does (linear within the bucket).

        Returns None without observations. When the rank falls in the +inf bucket, returns the highest finite
        bound (a lower bound of the true value); `fraction_above` answers "is the quantile above X" exactly.
        """
        total = self.cumulative[-1] if self.cumulative else 0.0
        if total <= 0 or not self.bounds:
            return None
        rank = q * total
        index = 0
        while index < len(self.cumulative) - 1 and self.cumulative[index] < rank:
            index += 1
        upper = self.bounds[index]
        if math.isinf(upper):
            return self.bounds[index - 1] if index > 0 else None
        if index == 0:
            if upper <= 0:
                return upper
            lower, below = 0.0, 0.0
        else:
            lower, below = self.bounds[index - 1], self.cumulative[index - 1]
        in_bucket = self.cumulative[index] - below
        if in_bucket <= 0:
            return upper
        return lower + (upper - lower) * (rank - below) / in_bucket

    def fraction_above(self, x: float) -> float | None:
        """Estimated fraction of observations > x (linear within a bucket; exact when x is a bucket edge)."""
        total = self.cumulative[-1] if self.cumulative else 0.0
        if total <= 0:
            return None
        lower, below = 0.0, 0.0
        for upper, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if x < upper:
                if math.isinf(upper) or x <= lower:
                    at_or_below = below
                else:
                    at_or_below = below + (cumulative - below) * (x - lower) / (upper - lower)
                return max(0.0, 1.0 - at_or_below / total)
            lower, below = upper, cumulative
        return max(0.0, 1.0 - below / total)


@dataclass(frozen=True, slots=True)
class Sample:
    ts: float  # monotonic seconds
    counters: Mapping[str, float] = field(default_factory=dict)  # cumulative; may reset on process restart
    gauges: Mapping[str, float] = field(default_factory=dict)
    histograms: Mapping[str, Histogram] = field(default_factory=dict)
    # Signal name, or prefix ending in ".", -> why it cannot be measured now (e.g. the model metrics read failed):
    # rules reading it are inconclusive with that reason instead of judging stale or absent values.
    unavailable: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReferenceBins:
    """A frozen reference distribution: the histogram bucket bounds and the fraction of observations per bucket
    (one more fraction than bounds when the last bound is finite, as `Histogram.bucket_counts`)."""

    bounds: tuple[float, ...]
    fractions: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Baseline:
    """What the registry knows about a version: plain numbers (see `BaselineKey`) and reference feature bins."""

    numbers: Mapping[str, float] = field(default_factory=dict)
    reference_bins: Mapping[str, ReferenceBins] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    max_age_s: float = 3600.0
    max_samples: int = 2000  # hard cap after downsampling; the oldest frames go first
    # (age_s, step_s): frames older than age_s are kept at most one per step_s. Ascending ages.
    downsample: tuple[tuple[float, float], ...] = ((300.0, 10.0), (3600.0, 60.0))
    max_gap_s: float = 5.0  # a longer silence between two samples counts as uncovered time

    def __post_init__(self) -> None:
        if self.max_age_s <= 0 or self.max_samples < 2 or self.max_gap_s <= 0:
            raise ValueError("max_age_s and max_gap_s must be > 0 and max_samples >= 2")
        ages = [age for age, _ in self.downsample]
        if ages != sorted(ages) or any(step <= 0 for _, step in self.downsample):
            raise ValueError("downsample tiers need ascending ages and positive steps")


class _Layout:
    """Immutable map from signal name to offsets in a frame's value array; shared by consecutive frames."""

    __slots__ = ("_names_by_prefix", "counters", "gauges", "histograms", "size")

    # Slot 0 of every frame: cumulative covered seconds.
    COVERAGE: Final = 0

    def __init__(
        self,
        counters: dict[str, int],
        gauges: dict[str, int],  # offset of [last value (NaN when absent), time integral, covered seconds]
        histograms: dict[str, tuple[int, tuple[float, ...]]],  # offset of [cumulative..., sum, count], bounds
        size: int,
    ) -> None:
        self.counters = counters
        self.gauges = gauges
        self.histograms = histograms
        self.size = size
        self._names_by_prefix: dict[tuple[str, str], tuple[str, ...]] = {}

    def names(self, kind: str, prefix: str) -> tuple[str, ...]:
        """Signal names (without the prefix) of `kind` ("counter", "gauge", "histogram") starting with prefix."""
        key = (kind, prefix)
        cached = self._names_by_prefix.get(key)
        if cached is None:
            if kind == "counter":
                names: list[str] = list(self.counters)
            elif kind == "gauge":
                names = list(self.gauges)
            elif kind == "histogram":
                names = list(self.histograms)
            else:
                raise ValueError(f"unknown signal kind {kind!r}")
            cached = tuple(sorted(name[len(prefix) :] for name in names if name.startswith(prefix)))
            self._names_by_prefix[key] = cached
        return cached


_EMPTY_LAYOUT: Final = _Layout({}, {}, {}, 1)


class _Frame:
    __slots__ = ("layout", "ts", "values")

    def __init__(self, ts: float, layout: _Layout, values: array[float]) -> None:
        self.ts = ts
        self.layout = layout
        self.values = values


class Window:
    """The frames bounding `[now - window_s, now]` of one history; deltas are computed once and cached."""

    __slots__ = ("_end", "_histograms", "_start", "coverage", "now", "span_s", "window_s")

    def __init__(self, start: _Frame, end: _Frame, now: float, window_s: float, coverage: float) -> None:
        self._start = start
        self._end = end
        self.now = now
        self.window_s = window_s
        self.span_s = end.ts - start.ts  # the span deltas really cover
        self.coverage = coverage  # fraction of the window covered by samples, 0..1
        self._histograms: dict[str, Histogram | None] = {}

    def delta(self, counter: str) -> float | None:
        """Increase of a counter over the window (resets handled); None if the version never reported it."""
        end_offset = self._end.layout.counters.get(counter)
        if end_offset is None:
            return None
        start_offset = self._start.layout.counters.get(counter)
        start = self._start.values[start_offset] if start_offset is not None else 0.0
        return max(0.0, self._end.values[end_offset] - start)

    def rate(self, counter: str) -> float | None:
        """Per-second increase over the real span of the window."""
        increase = self.delta(counter)
        if increase is None or self.span_s <= 0:
            return None
        return increase / self.span_s

    def histogram(self, name: str) -> Histogram | None:
        """Observations of a histogram within the window (resets handled); None if never reported."""
        if name in self._histograms:
            return self._histograms[name]
        result = self._histogram_delta(name)
        self._histograms[name] = result
        return result

    def _histogram_delta(self, name: str) -> Histogram | None:
        end_entry = self._end.layout.histograms.get(name)
        if end_entry is None:
            return None
        offset, bounds = end_entry
        n = len(bounds)
        end_values = self._end.values[offset : offset + n + 2]
        start_entry = self._start.layout.histograms.get(name)
        if start_entry is not None and start_entry[1] == bounds:
            start_offset = start_entry[0]
            start_values = self._start.values[start_offset : start_offset + n + 2]
            delta = [e - s if e > s else 0.0 for e, s in zip(end_values, start_values, strict=True)]
        else:  # first seen (or bucket edges changed) inside the window: its stored values start from zero
            delta = list(end_values)
        return Histogram(bounds, tuple(delta[:n]), delta[n], delta[n + 1])

    def gauge_mean(self, name: str) -> tuple[float | None, float]:
        """Time-weighted mean of a gauge over the window and the seconds it was observed for."""
        end_offset = self._end.layout.gauges.get(name)
        if end_offset is None:
            return None, 0.0
        end_integral = self._end.values[end_offset + 1]
        end_time = self._end.values[end_offset + 2]
        start_offset = self._start.layout.gauges.get(name)
        if start_offset is None:
            start_integral = start_time = 0.0
        else:
            start_integral = self._start.values[start_offset + 1]
            start_time = self._start.values[start_offset + 2]
        observed = end_time - start_time
        if observed <= 0:
            return None, 0.0
        return (end_integral - start_integral) / observed, observed

    def names(self, kind: str, prefix: str) -> tuple[str, ...]:
        """Names (prefix removed) of the signals of `kind` the version reports at the window's end."""
        return self._end.layout.names(kind, prefix)


class SignalHistory:
    """Bounded, downsampled history of one version's samples with window queries (see the module docstring).

    Not thread-safe; append and query from one task. `now` defaults to the latest sample's timestamp.
    """

    def __init__(self, limits: HistoryLimits | None = None) -> None:
        self.limits = limits or HistoryLimits()
        self._frames: list[_Frame] = []
        self._ts: list[float] = []
        self._layout = _EMPTY_LAYOUT
        self._raw_counters: dict[str, float] = {}
        self._raw_histograms: dict[str, Histogram] = {}
        # Per downsample tier: how many of the oldest frames have already been thinned for it.
        self._thinned = [0] * len(self.limits.downsample)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def latest_ts(self) -> float | None:
        return self._ts[-1] if self._ts else None

    @property
    def oldest_ts(self) -> float | None:
        return self._ts[0] if self._ts else None

    def stored_values(self) -> int:
        """Number of floats held, for memory accounting (8 bytes each)."""
        return sum(len(frame.values) for frame in self._frames)

    # ---- ingest -------------------------------------------------------------------------------------------

    def append(self, sample: Sample) -> bool:
        """Add a sample; returns False (and ignores it) when it is not newer than the latest one."""
        previous = self._frames[-1] if self._frames else None
        if previous is not None and sample.ts <= previous.ts:
            return False
        layout = self._layout_for(sample)
        if previous is None:
            values = self._initial_values(layout, 0)
            dt = 0.0
        else:
            values = array("d", previous.values)
            if len(values) < layout.size:
                values.extend(self._initial_values(layout, len(values)))
            dt = sample.ts - previous.ts
        covered = 0.0 < dt <= self.limits.max_gap_s
        if covered:
            values[_Layout.COVERAGE] += dt
        self._add_counters(sample, layout, values)
        self._add_gauges(sample, layout, values, dt if covered else 0.0)
        self._add_histograms(sample, layout, values)
        self._frames.append(_Frame(sample.ts, layout, values))
        self._ts.append(sample.ts)
        self._thin(sample.ts)
        return True

    def _add_counters(self, sample: Sample, layout: _Layout, values: array[float]) -> None:
        raw_counters = self._raw_counters
        for name, raw in sample.counters.items():
            if not math.isfinite(raw):
                continue  # NaN / inf from a broken exporter: treated as not reported
            last = raw_counters.get(name)
            if last is not None:
                values[layout.counters[name]] += raw - last if raw >= last else raw
            raw_counters[name] = raw

    def _add_gauges(self, sample: Sample, layout: _Layout, values: array[float], covered_dt: float) -> None:
        gauges = sample.gauges
        for name, offset in layout.gauges.items():
            value = gauges.get(name)
            last = values[offset]
            if value is None or not math.isfinite(value):
                values[offset] = _NAN
                continue
            if covered_dt and last == last:  # last == last: not NaN, the gauge was present in the previous sample
                values[offset + 1] += (last + value) * 0.5 * covered_dt
                values[offset + 2] += covered_dt
            derived = HEALTH_TRANSITIONS.get(name)
            if derived is not None and last >= 0.5 and value < 0.5:
                values[layout.counters[derived]] += 1.0
            values[offset] = value

    def _add_histograms(self, sample: Sample, layout: _Layout, values: array[float]) -> None:
        raw_histograms = self._raw_histograms
        for name, histogram in sample.histograms.items():
            offset = layout.histograms[name][0]
            if not (math.isfinite(histogram.count) and math.isfinite(histogram.sum)):
                continue
            last = raw_histograms.get(name)
            raw_histograms[name] = histogram
            if last is None or last.bounds != histogram.bounds:
                continue  # first observation (or new bucket edges) is the baseline: nothing observed yet
            n = len(histogram.bounds)
            now_cum, last_cum = histogram.cumulative, last.cumulative
            restarted = histogram.count < last.count or any(c < p for c, p in zip(now_cum, last_cum, strict=True))
            if restarted:
                for i in range(n):
                    values[offset + i] += now_cum[i]
                values[offset + n] += histogram.sum
                values[offset + n + 1] += histogram.count
            else:
                for i in range(n):
                    values[offset + i] += now_cum[i] - last_cum[i]
                values[offset + n] += histogram.sum - last.sum
                values[offset + n + 1] += histogram.count - last.count

    def _layout_for(self, sample: Sample) -> _Layout:
        layout = self._layout
        new_counters = [name for name in sample.counters if name not in layout.counters]
        new_gauges = [name for name in sample.gauges if name not in layout.gauges]
        new_histograms = [
            name
            for name, histogram in sample.histograms.items()
            if (entry := layout.histograms.get(name)) is None or entry[1] != histogram.bounds
        ]
        if not (new_counters or new_gauges or new_histograms):
            return layout
        counters, gauges, histograms = dict(layout.counters), dict(layout.gauges), dict(layout.histograms)
        size = layout.size
        for name in new_gauges:
            gauges[name] = size
            size += 3
            derived = HEALTH_TRANSITIONS.get(name)
            if derived is not None and derived not in counters:
                new_counters.append(derived)
        for name in new_counters:
            if name not in counters:
                counters[name] = size
                size += 1
        for name in new_histograms:  # changed bucket edges get fresh slots; the old ones are left unused
            bounds = sample.histograms[name].bounds
            histograms[name] = (size, bounds)
            size += len(bounds) + 2
        self._layout = _Layout(counters, gauges, histograms, size)
        return self._layout

    @staticmethod
    def _initial_values(layout: _Layout, from_offset: int) -> array[float]:
        values = array("d", bytes(8 * (layout.size - from_offset)))
        for offset in layout.gauges.values():
            if offset >= from_offset:
                values[offset - from_offset] = _NAN
        return values

    def _thin(self, now: float) -> None:
        """Downsample frames that aged into a coarser tier, then evict by age and count."""
        frames, ts, thinned = self._frames, self._ts, self._thinned
        for tier, (age, step) in enumerate(self.limits.downsample):
            cutoff = now - age
            while thinned[tier] < len(ts) - 1 and ts[thinned[tier]] <= cutoff:
                i = thinned[tier]
                if i > 0 and ts[i] - ts[i - 1] < step:
                    del frames[i], ts[i]
                    for finer in range(tier):  # the deleted frame was inside every finer tier's prefix
                        thinned[finer] -= 1
                else:
                    thinned[tier] += 1
        oldest_needed = now - self.limits.max_age_s
        # Keep one frame at or before the oldest window start, so a max-age window still has a start.
        while len(ts) >= 2 and ts[1] <= oldest_needed:
            self._drop_oldest()
        while len(ts) > self.limits.max_samples:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        del self._frames[0], self._ts[0]
        self._thinned = [max(0, n - 1) for n in self._thinned]

    # ---- queries ------------------------------------------------------------------------------------------

    def window(self, window_s: float, now: float | None = None) -> Window | None:
        """The window ending at `now`; None when no sample falls inside it (nothing to judge)."""
        ts = self._ts
        if not ts:
            return None
        if now is None:
            now = ts[-1]
        start_t = now - window_s
        end_index = bisect_right(ts, now) - 1
        if end_index < 0 or ts[end_index] <= start_t:
            return None
        start_index = max(0, bisect_right(ts, start_t) - 1)
        start, end = self._frames[start_index], self._frames[end_index]
        return Window(start, end, now, window_s, self._coverage(start_index, end_index, start_t, now))

    def window_since(self, since: float, window_s: float, now: float) -> Window | None:
        """The window ending at `now`, at most `window_s` long, that starts at the first sample taken at or after
        `since`: nothing counted before `since` is in it (`window` starts at the sample before its start)."""
        if since <= now - window_s:
            return self.window(window_s, now)
        first = bisect_left(self._ts, since)
        if first >= len(self._ts):
            return None
        return self.window(now - self._ts[first], now)

    def _coverage(self, start_index: int, end_index: int, start_t: float, now: float) -> float:
        frames = self._frames
        end = frames[end_index]
        covered_end = end.values[_Layout.COVERAGE]
        tail = now - end.ts
        if tail <= self.limits.max_gap_s:
            covered_end += tail
        start = frames[start_index]
        covered_start = start.values[_Layout.COVERAGE]
        if start.ts < start_t and start_index < end_index:
            following = frames[start_index + 1]
            fraction = (start_t - start.ts) / (following.ts - start.ts)
            covered_start += (following.values[_Layout.COVERAGE] - covered_start) * fraction
        window_s = now - start_t
        return min(1.0, max(0.0, (covered_end - covered_start) / window_s)) if window_s > 0 else 0.0

    def delta(self, counter: str, window_s: float, now: float | None = None) -> float | None:
        window = self.window(window_s, now)
        return window.delta(counter) if window is not None else None

    def rate(self, counter: str, window_s: float, now: float | None = None) -> float | None:
        window = self.window(window_s, now)
        return window.rate(counter) if window is not None else None

    def histogram_delta(self, name: str, window_s: float, now: float | None = None) -> Histogram | None:
        window = self.window(window_s, now)
        return window.histogram(name) if window is not None else None

    def coverage(self, window_s: float, now: float | None = None) -> float:
        window = self.window(window_s, now)
        return window.coverage if window is not None else 0.0

    def latest_gauge(self, name: str, max_age_s: float | None = None, now: float | None = None) -> float | None:
        """Most recent value of a gauge, optionally no older than max_age_s before now."""
        if not self._frames:
            return None
        if now is None:
            now = self._ts[-1]
        for frame in reversed(self._frames):
            if max_age_s is not None and frame.ts < now - max_age_s:
                return None
            offset = frame.layout.gauges.get(name)
            if offset is None:
                return None
            value = frame.values[offset]
            if value == value:
                return value
        return None

    def gauge_series(self, name: str, window_s: float, now: float | None = None) -> list[tuple[float, float]]:
        """(ts, value) of a gauge for the frames kept within the window (downsampled beyond 5 min)."""
        if not self._ts:
            return []
        if now is None:
            now = self._ts[-1]
        first = bisect_right(self._ts, now - window_s)
        last = bisect_right(self._ts, now)
        series: list[tuple[float, float]] = []
        for frame in self._frames[first:last]:
            offset = frame.layout.gauges.get(name)
            if offset is not None and frame.values[offset] == frame.values[offset]:
                series.append((frame.ts, frame.values[offset]))
        return series

    def gauge_mean(self, name: str, window_s: float, now: float | None = None) -> float | None:
        window = self.window(window_s, now)
        return window.gauge_mean(name)[0] if window is not None else None

    def counter_at(self, counter: str, t: float) -> float | None:
        """Stored (reset-adjusted) value of a counter at the last frame at or before t; None before the history."""
        index = bisect_right(self._ts, t) - 1
        if index < 0:
            return None
        frame = self._frames[index]
        offset = frame.layout.counters.get(counter)
        return frame.values[offset] if offset is not None else 0.0

    def bucket_deltas(
        self, counter: str, bucket_s: float, buckets: int, now: float | None = None
    ) -> list[float | None]:
        """Counter increase per consecutive bucket ending at now, most recent first.

        None for a bucket that starts before the history does (unknown, not zero).
        """
        if not self._ts:
            return [None] * buckets
        if now is None:
            now = self._ts[-1]
        boundaries = [self.counter_at(counter, now - i * bucket_s) for i in range(buckets + 1)]
        deltas: list[float | None] = []
        for i in range(buckets):
            end, start = boundaries[i], boundaries[i + 1]
            deltas.append(None if end is None or start is None else max(0.0, end - start))
        return deltas

    def names(self, kind: str, prefix: str = "") -> tuple[str, ...]:
        """Names (prefix removed) of the `kind` signals ("counter", "gauge", "histogram") reported so far."""
        return self._layout.names(kind, prefix)
