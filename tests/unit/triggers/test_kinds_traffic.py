"""error_rate, latency_p99, burn_rate, throughput_anomaly: breach, ok, insufficient evidence."""

from __future__ import annotations

import pytest
from triggers_testkit import LATENCY_MS_BOUNDS, Stream, judge, make_rule, traffic

from agent.domain.signals import Baseline, BaselineKey, Signal
from agent.triggers import VerdictStatus

BREACH, OK, INSUFFICIENT = VerdictStatus.BREACH, VerdictStatus.OK, VerdictStatus.INSUFFICIENT_EVIDENCE
LATENCY = Signal.ENVOY_RQ_TIME_MS


class TestErrorRate:
    def test_breach_names_value_threshold_window_and_requests(self) -> None:
        stream = Stream()
        stream.run(60, inc=traffic(10, error_ratio=0.2))
        verdict = judge(make_rule("error_rate"), stream)
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(0.2)
        assert verdict.threshold == 0.05
        assert verdict.evidence == pytest.approx(300)
        assert verdict.reason == "error rate 20.0% > 5.0% over 30s (300 requests; failed: 5xx 60)"

    def test_ok_below_threshold(self) -> None:
        stream = Stream()
        stream.run(60, inc=traffic(10, error_ratio=0.01))
        verdict = judge(make_rule("error_rate"), stream)
        assert verdict.status is OK
        assert "1.0% <= 5.0%" in verdict.reason

    def test_low_traffic_is_insufficient_evidence_not_a_breach(self) -> None:
        stream = Stream()
        stream.run(60, inc=traffic(1, error_ratio=1.0))  # every request fails, but only 30 of them
        verdict = judge(make_rule("error_rate"), stream)
        assert verdict.status is INSUFFICIENT
        assert verdict.reason == "insufficient evidence: 30 requests < 50 minimum over 30s"

    def test_no_data_is_insufficient_evidence(self) -> None:
        assert judge(make_rule("error_rate"), Stream()).status is INSUFFICIENT
        assert judge(make_rule("error_rate"), None, now=100.0).status is INSUFFICIENT

    def test_model_source_reads_the_model_counters(self) -> None:
        stream = Stream()
        stream.run(60, inc={Signal.MODEL_REQUESTS: 10, Signal.MODEL_ERRORS: 2, **traffic(10)})
        assert judge(make_rule("error_rate", source="model"), stream).status is BREACH
        assert judge(make_rule("error_rate", count=["5xx"]), stream).status is OK

    def test_counter_reset_inside_the_window_does_not_fake_a_breach_or_hide_one(self) -> None:
        stream = Stream()
        stream.run(20, inc=traffic(10, 0.2))
        stream.reset_counters(Signal.ENVOY_RQ_TOTAL, Signal.ENVOY_RQ_5XX)
        stream.run(20, inc=traffic(10, 0.2))
        verdict = judge(make_rule("error_rate"), stream)
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(0.2, abs=0.01)


def latency_stream(slow_share: float, rps: int = 20, seconds: int = 120) -> Stream:
    stream = Stream().histogram(LATENCY, LATENCY_MS_BOUNDS)
    slow = round(rps * slow_share)
    stream.run(seconds, observe={LATENCY: [20.0] * (rps - slow) + [400.0] * slow})
    return stream


class TestLatency:
    def test_breach_when_more_than_1pct_slower_than_sla(self) -> None:
        verdict = judge(make_rule("latency_p99", sla_ms=250), latency_stream(0.05))
        assert verdict.status is BREACH
        assert verdict.value is not None and verdict.value > 250
        assert "> SLA 250 ms over 1m (1,200 requests)" in verdict.reason

    def test_ok_when_tail_is_fast(self) -> None:
        verdict = judge(make_rule("latency_p99", sla_ms=250), latency_stream(0.0))
        assert verdict.status is OK
        assert verdict.value is not None and verdict.value <= 25

    def test_insufficient_with_few_requests(self) -> None:
        verdict = judge(make_rule("latency_p99", sla_ms=250), latency_stream(0.0, rps=1, seconds=40))
        assert verdict.status is INSUFFICIENT
        assert verdict.reason == "insufficient evidence: 39 requests < 50 minimum over 1m"

    def test_sla_above_the_last_bucket_edge_is_not_judged_as_a_breach(self) -> None:
        stream = Stream().histogram(LATENCY, (10.0, 100.0, float("inf")))
        stream.run(120, observe={LATENCY: [5.0] * 18 + [150.0] * 2})
        verdict = judge(make_rule("latency_p99", sla_ms=250), stream)
        assert verdict.status is INSUFFICIENT
        assert "bucket edge" in verdict.reason

    def test_model_source_in_seconds(self) -> None:
        stream = Stream().histogram(Signal.MODEL_LATENCY_S, tuple(b / 1000 for b in LATENCY_MS_BOUNDS))
        stream.run(120, observe={Signal.MODEL_LATENCY_S: [0.02] * 18 + [0.4] * 2})
        verdict = judge(make_rule("latency_p99", sla_ms=250, source="model"), stream)
        assert verdict.status is BREACH


class TestBurnRate:
    def test_breach_when_both_windows_burn(self) -> None:
        stream = Stream()
        stream.run(1800, inc=traffic(10, error_ratio=0.02))  # 20x burn of a 99.9% SLO
        verdict = judge(make_rule("burn_rate"), stream)
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(20, rel=0.01)

    def test_short_spike_alone_is_not_a_breach(self) -> None:
        stream = Stream()
        stream.run(3300, inc=traffic(10, 0.0))
        stream.run(300, inc=traffic(10, error_ratio=0.1))  # short window 100x, long window ~8x
        verdict = judge(make_rule("burn_rate"), stream)
        assert verdict.status is OK
        assert "not both > 14.4x" in verdict.reason

    def test_insufficient_without_requests_in_the_short_window(self) -> None:
        stream = Stream()
        stream.run(600, inc=traffic(0.05, error_ratio=1.0))
        assert judge(make_rule("burn_rate"), stream).status is INSUFFICIENT


class TestThroughputAnomaly:
    registry = Baseline({BaselineKey.THROUGHPUT_RPS_MEAN: 100.0, BaselineKey.THROUGHPUT_RPS_STD: 10.0})

    def test_breach_on_a_traffic_collapse(self) -> None:
        stream = Stream()
        stream.run(120, inc=traffic(40))
        verdict = judge(make_rule("throughput_anomaly"), stream, baseline=self.registry)
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(-6.0)

    def test_ok_within_three_sigma(self) -> None:
        stream = Stream()
        stream.run(120, inc=traffic(110))
        assert judge(make_rule("throughput_anomaly"), stream, baseline=self.registry).status is OK

    def test_spike_only_rule_ignores_a_drop(self) -> None:
        stream = Stream()
        stream.run(120, inc=traffic(40))
        rule = make_rule("throughput_anomaly", direction="spike")
        assert judge(rule, stream, baseline=self.registry).status is OK

    def test_below_the_low_traffic_floor_is_insufficient(self) -> None:
        stream = Stream()
        stream.run(120, inc=traffic(0.01))
        quiet = Baseline({BaselineKey.THROUGHPUT_RPS_MEAN: 0.2, BaselineKey.THROUGHPUT_RPS_STD: 0.1})
        verdict = judge(make_rule("throughput_anomaly"), stream, baseline=quiet)
        assert verdict.status is INSUFFICIENT
        assert "low-traffic floor" in verdict.reason

    def test_history_baseline_detects_a_spike_against_its_own_past(self) -> None:
        stream = Stream()
        for minute in range(30):
            stream.run(60, inc=traffic(50 + (minute % 3)))
        stream.run(60, inc=traffic(200))
        assert judge(make_rule("throughput_anomaly"), stream).status is BREACH

    def test_history_baseline_needs_enough_history(self) -> None:
        stream = Stream()
        stream.run(180, inc=traffic(50))
        verdict = judge(make_rule("throughput_anomaly"), stream)
        assert verdict.status is INSUFFICIENT
        assert "baseline windows" in verdict.reason


def test_sampling_gaps_make_a_window_inconclusive() -> None:
    stream = Stream()
    stream.run(60, inc=traffic(10))
    stream.step(25, inc=traffic(250, error_ratio=0.5))  # the source was unreachable for 25 s
    stream.step(inc=traffic(10, error_ratio=0.5))
    verdict = judge(make_rule("error_rate"), stream)
    assert verdict.status is INSUFFICIENT
    assert verdict.reason.startswith("insufficient evidence: samples cover")
