"""RuleEngine: `for` durations, hysteresis, decisions, version selection, hot reload."""

from __future__ import annotations

from triggers_testkit import Stream, make_rule, traffic

from agent.domain.signals import SignalHistory
from agent.triggers import (
    Action,
    EngineInput,
    RuleBase,
    RuleEngine,
    RuleSet,
    RuleState,
    TickResult,
)


def engine_for(*rules: RuleBase) -> RuleEngine:
    return RuleEngine(RuleSet(rules=rules, tier="critical"))


def tick(engine: RuleEngine, candidate: Stream, stable: Stream | None = None) -> TickResult:
    histories: dict[str, SignalHistory] = {"v2": candidate.history}
    if stable is not None:
        histories["v1"] = stable.history
    return engine.evaluate(EngineInput(now=candidate.ts, histories=histories, stable="v1", serving=("v1", "v2")))


def state(result: TickResult, rule: str, version: str = "v2") -> RuleState:
    return next(s.state for s in result.statuses if s.rule == rule and s.version == version)


def test_breach_must_persist_for_the_for_duration_and_fires_once() -> None:
    engine = engine_for(make_rule("error_rate", **{"for": "20s"}))
    stream = Stream()
    stream.run(60, inc=traffic(10))
    states, decisions = [], []
    for _ in range(40):
        stream.step(inc=traffic(10, 0.5))
        result = tick(engine, stream)
        states.append(state(result, "error-rate"))
        decisions.extend(result.decisions)
    first_breach = states.index(RuleState.PENDING)
    fired = states.index(RuleState.FIRING)
    assert fired - first_breach == 20
    assert len(decisions) == 1
    decision = decisions[0]
    assert decision.action is Action.ROLLBACK and decision.version == "v2"
    assert decision.breach_since == decision.at - 20
    assert "fired for version v2: error rate" in decision.reason


def test_flapping_signal_does_not_flap_the_decision() -> None:
    engine = engine_for(make_rule("error_rate", window="5s", clear_after="30s", min_evidence=10))
    stream = Stream()
    stream.run(10, inc=traffic(10))
    fired_states = []
    decisions = 0
    for second in range(120):
        bad = (second // 5) % 2 == 0  # 5 s bad, 5 s good, ...
        stream.step(inc=traffic(10, 0.5 if bad else 0.0))
        result = tick(engine, stream)
        decisions += len(result.decisions)
        fired_states.append(state(result, "error-rate"))
    assert decisions == 1
    first = fired_states.index(RuleState.FIRING)
    assert set(fired_states[first:]) == {RuleState.FIRING}


def test_firing_clears_after_clear_after_of_ok() -> None:
    engine = engine_for(make_rule("error_rate", window="5s", clear_after="30s", min_evidence=10))
    stream = Stream()
    stream.run(10, inc=traffic(10, 0.5))
    assert state(tick(engine, stream), "error-rate") is RuleState.FIRING
    states = []
    for _ in range(60):
        stream.step(inc=traffic(10))
        states.append(state(tick(engine, stream), "error-rate"))
    cleared = states.index(RuleState.OK)
    assert 30 <= cleared <= 36  # the window must first empty of errors, then 30 s of ok verdicts


def test_clear_threshold_keeps_firing_until_the_value_recovers_past_it() -> None:
    rule = make_rule("error_rate", window="5s", clear_after="0s", clear_threshold="2%", min_evidence=10)
    engine = engine_for(rule)
    stream = Stream()
    stream.run(10, inc=traffic(100, 0.10))
    assert state(tick(engine, stream), "error-rate") is RuleState.FIRING
    stream.run(10, inc=traffic(100, 0.03))  # below 5% but above the 2% clear threshold
    result = tick(engine, stream)
    assert state(result, "error-rate") is RuleState.FIRING
    assert "(clear threshold)" in result.statuses[0].verdict.reason
    stream.run(10, inc=traffic(100, 0.01))
    assert state(tick(engine, stream), "error-rate") is RuleState.OK


def test_insufficient_evidence_never_fires_and_is_visible() -> None:
    engine = engine_for(make_rule("error_rate"))
    stream = Stream()
    for _ in range(120):
        stream.step(inc=traffic(1, 1.0))  # all requests fail, but 30 per window < 50
        result = tick(engine, stream)
        assert not result.decisions
    status = result.statuses[0]
    assert status.state is RuleState.INSUFFICIENT_EVIDENCE
    assert status.since < stream.ts - 60  # inconclusive for a while: the layer above can report it


def test_insufficient_evidence_does_not_clear_a_firing_rule() -> None:
    engine = engine_for(make_rule("error_rate", clear_after="0s"))
    stream = Stream()
    stream.run(60, inc=traffic(10, 0.5))
    assert state(tick(engine, stream), "error-rate") is RuleState.FIRING
    stream.step(600)  # silence: no samples in the window
    assert state(tick(engine, stream), "error-rate") is RuleState.FIRING


def test_rules_judge_candidates_not_the_stable_version_by_default() -> None:
    stable_rule = make_rule("error_rate", name="stable-errors", versions="stable", action="alert")
    engine = engine_for(make_rule("error_rate"), stable_rule)
    bad_stable, good_candidate = Stream(), Stream()
    bad_stable.run(60, inc=traffic(10, 0.5))
    good_candidate.run(60, inc=traffic(10))
    result = tick(engine, good_candidate, bad_stable)
    assert [(s.rule, s.version, s.state) for s in result.statuses] == [
        ("error-rate", "v2", RuleState.OK),
        ("stable-errors", "v1", RuleState.FIRING),
    ]


def test_alert_and_hold_rules_also_emit_their_decision() -> None:
    engine = engine_for(make_rule("error_rate", action="alert"))
    stream = Stream()
    stream.run(60, inc=traffic(10, 0.5))
    (decision,) = tick(engine, stream).decisions
    assert decision.action is Action.ALERT


def test_hot_reload_keeps_state_of_unchanged_rules_only() -> None:
    slow = make_rule("error_rate", **{"for": "60s"})
    other = make_rule("error_rate", name="other", **{"for": "60s"})
    engine = engine_for(slow, other)
    stream = Stream()
    stream.run(60, inc=traffic(10))
    for _ in range(30):
        stream.step(inc=traffic(10, 0.5))
        tick(engine, stream)
    changed_other = make_rule("error_rate", name="other", **{"for": "60s"}, max_rate="6%")
    engine.replace_rules(RuleSet(rules=(slow, changed_other), tier="critical"))
    for _ in range(40):
        stream.step(inc=traffic(10, 0.5))
        result = tick(engine, stream)
    assert state(result, "error-rate") is RuleState.FIRING  # its pending timer survived the reload
    assert state(result, "other") is RuleState.PENDING  # changed: started over


def test_state_of_a_version_that_left_traffic_is_forgotten() -> None:
    engine = engine_for(make_rule("error_rate"))
    stream = Stream()
    stream.run(60, inc=traffic(10, 0.5))
    assert tick(engine, stream).decisions
    engine.evaluate(EngineInput(now=stream.ts + 1, histories={}, stable="v1", serving=("v1",)))
    stream.run(5, inc=traffic(10, 0.5))
    assert tick(engine, stream).decisions  # back in traffic: a fresh episode


def test_a_rollback_rule_never_decides_to_roll_back_the_stable_version() -> None:
    engine = engine_for(make_rule("error_rate", versions="all"))
    bad_stable, bad_candidate = Stream(), Stream()
    bad_stable.run(60, inc=traffic(10, 0.5))
    bad_candidate.run(60, inc=traffic(10, 0.5))
    decisions = {d.version: d.action for d in tick(engine, bad_candidate, bad_stable).decisions}
    assert decisions == {"v1": Action.ALERT, "v2": Action.ROLLBACK}


def test_explicit_version_list() -> None:
    engine = engine_for(make_rule("error_rate", versions=["v2", "v9"]))
    stream = Stream()
    stream.run(60, inc=traffic(10))
    assert [s.version for s in tick(engine, stream).statuses] == ["v2"]
