"""The rollout state machine on plain data: stages, gates, breaches, holds, operator actions, restarts."""

from __future__ import annotations

import pytest

from agent.rollout.machine import (
    GateOutcome,
    GateResult,
    Move,
    Progress,
    RolloutMachine,
    RolloutState,
    RolloutStateError,
    Split,
    Status,
    Transition,
)
from agent.rollout.plan import parse_plan

PLAN = """\
stages:
  - {name: shadow, mirror: 10%, min_duration: 60s}
  - {name: canary-5, weight: 5, min_duration: 60s}
  - {name: canary-25, weight: 25, min_duration: 60s}
  - {name: full, weight: 100, min_duration: 60s}
"""

PASS = (GateResult("rule:error-rate", GateOutcome.PASS, "ok"),)
FAIL = (GateResult("rule:error-rate", GateOutcome.FAIL, "error rate 40% > 5%", 0.4, 0.05),)
WAIT = (GateResult("judge:latency_ms", GateOutcome.INSUFFICIENT, "12 of 50 points"),)


def machine(text: str = PLAN) -> RolloutMachine:
    return RolloutMachine(parse_plan(text, "plan.yaml"))


def run(m: RolloutMachine, state: RolloutState, seconds: int, gates=PASS, held=False):  # type: ignore[no-untyped-def]
    """Tick once a second; returns the state and the transitions seen."""
    moves: list[Transition] = []
    for i in range(seconds):
        state, result = m.tick(state, 1.0, 1000.0 + i, gates, held)
        if isinstance(result, Transition):
            moves.append(result)
    return state, moves


def test_a_full_progression_from_shadow_to_verified_stable() -> None:
    m = machine()
    state, started = m.start("v2", "v1", 1000.0)
    assert started.move is Move.STARTED and started.split == Split(0, 0.1)
    state, moves = run(m, state, 250)
    assert [t.move for t in moves] == [Move.ADVANCED, Move.ADVANCED, Move.ADVANCED, Move.COMPLETED]
    assert [t.split for t in moves[:3]] == [Split(5, 0.0), Split(25, 0.0), Split(100, 0.0)]
    assert moves[-1].reason == "every gate of full passed; v2 is verified-stable"
    assert moves[-1].evidence == PASS  # the evidence that justified the promotion
    assert state.status is Status.COMPLETED
    assert Split(25, 0.0).weights("v2", "v1") == {"v2": 25, "v1": 75}


def test_the_minimum_duration_holds_the_stage_even_when_gates_pass() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, moves = run(m, state, 59)
    assert moves == [] and state.stage == 0 and state.in_stage_s == 59
    state, result = m.tick(state, 1.0, 60.0, PASS, held=False)
    assert isinstance(result, Transition) and result.to_stage == 1


def test_not_enough_evidence_extends_the_stage_never_passes_or_fails_it() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, moves = run(m, state, 600, gates=WAIT)
    assert moves == [] and state.stage == 0 and state.status is Status.RUNNING
    _, result = m.tick(state, 1.0, 0.0, WAIT, held=False)
    assert isinstance(result, Progress)
    assert result.waiting_for == "not enough evidence yet: judge:latency_ms (12 of 50 points)"


def test_a_breach_goes_back_one_stage_and_the_stage_restarts() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, _ = run(m, state, 120)  # at canary-25
    assert state.stage == 2
    state, result = m.tick(state, 1.0, 0.0, FAIL, held=False)
    assert isinstance(result, Transition) and result.move is Move.WENT_BACK
    assert (result.from_stage, result.to_stage, result.split) == (2, 1, Split(5, 0.0))
    assert result.reason == (
        "breach in canary-25 (rule:error-rate: error rate 40% > 5%); back to canary-5 (breach 1 of 3)"
    )
    assert state.stage == 1 and state.in_stage_s == 0 and state.breaches == 1


def test_a_breach_in_the_first_stage_or_with_on_breach_stable_goes_to_stable() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, result = m.tick(state, 1.0, 0.0, FAIL, held=False)
    assert isinstance(result, Transition) and result.move is Move.ROLLED_BACK and result.split == Split(0, 0.0)
    assert state.status is Status.ROLLED_BACK and "breach in the first stage" in result.reason

    strict = machine("on_breach: stable\n" + PLAN)
    state, _ = strict.start("v2", "v1", 0.0)
    state, _ = run(strict, state, 120)
    state, result = strict.tick(state, 1.0, 0.0, FAIL, held=False)
    assert isinstance(result, Transition) and result.move is Move.ROLLED_BACK
    assert "(on_breach: stable)" in result.reason


def test_repeated_breaches_end_at_stable() -> None:
    m = machine("max_breaches: 2\n" + PLAN)
    state, _ = m.start("v2", "v1", 0.0)
    state, _ = run(m, state, 120)  # canary-25
    state, first = m.tick(state, 1.0, 0.0, FAIL, held=False)
    assert isinstance(first, Transition) and first.move is Move.WENT_BACK
    state, second = m.tick(state, 1.0, 0.0, FAIL, held=False)
    assert isinstance(second, Transition) and second.move is Move.ROLLED_BACK and "2 breaches" in second.reason


def test_a_hold_freezes_advancement_but_not_going_back() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, _ = run(m, state, 60)  # canary-5
    state, moves = run(m, state, 300, held=True)
    assert moves == [] and state.stage == 1
    _, result = m.tick(state, 1.0, 0.0, PASS, held=True)
    assert isinstance(result, Progress) and "hold" in result.waiting_for
    state, result = m.tick(state, 1.0, 0.0, FAIL, held=True)
    assert isinstance(result, Transition) and result.move is Move.WENT_BACK
    with pytest.raises(RolloutStateError, match="held"):
        m.promote(state, 0.0, "ship it", held=True)


def test_pause_stops_the_clock_and_resume_starts_it() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, _ = run(m, state, 30)
    state, paused = m.pause(state, "investigating")
    assert paused.move is Move.PAUSED and paused.split is None
    state, moves = run(m, state, 600)
    assert moves == [] and state.in_stage_s == 30
    with pytest.raises(RolloutStateError, match="cannot pause: the rollout of v2 is paused"):
        m.pause(state, "again")
    state, _ = m.resume(state, "done")
    state, moves = run(m, state, 30)
    assert [t.move for t in moves] == [Move.ADVANCED]


def test_promote_skips_a_stage_and_abort_goes_to_stable() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, promoted = m.promote(state, 5.0, "urgent fix", held=False)
    assert promoted.move is Move.PROMOTED and promoted.to_stage == 1 and "urgent fix" in promoted.reason
    state, aborted = m.abort(state, 6.0, "bad feature")
    assert aborted.move is Move.ABORTED and aborted.split == Split(0, 0.0)
    assert state.status is Status.ABORTED
    with pytest.raises(RolloutStateError, match="nothing to abort"):
        m.abort(state, 7.0, "twice")
    with pytest.raises(RolloutStateError, match="nothing to promote"):
        m.promote(state, 7.0, "late", held=False)


def test_promoting_the_last_stage_completes() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    for _ in range(3):
        state, _ = m.promote(state, 0.0, "go", held=False)
    state, done = m.promote(state, 0.0, "go", held=False)
    assert done.move is Move.COMPLETED and state.status is Status.COMPLETED


def test_a_restart_resumes_the_stage_with_the_time_spent() -> None:
    """The engine persists the state (plain fields) and hands it back after a restart."""
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, _ = run(m, state, 100)  # canary-5, 40 s in
    restored = RolloutState(**{f: getattr(state, f) for f in RolloutState.__slots__})
    assert (restored.stage, restored.in_stage_s) == (1, 40)
    restored, moves = run(m, restored, 20)
    assert [t.to_stage for t in moves] == [2]


def test_a_candidate_equal_to_stable_is_refused() -> None:
    with pytest.raises(ValueError, match="is the stable version"):
        machine().start("v1", "v1", 0.0)


def test_a_breach_from_outside_the_gates_goes_back_even_while_paused() -> None:
    m = machine()
    state, _ = m.start("v2", "v1", 0.0)
    state, _ = run(m, state, 120)
    state, _ = m.pause(state, "look")
    state, result = m.breach(state, 0.0, FAIL)
    assert result.move is Move.WENT_BACK and state.stage == 1 and state.status is Status.PAUSED
    state, _ = m.abort(state, 0.0, "enough")
    with pytest.raises(RolloutStateError):
        m.breach(state, 0.0, FAIL)
