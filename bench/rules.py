"""Benchmark one RuleEngine tick: 1,000 rules over 2 versions with 50 features each, on 1 h of history.

Run from the repo root:  .venv/bin/python bench/rules.py
The last line is JSON: {"rules": 1000, "tick_ms_p50": ..., "tick_ms_p99": ..., "rss_mb": ...}
"""

from __future__ import annotations

import gc
import random
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import TypeAdapter

from agent.domain.signals import (
    Baseline,
    BaselineKey,
    Histogram,
    HistoryLimits,
    ReferenceBins,
    Sample,
    Signal,
    SignalHistory,
)
from agent.triggers import EngineInput, Rule, RuleBase, RuleEngine, RuleSet, resolve_rule, tier_profile
from harness.measure import write_result

RULES = 1000
FEATURES = 50
VERSIONS = ("v1", "v2")
HISTORY_S = 3600
TICKS = 300
INF = float("inf")
FEATURE_BOUNDS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, INF)
LATENCY_BOUNDS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, INF)
CONFIDENCE_BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, INF)
REFERENCE = (0.02, 0.05, 0.1, 0.15, 0.18, 0.18, 0.15, 0.1, 0.05, 0.02)
FEATURE_NAMES = [f"f{i:02d}" for i in range(FEATURES)]


class VersionFeed:
    """Cumulative signals of one version, one sample per second."""

    def __init__(self, rng: random.Random, error_ratio: float) -> None:
        self.rng = rng
        self.error_ratio = error_ratio
        self.counters: dict[str, float] = {}
        self.histograms: dict[str, list[float]] = {}
        self.sums: dict[str, float] = {}
        self.bounds: dict[str, tuple[float, ...]] = {}
        for name in FEATURE_NAMES:
            self._histogram(Signal.feature(name), FEATURE_BOUNDS)
        self._histogram(Signal.ENVOY_RQ_TIME_MS, LATENCY_BOUNDS)
        self._histogram(Signal.MODEL_CONFIDENCE, CONFIDENCE_BOUNDS)

    def _histogram(self, name: str, bounds: tuple[float, ...]) -> None:
        self.bounds[name] = bounds
        self.histograms[name] = [0.0] * len(bounds)
        self.sums[name] = 0.0

    def _add(self, name: str, amount: float) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + amount

    def _observe(self, name: str, weights: tuple[float, ...], n: int, mean: float) -> None:
        cumulative = self.histograms[name]
        running = 0.0
        for i, weight in enumerate(weights):
            running += weight * n
            cumulative[i] += running
        self.sums[name] += mean * n

    def sample(self, ts: float) -> Sample:
        rps = 20 + self.rng.random() * 4
        self._add(Signal.ENVOY_RQ_TOTAL, rps)
        self._add(Signal.ENVOY_RQ_5XX, rps * self.error_ratio)
        self._add(Signal.ENVOY_CX_CONNECT_FAIL, 0)
        self._add(Signal.MODEL_REQUESTS, rps)
        self._add(Signal.MODEL_ERRORS, rps * self.error_ratio)
        self._add(Signal.MODEL_OUTCOMES_CORRECT, 0.9)
        self._add(Signal.MODEL_OUTCOMES_INCORRECT, 0.1)
        for counter in (Signal.HEALTH_CRASHES, Signal.HEALTH_OOM, Signal.HEALTH_RESTARTS):
            self._add(counter, 0)
        for name in FEATURE_NAMES:
            self._add(Signal.feature_seen(name), 20)
            self._add(Signal.feature_missing(name), 0.1)
            self._observe(Signal.feature(name), REFERENCE, 20, 0.0)
        self._observe(Signal.ENVOY_RQ_TIME_MS, (0.3, 0.3, 0.2, 0.1, 0.05, 0.04, 0.01, 0.0, 0.0), 20, 20.0)
        self._observe(Signal.MODEL_CONFIDENCE, (0, 0, 0, 0, 0.1, 0.1, 0.2, 0.3, 0.3, 0), 20, 0.75)
        histograms = {
            name: Histogram(self.bounds[name], tuple(cum), self.sums[name], cum[-1])
            for name, cum in self.histograms.items()
        }
        gauges = {
            Signal.HEALTH_READY: 1.0,
            Signal.HEALTH_GOLDEN_OK: 1.0,
            Signal.HEALTH_PIPELINE_OK: 1.0,
            Signal.MODEL_MEMORY_BYTES: 2e9,
            Signal.business("conversion_rate"): 0.03 + self.rng.random() * 0.001,
        }
        return Sample(ts, dict(self.counters), gauges, histograms)


def rule_specs(count: int) -> list[dict[str, Any]]:
    """A mix of every kind. Thresholds differ for every rule (so no two rules reach the same judgment);
    windows come from a few realistic values, as in real rule sets."""
    makers = [
        lambda i, u: {"kind": "error_rate", "window": ["30s", "1m", "5m"][i % 3], "max_rate": 0.01 + u},
        lambda i, u: {"kind": "latency_p99", "sla_ms": 100 + 400 * u, "window": ["1m", "5m"][i % 2]},
        lambda i, u: {"kind": "primary_metric", "min_accuracy": 0.8 + u, "consecutive": [10, 30][i % 2]},
        lambda i, u: {"kind": "confidence_drop", "window": ["5m", "15m"][i % 2], "max_drop": 0.1 + u},
        lambda i, u: {"kind": "feature_drift", "window": ["5m", "15m"][i % 2], "max_kl": 0.05 + u},
        lambda i, u: {"kind": "missing_features", "window": ["1m", "5m"][i % 2], "max_increase": 0.01 + u},
        lambda i, u: {"kind": "crash", "window": ["10m", "30m"][i % 2], "max_events": i % 5},
        lambda i, u: {"kind": "throughput_anomaly", "max_z": 3 + u, "baseline": ["registry", "history"][i % 2]},
        lambda i, u: {"kind": "business_metric", "metric": "conversion_rate", "below": 0.01 + u},
        lambda i, u: {"kind": "burn_rate", "factor": [14.4, 6.0][i % 2] + u, "short_window": ["5m", "30m"][i % 2]},
    ]
    specs = []
    for i in range(count):
        n = i // len(makers)
        unique = n / (count // len(makers) + 1) / 10  # in [0, 0.1), different for every rule of a kind
        specs.append({"name": f"rule-{i:04d}", "versions": "all", **makers[i % len(makers)](n, unique)})
    return specs


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    rng = random.Random(7)
    adapter: TypeAdapter[RuleBase] = TypeAdapter(Rule)
    profile = tier_profile("critical")
    rules = tuple(resolve_rule(adapter.validate_python(spec), profile) for spec in rule_specs(RULES))
    rule_set = RuleSet(rules=rules, tier="critical", source="bench")
    limits = HistoryLimits(max_age_s=max(HISTORY_S, rule_set.max_lookback_s))
    histories = {version: SignalHistory(limits) for version in VERSIONS}
    feeds = {"v1": VersionFeed(rng, 0.001), "v2": VersionFeed(rng, 0.002)}
    baseline = Baseline(
        numbers={
            BaselineKey.CONFIDENCE_MEAN: 0.78,
            BaselineKey.THROUGHPUT_RPS_MEAN: 22.0,
            BaselineKey.THROUGHPUT_RPS_STD: 2.0,
            **{BaselineKey.missing_rate(name): 0.005 for name in FEATURE_NAMES},
        },
        reference_bins={name: ReferenceBins(FEATURE_BOUNDS, REFERENCE) for name in FEATURE_NAMES},
    )
    baselines = dict.fromkeys(VERSIONS, baseline)

    started = time.perf_counter()
    ts = 10_000.0
    for _ in range(HISTORY_S):
        ts += 1.0
        for version in VERSIONS:
            histories[version].append(feeds[version].sample(ts))
    fill_s = time.perf_counter() - started
    engine = RuleEngine(rule_set)
    # As the agent does once started: move start-up objects out of the collector's way, so full collections
    # (triggered by each tick's few thousand verdicts) do not rescan them.
    gc.collect()
    gc.freeze()
    tick_ms: list[float] = []
    append_ms: list[float] = []
    decisions = statuses = 0
    for _ in range(TICKS):
        ts += 1.0
        append_started = time.perf_counter()
        for version in VERSIONS:
            histories[version].append(feeds[version].sample(ts))
        append_ms.append((time.perf_counter() - append_started) * 1000)
        inputs = EngineInput(now=ts, histories=histories, stable="v1", serving=VERSIONS, baselines=baselines)
        tick_started = time.perf_counter()
        result = engine.evaluate(inputs)
        tick_ms.append((time.perf_counter() - tick_started) * 1000)
        decisions += len(result.decisions)
        statuses = len(result.statuses)

    tick_ms.sort()
    p50 = statistics.median(tick_ms)
    p99 = tick_ms[min(len(tick_ms) - 1, int(len(tick_ms) * 0.99))]
    frames = sum(len(h) for h in histories.values())
    stored_mb = sum(h.stored_values() for h in histories.values()) * 8 / 1e6
    print(f"history fill: {HISTORY_S} s x {len(VERSIONS)} versions in {fill_s:.1f} s")
    print(f"kept frames: {frames} ({stored_mb:.1f} MB of values), append p50 {statistics.median(append_ms):.2f} ms")
    print(f"tick: {statuses} rule x version evaluations, p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {tick_ms[-1]:.2f} ms")
    print(f"decisions emitted over {TICKS} ticks: {decisions}")
    result = {
        "bench": "rules",
        "rules": RULES,
        "tick_ms_p50": round(p50, 3),
        "tick_ms_p99": round(p99, 3),
        "rss_mb": round(rss_mb(), 1),
        "targets": {"tick_ms_p99": 20, "rss_mb": 60},
    }
    write_result("rules", result)


if __name__ == "__main__":
    main()
