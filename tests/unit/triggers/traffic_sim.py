"""Simulated time for the shipped rules: two versions at 50/50 with realistic noise, optionally a fault in one.

Per tick and version: Poisson request counts, a small binomial error rate plus rare bursts of a few errors, and
log-normal latencies (p50 60 ms, p99 ~120 ms against the shipped 250 ms SLA) with a per-second jitter factor and a
0.1 % slow tail. Everything runs on the rule engine with the samples' own clock, so 10 minutes take a second or two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.domain.signals import HistoryLimits, Signal, SignalHistory
from agent.triggers import EngineInput, RuleEngine, RuleSet
from tests.unit.triggers.triggers_testkit import LATENCY_MS_BOUNDS, Stream

START = 1000.0


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the start
    error_rate: float = 0.0
    latency_factor: float = 1.0


@dataclass(frozen=True)
class Outcome:
    decisions: list[tuple[float, str, str]]  # (seconds after the start, rule, version)

    def first_after(self, t: float) -> tuple[float, str] | None:
        later = [(at - t, rule) for at, rule, version in self.decisions if version == "v2" and at >= t]
        return min(later) if later else None


def _latencies(rng: np.random.Generator, n: int, factor: float) -> np.ndarray:
    values = rng.lognormal(np.log(60.0), 0.298, n) * factor * rng.uniform(0.9, 1.15)
    tail = rng.random(n) < 0.001  # a rare slow request: a cold cache, a GC pause
    values[tail] = rng.uniform(250.0, 800.0, int(tail.sum()))
    return values


def simulate(
    rule_set: RuleSet,
    seconds: float,
    *,
    seed: int,
    step_s: float = 1.0,
    rate_per_s: float = 200.0,
    healthy_error_rate: float = 0.005,
    fault: Fault | None = None,
) -> Outcome:
    rng = np.random.default_rng(seed)
    limits = HistoryLimits(max_age_s=max(3600.0, rule_set.max_lookback_s), max_samples=20_000)
    streams = {v: Stream(SignalHistory(limits), START) for v in ("v1", "v2")}
    for stream in streams.values():
        stream.histogram(Signal.ENVOY_RQ_TIME_MS, LATENCY_MS_BOUNDS)
    engine = RuleEngine(rule_set)
    decisions: list[tuple[float, str, str]] = []
    edges = np.array([b for b in LATENCY_MS_BOUNDS if b != float("inf")])
    for tick in range(1, round(seconds / step_s) + 1):
        t = tick * step_s
        for version, stream in streams.items():
            faulty = fault is not None and version == "v2" and t > fault.at_s
            error_rate = fault.error_rate if faulty and fault and fault.error_rate else healthy_error_rate
            factor = fault.latency_factor if faulty and fault else 1.0
            n = int(rng.poisson(rate_per_s / 2 * step_s))
            errors = int(rng.binomial(n, error_rate))
            if rng.random() < step_s / 120:  # about every two minutes, a burst of a few errors
                errors = min(n, errors + int(rng.integers(1, 5)))
            latencies = _latencies(rng, n, factor)
            buckets = np.bincount(np.searchsorted(edges, latencies, side="left"), minlength=len(edges) + 1)
            stream.observe_buckets(Signal.ENVOY_RQ_TIME_MS, buckets.tolist())
            stream.step(step_s, inc={Signal.ENVOY_RQ_TOTAL: n, Signal.ENVOY_RQ_5XX: errors})
        result = engine.evaluate(
            EngineInput(
                now=streams["v2"].ts,
                histories={v: s.history for v, s in streams.items()},
                stable="v1",
                serving={"v1", "v2"},
            )
        )
        decisions.extend((t, d.rule, d.version) for d in result.decisions)
    return Outcome(decisions)
