"""Operator overrides: a pin suppresses automatic rollbacks away from the pinned version (the reason on record,
across a restart; operators still act), and an admin's rollback to a failed target with force (recorded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.engine.decisions import DecisionOutcome
from agent.engine.orchestrator import TargetCandidate
from agent.engine.traffic import TrafficChangeError
from tests.unit.engine.test_admission import NO_LIMITS
from tests.unit.engine.test_orchestrator import MODEL, Clock, make_rig, operator_event, rule_event
from tests.unit.engine.test_traffic import established_store


@pytest.fixture
async def store(tmp_path: Path):
    s = await established_store(tmp_path / "state.db", {"v1": 0, "v2": 50, "v3": 50}, model=MODEL, clock=Clock())
    yield s
    await s.close()


@pytest.fixture
async def rigs(store):
    made = []

    async def build():
        rig = await make_rig(store, NO_LIMITS)
        made.append(rig)
        return rig

    yield build
    for rig in made:
        await rig.orchestrator.close()


async def test_a_pin_suppresses_automatic_rollbacks_on_record_until_unpinned(rigs):
    rig = await rigs()
    await rig.admission.set_pin("v3", True, reason="INC-9: alert is a known false positive", actor="operator:ana")
    decision = await rig.handle(rule_event("v3"))
    assert decision.outcome is DecisionOutcome.SUPPRESSED
    assert decision.detail == "v3 is pinned by an operator (INC-9: alert is a known false positive)"
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    records = await rig.store.records()
    pin = next(r for r in records if r.WhichOneof("event") == "pin_changed")
    assert (pin.pin_changed.version, pin.pin_changed.pinned, pin.actor) == ("v3", True, "operator:ana")
    suppressed = [r.rollback for r in records if r.WhichOneof("event") == "rollback"][-1]
    assert suppressed.outcome == "suppressed" and "pinned" in suppressed.detail
    restarted = await rigs()
    assert restarted.admission.pins == {"v3": "INC-9: alert is a known false positive"}
    assert (await restarted.handle(rule_event("v3"))).outcome is DecisionOutcome.SUPPRESSED
    await restarted.admission.set_pin("v3", False, reason="fixed", actor="operator:ana")
    assert (await restarted.handle(rule_event("v3"))).outcome is DecisionOutcome.ROLLED_BACK
    assert restarted.weights() == {"v1": 0, "v2": 100, "v3": 0}


async def test_an_operator_still_rolls_back_a_pinned_version(rigs):
    rig = await rigs()
    await rig.admission.set_pin("v3", True, reason="INC-9", actor="operator:ana")
    assert (await rig.handle(operator_event())).outcome is DecisionOutcome.ROLLED_BACK
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}


async def test_a_pinned_stable_version_does_not_stop_a_rollback_to_it(rigs):
    rig = await rigs()
    await rig.admission.set_pin("v2", True, reason="the stable one", actor="operator:ana")
    assert (await rig.handle(rule_event("v3"))).outcome is DecisionOutcome.ROLLED_BACK


async def test_pinning_a_version_without_traffic_or_unpinning_an_unpinned_one_is_refused(rigs):
    rig = await rigs()
    with pytest.raises(TrafficChangeError, match="v1 receives no traffic") as err:
        await rig.admission.set_pin("v1", True, reason="x", actor="operator:ana")
    assert err.value.code == "refused"
    with pytest.raises(TrafficChangeError, match="v3 is not pinned"):
        await rig.admission.set_pin("v3", False, reason="x", actor="operator:ana")
    with pytest.raises(TrafficChangeError, match="unknown version 'v9'"):
        await rig.admission.set_pin("v9", True, reason="x", actor="operator:ana")
    assert rig.admission.pins == {}
    assert not [r for r in await rig.store.records() if r.WhichOneof("event") == "pin_changed"]


async def test_a_rollback_to_a_failed_target_needs_force_and_the_override_is_recorded(rigs):
    rig = await rigs()
    rig.planner.status["v1"] = "failed"

    async def targets(failing, choice, *, force=False):
        rig.planner.targets_calls.append((failing, choice))
        refused = choice is not None and rig.planner.status[choice] in ("failed", "quarantined") and not force
        return [] if refused else [TargetCandidate(choice)]

    rig.planner.targets = targets
    unforced = await rig.handle(operator_event(target="v1"))
    assert unforced.outcome is DecisionOutcome.FAILED
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    forced = await rig.handle(dataclasses.replace(operator_event(target="v1"), force=True))
    assert forced.outcome is DecisionOutcome.ROLLED_BACK and forced.target == "v1"
    assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}
    intent = [r for r in await rig.store.records() if r.WhichOneof("event") == "traffic_intent"][-1]
    assert intent.traffic_intent.forced
    assert list(intent.traffic_intent.overridden) == [
        "v1: its registry status is failed (rolled back or under investigation)"
    ]
