"""Shadow comparison gates: agreement rate and error against stable's answers to the same requests."""

import json

import pytest

from agent.domain.shadow import Answer, ShadowJoin, Side, parse_oip_answer
from agent.engine.shadow_gates import judge_shadow_gate
from agent.rollout.machine import GateOutcome
from agent.rollout.plan import RelativeGate, parse_plan
from agent.triggers.errors import RuleFileError


def answer(value):
    return parse_oip_answer(200, json.dumps({"outputs": [{"name": "predict", "data": [value]}]}))


def join_with(pairs, at=100.0):
    join = ShadowJoin()
    for i, (live, shadow) in enumerate(pairs):
        join.add(Side.LIVE, f"r{i}", answer(live), at)
        join.add(Side.SHADOW, f"r{i}", shadow if isinstance(shadow, Answer) else answer(shadow), at)
    return join


def gate(signal, **kw):
    return RelativeGate(kind="relative", signal=signal, window=60, min_requests=10, **kw)


@pytest.mark.parametrize(("disagreeing", "outcome"), [(2, GateOutcome.PASS), (3, GateOutcome.FAIL)])
def test_agreement_rate_fails_below_one_minus_the_margin(disagreeing, outcome):
    join = join_with([(1, 0 if i < disagreeing else 1) for i in range(20)])
    result = judge_shadow_gate(gate("agreement_rate", relative=0.0, absolute=0.1), join, now=110.0)
    assert result.outcome == outcome
    assert result.value == pytest.approx(1 - disagreeing / 20) and result.threshold == pytest.approx(0.9)


def test_too_few_pairs_or_no_capture_is_not_enough_evidence():
    join = join_with([(1, 1)] * 9)
    assert judge_shadow_gate(gate("agreement_rate"), join, now=110.0).outcome == GateOutcome.INSUFFICIENT
    assert judge_shadow_gate(gate("agreement_rate"), None, now=110.0).outcome == GateOutcome.INSUFFICIENT
    # Pairs older than the window do not count.
    old = join_with([(1, 1)] * 50, at=0.0)
    assert judge_shadow_gate(gate("agreement_rate"), old, now=110.0).outcome == GateOutcome.INSUFFICIENT


def test_abs_error_mean_fails_above_the_absolute_limit_and_a_candidate_that_never_answers_fails():
    close = join_with([(1.0, 1.05)] * 20)
    far = join_with([(1.0, 2.0)] * 20)
    g = gate("abs_error_mean", absolute=0.1)
    assert judge_shadow_gate(g, close, now=110.0).outcome == GateOutcome.PASS
    assert judge_shadow_gate(g, far, now=110.0).outcome == GateOutcome.FAIL
    broken = join_with([(1.0, Answer(500))] * 20)
    assert judge_shadow_gate(g, broken, now=110.0).outcome == GateOutcome.FAIL


def test_a_shadow_signal_on_a_stage_without_mirror_is_refused_with_its_line():
    text = """stages:
  - name: five
    weight: 5
    gates:
      - {kind: relative, signal: agreement_rate}
  - name: full
    weight: 100
"""
    with pytest.raises(RuleFileError, match=r"plan\.yaml:2.*mirror share"):
        parse_plan(text, "plan.yaml")
    ok = text.replace("weight: 5\n", "weight: 5\n    mirror: 0.5\n")
    assert parse_plan(ok, "plan.yaml").stages[0].gates[0].signal == "agreement_rate"
