"""Synthetic sample streams and one-rule evaluation helpers for the trigger tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from agent.domain.signals import Baseline, Histogram, HistoryLimits, Sample, Signal, SignalHistory
from agent.triggers import Rule, RuleBase, Verdict, VersionContext, resolve_rule, tier_profile

LATENCY_MS_BOUNDS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, float("inf"))
CONFIDENCE_BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, float("inf"))
FEATURE_BOUNDS = (-1.0, -0.5, 0.0, 0.5, 1.0, float("inf"))

_RULE = TypeAdapter(Rule)


def make_rule(kind: str, tier: str | None = None, **fields: Any) -> RuleBase:
    """A rule as written in a file (name defaults to the kind), resolved for `tier` or the built-ins."""
    data = {"name": fields.pop("name", kind.replace("_", "-")), "kind": kind, **fields}
    rule: RuleBase = _RULE.validate_python(data)
    return resolve_rule(rule, tier_profile(tier) if tier else None)


class Stream:
    """Cumulative counters / histograms / gauges of one version, appended to a history one sample at a time."""

    def __init__(self, history: SignalHistory | None = None, start: float = 1000.0) -> None:
        self.history = history if history is not None else SignalHistory(HistoryLimits(max_age_s=7200))
        self.ts = start
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self._bounds: dict[str, tuple[float, ...]] = {}
        self._cumulative: dict[str, list[float]] = {}
        self._sum: dict[str, float] = {}
        self._count: dict[str, float] = {}

    def histogram(self, name: str, bounds: Sequence[float]) -> Stream:
        self._bounds[name] = tuple(bounds)
        self._cumulative[name] = [0.0] * len(bounds)
        self._sum[name] = self._count[name] = 0.0
        return self

    def observe(self, name: str, values: Iterable[float]) -> None:
        bounds, cumulative = self._bounds[name], self._cumulative[name]
        for value in values:
            for i, bound in enumerate(bounds):
                if value <= bound:
                    cumulative[i] += 1
            self._sum[name] += value
            self._count[name] += 1

    def observe_buckets(self, name: str, counts: Sequence[float], midpoints: Sequence[float] | None = None) -> None:
        """Add `counts[i]` observations to bucket i (non-cumulative)."""
        cumulative = self._cumulative[name]
        running = 0.0
        for i, count in enumerate(counts):
            running += count
            cumulative[i] += running
            if midpoints is not None:
                self._sum[name] += count * midpoints[i]
        self._count[name] += running

    def step(
        self,
        seconds: float = 1.0,
        inc: Mapping[str, float] | None = None,
        observe: Mapping[str, Sequence[float]] | None = None,
        gauges: Mapping[str, float] | None = None,
    ) -> Sample:
        """Advance the clock, apply the increments, append the resulting sample."""
        self.ts += seconds
        for name, amount in (inc or {}).items():
            self.counters[name] = self.counters.get(name, 0.0) + amount
        for name, values in (observe or {}).items():
            self.observe(name, values)
        self.gauges.update(gauges or {})
        sample = self.sample()
        self.history.append(sample)
        return sample

    def run(self, seconds: int, every: float = 1.0, **kwargs: Any) -> None:
        for _ in range(int(seconds / every)):
            self.step(every, **kwargs)

    def reset_counters(self, *names: str) -> None:
        """A process restart: the named counters drop to zero."""
        for name in names:
            self.counters[name] = 0.0

    def sample(self) -> Sample:
        histograms = {
            name: Histogram(bounds, tuple(self._cumulative[name]), self._sum[name], self._count[name])
            for name, bounds in self._bounds.items()
        }
        return Sample(self.ts, dict(self.counters), dict(self.gauges), histograms)


def traffic(rps: float, error_ratio: float = 0.0) -> dict[str, float]:
    return {Signal.ENVOY_RQ_TOTAL: rps, Signal.ENVOY_RQ_5XX: rps * error_ratio}


def judge(
    rule: RuleBase,
    candidate: Stream | SignalHistory | None,
    *,
    stable: Stream | SignalHistory | None = None,
    baseline: Baseline | None = None,
    stable_baseline: Baseline | None = None,
    now: float | None = None,
    firing: bool = False,
) -> Verdict:
    """Evaluate one rule for version "v2" against stable "v1"."""
    candidate_history = candidate.history if isinstance(candidate, Stream) else candidate
    stable_history = stable.history if isinstance(stable, Stream) else stable
    if now is None:
        now = (candidate_history.latest_ts if candidate_history else None) or 0.0
    ctx = VersionContext("v2", candidate_history, now, baseline)
    stable_ctx = VersionContext("v1", stable_history, now, stable_baseline) if stable_history else None
    return rule.evaluate(ctx, stable_ctx, firing)
