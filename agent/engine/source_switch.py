"""One live source for Envoy's per-version request figures: the access-log stream, or Envoy's stats as fallback.

Both sources report the same cumulative signals (`envoy.rq_total`, `envoy.rq_5xx`, `envoy.cx_connect_fail`, the
latency histogram), but as different series: the stream counts from the agent's start, Envoy from its own. Handing
both to a history would count every request twice, and switching from one to the other would look like a counter
jump. So the switch splices them: each interval between two readings contributes the increase seen by the source
that is live for that interval, and the history receives one continuous series.

The stream is live when it delivered entries within `silence_s`, unless Envoy's stats show clearly more traffic
over the interval than the stream saw (entries lost: a broken stream) -- then the stats are live until the stream
keeps pace again. With no traffic at all, the live source stays as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from agent.domain.signals import Histogram, Sample, Signal

STREAM: Final = "stream"
STATS: Final = "envoy"

SHARED_COUNTERS: Final = (Signal.ENVOY_RQ_TOTAL, Signal.ENVOY_RQ_5XX, Signal.ENVOY_CX_CONNECT_FAIL)
SHARED_HISTOGRAMS: Final = (Signal.ENVOY_RQ_TIME_MS,)


@dataclass(slots=True)
class _Spliced:
    bounds: tuple[float, ...] = ()
    buckets: list[float] = field(default_factory=list)  # cumulative
    sum: float = 0.0
    count: float = 0.0


def _increase(now: float, last: float | None) -> float:
    if last is None:
        return 0.0  # the first reading is the baseline
    return now - last if now >= last else now  # a decrease is a restart


class SourceSwitch:
    def __init__(self, silence_s: float = 2.0, min_requests: float = 5.0, keep_pace: float = 0.5) -> None:
        self.silence_s = silence_s
        self.min_requests = min_requests  # stats traffic below this over an interval says nothing about the stream
        self.keep_pace = keep_pace  # the stream must see at least this fraction of what Envoy counted
        self.live = STATS
        self.switched_at: float | None = None
        self._last: dict[tuple[str, str, str], float] = {}  # (source, version, counter) -> raw
        self._last_hist: dict[tuple[str, str, str], Histogram] = {}
        self._out: dict[tuple[str, str], float] = {}
        self._out_hist: dict[tuple[str, str], _Spliced] = {}
        self._totals_at_check: dict[str, float | None] = {STREAM: None, STATS: None}

    def decide(
        self,
        now: float,
        stream: Mapping[str, Sample] | None,
        stream_last_entry_at: float | None,
        stats: Mapping[str, Sample] | None,
    ) -> str:
        """Choose the live source for the interval ending now (called on full ticks, with both readings)."""
        stream_total = _total(stream)
        stats_total = _total(stats)
        stream_seen = _increase(stream_total, self._totals_at_check[STREAM]) if stream_total is not None else None
        stats_seen = _increase(stats_total, self._totals_at_check[STATS]) if stats_total is not None else None
        self._totals_at_check = {STREAM: stream_total, STATS: stats_total}
        fresh = stream_last_entry_at is not None and now - stream_last_entry_at <= self.silence_s
        falling_behind = (
            stats_seen is not None
            and stats_seen >= self.min_requests
            and (stream_seen or 0.0) < self.keep_pace * stats_seen
        )
        if stats is None:
            choice = STREAM if fresh else self.live
        elif falling_behind:
            choice = STATS
        elif fresh:
            choice = STREAM
        elif stats_seen:
            choice = STATS  # traffic, and the stream silent
        else:
            choice = self.live
        if choice != self.live:
            self.live, self.switched_at = choice, now
        return choice

    def splice(self, now: float, readings: Mapping[str, Mapping[str, Sample]]) -> dict[str, Sample]:
        """Per version: the shared signals as one continuous series, and the live source's other signals.

        `readings` maps a source (STREAM, STATS) to its per-version sample; a source may be missing (not read).
        """
        versions: set[str] = set()
        for samples in readings.values():
            versions.update(samples)
        result: dict[str, Sample] = {}
        for version in sorted(versions):
            counters: dict[str, float] = {}
            histograms: dict[str, Histogram] = {}
            for source, samples in readings.items():
                sample = samples.get(version)
                if sample is None:
                    continue
                live = source == self.live
                for name in SHARED_COUNTERS:
                    raw = sample.counters.get(name)
                    if raw is None:
                        continue
                    key = (source, version, name)
                    step = _increase(raw, self._last.get(key))
                    self._last[key] = raw
                    out_key = (version, name)
                    if live or out_key not in self._out:
                        self._out[out_key] = self._out.get(out_key, 0.0) + (step if live else 0.0)
                for name in SHARED_HISTOGRAMS:
                    histogram = sample.histograms.get(name)
                    if histogram is not None:
                        self._splice_histogram(source, version, name, histogram, live)
                if live:  # signals only this source has (the stream's 4xx and flags)
                    counters.update((k, v) for k, v in sample.counters.items() if k not in SHARED_COUNTERS)
                    histograms.update((k, v) for k, v in sample.histograms.items() if k not in SHARED_HISTOGRAMS)
            counters.update((name, value) for (v, name), value in self._out.items() if v == version)
            for (v, name), spliced in self._out_hist.items():
                if v == version and spliced.bounds:
                    histograms[name] = Histogram(spliced.bounds, tuple(spliced.buckets), spliced.sum, spliced.count)
            result[version] = Sample(ts=now, counters=counters, histograms=histograms)
        return result

    def _splice_histogram(self, source: str, version: str, name: str, histogram: Histogram, live: bool) -> None:
        key = (source, version, name)
        last = self._last_hist.get(key)
        self._last_hist[key] = histogram
        out = self._out_hist.setdefault((version, name), _Spliced())
        if not live:
            return
        if out.bounds != histogram.bounds:  # first reading, or the live source has other buckets: a new series
            out.bounds, out.buckets, out.sum, out.count = histogram.bounds, [0.0] * len(histogram.bounds), 0.0, 0.0
        if last is None or last.bounds != histogram.bounds:
            return
        restarted = histogram.count < last.count
        for i, c in enumerate(histogram.cumulative):
            out.buckets[i] += c if restarted else max(0.0, c - last.cumulative[i])
        out.sum += histogram.sum if restarted else max(0.0, histogram.sum - last.sum)
        out.count += histogram.count if restarted else histogram.count - last.count


def _total(samples: Mapping[str, Sample] | None) -> float | None:
    if samples is None:
        return None
    return sum(s.counters.get(Signal.ENVOY_RQ_TOTAL, 0.0) for s in samples.values())
