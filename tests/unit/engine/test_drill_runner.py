"""A drill from start to end against a scripted agent: the figures it reports, and that whatever happens after the
fault went in, the fault is cleared, the original split restored and the drill finished with the reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.domain.drill import DrillPhase
from agent.engine.drill_runner import DrillRefusal, DrillRunner, DrillSettings, DrillStepError

T0 = 1_700_000_000.0


def stamp(wall: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(wall, UTC).isoformat().replace("+00:00", "Z")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 0.01  # time passes as the runner looks at it
        return self.now


class FakeAgent:
    """The agent as the drill sees it. Once the fault is in, the next rollbacks() poll shows the switch (the rule
    fired 1.5 s after the fault) and moves the served split; the one after shows the verified outcome."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.split = {"v1": 90, "v2": 10}
        self.statuses = {"v1": "verified", "v2": "candidate"}
        self.rules: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.detects = True
        self.final_outcome = "recovered"
        self.refuse = ""
        self.unreachable = False
        self.injected_at: float | None = None
        self.polls = 0
        self.started: list[dict[str, Any]] = []
        self.finished: list[dict[str, Any]] = []
        self.set_weights_calls: list[dict[str, int]] = []

    async def status(self) -> dict[str, Any]:
        if self.unreachable:
            raise DrillStepError("cannot reach the agent at http://127.0.0.1:9091: connection refused")
        self.clock.now += 0.05
        return {
            "stable": "v1",
            "ready": True,
            "versions": [
                {"version": v, "desired_weight": w, "served_weight": w, "registry_status": self.statuses[v]}
                for v, w in self.split.items()
            ],
            "rules": self.rules,
        }

    async def start(self, *, version: str, fault: str, reason: str, ttl_s: float, schedule: str) -> tuple[str, str]:
        if self.refuse:
            raise DrillRefusal(self.refuse)
        self.started.append({"version": version, "fault": fault})
        return "drill-1", "operator:ana"

    async def rollbacks(self) -> list[dict[str, Any]]:
        self.clock.now += 0.05
        if self.injected_at is None or not self.detects:
            return []
        self.polls += 1
        if self.polls == 1:
            detect_at = self.injected_at + 1.5
            self.records = [self._record("switched", detect_at)]
            self.split = {"v1": 100, "v2": 0}
        elif self.polls == 3:
            self.records.append(self._record(self.final_outcome, self.injected_at + 1.5))
        return list(self.records)

    def _record(self, outcome: str, detect_at: float) -> dict[str, Any]:
        phases = [
            {"name": "detect", "started_at": stamp(detect_at), "duration_ms": 2.0, "outcome": "ok"},
            {"name": "select", "duration_ms": 1.0, "outcome": "ok"},
            {"name": "validate", "duration_ms": 3.0, "outcome": "ok"},
            {"name": "warm", "duration_ms": 0.0, "outcome": "skipped"},
            {"name": "switch", "duration_ms": 4.0, "outcome": "ok", "detail": "route ACKed by envoy-1"},
        ]
        if outcome != "switched":
            phases += [
                {"name": "confirm", "duration_ms": 100.0, "outcome": "ok"},
                {"name": "verify", "duration_ms": 2000.0, "outcome": "ok"},
            ]
        return {
            "rollback_id": "rb1",
            "from_version": "v2",
            "to_version": "v1",
            "outcome": outcome,
            "detail": "v1 within its baseline",
            "phases": phases,
            "trigger": {"rule": {"rule": "error-rate", "value": 0.5, "threshold": 0.1}},
        }

    async def finish(
        self, drill_id: str, *, outcome: str, detail: str, phases: Sequence[DrillPhase], rollback_id: str
    ) -> None:
        self.finished.append({"drill_id": drill_id, "outcome": outcome, "detail": detail, "rollback_id": rollback_id})

    async def set_weights(self, weights: Mapping[str, int], reason: str) -> None:
        self.set_weights_calls.append(dict(weights))
        self.split = {v: weights.get(v, 0) for v in self.split}


class FakeFaults:
    def __init__(self, agent: FakeAgent) -> None:
        self.agent = agent
        self.calls: list[tuple[str, str]] = []
        self.fail_inject = ""

    async def inject(self, version: str) -> str:
        self.calls.append(("inject", version))
        if self.fail_inject:
            raise DrillStepError(self.fail_inject)
        self.agent.injected_at = self.agent.clock.now
        return f"fault in {version}"

    async def clear(self, version: str) -> str:
        self.calls.append(("clear", version))
        return f"fault cleared on {version}"


def make(**settings: Any) -> tuple[DrillRunner, FakeAgent, FakeFaults, list[str]]:
    clock = Clock()
    agent = FakeAgent(clock)
    faults = FakeFaults(agent)
    lines: list[str] = []
    runner = DrillRunner(
        agent,
        faults,
        DrillSettings(poll_interval_s=0.001, **settings),
        model="credit",
        actor="",
        progress=lines.append,
        wall_clock=clock,
        monotonic=clock,
    )
    return runner, agent, faults, lines


async def test_a_drill_measures_each_phase_restores_the_split_and_passes():
    runner, agent, faults, lines = make()
    report = await runner.run()

    assert report.outcome == "passed", report.reason
    assert (report.drill_id, report.actor, report.version) == ("drill-1", "operator:ana", "v2")
    assert (report.rollback_id, report.target, report.rollback_outcome) == ("rb1", "v1", "recovered")
    phases = {p.name: p for p in report.phases}
    assert abs(phases["detection"].seconds - 1.5) < 1e-6
    assert "rule error-rate 0.5 vs 0.1" in phases["detection"].detail
    assert abs(phases["decision"].seconds - 0.006) < 1e-9  # detect + select + validate + warm
    assert abs(phases["switch"].seconds - 0.004) < 1e-9
    assert "served by Envoy" in phases["switch"].detail
    assert abs(phases["verification"].seconds - 2.1) < 1e-9  # confirm + verify
    assert phases["restore"].outcome == "ok"
    assert report.original_split == report.restored_split == {"v1": 90, "v2": 10}
    assert agent.set_weights_calls == [{"v1": 90, "v2": 10}]
    assert faults.calls == [("inject", "v2"), ("clear", "v2")]
    assert agent.finished[0]["outcome"] == "passed" and agent.finished[0]["rollback_id"] == "rb1"
    assert (report.version_status_before, report.version_status_after) == ("candidate", "candidate")
    assert any("verification of v1: recovered" in line for line in lines)


async def test_an_undetected_fault_fails_the_drill_and_still_restores_everything():
    runner, agent, faults, _ = make(detect_timeout_s=0.5)
    agent.detects = False
    report = await runner.run()

    assert report.outcome == "failed"
    assert report.reason == "fault not detected: no rollback of v2 within 0.5s"
    assert faults.calls == [("inject", "v2"), ("clear", "v2")]
    assert agent.set_weights_calls == [{"v1": 90, "v2": 10}]
    assert agent.finished[0]["outcome"] == "failed" and "fault not detected" in agent.finished[0]["detail"]


async def test_a_failed_injection_fails_the_drill_and_clears_and_finishes():
    runner, agent, faults, _ = make()
    faults.fail_inject = "POST http://127.0.0.1:8002/faults: connection refused"
    report = await runner.run()
    assert report.outcome == "failed" and "connection refused" in report.reason
    assert faults.calls == [("inject", "v2"), ("clear", "v2")]
    assert agent.finished[0]["outcome"] == "failed"


async def test_a_refused_drill_injects_nothing():
    runner, agent, faults, _ = make()
    agent.refuse = "drill refused: held: v2 (under review)"
    report = await runner.run()
    assert report.outcome == "refused" and "held: v2" in report.reason
    assert faults.calls == [] and agent.set_weights_calls == [] and agent.finished == []


async def test_an_unreachable_agent_fails_before_anything_changes():
    runner, agent, faults, _ = make()
    agent.unreachable = True
    report = await runner.run()
    assert report.outcome == "failed" and "cannot reach the agent" in report.reason
    assert faults.calls == [] and agent.started == []


async def test_a_failed_verification_fails_the_drill():
    runner, agent, _, _ = make()
    agent.final_outcome = "verification_failed"
    report = await runner.run()
    assert report.outcome == "failed" and "verification_failed" in report.reason
    assert agent.set_weights_calls == [{"v1": 90, "v2": 10}]


async def test_the_restore_waits_while_a_rule_of_the_drilled_version_is_pending():
    runner, agent, _, lines = make(settle_timeout_s=0.3)
    agent.rules = [{"rule": "error-rate", "version": "v2", "state": "pending"}]
    report = await runner.run()
    assert any("not settled after 0.3s; restoring anyway" in line for line in lines)
    assert report.restored_split == {"v1": 90, "v2": 10}


async def test_a_rule_left_firing_is_named_in_the_report():
    runner, agent, _, _ = make()
    agent.rules = [{"rule": "error-rate", "version": "v2", "state": "firing"}]
    report = await runner.run()
    assert report.outcome == "passed"
    restore = next(p for p in report.phases if p.name == "restore")
    assert "rules still firing on v2 until their clear_after of healthy traffic: error-rate" in restore.detail


async def test_a_restore_undone_by_another_rollback_fails_the_drill():
    runner, agent, _, _ = make()
    original = agent.set_weights

    async def restore_then_roll_back(weights, reason):
        await original(weights, reason)
        agent.records.append({**agent.records[-1], "rollback_id": "rb2", "outcome": "switched"})
        agent.split = {"v1": 100, "v2": 0}
        agent.polls = 10  # no more scripted records

    agent.set_weights = restore_then_roll_back  # type: ignore[method-assign]
    report = await runner.run()
    assert report.outcome == "failed"
    assert "rolled back again (rollback rb2)" in report.reason


async def test_the_restore_waits_until_the_fault_has_left_the_longest_rule_window():
    runner, agent, _, lines = make()
    agent.rules = [{"rule": "error-rate", "version": "v1", "state": "ok", "window_s": 30.0}]
    report = await runner.run()
    assert report.outcome == "passed", report.reason
    switched_at = T0 + next(p for p in report.phases if p.name == "detection").seconds
    restored_at = next(i for i, line in enumerate(lines) if line.startswith("restoring the split"))
    assert any("until the fault's requests leave the rule windows (30s)" in line for line in lines[:restored_at])
    assert agent.clock.now > switched_at + 31  # restored only after the 30 s window (+ one interval)
