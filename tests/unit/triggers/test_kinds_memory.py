"""near_oom: memory that stays near the limit breaches; a dip, missing data or no limit does not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from triggers_testkit import Stream, judge, make_rule

from agent.domain.signals import Signal
from agent.triggers import VerdictStatus

BREACH, OK, INSUFFICIENT = VerdictStatus.BREACH, VerdictStatus.OK, VerdictStatus.INSUFFICIENT_EVIDENCE
RATIO = Signal.MODEL_MEMORY_RATIO


class TestNearOom:
    def test_memory_held_above_the_threshold_for_the_window_breaches(self) -> None:
        stream = Stream()
        stream.run(60, gauges={RATIO: 0.5})
        stream.run(31, gauges={RATIO: 0.93})
        verdict = judge(make_rule("near_oom", tier="critical"), stream)
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(0.93)
        assert verdict.threshold == pytest.approx(0.9)
        assert verdict.reason == "memory at least 93.0% of the limit over 30s > 90.0% (latest 93.0%)"

    def test_one_reading_below_the_threshold_in_the_window_is_ok(self) -> None:
        stream = Stream()
        stream.run(20, gauges={RATIO: 0.95})
        stream.step(gauges={RATIO: 0.85})  # a garbage collection, say
        stream.run(9, gauges={RATIO: 0.95})
        verdict = judge(make_rule("near_oom", tier="critical"), stream)
        assert verdict.status is OK
        assert verdict.value == pytest.approx(0.85)

    def test_the_breach_is_over_the_whole_window_not_a_spike(self) -> None:
        stream = Stream()
        stream.run(58, gauges={RATIO: 0.6})
        stream.run(3, gauges={RATIO: 0.97})
        assert judge(make_rule("near_oom", tier="critical"), stream).status is OK

    def test_experimental_tier_is_more_tolerant(self) -> None:
        stream = Stream()
        stream.run(180, gauges={RATIO: 0.93})
        assert judge(make_rule("near_oom", tier="critical"), stream).status is BREACH
        assert judge(make_rule("near_oom", tier="experimental"), stream).status is OK

    def test_a_version_without_a_memory_limit_is_never_judged(self) -> None:
        stream = Stream()
        stream.run(120, gauges={Signal.MODEL_MEMORY_BYTES: 4e9})  # bytes, but no limit: no ratio
        verdict = judge(make_rule("near_oom"), stream)
        assert verdict.status is INSUFFICIENT
        assert "model.memory_ratio observed for 0.0%" in verdict.reason

    def test_patchy_readings_are_insufficient_not_a_breach(self) -> None:
        stream = Stream()
        stream.run(60, gauges={Signal.HEALTH_READY: 1})
        stream.run(10, gauges={Signal.HEALTH_READY: 1, RATIO: 0.99})  # 10 s of a 60 s window
        verdict = judge(make_rule("near_oom"), stream)
        assert verdict.status is INSUFFICIENT

    def test_no_samples_at_all_is_insufficient(self) -> None:
        assert judge(make_rule("near_oom"), None, now=100.0).status is INSUFFICIENT

    def test_clear_threshold_keeps_it_firing_until_memory_falls_below(self) -> None:
        stream = Stream()
        stream.run(60, gauges={RATIO: 0.85})
        rule = make_rule("near_oom", max_ratio="90%", clear_threshold="80%")
        assert judge(rule, stream).status is OK
        assert judge(rule, stream, firing=True).status is BREACH

    def test_ratio_is_checked(self) -> None:
        with pytest.raises(ValidationError, match="max_ratio"):
            make_rule("near_oom", max_ratio=1.5)
