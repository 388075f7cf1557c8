"""The rollback procedure with a plain fake for every port (no I/O but a real SQLite state store in tmp_path).

Events enter through Admission, as in the agent (its reasons not to act are tested in test_admission.py; here
cooldown and cap are off). Versions v1 (oldest, verified), v2 (verified, the traffic controller's stable) and v3
(the candidate, newest); every test starts with v2=50 v3=50 and a rule blaming v3 unless it says otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.config import AlertsConfig, RollbackSection
from agent.domain.audit_chain import verify_chain
from agent.engine.admission import Admission
from agent.engine.decisions import Action, Cause, Decision, DecisionOutcome, TriggerEvent
from agent.engine.orchestrator import RollbackOrchestrator, TargetCandidate
from agent.engine.traffic import TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.rollback import (
    ArchiveResult,
    CheckResult,
    ForensicInputs,
    VerificationResult,
    WarmUpError,
)
from agent.ports.route_sink import Confirmation, RouteApplied, RouteRejectedError
from agent.telemetry import AgentMetrics
from harness.wait import async_wait_until
from tests.unit.engine.test_traffic import established_store

MODEL = "credit"
VERSIONS = ["v1", "v2", "v3"]


# --- fakes -------------------------------------------------------------------------------------------------------


class FakeSink:
    """RouteSink: every apply is ACKed at once (or fails with `fail`); records when each ACK happened."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.applied: list[tuple[tuple[str, int], ...]] = []
        self.acked_at: list[float] = []
        self._served: tuple[tuple[str, int], ...] | None = None

    async def apply(self, weights: tuple[tuple[str, int], ...], timeout_s: float) -> RouteApplied:
        if self.fail is not None:
            raise self.fail
        changed = weights != self._served
        self._served = weights
        self.applied.append(weights)
        self.acked_at.append(time.perf_counter())
        return RouteApplied("rv-" + "-".join(f"{v}{w}" for v, w in weights), (Confirmation("envoy-1", 1.0),), changed)

    def served(self) -> tuple[tuple[str, int], ...] | None:
        return self._served

    def ready(self) -> bool:
        return True


class FakePlanner:
    """Verified versions older than the failing one, newest first; `incompatible` gives static reasons."""

    def __init__(self) -> None:
        self.order = list(VERSIONS)  # oldest first
        self.status = {"v1": "verified", "v2": "verified", "v3": "candidate"}
        self.incompatible: dict[str, tuple[str, ...]] = {}
        self.targets_calls: list[tuple[str, str | None]] = []
        self.failed: list[tuple[str, str, str]] = []
        self.verified: list[tuple[str, str]] = []
        self.rolled_back_status = "failed"

    async def targets(self, failing: str, operator_choice: str | None) -> Sequence[TargetCandidate]:
        self.targets_calls.append((failing, operator_choice))
        if operator_choice is not None:
            return [TargetCandidate(operator_choice, self.incompatible.get(operator_choice, ()))]
        older = self.order[: self.order.index(failing)]
        return [
            TargetCandidate(v, self.incompatible.get(v, ()))
            for v in reversed(older)
            if self.status[v] in ("verified", "stable")
        ]

    async def mark_failed(self, version: str, reason: str, actor: str) -> str:
        previous = self.status[version]
        self.status[version] = self.rolled_back_status
        self.failed.append((version, reason, actor))
        return previous

    async def mark_verified(self, version: str, detail: str) -> None:
        self.verified.append((version, detail))


class FakeHealth:
    def __init__(self) -> None:
        self.unhealthy: dict[str, list[CheckResult]] = {}
        self.loaded = set(VERSIONS)
        self.checked: list[str] = []

    async def live_checks(self, version: str, *, max_age_s: float) -> Sequence[CheckResult]:
        self.checked.append(version)
        return [CheckResult("ready", True, "ready"), *self.unhealthy.get(version, [])]

    async def is_loaded(self, version: str) -> bool:
        return version in self.loaded


class FakeWarmer:
    def __init__(self, health: FakeHealth, sink: FakeSink) -> None:
        self.health = health
        self.sink = sink
        self.fail: str | None = None
        self.calls: list[tuple[str, float]] = []
        self.applied_when_warmed: list[int] = []

    async def warm(self, version: str, timeout_s: float) -> None:
        self.calls.append((version, timeout_s))
        self.applied_when_warmed.append(len(self.sink.applied))
        if self.fail is not None:
            raise WarmUpError(self.fail)
        self.health.loaded.add(version)


class FakeConfirmer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def confirm(self, version: str, timeout_s: float) -> tuple[bool, str]:
        self.calls.append(version)
        return True, f"requests reach {version}"


class FakeVerifier:
    def __init__(self) -> None:
        self.results: dict[str, VerificationResult] = {}
        self.calls: list[tuple[str, float]] = []
        self.watch_s = 0.0  # how long the fake watches (the real one watches the window)
        self.release: asyncio.Event | None = None  # set: the verification waits for it
        self.returned = 0  # verifications finished (the procedure goes on at once, in the same task)

    async def verify(self, version: str, window_s: float) -> VerificationResult:
        self.calls.append((version, window_s))
        await asyncio.sleep(self.watch_s)
        if self.release is not None:
            await self.release.wait()
        self.returned += 1
        return self.results.get(version, VerificationResult(True, f"{version} within its baseline"))


class FakeArchiver:
    def __init__(self) -> None:
        self.release: asyncio.Event | None = None  # set: the archive waits for it (a slow archiver)
        self.delay_s = 0.0
        self.fail = False
        self.inputs: list[ForensicInputs] = []
        self.called_at: list[float] = []
        self.finished_at: float | None = None

    async def archive(self, inputs: ForensicInputs) -> ArchiveResult:
        self.inputs.append(inputs)
        self.called_at.append(time.perf_counter())
        if self.release is not None:
            await self.release.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.finished_at = time.perf_counter()
        if self.fail:
            raise OSError("disk full")
        return ArchiveResult(f"/archive/{inputs.rollback_id}", "ab" * 32, 1234, 5)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, store: SqliteStateStore, settings: RollbackSection, clock: Clock | None = None) -> None:
        self.store = store
        self.sink = FakeSink()
        self.metrics = AgentMetrics(MODEL)
        self.clock = clock or Clock()
        self.traffic = TrafficController(
            model=MODEL,
            versions=list(VERSIONS),
            stable="v2",
            store=store,
            sink=self.sink,
            metrics=self.metrics,
            ack_timeout_s=1,
        )
        self.planner = FakePlanner()
        self.health = FakeHealth()
        self.warmer = FakeWarmer(self.health, self.sink)
        self.confirmer = FakeConfirmer()
        self.verifier = FakeVerifier()
        self.archiver = FakeArchiver()
        self.orchestrator = RollbackOrchestrator(
            traffic=self.traffic,
            planner=self.planner,
            health=self.health,
            warmer=self.warmer,
            confirmer=self.confirmer,
            verifier=self.verifier,
            archiver=self.archiver,
            store=store,
            metrics=self.metrics,
            settings=settings,
            wall_clock=self.clock,
        )
        self.monotonic = Clock()
        self.admission = Admission(
            traffic=self.traffic,
            store=store,
            procedure=self.orchestrator,
            rollback=settings,
            alerts=AlertsConfig(escalation_retry_s=30),
            statuses=lambda: self.planner.status,
            wall_clock=self.clock,
            monotonic=self.monotonic,
        )
        self.orchestrator.on_follow_up = self.admission.forget_last_rollback

    async def handle(self, event: TriggerEvent) -> Decision:
        return await self.admission.handle(event)

    async def rearm(self, **weights: int) -> None:
        """An operator puts traffic back on the candidate (between rollbacks; forced: it was marked failed)."""
        await self.traffic.set_weights(
            weights or {"v2": 50, "v3": 50}, reason="re-arm", actor="operator:test", force=True
        )

    def weights(self) -> dict[str, int]:
        return self.traffic.desired.as_dict()

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, {"model": MODEL, **labels}) or 0.0

    async def rollbacks(self) -> list[audit_pb2.AuditRecord]:
        """The final Rollback records (what became of each rollback)."""
        return [
            r
            for r in await self.store.records()
            if r.WhichOneof("event") == "rollback" and r.rollback.outcome != "switched"
        ]

    async def switched(self) -> list[audit_pb2.AuditRecord]:
        """The Rollback records written right after a switch, before verification."""
        return [
            r
            for r in await self.store.records()
            if r.WhichOneof("event") == "rollback" and r.rollback.outcome == "switched"
        ]

    async def wait_rollbacks(self, n: int, timeout_s: float = 5.0) -> list[audit_pb2.AuditRecord]:
        async def enough() -> list[audit_pb2.AuditRecord] | None:
            records = await self.rollbacks()
            return records if len(records) >= n else None

        return await async_wait_until(enough, timeout_s, what=f"{n} Rollback audit record(s)")


SETTINGS = RollbackSection(cooldown_s=0, max_per_hour=100, verify_window_s=0.5, warm_timeout_s=7)


@pytest.fixture
async def store(tmp_path: Path):
    s = await established_store(tmp_path / "state.db", {"v1": 0, "v2": 50, "v3": 50}, model=MODEL)
    yield s
    await s.close()


async def make_rig(store: SqliteStateStore, settings: RollbackSection = SETTINGS, clock: Clock | None = None) -> Rig:
    rig = Rig(store, settings, clock)
    await rig.traffic.start()
    await rig.admission.restore(await store.records())
    return rig


@pytest.fixture
async def rig(store: SqliteStateStore):
    r = await make_rig(store)
    yield r
    await r.orchestrator.close()


def rule_event(version: str | None = "v3", *, action: Action = Action.ROLLBACK, key: str = "") -> TriggerEvent:
    return TriggerEvent(
        cause=Cause.RULE,
        action=action,
        version=version,
        summary=f"error-rate of {version} 31% > 5% over 30s",
        record=audit_pb2.Trigger(
            rule=audit_pb2.RuleVerdict(rule="error-rate", kind="error_rate", version=version or "", verdict="breach")
        ),
        dedupe_key=key,
    )


def alert_event(
    version: str | None = "v3", *, action: Action = Action.ROLLBACK, key: str = "", resolved: bool = False
) -> TriggerEvent:
    return TriggerEvent(
        cause=Cause.ALERT,
        action=action,
        version=version,
        summary="ModelHighErrorRate",
        record=audit_pb2.Trigger(alert=audit_pb2.AlertTrigger(alertname="ModelHighErrorRate", fingerprint=key)),
        dedupe_key=key,
        resolved=resolved,
    )


def operator_event(target: str | None = None) -> TriggerEvent:
    return TriggerEvent(
        cause=Cause.OPERATOR,
        action=Action.ROLLBACK,
        version=None,
        summary="operator alice: bad scores",
        record=audit_pb2.Trigger(operator=audit_pb2.OperatorTrigger(identity="alice", reason="bad scores")),
        target=target,
    )


def phase(record: audit_pb2.Rollback, name: str) -> audit_pb2.Phase:
    found = [p for p in record.phases if p.name == name]
    assert len(found) == 1, (name, [p.name for p in record.phases])
    return found[0]


# --- the procedure, step by step ----------------------------------------------------------------------------------


async def test_rolls_back_to_the_most_recent_verified_older_version(rig: Rig):
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK, decision
    assert decision.rollback_id
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}
    assert rig.sink.applied[-1] == (("v1", 0), ("v2", 100), ("v3", 0))
    assert rig.planner.targets_calls == [("v3", None)]
    assert [v for v, _, _ in rig.planner.failed] == ["v3"]
    assert rig.planner.failed[0][2] == "rule:error-rate"
    assert rig.warmer.calls == [], "a loaded target is not warmed"
    [audit] = await rig.wait_rollbacks(1)
    record = audit.rollback
    assert record.outcome == "recovered"
    assert rig.confirmer.calls == ["v2"]
    assert rig.verifier.calls == [("v2", 0.5)]
    assert [v for v, _ in rig.planner.verified] == ["v2"]
    assert rig.metric("rollback_agent_rollbacks_total", cause="rule", outcome="recovered") == 1
    assert rig.metric("rollback_agent_verifications_total", outcome="passed") == 1
    trail = await rig.store.records()
    assert verify_chain(trail) == []
    # The switch (intent, outcome), the status mark, the switched rollback and its final record, in that order.
    events = [r.WhichOneof("event") for r in trail]
    assert events[-5:] == ["traffic_intent", "traffic_changed", "version_status_changed", "rollback", "rollback"]
    assert [r.rollback.outcome for r in trail[-2:]] == ["switched", "recovered"]
    intent = trail[-5].traffic_intent
    assert intent.rollback_id == decision.rollback_id
    assert intent.trigger.rule.rule == "error-rate", "the switch's intent carries the trigger"
    status = trail[-3]
    assert (status.version_status_changed.version, status.version_status_changed.from_status) == ("v3", "candidate")
    assert status.version_status_changed.to_status == "failed"
    assert status.version_status_changed.reason.startswith(f"rollback {decision.rollback_id}: ")
    assert status.actor == "rule:error-rate"


async def test_audit_record_carries_trigger_targets_phases_outcome_and_archive(rig: Rig):
    rig.planner.incompatible["v2"] = ("needs 4096 MB of memory, the pod has 2048 MB",)
    decision = await rig.handle(rule_event())
    [audit] = await rig.wait_rollbacks(1)
    record = audit.rollback
    assert audit.actor == "rule:error-rate" and audit.model == MODEL
    assert record.rollback_id == decision.rollback_id
    assert record.trigger.WhichOneof("source") == "rule"
    assert record.trigger.rule.rule == "error-rate" and record.trigger.rule.verdict == "breach"
    assert (record.from_version, record.to_version) == ("v3", "v1")
    assert {w.version: w.weight for w in record.from_policy.weights} == {"v1": 0, "v2": 50, "v3": 50}
    assert {w.version: w.weight for w in record.to_policy.weights} == {"v1": 100, "v2": 0, "v3": 0}
    assert [(s.version, s.reason) for s in record.skipped] == [
        ("v2", "incompatible: needs 4096 MB of memory, the pod has 2048 MB")
    ]
    assert record.outcome == "recovered"
    assert record.archive_path == f"/archive/{decision.rollback_id}"
    assert record.archive_sha256 == "ab" * 32
    names = [p.name for p in record.phases]
    assert names[:7] == ["detect", "select", "validate", "warm", "switch", "ack", "mark"], names
    assert set(names) == {
        "detect",
        "select",
        "validate",
        "warm",
        "switch",
        "ack",
        "mark",
        "confirm",
        "verify",
        "archive",
    }
    for p in record.phases:
        assert p.duration_ms >= 0, p
        assert p.started_at.seconds > 0, p
        assert p.outcome in ("ok", "skipped"), p
    assert phase(record, "warm").outcome == "skipped"
    assert phase(record, "mark").detail == "v3: candidate -> failed"
    assert "envoy-1" in phase(record, "switch").detail
    # Every phase is exported as a histogram observation.
    assert rig.metric("rollback_agent_rollback_phase_seconds_count", phase="switch") == 1


async def test_incompatible_target_is_skipped_with_its_reason_and_the_next_older_is_chosen(rig: Rig):
    rig.planner.incompatible["v2"] = ("needs runtime sklearn-1.5/python-3.12, the pod provides sklearn-1.4",)
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}
    assert "v2" not in rig.health.checked, "a statically incompatible target is not even probed"
    assert rig.health.checked == ["v1"]
    [audit] = await rig.wait_rollbacks(1)
    assert [s.version for s in audit.rollback.skipped] == ["v2"]
    assert "incompatible" in audit.rollback.skipped[0].reason and "sklearn-1.5" in audit.rollback.skipped[0].reason
    assert "target v1" in phase(audit.rollback, "validate").detail


async def test_unhealthy_target_is_skipped(rig: Rig):
    rig.health.unhealthy["v2"] = [CheckResult("golden_inference", False, "predict = [1] expected [0]")]
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}
    [audit] = await rig.wait_rollbacks(1)
    [skipped] = audit.rollback.skipped
    assert skipped.version == "v2"
    assert skipped.reason == "unhealthy: golden_inference: predict = [1] expected [0]"


async def test_no_eligible_target_escalates_and_moves_no_traffic(rig: Rig):
    rig.health.unhealthy["v2"] = [CheckResult("ready", False, "not ready (HTTP 503)")]
    rig.planner.incompatible["v1"] = ("needs 1 GPU, the pod has 0",)
    applied_before = len(rig.sink.applied)
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.FAILED
    assert "no eligible rollback target" in decision.detail and "traffic unchanged" in decision.detail
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    assert len(rig.sink.applied) == applied_before, "traffic must not move"
    assert rig.planner.failed == [], "the failing version is not marked while it still serves"
    assert rig.metric("rollback_agent_escalations_total", reason="no_eligible_target") == 1
    assert len(rig.orchestrator.escalations) == 1
    assert "v2: unhealthy" in rig.orchestrator.escalations[0] and "v1: incompatible" in rig.orchestrator.escalations[0]
    # Written before handle() returns: the escalation is in the audit trail at once.
    [audit] = await rig.rollbacks()
    assert audit.rollback.outcome == "no_eligible_target"
    assert audit.rollback.to_version == ""
    assert [s.version for s in audit.rollback.skipped] == ["v2", "v1"]
    assert phase(audit.rollback, "validate").outcome == "failed"
    assert audit.rollback.archive_path, "the forensic archive is kept for an escalation too"
    assert not [p for p in audit.rollback.phases if p.name == "switch"]


async def test_no_verified_older_version_escalates(rig: Rig):
    rig.planner.status["v1"] = rig.planner.status["v2"] = "failed"
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.FAILED
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    assert rig.metric("rollback_agent_escalations_total", reason="no_eligible_target") == 1
    [audit] = await rig.rollbacks()
    assert audit.rollback.outcome == "no_eligible_target"
    assert "none verified" in audit.rollback.detail
    assert "no verified version older than v3" in phase(audit.rollback, "select").detail


async def test_target_not_loaded_is_warmed_before_the_switch(rig: Rig):
    rig.health.loaded.discard("v2")
    applied_before = len(rig.sink.applied)
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    assert rig.warmer.calls == [("v2", 7)]
    assert rig.warmer.applied_when_warmed == [applied_before], "warmed before any traffic moved"
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}
    [audit] = await rig.wait_rollbacks(1)
    warm = phase(audit.rollback, "warm")
    assert warm.outcome == "ok"
    names = [p.name for p in audit.rollback.phases]
    assert names.index("warm") < names.index("switch")


async def test_warm_up_timeout_escalates_without_moving_traffic(rig: Rig):
    rig.planner.status["v1"] = "retired"  # v2 is the only target
    rig.health.loaded.discard("v2")
    rig.warmer.fail = "v2 did not become ready within 7s after the load call"
    applied_before = len(rig.sink.applied)
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.FAILED
    assert "v2: warm-up failed: v2 did not become ready" in decision.detail
    assert len(rig.sink.applied) == applied_before
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}
    assert rig.planner.failed == []
    assert rig.metric("rollback_agent_escalations_total", reason="no_eligible_target") == 1
    [audit] = await rig.rollbacks()
    assert audit.rollback.outcome == "no_eligible_target"
    assert [(s.version, s.reason) for s in audit.rollback.skipped] == [
        ("v2", "warm-up failed: v2 did not become ready within 7s after the load call")
    ]
    assert phase(audit.rollback, "warm").outcome == "failed"


async def test_warm_up_failure_moves_on_to_the_next_older_target(rig: Rig):
    rig.health.loaded.discard("v2")
    rig.warmer.fail = "v2 did not become ready within 7s after the load call"
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}
    [audit] = await rig.wait_rollbacks(1)  # written after the (background) verification
    assert [(s.version, s.reason.split(":")[0]) for s in audit.rollback.skipped] == [("v2", "warm-up failed")]
    assert phase(audit.rollback, "warm").outcome == "failed"


async def test_rejected_switch_escalates_and_keeps_the_routing(rig: Rig):
    rig.sink.fail = RouteRejectedError("envoy-1 NACKed the route: bad cluster")
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.FAILED
    assert "envoy-1 NACKed the route" in decision.detail
    assert rig.weights() == {"v1": 0, "v2": 50, "v3": 50}, "the previous policy is restored"
    assert rig.planner.failed == []
    assert rig.metric("rollback_agent_escalations_total", reason="switch_failed") == 1
    [audit] = await rig.rollbacks()
    assert audit.rollback.outcome == "switch_failed"
    assert phase(audit.rollback, "switch").outcome == "failed"
    assert rig.confirmer.calls == [] and rig.verifier.calls == []


async def test_verification_failure_escalates_by_default(rig: Rig):
    rig.verifier.results["v2"] = VerificationResult(False, "error rate 9.00% > 1.00% over 0s")
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    [audit] = await rig.wait_rollbacks(1)
    assert audit.rollback.outcome == "verification_failed"
    assert "v2 failed verification" in audit.rollback.detail
    assert phase(audit.rollback, "verify").outcome == "failed"
    assert rig.metric("rollback_agent_escalations_total", reason="verification_failed") == 1
    assert rig.metric("rollback_agent_verifications_total", outcome="failed") == 1
    assert rig.planner.verified == []
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}, "escalate: traffic stays on the target"


async def test_verification_failure_with_next_target_moves_on_to_the_next_older_version(store: SqliteStateStore):
    settings = RollbackSection(
        cooldown_s=300, max_per_hour=1, verify_window_s=0.1, on_verification_failure="next_target"
    )
    rig = await make_rig(store, settings)
    try:
        rig.verifier.results["v2"] = VerificationResult(False, "p99 90 ms > 1.5 x baseline 44 ms")
        decision = await rig.handle(rule_event())
        assert decision.outcome is DecisionOutcome.ROLLED_BACK
        first, second = await rig.wait_rollbacks(2)
        assert (first.rollback.from_version, first.rollback.to_version) == ("v3", "v2")
        assert first.rollback.outcome == "verification_failed"
        assert (second.rollback.from_version, second.rollback.to_version) == ("v2", "v1")
        assert second.rollback.outcome == "recovered"
        assert second.rollback.trigger.rule.rule == "error-rate", "the follow-up keeps the incident's trigger"
        assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}
        assert [v for v, _, _ in rig.planner.failed] == ["v3", "v2"]
        assert "verification of v2 failed" in rig.planner.failed[1][1]
        assert [v for v, _ in rig.planner.verified] == ["v1"]
    finally:
        await rig.orchestrator.close()


# --- alert-only, nothing to do ---------------------------------------------------------------------------------


async def test_alert_only_action_records_only(rig: Rig):
    applied = len(rig.sink.applied)
    decision = await rig.handle(rule_event(action=Action.ALERT))
    assert decision.outcome is DecisionOutcome.RECORDED
    assert decision.detail.startswith("alert only:")
    assert len(rig.sink.applied) == applied
    assert rig.planner.targets_calls == [] and rig.planner.failed == []
    assert await rig.rollbacks() == []


async def test_version_without_traffic_is_nothing_to_roll_back(rig: Rig):
    decision = await rig.handle(rule_event("v1"))
    assert decision.outcome is DecisionOutcome.RECORDED
    assert "v1 receives no traffic" in decision.detail
    assert rig.planner.targets_calls == []


async def test_operator_naming_the_target_rolls_back_from_the_stable_version_too(rig: Rig):
    await rig.rearm(v2=100)  # everything on the controller's stable version
    # Without a target, an operator rollback with only the stable version serving has nothing to do.
    decision = await rig.handle(operator_event())
    assert decision.outcome is DecisionOutcome.RECORDED, decision
    assert rig.planner.targets_calls == []
    decision = await rig.handle(operator_event(target="v1"))
    assert decision.outcome is DecisionOutcome.ROLLED_BACK, decision
    assert rig.planner.targets_calls == [("v2", "v1")]
    assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}
    assert [v for v, _, _ in rig.planner.failed] == ["v2"]


async def test_operator_rollback_blames_the_serving_candidate_and_may_name_the_target(rig: Rig):
    decision = await rig.handle(operator_event(target="v1"))
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    assert rig.planner.targets_calls == [("v3", "v1")]
    assert rig.weights() == {"v1": 100, "v2": 0, "v3": 0}
    [audit] = await rig.wait_rollbacks(1)
    assert audit.actor == "operator:alice"
    assert audit.rollback.trigger.operator.reason == "bad scores"
    assert rig.metric("rollback_agent_rollbacks_total", cause="operator", outcome="recovered") == 1


# --- the archive runs beside the switch -------------------------------------------------------------------------


async def test_slow_archive_does_not_delay_the_switch(rig: Rig):
    rig.archiver.release = asyncio.Event()
    # Were the switch to wait for the archive, it would wait forever: bound it.
    decision = await asyncio.wait_for(rig.handle(rule_event()), 5)
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}
    switch_acked = rig.sink.acked_at[-1]
    await async_wait_until(lambda: rig.archiver.inputs, 5, what="the archive to start")
    assert rig.archiver.inputs[0].failing_version == "v3"
    assert rig.archiver.inputs[0].trigger["rule"]["rule"] == "error-rate"
    # It captures only once the switch is over: capturing competes with the switch (CPU, Envoy's main thread).
    assert rig.archiver.called_at[0] > switch_acked
    assert rig.archiver.finished_at is None, "the switch did not wait for the archive"
    # The rest of the procedure waits for the archive before writing the record: once verification returned, the
    # procedure is parked on the archive (nothing else runs in its task in between).
    await async_wait_until(lambda: rig.verifier.returned, 5, what="the verification to finish")
    assert await rig.rollbacks() == []
    rig.archiver.release.set()
    [audit] = await rig.wait_rollbacks(1)
    assert rig.archiver.finished_at is not None and switch_acked < rig.archiver.finished_at
    assert phase(audit.rollback, "archive").outcome == "ok"


async def test_escalation_still_archives_the_failed_state(rig: Rig):
    rig.sink.fail = RouteRejectedError("envoy-1 NACKed the route")
    decision = await asyncio.wait_for(rig.handle(rule_event()), 5)
    assert decision.outcome is DecisionOutcome.FAILED
    [inputs] = rig.archiver.inputs
    assert inputs.failing_version == "v3"
    [audit] = await rig.rollbacks()
    assert audit.rollback.archive_path == f"/archive/{inputs.rollback_id}"
    assert phase(audit.rollback, "archive").outcome == "ok"


async def test_failed_archive_is_recorded_and_the_rollback_stands(rig: Rig):
    rig.archiver.fail = True
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    [audit] = await rig.wait_rollbacks(1)
    assert audit.rollback.outcome == "recovered"
    assert phase(audit.rollback, "archive").outcome == "failed"
    assert audit.rollback.archive_path == ""
    assert rig.weights() == {"v1": 0, "v2": 100, "v3": 0}


async def test_archive_phase_is_the_archive_run_not_the_wait_for_it(rig: Rig):
    rig.archiver.delay_s = 0.2
    rig.verifier.watch_s = 0.6  # the archive is done long before the verification ends
    await rig.handle(rule_event())
    [audit] = await rig.wait_rollbacks(1, timeout_s=10)
    archive = phase(audit.rollback, "archive")
    assert phase(audit.rollback, "verify").duration_ms >= 590
    assert 190 <= archive.duration_ms < 500, archive


# --- what is on record while the verification runs -----------------------------------------------------------------


async def test_the_switch_is_on_record_when_run_returns_before_verification_finishes(rig: Rig):
    rig.verifier.release = asyncio.Event()  # the verification window has not ended
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    # A stop now must leave a record of the switch: the next start records its interruption.
    [switched] = await rig.switched()
    assert switched.rollback.rollback_id == decision.rollback_id
    assert (switched.rollback.from_version, switched.rollback.to_version) == ("v3", "v2")
    assert switched.actor == "rule:error-rate"
    assert await rig.rollbacks() == [], "no final record before the verification ends"
    rig.verifier.release.set()
    [final] = await rig.wait_rollbacks(1)
    assert final.rollback.outcome == "recovered" and final.rollback.rollback_id == decision.rollback_id


async def test_an_inconclusive_verification_is_recorded_as_inconclusive_not_recovered(rig: Rig):
    rig.verifier.results["v2"] = VerificationResult(None, "3 requests in the window, 50 needed")
    decision = await rig.handle(rule_event())
    assert decision.outcome is DecisionOutcome.ROLLED_BACK
    [audit] = await rig.wait_rollbacks(1)
    assert audit.rollback.outcome == "inconclusive"
    assert audit.rollback.detail == "3 requests in the window, 50 needed"
    assert phase(audit.rollback, "verify").outcome == "skipped"
    assert rig.planner.verified == [], "an unverified target is not marked verified"
    assert rig.metric("rollback_agent_verifications_total", outcome="inconclusive") == 1
    assert rig.metric("rollback_agent_rollbacks_total", cause="rule", outcome="inconclusive") == 1
