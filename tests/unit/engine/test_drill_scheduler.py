"""Scheduled drills on the agent's own engine (the real rollback procedure with fakes for its ports): a scheduled
drill runs the whole way and writes its report; one whose preconditions fail is skipped, counted and logged."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.domain.drill_schedule import Schedule
from agent.engine.drill import DrillDesk, DrillMetrics
from agent.engine.drill_runner import DrillSettings
from agent.engine.drill_scheduler import DrillScheduler, InProcessDrillControl
from tests.unit.engine.test_orchestrator import MODEL, Rig, make_rig, rule_event
from tests.unit.engine.test_traffic import established_store


@pytest.fixture
async def rig(tmp_path: Path):
    store = await established_store(tmp_path / "state.db", {"v1": 0, "v2": 50, "v3": 50}, model=MODEL)
    r = await make_rig(store)
    yield r
    await r.orchestrator.close()
    await store.close()


class FaultThatFires:
    """Injecting the fault makes the rule fire on v3, as the monitor would."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.calls: list[str] = []

    async def inject(self, version: str) -> str:
        self.calls.append("inject")
        await self.rig.handle(rule_event(version))
        return f"fault in {version}"

    async def clear(self, version: str) -> str:
        self.calls.append("clear")
        return f"cleared {version}"


def scheduler_for(rig: Rig, tmp_path: Path, paused: bool = False) -> tuple[DrillScheduler, FaultThatFires]:
    desk = DrillDesk(
        store=rig.store,
        desired=lambda: rig.traffic.desired,
        metrics=DrillMetrics(rig.metrics.registry, MODEL),
        cooldown_s=0,
        open_rollback=lambda: rig.orchestrator.open_rollback,
    )
    rig.orchestrator.drill_for = desk.drill_for
    rig.orchestrator.on_rollback_record = desk.observe

    def status() -> dict[str, Any]:
        served = dict(rig.sink.served() or ())
        return {
            "stable": "v2",
            "ready": True,
            "paused": paused,
            "versions": [
                {
                    "version": v,
                    "desired_weight": w,
                    "served_weight": served.get(v, 0),
                    "registry_status": rig.planner.status[v],
                }
                for v, w in rig.traffic.desired.weights
            ],
        }

    faults = FaultThatFires(rig)
    scheduler = DrillScheduler(
        schedule=Schedule.parse("0 3 1 * *"),
        control=InProcessDrillControl(desk, rig.traffic, status),
        injector=faults,
        settings=DrillSettings(schedule="0 3 1 * *", poll_interval_s=0.01, watch_after_restore_s=0.2),
        model=MODEL,
        report_dir=tmp_path / "drills",
    )
    return scheduler, faults


async def test_a_scheduled_drill_runs_restores_and_writes_its_report(rig: Rig, tmp_path: Path):
    await rig.rearm(v2=50, v3=50)  # served by the fake sink
    scheduler, faults = scheduler_for(rig, tmp_path)

    report = await scheduler.drill_once()

    assert report.outcome == "passed", report.reason
    assert report.actor == "schedule:drills"
    assert faults.calls == ["inject", "clear"]
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    assert rig.planner.status["v3"] == "candidate" and rig.planner.failed == []
    assert rig.metric("rollback_agent_drill_runs_total", outcome="passed") == 1
    [written] = (tmp_path / "drills").glob("*.json")
    assert json.loads(written.read_text())["drill_id"] == report.drill_id
    started = [r for r in await rig.store.records() if r.WhichOneof("event") == "drill_started"]
    assert [r.drill_started.schedule for r in started] == ["0 3 1 * *"]


async def test_a_scheduled_drill_that_cannot_run_is_skipped_counted_and_logged(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    await rig.rearm(v2=50, v3=50)
    scheduler, faults = scheduler_for(rig, tmp_path, paused=True)

    with caplog.at_level(logging.WARNING):
        report = await scheduler.drill_once()

    assert report.outcome == "refused" and "paused" in report.reason
    assert faults.calls == []
    assert rig.metric("rollback_agent_drill_runs_total", outcome="skipped") == 1
    assert "scheduled drill skipped" in caplog.text and "paused" in caplog.text
    assert not (tmp_path / "drills").exists()


async def test_the_scheduler_sleeps_until_the_next_scheduled_minute(rig: Rig, tmp_path: Path, monkeypatch):
    scheduler, _ = scheduler_for(rig, tmp_path)
    slept: list[float] = []

    class Stop(Exception):
        pass

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        raise Stop

    monkeypatch.setattr("agent.engine.drill_scheduler.asyncio.sleep", fake_sleep)
    with pytest.raises(Stop):
        await scheduler.run()
    due = Schedule.parse("0 3 1 * *").next_after(datetime.now(UTC))
    assert due is not None
    assert abs(slept[0] - (due.timestamp() - time.time())) < 5
