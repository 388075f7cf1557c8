"""SignalHistory: window deltas, counter and histogram resets, gaps and coverage, downsampling, quantiles."""

from __future__ import annotations

import math

import pytest
from triggers_testkit import LATENCY_MS_BOUNDS, Stream, traffic

from agent.domain.signals import Histogram, HistoryLimits, Sample, Signal, SignalHistory

RQ = Signal.ENVOY_RQ_TOTAL


def test_delta_and_rate_over_a_window() -> None:
    stream = Stream()
    stream.run(120, inc=traffic(10))
    history = stream.history
    assert history.delta(RQ, 30) == pytest.approx(300)
    assert history.rate(RQ, 60) == pytest.approx(10)
    assert history.coverage(30) == pytest.approx(1.0)


def test_counter_reset_counts_from_zero() -> None:
    stream = Stream()
    stream.run(20, inc=traffic(10))
    stream.reset_counters(RQ)  # the process restarted: the counter starts again at 0
    stream.step(inc={RQ: 7})
    stream.run(9, inc=traffic(10))
    # 20 s before the reset contribute 10 s x 10 inside the window, then 7 + 90 after it.
    assert stream.history.delta(RQ, 20) == pytest.approx(100 + 7 + 90)


def test_histogram_reset_counts_from_zero() -> None:
    stream = Stream().histogram(Signal.ENVOY_RQ_TIME_MS, LATENCY_MS_BOUNDS)
    stream.run(10, observe={Signal.ENVOY_RQ_TIME_MS: [20.0] * 5})
    stream.histogram(Signal.ENVOY_RQ_TIME_MS, LATENCY_MS_BOUNDS)  # restart: all buckets back to zero
    stream.step(observe={Signal.ENVOY_RQ_TIME_MS: [700.0] * 3})
    delta = stream.history.histogram_delta(Signal.ENVOY_RQ_TIME_MS, 5)
    assert delta is not None
    assert delta.count == pytest.approx(4 * 5 + 3)
    assert delta.bucket_counts()[LATENCY_MS_BOUNDS.index(1000.0)] == pytest.approx(3)


def test_first_observation_is_a_baseline_not_an_increase() -> None:
    history = SignalHistory()
    history.append(Sample(1.0, {RQ: 1_000_000}))
    history.append(Sample(2.0, {RQ: 1_000_010}))
    assert history.delta(RQ, 10) == pytest.approx(10)


def test_counter_appearing_mid_window_counts_from_its_first_sample() -> None:
    stream = Stream()
    stream.run(10, inc={RQ: 1})
    stream.run(10, inc={RQ: 1, Signal.HEALTH_OOM: 0})
    stream.step(inc={Signal.HEALTH_OOM: 1})
    assert stream.history.delta(Signal.HEALTH_OOM, 60) == 1
    assert stream.history.delta("never.reported", 60) is None


def test_gaps_lower_coverage_and_stale_history_has_no_window() -> None:
    stream = Stream()
    stream.run(30, inc=traffic(10))
    stream.step(30, inc=traffic(300))  # 30 s without samples
    stream.run(30, inc=traffic(10))
    assert stream.history.coverage(60) == pytest.approx(0.5, abs=0.03)
    assert stream.history.delta(RQ, 60) == pytest.approx(600, abs=10)
    later = stream.ts + 120
    assert stream.history.window(30, now=later) is None
    assert stream.history.delta(RQ, 30, now=later) is None


def test_out_of_order_samples_are_ignored() -> None:
    history = SignalHistory()
    assert history.append(Sample(5.0, {RQ: 1}))
    assert not history.append(Sample(5.0, {RQ: 2}))
    assert not history.append(Sample(4.0, {RQ: 3}))
    assert len(history) == 1


def test_downsampling_bounds_memory_and_keeps_deltas_exact() -> None:
    history = SignalHistory(HistoryLimits(max_age_s=3600))
    stream = Stream(history)
    stream.run(7200, inc=traffic(10))  # two hours at 1 sample/s
    # 5 min at full resolution, then one frame per 10 s up to 1 h, plus a boundary frame.
    assert len(history) <= 300 + 330 + 5
    assert history.oldest_ts is not None and history.oldest_ts <= stream.ts - 3600
    assert history.delta(RQ, 60) == pytest.approx(600)
    # Beyond the full-resolution region the window start snaps to a kept frame (at most one step earlier).
    assert history.delta(RQ, 1800) == pytest.approx(18000, abs=100)
    assert history.rate(RQ, 1800) == pytest.approx(10)
    assert history.coverage(1800) == pytest.approx(1.0)


def test_max_samples_caps_the_history() -> None:
    history = SignalHistory(HistoryLimits(max_samples=50, downsample=()))
    Stream(history).run(200, inc=traffic(1))
    assert len(history) == 50


def test_readiness_loss_becomes_a_counter_that_survives_downsampling() -> None:
    stream = Stream()
    stream.run(100, gauges={Signal.HEALTH_READY: 1})
    stream.step(gauges={Signal.HEALTH_READY: 0})  # a one-second blip
    stream.run(900, gauges={Signal.HEALTH_READY: 1})
    assert stream.history.delta(Signal.HEALTH_READY_LOST, 1800) == 1
    assert stream.history.delta(Signal.HEALTH_READY_LOST, 300) == 0


def test_gauge_mean_is_time_weighted_and_latest_gauge() -> None:
    stream = Stream()
    stream.run(30, gauges={"model.business.revenue": 10})
    stream.run(30, gauges={"model.business.revenue": 20})
    window = stream.history.window(40)
    assert window is not None
    mean, observed = window.gauge_mean("model.business.revenue")
    assert mean == pytest.approx(17.5, abs=0.5)
    assert observed == pytest.approx(40)
    assert stream.history.latest_gauge("model.business.revenue") == 20
    series = stream.history.gauge_series("model.business.revenue", 5)
    assert [v for _, v in series] == [20] * 5


def test_bucket_deltas_most_recent_first_and_unknown_before_history() -> None:
    stream = Stream()
    stream.run(120, inc={Signal.MODEL_OUTCOMES_CORRECT: 1})
    stream.run(60, inc={Signal.MODEL_OUTCOMES_CORRECT: 2})
    assert stream.history.bucket_deltas(Signal.MODEL_OUTCOMES_CORRECT, 60, 4) == [120, 60, None, None]


def test_feature_names_from_the_layout() -> None:
    stream = Stream().histogram(Signal.feature("age"), (1.0, math.inf)).histogram(Signal.feature("x"), (1.0, math.inf))
    stream.step(inc={Signal.feature_seen("age"): 1})
    assert stream.history.names("histogram", Signal.FEATURE_PREFIX) == ("age", "x")
    assert stream.history.names("counter", Signal.FEATURE_SEEN_PREFIX) == ("age",)


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    histogram = Histogram((100.0, 200.0, math.inf), (50.0, 100.0, 100.0), 10_000.0, 100.0)
    assert histogram.quantile(0.5) == pytest.approx(100.0)
    assert histogram.quantile(0.75) == pytest.approx(150.0)
    assert histogram.fraction_above(150.0) == pytest.approx(0.25)
    assert histogram.fraction_above(200.0) == pytest.approx(0.0)
    overflow = Histogram((100.0, math.inf), (90.0, 100.0), 0.0, 100.0)
    assert overflow.quantile(0.99) == 100.0  # Prometheus: the highest finite bound
    assert overflow.fraction_above(100.0) == pytest.approx(0.1)
    assert Histogram((1.0, math.inf), (0.0, 0.0), 0.0, 0.0).quantile(0.99) is None
    assert histogram.mean() == pytest.approx(100.0)


def test_non_finite_values_are_treated_as_not_reported() -> None:
    history = SignalHistory()
    history.append(Sample(1.0, {RQ: 10}, {"g": 1.0}))
    history.append(Sample(2.0, {RQ: math.nan}, {"g": math.inf}))
    history.append(Sample(3.0, {RQ: 15}, {"g": 2.0}))
    assert history.delta(RQ, 10) == 5
    assert history.latest_gauge("g") == 2.0


def test_a_window_since_a_moment_counts_nothing_from_before_it() -> None:
    history = SignalHistory()
    for t, total in ((0.0, 0), (1.0, 100), (2.0, 200), (3.0, 210), (4.0, 220)):
        history.append(Sample(t, {RQ: total}))
    # From 1.5: the first sample at or after it is at 2.0, so the 100 requests of 1.0-2.0 are not in the window
    # (`window(2.5)` starts at the sample before 1.5 and counts them).
    window = history.window_since(1.5, 60.0, 4.0)
    assert window is not None and window.delta(RQ) == pytest.approx(20)
    assert history.window(2.5, 4.0).delta(RQ) == pytest.approx(120)  # type: ignore[union-attr]
    assert history.window_since(-math.inf, 2.0, 4.0).delta(RQ) == pytest.approx(20)  # type: ignore[union-attr]
    assert history.window_since(4.5, 60.0, 4.5) is None
