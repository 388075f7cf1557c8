"""Admission: every reason not to act (dedupe, pause, holds, guards, cooldown, hourly cap), and that each of them
survives a restart (a new Admission restored from the same store), driven with the real rollback procedure and
fakes for its ports (tests/unit/engine/test_orchestrator.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.config import RollbackSection
from agent.engine.decisions import Action, DecisionOutcome
from agent.engine.traffic import TrafficChangeError
from agent.ports.rollback import CheckResult
from agent.ports.store import StoreUnavailableError
from tests.unit.engine.test_orchestrator import (
    MODEL,
    Clock,
    Rig,
    alert_event,
    make_rig,
    operator_event,
    rule_event,
)
from tests.unit.engine.test_traffic import established_store

NO_LIMITS = RollbackSection(cooldown_s=0, max_per_hour=100, verify_window_s=0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock):
    # The store stamps records with the same clock admission reads: restored cooldowns and caps line up.
    s = await established_store(tmp_path / "state.db", {"v1": 0, "v2": 50, "v3": 50}, model=MODEL, clock=clock)
    yield s
    await s.close()


@pytest.fixture
async def rigs(store: SqliteStateStore, clock: Clock):
    """Build rigs on the one store (the first, then 'restarted' ones); all closed at the end."""
    made: list[Rig] = []

    async def build(settings: RollbackSection = NO_LIMITS) -> Rig:
        rig = await make_rig(store, settings, clock)
        made.append(rig)
        return rig

    yield build
    for rig in made:
        await rig.orchestrator.close()


# --- dedupe ----------------------------------------------------------------------------------------------------


async def test_a_duplicate_does_not_act_and_another_occurrence_does(rigs):
    rig = await rigs()
    first = await rig.handle(alert_event(key="fp-1@2024-08-12T09:30:00Z"))
    assert first.outcome is DecisionOutcome.ROLLED_BACK
    await rig.rearm()
    applied = len(rig.sink.applied)
    again = await rig.handle(alert_event(key="fp-1@2024-08-12T09:30:00Z"))
    assert again.outcome is DecisionOutcome.DUPLICATE
    assert "duplicate" in again.detail
    assert len(rig.sink.applied) == applied
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    other = await rig.handle(alert_event(key="fp-1@2024-08-12T10:00:00Z"))
    assert other.outcome is DecisionOutcome.ROLLED_BACK


async def test_the_retry_of_an_attempt_that_raised_acts(rigs):
    rig = await rigs()
    targets = rig.planner.targets
    calls = 0

    async def flaky(failing, choice):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailableError("state store state.db: disk full")
        return await targets(failing, choice)

    rig.planner.targets = flaky
    with pytest.raises(StoreUnavailableError):
        await rig.handle(alert_event(key="fp-2@t"))
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    retry = await rig.handle(alert_event(key="fp-2@t"))
    assert retry.outcome is DecisionOutcome.ROLLED_BACK, "a failed attempt must not make the retry a duplicate"
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}


async def test_an_escalated_trigger_acts_again_after_the_hold_off_only(rigs):
    rig = await rigs()
    rig.health.unhealthy["v2"] = [CheckResult("ready", False, "timed out")]
    rig.planner.incompatible["v1"] = ("needs 1 GPU, the pod has 0",)
    first = await rig.handle(rule_event(key="alert:k"))
    assert first.outcome is DecisionOutcome.FAILED
    rig.health.unhealthy.pop("v2")  # the target's health check passes again
    soon = await rig.handle(rule_event(key="alert:k"))
    assert soon.outcome is DecisionOutcome.DUPLICATE, "re-deliveries within the hold-off do not act"
    rig.monotonic.now += 31  # escalation_retry_s = 30
    later = await rig.handle(rule_event(key="alert:k"))
    assert later.outcome is DecisionOutcome.ROLLED_BACK
    third = await rig.handle(rule_event(key="alert:k"))
    assert third.outcome is DecisionOutcome.DUPLICATE  # acted once: a duplicate from now on


async def test_dedupe_memory_survives_a_restart(rigs):
    rig = await rigs()
    assert (await rig.handle(alert_event(key="fp-3@t"))).outcome is DecisionOutcome.ROLLED_BACK
    await rig.rearm()
    restarted = await rigs()
    again = await restarted.handle(alert_event(key="fp-3@t"))
    assert again.outcome is DecisionOutcome.DUPLICATE, "a crash-looping agent must not act twice"
    assert restarted.weights() == {"v1": 0, "v2": 50, "v3": 50}


# --- holds and guards -----------------------------------------------------------------------------------------


async def test_hold_then_resolved_alert_releases_it_and_never_moves_traffic(rigs):
    rig = await rigs()
    applied = len(rig.sink.applied)
    held = await rig.handle(alert_event(action=Action.HOLD, key="a"))
    assert held.outcome is DecisionOutcome.HELD
    assert rig.admission.holds == {"v3": "ModelHighErrorRate"}
    released = await rig.handle(alert_event(action=Action.HOLD, key="b", resolved=True))
    assert released.outcome is DecisionOutcome.HOLD_RELEASED
    assert rig.admission.holds == {}
    # A resolved rollback alert with no hold is only recorded.
    resolved = await rig.handle(alert_event(key="c", resolved=True))
    assert resolved.outcome is DecisionOutcome.RECORDED
    assert "no traffic moves" in resolved.detail
    assert len(rig.sink.applied) == applied
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    assert rig.planner.targets_calls == []
    events = [r.WhichOneof("event") for r in await rig.store.records()]
    assert events[-2:] == ["hold_changed", "hold_changed"]


async def test_a_hold_is_enforced_by_the_traffic_controller_unless_forced(rigs):
    rig = await rigs()
    assert rig.traffic.guards == rig.admission.blockers
    await rig.admission.set_hold("v3", True, reason="INC-7 under investigation", actor="operator:ana")
    applied = len(rig.sink.applied)
    with pytest.raises(TrafficChangeError, match="v3: held: INC-7 under investigation") as err:
        await rig.traffic.set_weights({"v2": 10, "v3": 90}, reason="promote", actor="operator:bob")
    assert err.value.code == "refused"
    assert len(rig.sink.applied) == applied and rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    # Moving traffic away from a held version is always allowed.
    await rig.traffic.set_weights({"v2": 90, "v3": 10}, reason="ramp down", actor="operator:bob")
    result = await rig.traffic.set_weights({"v3": 100}, reason="override", actor="operator:bob", force=True)
    assert result.changed and rig.weights() == {"v1": 0, "v2": 0, "v3": 100}
    intent = [r for r in await rig.store.records() if r.WhichOneof("event") == "traffic_intent"][-1]
    assert intent.traffic_intent.forced
    assert list(intent.traffic_intent.overridden) == ["v3: held: INC-7 under investigation"]
    assert intent.actor == "operator:bob"


@pytest.mark.parametrize("status", ["failed", "quarantined"])
async def test_a_failed_or_quarantined_version_gets_no_more_traffic_unforced(rigs, status):
    rig = await rigs()
    rig.planner.status["v3"] = status
    with pytest.raises(TrafficChangeError, match=f"its registry status is {status}") as err:
        await rig.traffic.set_weights({"v3": 100}, reason="promote", actor="operator:bob")
    assert err.value.code == "refused"
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    await rig.traffic.set_weights({"v3": 100}, reason="promote", actor="operator:bob", force=True)
    assert rig.weights() == {"v1": 0, "v2": 0, "v3": 100}


async def test_holds_survive_a_restart(rigs):
    rig = await rigs()
    await rig.admission.set_hold("v3", True, reason="INC-7", actor="operator:ana")
    restarted = await rigs()
    assert restarted.admission.holds == {"v3": "INC-7"}
    with pytest.raises(TrafficChangeError) as err:
        await restarted.traffic.set_weights({"v3": 100}, reason="promote", actor="operator:bob")
    assert err.value.code == "refused"
    await restarted.admission.set_hold("v3", False, reason="resolved", actor="operator:ana")
    assert (await rigs()).admission.holds == {}


# --- pause, cooldown, hourly cap -------------------------------------------------------------------------------


async def test_paused_automation_suppresses_automatic_rollbacks_only(rigs):
    rig = await rigs()
    await rig.traffic.set_paused(True, reason="incident INC-42 in progress", actor="operator:bob")
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.SUPPRESSED
    assert decision.detail == "automation paused by an operator (incident INC-42 in progress)"
    assert (await rig.handle(alert_event())).outcome is DecisionOutcome.SUPPRESSED
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    assert rig.planner.targets_calls == [], "a suppressed rollback does not even select"
    decision = await rig.handle(operator_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}


async def test_pause_survives_a_restart(rigs):
    rig = await rigs()
    await rig.traffic.set_paused(True, reason="INC-42", actor="operator:bob")
    restarted = await rigs()
    decision = await restarted.handle(rule_event())
    assert decision.outcome is DecisionOutcome.SUPPRESSED
    assert "automation paused by an operator (INC-42)" in decision.detail
    assert restarted.weights() == {"v1": 0, "v2": 50, "v3": 50}


async def test_cooldown_suppresses_automatic_rollbacks_but_not_operator_ones(rigs, clock: Clock):
    """After a rollback to X, an automatic rollback away from X waits out the cooldown (no ping-pong)."""
    rig = await rigs(RollbackSection(cooldown_s=300, max_per_hour=100, verify_window_s=0))
    assert (await rig.handle(rule_event("v3"))).outcome is DecisionOutcome.ROLLED_BACK
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}
    clock.now += 100
    decision = await rig.handle(rule_event("v2"))
    assert decision.outcome is DecisionOutcome.SUPPRESSED
    assert decision.detail == "cooldown: the last rollback moved traffic to v2 100s ago (200s left)", decision
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}
    assert rig.metric("rollback_agent_rollbacks_total", cause="rule", outcome="suppressed") == 1
    suppressed = [r for r in await rig.rollbacks() if r.rollback.outcome == "suppressed"]
    assert len(suppressed) == 1 and "cooldown" in suppressed[0].rollback.detail
    assert suppressed[0].rollback.from_version == "v2" and suppressed[0].rollback.to_version == ""
    # An alert is automatic too.
    assert (await rig.handle(alert_event("v2"))).outcome is DecisionOutcome.SUPPRESSED
    # A new canary someone routed traffic to since is not held back by the cooldown.
    await rig.rearm(v2=50, v3=50)
    assert (await rig.handle(rule_event("v3"))).outcome is DecisionOutcome.ROLLED_BACK
    # An operator is never held back by the cooldown.
    decision = await rig.handle(operator_event(target="v1"))
    assert decision.outcome is DecisionOutcome.ROLLED_BACK, decision
    assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}
    # Once the cooldown after the rollback to v2 passed, accusing v2 rolls back again.
    await rig.rearm(v2=100)
    clock.now += 301
    decision = await rig.handle(rule_event("v2"))
    assert decision.outcome is DecisionOutcome.ROLLED_BACK, decision
    assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}


async def test_cooldown_survives_a_restart(rigs, clock: Clock):
    settings = RollbackSection(cooldown_s=300, max_per_hour=100, verify_window_s=0)
    rig = await rigs(settings)
    assert (await rig.handle(rule_event("v3"))).outcome is DecisionOutcome.ROLLED_BACK
    await rig.wait_rollbacks(1)
    clock.now += 100
    restarted = await rigs(settings)
    decision = await restarted.handle(rule_event("v2"))
    assert decision.outcome is DecisionOutcome.SUPPRESSED
    assert decision.detail == "cooldown: the last rollback moved traffic to v2 100s ago (200s left)", decision
    assert restarted.weights() == {"v1": 0, "v2": 100, "v3": 0}


async def test_hourly_cap_suppresses_automatic_rollbacks_but_not_operator_ones(rigs, clock: Clock):
    rig = await rigs(RollbackSection(cooldown_s=0, max_per_hour=2, verify_window_s=0))
    for _ in range(2):
        assert (await rig.handle(rule_event())).outcome is DecisionOutcome.ROLLED_BACK
        await rig.rearm()
        clock.now += 60
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.SUPPRESSED
    assert "rate cap: 2 automatic rollbacks in the last hour (max 2)" in decision.detail
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    assert (await rig.handle(operator_event())).outcome is DecisionOutcome.ROLLED_BACK
    await rig.rearm()
    # Operator rollbacks do not count against the cap; an hour after the first two, automatic again.
    clock.now += 3600
    assert (await rig.handle(rule_event())).outcome is DecisionOutcome.ROLLED_BACK


async def test_hourly_cap_survives_a_restart(rigs, clock: Clock):
    settings = RollbackSection(cooldown_s=0, max_per_hour=2, verify_window_s=0)
    rig = await rigs(settings)
    for _ in range(2):
        assert (await rig.handle(rule_event())).outcome is DecisionOutcome.ROLLED_BACK
        await rig.rearm()
        clock.now += 60
    await rig.wait_rollbacks(2)
    restarted = await rigs(settings)
    decision = await restarted.handle(rule_event())
    assert decision.outcome is DecisionOutcome.SUPPRESSED
    assert "rate cap: 2 automatic rollbacks in the last hour (max 2)" in decision.detail
    assert restarted.weights() == {"v1": 0, "v2": 50, "v3": 50}
    clock.now += 3600
    assert (await (await rigs(settings)).handle(rule_event())).outcome is DecisionOutcome.ROLLED_BACK


async def test_an_escalated_trigger_still_acts_after_the_hold_off_across_a_restart(rigs):
    rig = await rigs()
    rig.health.unhealthy["v2"] = [CheckResult("ready", False, "timed out")]
    rig.planner.incompatible["v1"] = ("needs 1 GPU, the pod has 0",)
    assert (await rig.handle(rule_event(key="alert:k"))).outcome is DecisionOutcome.FAILED
    restarted = await rigs()
    assert (await restarted.handle(rule_event(key="alert:k"))).outcome is DecisionOutcome.DUPLICATE
    restarted.monotonic.now += 31  # escalation_retry_s = 30
    decision = await restarted.handle(rule_event(key="alert:k"))
    assert decision.outcome is DecisionOutcome.ROLLED_BACK, "an escalation is retried, restart or not"
