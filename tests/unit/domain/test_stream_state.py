import math
import random

import pytest

from agent.domain.signals import Signal, SignalHistory
from agent.domain.stream_state import Flag, LogEntry, StreamSignal, StreamState

BOUNDS = (1, 5, 10, 50, 100, 500, 1000)
CLUSTERS = {"m__v1": "v1", "m__v2": "v2"}


def state(**kwargs):
    return StreamState(CLUSTERS, BOUNDS, **kwargs)


def test_counts_per_version_with_envoys_signal_names():
    s = state()
    for status, flags in [(200, 0), (503, Flag.CONNECT_FAILURE), (404, 0), (504, Flag.TIMEOUT), (200, 0)]:
        s.add(LogEntry("m__v2", status, 12.0, flags), now=1.0)
    s.add(LogEntry("m__v1", 200, 3.0), now=1.0)
    c = s.sample(2.0)["v2"].counters
    assert c[Signal.ENVOY_RQ_TOTAL] == 5
    assert c[Signal.ENVOY_RQ_5XX] == 2
    assert c[StreamSignal.RQ_4XX] == 1
    assert c[Signal.ENVOY_CX_CONNECT_FAIL] == 1 and c[StreamSignal.RQ_TIMEOUT] == 1
    assert s.sample(2.0)["v1"].counters[Signal.ENVOY_RQ_TOTAL] == 1


def test_latency_histogram_has_envoys_layout_and_le_semantics():
    s = state()
    for latency in (0.5, 1.0, 1.5, 10.0, 2000.0):
        s.add(LogEntry("m__v1", 200, latency), now=1.0)
    s.add(LogEntry("m__v1", 503, None, Flag.CONNECT_FAILURE), now=1.0)  # no upstream answer: no latency
    h = s.sample(2.0)["v1"].histograms[Signal.ENVOY_RQ_TIME_MS]
    assert h.bounds == (*map(float, BOUNDS), math.inf)
    assert h.cumulative == (2, 3, 4, 4, 4, 4, 4, 5)  # 1.0 counts in le=1, 2000 only in +inf
    assert h.count == 5 and h.sum == pytest.approx(2013.0)


def test_unknown_clusters_and_no_route_are_counted_apart():
    s = state()
    s.add(LogEntry("", 404, None, Flag.NO_ROUTE), now=1.0)
    s.add(LogEntry("other__v9", 200, 1.0), now=1.0)
    assert s.unattributed == 2 and s.entries == 2
    assert all(sample.counters[Signal.ENVOY_RQ_TOTAL] == 0 for sample in s.sample(2.0).values())


def test_samples_feed_a_history_that_reads_window_deltas():
    s, history = state(), SignalHistory()
    for t in range(1, 6):
        for _ in range(10):
            s.add(LogEntry("m__v1", 500 if t >= 4 else 200, 7.0), now=float(t))
        history.append(s.sample(float(t))["v1"])
    assert history.delta(Signal.ENVOY_RQ_5XX, 2.0, 5.0) == 20
    assert history.delta(Signal.ENVOY_RQ_TOTAL, 2.0, 5.0) == 20
    assert history.histogram_delta(Signal.ENVOY_RQ_TIME_MS, 2.0, 5.0).count == 20


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_sketch_quantiles_are_within_one_percent_of_exact(q):
    rng = random.Random(7)
    values = [rng.lognormvariate(3.0, 1.0) for _ in range(20_000)]
    s = state()
    for i, v in enumerate(values):
        s.add(LogEntry("m__v1", 200, v), now=100.0 + i / 1000)
    exact = sorted(values)[int(q * (len(values) - 1))]
    assert s.latency_quantile("v1", q, window_s=60, now=120.0) == pytest.approx(exact, rel=0.011)


def test_memory_is_bounded_ring_and_sketch_slots():
    s = state(ring_size=100, sketch_slot_s=1.0, sketch_slots=3)
    for i in range(5_000):
        s.add(LogEntry("m__v1", 500 if i % 2 else 200, float(i % 97), confidence=0.5), now=i / 100)
    recent = s.recent("v1")
    assert len(recent) == 100
    assert [r.ts for r in recent] == sorted(r.ts for r in recent) and recent[-1].ts == pytest.approx(49.99)
    assert recent[-1].error and recent[-1].confidence == 0.5
    assert len(s._versions["v1"].sketches) <= 3
    # Only the kept slots answer: the quantile covers the last ~3 s, not the whole run.
    assert s.latency_quantile("v1", 0.5, window_s=3600, now=50.0) is not None


def test_ring_keeps_unknown_latency_and_confidence_as_missing():
    s = state(ring_size=4)
    s.add(LogEntry("m__v1", 0, None), now=1.0)
    (entry,) = s.recent("v1")
    assert math.isnan(entry.latency_ms) and entry.error and entry.confidence is None
