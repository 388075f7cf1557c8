"""The rollout driver with the real SQLite store and a scripted route sink: moves on record before they take
effect, outcomes after, restarts resuming the stage, breaches from rules, operator actions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import read_audit_records
from agent.domain.audit_chain import verify_chain
from agent.engine.decisions import Action, Cause, DecisionOutcome, TriggerEvent
from agent.engine.rollout import ROLLOUT_KEY, STABLE_KEY, RolloutDriver, RolloutError
from agent.engine.rollout_gates import Measurements
from agent.engine.traffic import TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.rollout.machine import GateResult, Move, Progress, Status
from agent.triggers.engine import RuleState, RuleStatus
from agent.triggers.rule import Action as RuleAction
from agent.triggers.verdict import Verdict, VerdictStatus
from tests.unit.engine.test_traffic import ScriptedSink, established_store, make_controller

PLAN = """\
stages:
  - {name: canary-5, weight: 5, min_duration: 10s, gates: [{rule: error-rate}]}
  - {name: canary-25, weight: 25, min_duration: 10s, gates: [{rule: error-rate}]}
  - {name: full, weight: 100, min_duration: 10s, gates: [{rule: error-rate}]}
"""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Marks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def mark_stable(self, candidate: str, previous: str, evidence: Sequence[GateResult], actor: str) -> None:
        self.calls.append(("stable", candidate, previous, str(len(evidence))))

    async def mark_failed(self, version: str, reason: str, actor: str) -> str:
        self.calls.append(("failed", version))
        return "canary"

    async def mark_quarantined(self, version: str, reason: str, actor: str) -> None:
        self.calls.append(("quarantined", version))


def status(verdict: VerdictStatus, breach_since: float | None = None) -> RuleStatus:
    return RuleStatus(
        "error-rate",
        "error_rate",
        RuleAction.ROLLBACK,
        "v2",
        RuleState.OK,
        0.0,
        breach_since,
        Verdict(
            "error-rate", "error_rate", "v2", verdict, 0.01, 0.05, 30.0, 100.0, "requests", f"error rate {verdict}"
        ),
    )


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.marks = Marks()
        self.verdict = VerdictStatus.OK
        self.breach_since: float | None = None
        self.holds: list[str] = []

    def measurements(self, candidate: str, stable: str) -> Measurements:
        return Measurements(self.clock(), candidate, stable, [status(self.verdict, self.breach_since)], {}, None)

    async def open(self) -> tuple[RolloutDriver, TrafficController, ScriptedSink]:
        path = self.tmp_path / "s.db"
        if path.exists():
            from agent.adapters.store.sqlite_store import SqliteStateStore

            store = await SqliteStateStore.open(path, model="credit")
        else:
            store = await established_store(path, {"v1": 100, "v2": 0})
        sink = ScriptedSink(store)
        traffic = make_controller(store, sink)
        await traffic.start()
        driver = RolloutDriver(
            traffic=traffic,
            store=store,
            marks=self.marks,
            holds=lambda v: list(self.holds),
            measurements=self.measurements,
            monotonic=self.clock,
            wall_clock=self.clock,
        )
        await driver.restore()
        return driver, traffic, sink

    async def ticks(self, driver: RolloutDriver, seconds: int) -> list[object]:
        results = []
        for _ in range(seconds):
            self.clock.t += 1
            results.append(await driver.tick())
        return results


def rollout_records(path: Path) -> list[audit_pb2.RolloutChanged]:
    return [r.rollout_changed for r in read_audit_records(path) if r.WhichOneof("event") == "rollout_changed"]


async def test_a_rollout_goes_stage_by_stage_on_record_to_stable(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, traffic, sink = await world.open()
    await driver.start("v2", PLAN, reason="release 2", actor="operator:alice", source="plan.yaml")
    assert traffic.desired.weight("v2") == 5
    await world.ticks(driver, 35)
    assert [dict(w)["v2"] for w in sink.applied] == [5, 25, 100]
    assert driver.saved is not None and driver.saved.state.status is Status.COMPLETED
    assert traffic.stable == "v2"
    assert world.marks.calls == [("stable", "v2", "v1", "1")]
    records = rollout_records(tmp_path / "s.db")
    phases = [(r.move, r.phase, r.to_stage) for r in records]
    assert phases == [
        ("started", "intended", 0),
        ("started", "applied", 0),
        ("advanced", "intended", 1),
        ("advanced", "applied", 1),
        ("advanced", "intended", 2),
        ("advanced", "applied", 2),
        ("completed", "recorded", 2),
        ("stable_changed", "recorded", 0),
    ]
    assert records[1].intended_seq > 0 and "release 2" in records[0].reason
    assert records[2].evidence[0].gate == "rule:error-rate" and records[2].evidence[0].outcome == "pass"
    assert verify_chain(read_audit_records(tmp_path / "s.db")) == []
    store_stable = await driver._store.get_setting(STABLE_KEY)
    assert store_stable == "v2"


async def test_a_rule_breach_goes_back_one_stage_and_a_stale_episode_does_not_cascade(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, traffic, _ = await world.open()
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")
    await world.ticks(driver, 11)
    assert traffic.desired.weight("v2") == 25
    world.verdict, world.breach_since = VerdictStatus.BREACH, world.clock.t
    await world.ticks(driver, 1)
    assert traffic.desired.weight("v2") == 5
    assert driver.saved is not None and driver.saved.state.breaches == 1
    # the same episode (began before the stage was re-entered) does not push it further back
    results = await world.ticks(driver, 15)
    assert traffic.desired.weight("v2") == 5
    assert isinstance(results[-1], Progress) and "began before this stage" in results[-1].waiting_for


async def test_a_breach_in_the_first_stage_ends_at_stable_with_the_candidate_failed(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, traffic, _ = await world.open()
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")
    world.verdict, world.breach_since = VerdictStatus.BREACH, world.clock.t + 0.5
    await world.ticks(driver, 1)
    assert traffic.desired.weight("v2") == 0
    assert driver.saved is not None and driver.saved.state.status is Status.ROLLED_BACK
    assert ("failed", "v2") in world.marks.calls


async def test_a_restart_resumes_the_stage_with_its_time_and_reapplies_an_interrupted_split(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, _traffic, _ = await world.open()
    await driver.start("v2", PLAN.replace("10s", "60s"), reason="r", actor="operator:alice", source="plan.yaml")
    await world.ticks(driver, 61)  # canary-25 entered
    await world.ticks(driver, 25)  # 25 s in canary-25: checkpoints at 10 s and 20 s
    saved = driver.saved
    assert saved is not None and saved.state.stage == 1
    await driver._store.close()
    again, traffic2, _ = await world.open()
    assert again.saved is not None and again.saved.state.stage == 1
    assert again.saved.state.in_stage_s == 20  # the last checkpoint: at most 10 s lost, none gained
    assert traffic2.desired.weight("v2") == 25
    await world.ticks(again, 40)
    assert traffic2.desired.weight("v2") == 100  # 20 + 40 >= 60 s: the stage completes on time


async def test_an_edited_saved_stage_is_refused_at_restore(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, _, _ = await world.open()
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")
    assert driver.saved is not None
    edited = driver.saved.to_json().replace('"stage": 0', '"stage": 2')
    await driver._store.put_setting(ROLLOUT_KEY, edited)
    await driver._store.close()
    with pytest.raises(RolloutError, match="does not match the audit trail"):
        await world.open()


async def test_operator_actions_and_their_conflicts(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, traffic, _ = await world.open()
    with pytest.raises(RolloutError, match="no rollout has been started"):
        await driver.act("pause", reason="x", actor="operator:bob")
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")
    with pytest.raises(RolloutError, match="a rollout of v2 is running"):
        await driver.start("v2", PLAN, reason="again", actor="operator:alice", source="plan.yaml")
    paused = await driver.act("pause", reason="look", actor="operator:bob")
    assert paused.move is Move.PAUSED
    await world.ticks(driver, 30)
    assert traffic.desired.weight("v2") == 5
    await driver.act("resume", reason="ok", actor="operator:bob")
    promoted = await driver.act("promote", reason="hotfix", actor="operator:bob")
    assert promoted.move is Move.PROMOTED and traffic.desired.weight("v2") == 25
    world.holds.append("held: alert")
    with pytest.raises(RolloutError, match="held"):
        await driver.act("promote", reason="again", actor="operator:bob")
    await world.ticks(driver, 30)
    assert traffic.desired.weight("v2") == 25  # the hold freezes advancement
    aborted = await driver.act("abort", reason="bad", actor="operator:bob")
    assert aborted.move is Move.ABORTED and traffic.desired.weight("v2") == 0
    assert ("quarantined", "v2") in world.marks.calls
    with pytest.raises(RolloutError, match="nothing to abort"):
        await driver.act("abort", reason="twice", actor="operator:bob")


async def test_bad_plans_and_unknown_versions_change_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, _traffic, sink = await world.open()
    with pytest.raises(RolloutError, match=r"plan\.yaml:1: stages: the last stage"):
        await driver.start("v2", "stages:\n  - {name: a, weight: 50}\n", reason="r", actor="o", source="plan.yaml")
    with pytest.raises(RolloutError, match="unknown version 'v9'"):
        await driver.start("v9", PLAN, reason="r", actor="o", source="plan.yaml")
    with pytest.raises(RolloutError, match="is the stable version"):
        await driver.start("v1", PLAN, reason="r", actor="o", source="plan.yaml")
    with pytest.raises(RolloutError, match="cannot mirror"):
        await driver.start(
            "v2", "stages:\n  - {name: s, mirror: 5%}\n  - {name: f, weight: 100}\n", reason="r", actor="o", source="p"
        )
    world.holds.append("held: investigating")
    with pytest.raises(RolloutError, match="may not receive traffic"):
        await driver.start("v2", PLAN, reason="r", actor="o", source="plan.yaml")
    assert sink.applied == [] and driver.saved is None
    assert rollout_records(tmp_path / "s.db") == []


async def test_a_rule_decision_during_a_rollout_goes_back_a_stage_instead_of_rolling_back(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, traffic, _ = await world.open()
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")
    await world.ticks(driver, 11)
    world.clock.t += 10
    event = TriggerEvent(Cause.RULE, Action.ROLLBACK, "v2", "error-rate breached", audit_pb2.Trigger())
    decision = await driver.on_breach(event, "v2")
    assert decision is not None and decision.outcome is DecisionOutcome.RECORDED
    assert "back to canary-5" in decision.detail and traffic.desired.weight("v2") == 5
    assert await driver.on_breach(event, "v3") is None  # not the rollout's version


class Killed(BaseException):
    """The process dies (SIGKILL) at this point."""


async def test_a_kill_between_a_move_and_its_outcome_is_completed_at_the_next_start(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, _traffic, sink = await world.open()
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")

    async def die() -> None:
        raise Killed

    sink.on_apply = die
    with pytest.raises(Killed):
        await world.ticks(driver, 11)  # the advance to canary-25: intended on record, then killed at the push
    await driver._store.close()
    again, traffic2, _ = await world.open()
    assert again.saved is not None and again.saved.state.stage == 1
    assert traffic2.desired.weight("v2") == 25  # the traffic intent's policy (reconciled on a real start)
    records = rollout_records(tmp_path / "s.db")
    assert [(r.move, r.phase) for r in records[-2:]] == [("advanced", "intended"), ("advanced", "applied")]
    assert records[-1].intended_seq > 0 and "outcome recorded at start-up" in records[-1].reason


async def test_a_breach_right_after_an_advance_counts_and_right_after_going_back_does_not(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, traffic, _ = await world.open()
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")
    await world.ticks(driver, 11)
    assert traffic.desired.weight("v2") == 25  # just advanced: a fault exposed by the larger share is a breach
    event = TriggerEvent(Cause.RULE, Action.ROLLBACK, "v2", "error-rate breached", audit_pb2.Trigger())
    decision = await driver.on_breach(event, "v2")
    assert decision is not None and "back to canary-5" in decision.detail
    assert traffic.desired.weight("v2") == 5
    world.clock.t += 1  # the same episode reported again just after going back: recorded, no second move
    again = await driver.on_breach(event, "v2")
    assert again is not None and "already moved" in again.detail
    assert driver.saved is not None and driver.saved.state.status is Status.RUNNING
    assert traffic.desired.weight("v2") == 5


async def test_a_stop_saves_the_time_spent_in_the_stage(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, _traffic, _ = await world.open()
    await driver.start("v2", PLAN.replace("10s", "60s"), reason="r", actor="operator:alice", source="plan.yaml")
    await world.ticks(driver, 7)  # no checkpoint yet (every 10 s)
    assert driver.saved is not None
    spent = driver.saved.state.in_stage_s
    assert spent > 0
    task = asyncio.create_task(driver.run())
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await driver._store.close()
    again, _, _ = await world.open()
    assert again.saved is not None and again.saved.state.in_stage_s == spent


async def test_a_pinned_version_freezes_automatic_moves(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, traffic, _ = await world.open()
    pins: dict[str, str] = {}
    driver._pins = lambda: pins
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")
    pins["v1"] = "incident 42"
    results = await world.ticks(driver, 30)
    assert traffic.desired.weight("v2") == 5
    assert isinstance(results[-1], Progress) and "v1 is pinned (incident 42)" in results[-1].waiting_for
    pins.clear()  # the stage's clock stood still while frozen: its 10 s start now
    await world.ticks(driver, 9)
    assert traffic.desired.weight("v2") == 5
    await world.ticks(driver, 2)
    assert traffic.desired.weight("v2") == 25


async def test_a_kill_before_the_traffic_change_is_pushed_again_once_envoy_is_connected(tmp_path: Path) -> None:
    """Killed after the move's record, before its traffic intent: the restart waits for Envoy (no push, no record
    while none is connected), then applies the stage's split and closes the move's record."""
    world = World(tmp_path)
    driver, traffic, _ = await world.open()
    await driver.start("v2", PLAN, reason="r", actor="operator:alice", source="plan.yaml")

    async def die(*args: object, **kwargs: object) -> None:
        raise Killed

    traffic.set_weights = die  # type: ignore[method-assign]
    with pytest.raises(Killed):
        await world.ticks(driver, 11)
    await driver._store.close()
    again, traffic2, sink2 = await world.open()
    assert again.saved is not None and again.saved.state.stage == 1
    assert traffic2.desired.weight("v2") == 5  # the traffic change never happened
    before = len(read_audit_records(tmp_path / "s.db"))
    waiting = await again.tick()
    assert isinstance(waiting, Progress) and "waiting for Envoy" in waiting.waiting_for
    assert len(read_audit_records(tmp_path / "s.db")) == before  # nothing recorded while no Envoy is connected
    sink2._served = (("v1", 95), ("v2", 5))  # Envoy connected and serves the persisted split
    await again.tick()
    assert traffic2.desired.weight("v2") == 25
    records = rollout_records(tmp_path / "s.db")
    closed = [r for r in records if r.phase == "applied" and "outcome recorded at start-up" in r.reason]
    assert len(closed) == 1 and closed[0].to_stage == 1


async def test_the_previous_stable_standby_ends_on_record_once_and_survives_a_restart(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, _traffic, _sink = await world.open()
    plan = "standby: 60s\n" + PLAN
    await driver.start("v2", plan, reason="release 2", actor="operator:alice", source="plan.yaml")
    await world.ticks(driver, 35)
    assert driver.saved is not None and driver.saved.state.status is Status.COMPLETED
    await world.ticks(driver, 30)
    assert driver.view().progress is not None
    assert "v1 stays warm as the rollback target until" in driver.view().progress.waiting_for  # type: ignore[union-attr]
    assert [r.move for r in rollout_records(tmp_path / "s.db")][-1] == "stable_changed"

    # A restart in the middle of the standby keeps its end (wall time), and the end is written once.
    driver2, _, _ = await world.open()
    await world.ticks(driver2, 40)
    ended = [r for r in rollout_records(tmp_path / "s.db") if r.move == "standby_ended"]
    assert len(ended) == 1, ended
    assert ended[0].candidate == "v2" and "v1 no longer needs to be kept warm" in ended[0].reason
    driver3, _, _ = await world.open()
    await world.ticks(driver3, 5)
    assert len([r for r in rollout_records(tmp_path / "s.db") if r.move == "standby_ended"]) == 1
    assert driver3.saved is not None and driver3.saved.state.standby_ended
    assert verify_chain(read_audit_records(tmp_path / "s.db")) == []


async def test_a_new_rollout_ends_the_previous_standby_on_record(tmp_path: Path) -> None:
    world = World(tmp_path)
    driver, traffic, _sink = await world.open()
    await driver.start("v2", "standby: 1h\n" + PLAN, reason="release 2", actor="operator:alice", source="plan.yaml")
    await world.ticks(driver, 35)
    assert traffic.stable == "v2"
    await driver.start("v1", PLAN, reason="back to v1 as a release", actor="operator:alice", source="plan.yaml")
    ended = [r for r in rollout_records(tmp_path / "s.db") if r.move == "standby_ended"]
    assert len(ended) == 1 and "a rollout of v1 started" in ended[0].reason, ended
