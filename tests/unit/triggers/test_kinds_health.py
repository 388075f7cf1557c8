"""crash and business_metric: breach, ok, insufficient evidence."""

from __future__ import annotations

import pytest
from triggers_testkit import Stream, judge, make_rule, traffic

from agent.domain.signals import Signal
from agent.triggers import VerdictStatus

BREACH, OK, INSUFFICIENT = VerdictStatus.BREACH, VerdictStatus.OK, VerdictStatus.INSUFFICIENT_EVIDENCE
HEALTH = {Signal.HEALTH_OOM: 0, Signal.HEALTH_CRASHES: 0, Signal.ENVOY_CX_CONNECT_FAIL: 0}


class TestCrash:
    def test_one_oom_of_the_new_version_breaches(self) -> None:
        stream = Stream()
        stream.run(600, inc=HEALTH, gauges={Signal.HEALTH_READY: 1})
        stream.step(inc={Signal.HEALTH_OOM: 1})
        verdict = judge(make_rule("crash"), stream)
        assert verdict.status is BREACH
        assert verdict.reason == "1 failure event > 0 allowed over 30m (health.oom: 1)"

    def test_readiness_loss_is_an_event(self) -> None:
        stream = Stream()
        stream.run(600, inc=HEALTH, gauges={Signal.HEALTH_READY: 1})
        stream.run(5, inc=HEALTH, gauges={Signal.HEALTH_READY: 0})
        assert judge(make_rule("crash"), stream).status is BREACH

    def test_ok_without_events(self) -> None:
        stream = Stream()
        stream.run(1200, inc=HEALTH, gauges={Signal.HEALTH_READY: 1})
        assert judge(make_rule("crash"), stream).status is OK

    def test_experimental_tier_allows_two_events(self) -> None:
        stream = Stream()
        stream.run(1200, inc=HEALTH)
        stream.step(inc={Signal.HEALTH_CRASHES: 2})
        assert judge(make_rule("crash"), stream).status is BREACH
        assert judge(make_rule("crash", tier="experimental"), stream).status is OK

    def test_ok_needs_coverage_but_observed_events_do_not(self) -> None:
        stream = Stream()
        stream.run(60, inc=HEALTH)
        assert judge(make_rule("crash"), stream).status is INSUFFICIENT  # 1 min of a 30 min window
        stream.step(inc={Signal.HEALTH_OOM: 1})
        assert judge(make_rule("crash"), stream).status is BREACH

    def test_no_health_signal_reported_is_insufficient(self) -> None:
        stream = Stream()
        stream.run(1200, inc=traffic(1))
        verdict = judge(make_rule("crash"), stream)
        assert verdict.status is INSUFFICIENT
        assert "none of" in verdict.reason


CONVERSION = Signal.business("conversion_rate")


class TestBusinessMetric:
    def test_breach_below(self) -> None:
        stream = Stream()
        stream.run(600, gauges={CONVERSION: 0.01})
        verdict = judge(make_rule("business_metric", metric="conversion_rate", below=0.02), stream)
        assert verdict.status is BREACH
        assert verdict.reason == "conversion_rate (mean) 0.01 < 0.02 over 5m"

    def test_ok_within_bounds(self) -> None:
        stream = Stream()
        stream.run(600, gauges={CONVERSION: 0.03})
        rule = make_rule("business_metric", metric="conversion_rate", below=0.02, above=0.5)
        verdict = judge(rule, stream)
        assert verdict.status is OK
        assert verdict.value == pytest.approx(0.03)

    def test_breach_above_with_max_aggregate(self) -> None:
        stream = Stream()
        stream.run(290, gauges={"model.business.refund_rate": 0.01})
        stream.run(10, gauges={"model.business.refund_rate": 0.2})
        rule = make_rule("business_metric", metric="refund_rate", above=0.1, aggregate="max")
        assert judge(rule, stream).status is BREACH
        assert judge(make_rule("business_metric", metric="refund_rate", above=0.1), stream).status is OK

    def test_gauge_not_reported_is_insufficient(self) -> None:
        stream = Stream()
        stream.run(600, inc=traffic(1))
        verdict = judge(make_rule("business_metric", metric="conversion_rate", below=0.02), stream)
        assert verdict.status is INSUFFICIENT
