"""The agent's side of a drill, with the real rollback procedure (fakes for every port, a real SQLite store): a
registered drill's rollback does not fail the drilled version, everything is on record, the registration lapses."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.domain.drill import DrillPhase, DrillSituation
from agent.engine.decisions import DecisionOutcome
from agent.engine.drill import DrillDesk, DrillMetrics, DrillRefusedError
from agent.pb.rollback_agent.v1 import audit_pb2
from tests.unit.engine.test_orchestrator import MODEL, Rig, make_rig, rule_event
from tests.unit.engine.test_traffic import established_store

HEALTHY = DrillSituation(
    stable="v2",
    desired={"v1": 0, "v2": 50, "v3": 50},
    served={"v1": 0, "v2": 50, "v3": 50},
    statuses={"v1": "verified", "v2": "verified", "v3": "candidate"},
)


class Wall:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def rig(tmp_path: Path):
    store = await established_store(tmp_path / "state.db", {"v1": 0, "v2": 50, "v3": 50}, model=MODEL)
    r = await make_rig(store)
    yield r
    await r.orchestrator.close()
    await store.close()


def desk_for(rig: Rig, wall: Wall | None = None, cooldown_s: float = 0.0) -> DrillDesk:
    desk = DrillDesk(
        store=rig.store,
        desired=lambda: rig.traffic.desired,
        metrics=DrillMetrics(rig.metrics.registry, MODEL),
        cooldown_s=cooldown_s,
        open_rollback=lambda: rig.orchestrator.open_rollback,
        wall_clock=wall or time.time,
    )
    rig.orchestrator.drill_for = desk.drill_for
    rig.orchestrator.on_rollback_record = desk.observe
    return desk


async def events(rig: Rig, kind: str) -> list[audit_pb2.AuditRecord]:
    return [r for r in await rig.store.records() if r.WhichOneof("event") == kind]


async def test_a_drill_rollback_moves_traffic_but_keeps_the_version_status(rig: Rig):
    desk = desk_for(rig)
    drill = await desk.start(HEALTHY, version="v3", fault="errors", reason="monthly drill", actor="operator:ana")

    decision = await rig.handle(rule_event("v3"))

    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}
    assert rig.planner.failed == [] and rig.planner.status["v3"] == "candidate"
    [final] = await rig.wait_rollbacks(1)
    assert final.rollback.drill_id == drill.drill_id
    mark = next(p for p in final.rollback.phases if p.name == "mark")
    assert (mark.outcome, mark.detail) == ("skipped", f"drill {drill.drill_id}: v3 keeps its status")
    assert not await events(rig, "version_status_changed")
    [started] = await events(rig, "drill_started")
    assert started.actor == "operator:ana"
    assert (started.drill_started.version, started.drill_started.fault) == ("v3", "errors")
    assert [w.weight for w in started.drill_started.policy.weights] == [0, 50, 50]
    assert [r.outcome for r in drill.rollbacks.values()] == ["recovered"]  # the switched record, then replaced


async def test_finishing_records_the_result_and_the_metrics(rig: Rig):
    desk = desk_for(rig)
    drill = await desk.start(HEALTHY, version="v3", fault="errors", reason="drill", actor="operator:ana")
    await desk.finish(
        drill.drill_id,
        outcome="passed",
        detail="all good",
        phases=[DrillPhase("detection", 1.5, "ok"), DrillPhase("switch", 0.004, "ok")],
        rollback_id="r1",
        actor="operator:ana",
    )
    [finished] = await events(rig, "drill_finished")
    assert finished.drill_finished.outcome == "passed"
    assert [(p.name, p.duration_ms) for p in finished.drill_finished.phases] == [("detection", 1500.0), ("switch", 4.0)]
    assert rig.metric("rollback_agent_drill_runs_total", outcome="passed") == 1
    assert rig.metric("rollback_agent_drill_duration_seconds", phase="detection") == 1.5
    assert rig.metric("rollback_agent_drill_last_success_timestamp_seconds") > 0
    assert desk.active is None
    with pytest.raises(LookupError, match="already finished"):
        await desk.finish(drill.drill_id, outcome="passed", detail="", phases=(), rollback_id="", actor="x")


async def test_after_the_drill_a_rollback_fails_the_version_again(rig: Rig):
    desk = desk_for(rig)
    drill = await desk.start(HEALTHY, version="v3", fault="errors", reason="drill", actor="operator:ana")
    await desk.finish(drill.drill_id, outcome="passed", detail="", phases=(), rollback_id="", actor="operator:ana")

    await rig.handle(rule_event("v3"))

    assert [f[0] for f in rig.planner.failed] == ["v3"]


async def test_a_drill_is_refused_during_a_hold_and_nothing_is_recorded(rig: Rig):
    desk = desk_for(rig)
    held = DrillSituation(
        stable="v2",
        desired=HEALTHY.desired,
        served=HEALTHY.served,
        statuses=HEALTHY.statuses,
        holds={"v3": "under review"},
    )
    with pytest.raises(DrillRefusedError, match=r"held: v3 \(under review\)"):
        await desk.start(held, version="v3", fault="errors", reason="drill", actor="operator:ana")
    assert not await events(rig, "drill_started")
    assert rig.metric("rollback_agent_drill_runs_total", outcome="refused") == 1
    assert desk.drill_for("v3") == ""


async def test_a_scheduled_drill_that_cannot_run_counts_as_skipped(rig: Rig):
    desk = desk_for(rig)
    paused = DrillSituation(stable="v2", desired=HEALTHY.desired, served=HEALTHY.served, paused=True)
    with pytest.raises(DrillRefusedError, match="paused"):
        await desk.start(
            paused, version="v3", fault="errors", reason="d", actor="schedule:drills", schedule="0 3 1 * *"
        )
    assert rig.metric("rollback_agent_drill_runs_total", outcome="skipped") == 1


async def test_one_drill_at_a_time_and_the_registration_lapses(rig: Rig):
    wall = Wall()
    desk = desk_for(rig, wall)
    drill = await desk.start(HEALTHY, version="v3", fault="errors", reason="d", actor="operator:ana", ttl_s=60)
    with pytest.raises(DrillRefusedError, match=f"drill {drill.drill_id} is already running"):
        await desk.start(HEALTHY, version="v3", fault="errors", reason="d", actor="operator:bo")
    assert desk.drill_for("v3") == drill.drill_id and desk.drill_for("v2") == ""

    wall.now += 61
    assert desk.drill_for("v3") == ""  # a real incident after the ttl fails the version as usual
    await desk.expire()
    [finished] = await events(rig, "drill_finished")
    assert (finished.drill_finished.outcome, finished.actor) == ("expired", "agent")
    assert rig.metric("rollback_agent_drill_runs_total", outcome="expired") == 1


async def test_refused_during_the_cooldown_and_while_a_verification_runs(rig: Rig):
    desk = desk_for(rig, cooldown_s=300)
    rig.verifier.release = asyncio.Event()
    await rig.handle(rule_event("v3"))  # a real rollback: verification now running
    await rig.rearm()
    with pytest.raises(DrillRefusedError) as refused:
        await desk.start(HEALTHY, version="v3", fault="errors", reason="d", actor="operator:ana")
    text = str(refused.value)
    assert "a rollback is in progress (verification running" in text
    assert "cooldown after the last rollback" in text
    rig.verifier.release.set()
    await rig.wait_rollbacks(1)


async def test_never_during_a_rollout(rig: Rig):
    desk = DrillDesk(
        store=rig.store,
        desired=lambda: rig.traffic.desired,
        metrics=DrillMetrics(rig.metrics.registry, MODEL),
        cooldown_s=0,
        rollout=lambda: "v3 is being rolled out",
    )
    with pytest.raises(DrillRefusedError, match=r"a rollout is in progress \(v3 is being rolled out\)"):
        await desk.start(HEALTHY, version="v3", fault="errors", reason="d", actor="operator:ana")
