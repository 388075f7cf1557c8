"""Tier profiles: the same signals judged differently per tier; resolution order rule > tier > built-in."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter
from triggers_testkit import CONFIDENCE_BOUNDS, LATENCY_MS_BOUNDS, Stream, judge, make_rule, traffic

from agent.domain.signals import Baseline, BaselineKey, Signal
from agent.triggers import (
    Action,
    EngineInput,
    Rule,
    RuleBase,
    RuleEngine,
    RuleFileError,
    RuleResolutionError,
    RuleSet,
    RuleState,
    VerdictStatus,
    load_tier_profile,
    resolve_rule,
    tier_profile,
)

BREACH, OK, INSUFFICIENT = VerdictStatus.BREACH, VerdictStatus.OK, VerdictStatus.INSUFFICIENT_EVIDENCE


def written(kind: str, **fields: object) -> RuleBase:
    rule: RuleBase = TypeAdapter(Rule).validate_python({"name": "r", "kind": kind, **fields})
    return rule


def test_shipped_profiles_load() -> None:
    assert tier_profile("critical").tier == "critical"
    assert tier_profile("experimental").tier == "experimental"


def test_confidence_drop_of_20pct_breaches_critical_but_not_experimental() -> None:
    stream = Stream().histogram(Signal.MODEL_CONFIDENCE, CONFIDENCE_BOUNDS)
    stream.run(1000, observe={Signal.MODEL_CONFIDENCE: [0.64] * 5})
    baseline = Baseline({BaselineKey.CONFIDENCE_MEAN: 0.8})
    assert judge(make_rule("confidence_drop", tier="critical"), stream, baseline=baseline).status is BREACH
    assert judge(make_rule("confidence_drop", tier="experimental"), stream, baseline=baseline).status is OK


def test_error_spike_of_one_minute_is_judged_by_critical_only() -> None:
    stream = Stream()
    stream.run(60, inc=traffic(10, 0.2))
    assert judge(make_rule("error_rate", tier="critical"), stream).status is BREACH
    # experimental looks at 5 minutes: one minute of samples is not enough evidence yet
    assert judge(make_rule("error_rate", tier="experimental"), stream).status is INSUFFICIENT
    stream.run(300, inc=traffic(10, 0.2))
    assert judge(make_rule("error_rate", tier="experimental"), stream).status is BREACH


def test_tier_sets_timing_and_actions() -> None:
    critical, experimental = (
        make_rule("latency_p99", "critical", sla_ms=200),
        make_rule("latency_p99", "experimental", sla_ms=200),
    )
    assert (critical.for_, experimental.for_) == (300, 900)
    assert make_rule("feature_drift", "critical").action is Action.ROLLBACK
    assert make_rule("feature_drift", "experimental").action is Action.ALERT
    assert make_rule("burn_rate", "experimental").lookback_s == 6 * 3600


def test_resolution_order_rule_then_tier_then_builtin() -> None:
    rule = written("confidence_drop", max_drop="30%")
    assert resolve_rule(rule, tier_profile("experimental")).model_dump()["max_drop"] == 0.3  # rule wins
    plain = written("confidence_drop")
    assert resolve_rule(plain, tier_profile("experimental")).model_dump()["max_drop"] == 0.25  # tier
    assert resolve_rule(plain, None).model_dump()["max_drop"] == 0.15  # built-in


def test_min_evidence_merges_key_by_key(tmp_path: Path) -> None:
    profile_path = tmp_path / "strict.yaml"
    profile_path.write_text(
        "tier: strict\ncommon:\n  min_evidence: {coverage: 0.7}\n"
        "defaults:\n  error_rate:\n    min_evidence: {requests: 200}\n"
    )
    profile = load_tier_profile(profile_path)
    resolved = resolve_rule(written("error_rate", min_evidence={"coverage": 0.9}), profile)
    assert resolved.min_evidence.model_dump() == {"coverage": 0.9, "requests": 200}
    resolved = resolve_rule(written("error_rate", min_evidence=10), profile)
    assert resolved.min_evidence.model_dump() == {"coverage": 0.7, "requests": 10}


def test_cross_field_problems_are_found_after_resolution() -> None:
    rule = written("error_rate", clear_threshold="8%")  # above the tier's 5% threshold
    with pytest.raises(RuleResolutionError, match=r"clear_threshold: must be <= the threshold 0\.05"):
        resolve_rule(rule, tier_profile("critical"))
    assert resolve_rule(written("error_rate", clear_threshold="8%", max_rate="10%"), None)


def test_tier_profile_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tier: bad\ndefaults:\n  error_rate:\n    window: 30s\n    max_rate: 5 percent\n")
    with pytest.raises(RuleFileError) as raised:
        load_tier_profile(path)
    (error,) = raised.value.errors
    assert (error.source, error.line) == (str(path), 5)
    assert "max_rate" in error.message and "invalid ratio" in error.message


def test_same_sustained_latency_breach_fires_under_critical_but_is_still_pending_under_experimental() -> None:

    engines = {
        tier: RuleEngine(RuleSet(rules=(make_rule("latency_p99", tier, sla_ms=250),), tier=tier))
        for tier in ("critical", "experimental")
    }
    stream = Stream().histogram(Signal.ENVOY_RQ_TIME_MS, LATENCY_MS_BOUNDS)
    states = {}
    for _ in range(7 * 60):  # 7 minutes with 10% of requests slower than the SLA
        stream.step(observe={Signal.ENVOY_RQ_TIME_MS: [20.0] * 9 + [400.0]})
        for tier, engine in engines.items():
            inputs = EngineInput(now=stream.ts, histories={"v2": stream.history}, stable="v1", serving=("v1", "v2"))
            states[tier] = engine.evaluate(inputs).statuses[0].state
    assert states == {"critical": RuleState.FIRING, "experimental": RuleState.PENDING}
