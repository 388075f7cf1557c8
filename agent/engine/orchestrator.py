"""The rollback procedure: select a target, validate it, warm it, switch, confirm, verify, archive, mark.

Every trigger (rule verdict, alert, operator) arrives as a TriggerEvent. Safety comes first: a rollback never moves
traffic to a target that failed a check; with no eligible target the agent escalates and keeps the routing it has.
Archiving starts with the decision and captures once the switch is done, so it never delays it. Verification runs
after the switch, in the background, so the switch itself is never held up by the verification window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import json_format

from agent.config import RollbackSection
from agent.domain.records import policy_to_pb, timestamp
from agent.engine.decisions import Action, Cause, Decision, DecisionOutcome, TriggerEvent, actor_of
from agent.engine.traffic import ChangeResult, TrafficChangeError, TrafficController
from agent.log_setup import log_context
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.rollback import (
    Archiver,
    ArchiveResult,
    ForensicInputs,
    TargetHealth,
    TrafficConfirmer,
    Verifier,
    Warmer,
    WarmUpError,
)
from agent.ports.store import StateStore
from agent.telemetry import AgentMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TargetCandidate:
    version: str
    # Static incompatibilities (requirements vs pod constraints, feature schema); empty = compatible.
    incompatibilities: tuple[str, ...] = ()


class TargetPlanner(Protocol):
    async def targets(
        self, failing: str, operator_choice: str | None, *, force: bool = False
    ) -> Sequence[TargetCandidate]:
        """Eligible rollback targets, best first, each with its static compatibility verdict; `force`: the
        operator's choice may be failed or quarantined."""
        ...

    async def mark_failed(self, version: str, reason: str, actor: str) -> str:
        """Mark the failing version (never promoted again automatically); returns its previous status."""
        ...

    @property
    def rolled_back_status(self) -> str:
        """What mark_failed makes a version: "failed" or "quarantined"."""
        ...

    async def mark_verified(self, version: str, detail: str) -> None: ...


@dataclass
class _PhaseClock:
    phases: list[audit_pb2.Phase] = field(default_factory=list)
    wall: Callable[[], float] = time.time
    perf: Callable[[], float] = time.perf_counter

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[audit_pb2.Phase]:
        started_wall, started = self.wall(), self.perf()
        record = audit_pb2.Phase(name=name, started_at=timestamp(started_wall), outcome="ok")
        try:
            yield record
        except BaseException as exc:
            record.outcome = "failed"
            record.detail = record.detail or str(exc)
            raise
        finally:
            record.duration_ms = (self.perf() - started) * 1000.0
            self.phases.append(record)

    def add(self, name: str, duration_ms: float, outcome: str, detail: str = "") -> None:
        self.phases.append(
            audit_pb2.Phase(
                name=name,
                started_at=timestamp(self.wall() - duration_ms / 1000.0),
                duration_ms=duration_ms,
                outcome=outcome,
                detail=detail,
            )
        )


@dataclass(frozen=True, slots=True)
class _Archived:
    result: ArchiveResult | None  # None: the archive failed (logged)
    started_at: float  # wall clock
    duration_ms: float


class RollbackOrchestrator:
    def __init__(
        self,
        *,
        traffic: TrafficController,
        planner: TargetPlanner,
        health: TargetHealth,
        warmer: Warmer,
        confirmer: TrafficConfirmer,
        verifier: Verifier,
        archiver: Archiver,
        store: StateStore,
        metrics: AgentMetrics,
        settings: RollbackSection,
        wall_clock: Callable[[], float] = time.time,
        perf_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._traffic = traffic
        self._planner = planner
        self._health = health
        self._warmer = warmer
        self._confirmer = confirmer
        self._verifier = verifier
        self._archiver = archiver
        self._store = store
        self._metrics = metrics
        self.settings = settings
        self._wall = wall_clock
        self._perf = perf_clock
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._archive_gates: dict[str, asyncio.Event] = {}  # rollback id -> set once the switch is over
        self.escalations: deque[str] = deque(maxlen=20)
        # Called when a follow-up of the same incident starts (verification failed: next target).
        self.on_follow_up: Callable[[], None] = lambda: None
        # Drills (agent.engine.drill): the id of the registered drill covering a rollback of a version, or "";
        # and every Rollback record written, so the drill sees its own.
        self.drill_for: Callable[[str], str] = lambda _version: ""
        self.on_rollback_record: Callable[[audit_pb2.Rollback], None] = lambda _record: None

    @property
    def open_rollback(self) -> str:
        """What rollback procedure is still running (switching, or verifying in the background), or ""."""
        if self._lock.locked():
            return "a rollback procedure is running"
        verifying = [t.get_name() for t in self._background if not t.done()]
        return f"verification running ({', '.join(verifying)})" if verifying else ""

    async def run(self, event: TriggerEvent, failing: str, entered: float) -> Decision:
        """Roll `failing` back (admitted by agent.engine.admission, which owns every reason not to act)."""
        async with self._lock:
            rollback_id = uuid.uuid4().hex[:12]
            # Every log line of the procedure (and of the verification task it starts) names the rollback.
            with log_context(rollback_id=rollback_id, version=failing):
                return await self._rollback(event, failing, entered, rollback_id)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _rollback(self, event: TriggerEvent, failing: str, entered: float, rollback_id: str) -> Decision:
        clock = _PhaseClock(wall=self._wall, perf=self._perf)
        clock.add("detect", (self._perf() - entered) * 1000.0, "ok", event.summary)
        previous = self._traffic.desired
        record = audit_pb2.Rollback(
            rollback_id=rollback_id,
            from_version=failing,
            trigger=event.record,
            from_policy=policy_to_pb(previous),
            drill_id=self.drill_for(failing),
        )
        operator_choice = event.target if event.cause is Cause.OPERATOR else None
        with clock.phase("select") as phase:
            forced = event.force and operator_choice is not None
            candidates = (
                await self._planner.targets(failing, operator_choice, force=True)
                if forced
                else await self._planner.targets(failing, operator_choice)
            )
            phase.detail = ", ".join(c.version for c in candidates) or "no verified version older than " + failing
        # The archive starts with the decision but captures only once the switch is over (or the procedure
        # escalates): captured beside the switch, it doubled decision -> ACK on a real Envoy (Envoy's main thread
        # served the config dump instead of the push; the capture's CPU and file writes competed with the agent's
        # own; bench/webhook.py). The failing route stays in the record's from_policy.
        gate = self._archive_gates[rollback_id] = asyncio.Event()
        archive_task = asyncio.create_task(
            self._archive(rollback_id, failing, event, gate), name=f"archive-{rollback_id}"
        )
        target = await self._choose_target(rollback_id, candidates, record, clock, forced=forced)
        if target is None:
            detail = "no eligible rollback target: " + (
                "; ".join(f"{s.version}: {s.reason}" for s in record.skipped) or "none verified"
            )
            return await self._escalate(record, clock, event, "no_eligible_target", detail, archive_task)
        record.to_version = target
        change: ChangeResult | None = None
        with clock.phase("switch") as phase:
            try:
                change = await self._traffic.set_weights(
                    {target: 100},
                    reason=f"rollback {rollback_id}: {event.summary}",
                    actor=actor_of(event),
                    entered_at=entered,
                    trigger=event.record,
                    rollback_id=rollback_id,
                    force=event.force and event.cause is Cause.OPERATOR,
                )
                nodes = ", ".join(c.node for c in change.confirmations)
                phase.detail = f"route {change.route_version} ACKed by {nodes}"
            except TrafficChangeError as exc:
                phase.outcome, phase.detail = "failed", str(exc)
        gate.set()
        if change is None:
            return await self._escalate(record, clock, event, "switch_failed", clock.phases[-1].detail, archive_task)
        record.to_policy.CopyFrom(policy_to_pb(change.policy))
        clock.add("ack", change.decision_to_ack_ms, "ok", f"decision to ACK {change.decision_to_ack_ms:.1f} ms")
        with clock.phase("mark") as phase:
            why = f"rollback {rollback_id}: {event.summary}"
            if record.drill_id:  # a drill's fault: the version is not at fault, its status stays
                phase.outcome, phase.detail = "skipped", f"drill {record.drill_id}: {failing} keeps its status"
            else:
                phase.detail = await self._mark_failed(failing, why, event)
        log.warning(
            "rollback %s: %s -> %s in %.1f ms (%s)",
            rollback_id,
            failing,
            target,
            (self._perf() - entered) * 1000.0,
            event.summary,
        )
        # The switch is on record before the caller hears "rolled_back": a stop during the verification window
        # leaves this record (and the next start records the interruption), never nothing.
        switched = audit_pb2.Rollback()
        switched.CopyFrom(record)
        switched.outcome = "switched"
        switched.detail = f"traffic moved {failing} -> {target}; verification of {target} pending"
        switched.phases.extend(clock.phases)
        await self._store.append(switched, actor_of(event))
        self.on_rollback_record(switched)
        self._spawn(self._after_switch(record, clock, event, target, archive_task), f"verify-{rollback_id}")
        return Decision(DecisionOutcome.ROLLED_BACK, f"rolled back {failing} -> {target}", rollback_id, target)

    async def _mark_failed(self, failing: str, why: str, event: TriggerEvent) -> str:
        previous_status = await self._planner.mark_failed(failing, why, actor_of(event))
        marked = str(self._planner.rolled_back_status)
        if previous_status not in ("unknown", marked):  # the status change goes into the audit chain too
            await self._store.append(
                audit_pb2.VersionStatusChanged(
                    version=failing, from_status=previous_status, to_status=marked, reason=why
                ),
                actor_of(event),
            )
        return f"{failing}: {previous_status} -> {marked}"

    async def _choose_target(
        self,
        rollback_id: str,
        candidates: Sequence[TargetCandidate],
        record: audit_pb2.Rollback,
        clock: _PhaseClock,
        *,
        forced: bool = False,
    ) -> str | None:
        """The first candidate that is compatible, healthy and loaded (warmed if need be, then checked again).

        Every skipped candidate goes into the record with its reason; the next older one is tried. `forced`: an
        admin's named target may be failed, quarantined or held (the switch records the overridden guards).
        """
        started, warm_ms, warm_notes = self._perf(), 0.0, []

        def skip(version: str, reason: str) -> None:
            record.skipped.append(audit_pb2.SkippedTarget(version=version, reason=reason))
            log.warning("rollback %s: target %s skipped: %s", rollback_id, version, reason)

        target: str | None = None
        for candidate in candidates:
            reason = await self._validate(candidate, forced=forced)
            if reason:
                skip(candidate.version, reason)
                continue
            if not await self._health.is_loaded(candidate.version):
                warm_started = self._perf()
                try:
                    await self._warmer.warm(candidate.version, self.settings.warm_timeout_s)
                except WarmUpError as exc:
                    warm_ms += (self._perf() - warm_started) * 1000.0
                    warm_notes.append(f"{candidate.version} failed: {exc}")
                    skip(candidate.version, f"warm-up failed: {exc}")
                    continue
                warm_ms += (self._perf() - warm_started) * 1000.0
                warm_notes.append(f"{candidate.version} loaded")
                # Loaded now: readiness and the golden inference can be judged; judge them before any traffic.
                reason = await self._validate(candidate, max_age_s=0.0, forced=forced)
                if reason:
                    skip(candidate.version, f"after warm-up: {reason}")
                    continue
            target = candidate.version
            break
        validate_ms = (self._perf() - started) * 1000.0 - warm_ms
        clock.add(
            "validate",
            validate_ms,
            "ok" if target else "failed",
            f"target {target}" if target else "no eligible target",
        )
        warm_outcome = (
            "skipped" if not warm_notes else ("ok" if target and f"{target} loaded" in warm_notes else "failed")
        )
        clock.add("warm", warm_ms, warm_outcome, "; ".join(warm_notes) or "target already loaded")
        return target

    async def _validate(
        self, candidate: TargetCandidate, max_age_s: float | None = None, *, forced: bool = False
    ) -> str:
        if candidate.incompatibilities:
            return "incompatible: " + "; ".join(candidate.incompatibilities)
        blockers = self._traffic.guards(candidate.version)
        if blockers and not forced:
            return "; ".join(blockers)
        age = self.settings.health_max_age_s if max_age_s is None else max_age_s
        checks = await self._health.live_checks(candidate.version, max_age_s=age)
        failed = [c for c in checks if not c.passed and c.name != "model_loaded"]
        if failed:
            return "unhealthy: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        return ""

    async def _after_switch(
        self,
        record: audit_pb2.Rollback,
        clock: _PhaseClock,
        event: TriggerEvent,
        target: str,
        archive_task: asyncio.Task[_Archived],
    ) -> None:
        with clock.phase("confirm") as phase:
            ok, detail = await self._confirmer.confirm(target, self.settings.confirm_timeout_s)
            phase.outcome, phase.detail = ("ok" if ok else "failed"), detail
        with clock.phase("verify") as phase:
            result = await self._verifier.verify(target, self.settings.verify_window_s)
            phase.detail = result.detail
            phase.outcome = {True: "ok", False: "failed", None: "skipped"}[result.passed]
        await self._finish_archive(record, clock, archive_task)
        model = self._traffic.model
        if result.passed is False:
            self._metrics.verifications.labels(model, "failed").inc()
            record.outcome = "verification_failed"
            record.detail = f"{target} failed verification after the rollback: {result.detail}"
            self._escalation(model, "verification_failed", record.detail)
        else:
            self._metrics.verifications.labels(model, "passed" if result.passed else "inconclusive").inc()
            record.outcome = "recovered" if result.passed else "inconclusive"
            record.detail = result.detail
            if result.passed:
                await self._planner.mark_verified(
                    target, f"verified after rollback {record.rollback_id}: {result.detail}"
                )
        await self._write(record, clock, event)
        if result.passed is False and self.settings.on_verification_failure == "next_target":
            follow_up = TriggerEvent(
                cause=event.cause,
                action=Action.ROLLBACK,
                version=target,
                summary=f"verification of {target} failed after rollback {record.rollback_id}: {result.detail}",
                record=event.record,
            )
            async with self._lock:
                self.on_follow_up()  # the follow-up is part of the same incident: no cooldown
                if self._traffic.desired.weight(target) > 0:
                    follow_id = uuid.uuid4().hex[:12]
                    with log_context(rollback_id=follow_id, version=target):
                        await self._rollback(follow_up, target, self._perf(), follow_id)

    async def _escalate(
        self,
        record: audit_pb2.Rollback,
        clock: _PhaseClock,
        event: TriggerEvent,
        outcome: str,
        detail: str,
        archive_task: asyncio.Task[_Archived],
    ) -> Decision:
        record.outcome, record.detail = outcome, detail
        self._escalation(self._traffic.model, outcome, detail)
        await self._finish_archive(record, clock, archive_task)
        await self._write(record, clock, event)
        return Decision(DecisionOutcome.FAILED, f"escalated: {detail}; traffic unchanged", record.rollback_id)

    def _escalation(self, model: str, reason: str, detail: str) -> None:
        self._metrics.escalations.labels(model, reason).inc()
        self.escalations.append(detail)
        log.error("ESCALATION (%s): %s", reason, detail)

    async def _archive(self, rollback_id: str, failing: str, event: TriggerEvent, gate: asyncio.Event) -> _Archived:
        await gate.wait()
        started_wall, started = self._wall(), self._perf()
        result: ArchiveResult | None = None
        try:
            result = await self._archiver.archive(
                ForensicInputs(
                    rollback_id=rollback_id,
                    model=self._traffic.model,
                    failing_version=failing,
                    target_version="",
                    trigger_summary=event.summary,
                    trigger=json_format.MessageToDict(event.record, preserving_proto_field_name=True),
                )
            )
        except OSError as exc:  # a storage fault (read-only, full, I/O error): one line naming it, no traceback
            log.error("forensic archive of rollback %s failed: %s", rollback_id, exc)
        except Exception:
            log.exception("forensic archive of rollback %s failed", rollback_id)
        return _Archived(result, started_wall, (self._perf() - started) * 1000.0)

    async def _finish_archive(
        self, record: audit_pb2.Rollback, clock: _PhaseClock, task: asyncio.Task[_Archived]
    ) -> None:
        # The phase is the archive's own run (it starts once the switch is over), not the wait here.
        gate = self._archive_gates.pop(record.rollback_id, None)
        if gate is not None:
            gate.set()  # an escalation before the switch: capture now
        archived = await task
        result = archived.result
        phase = audit_pb2.Phase(
            name="archive", started_at=timestamp(archived.started_at), duration_ms=archived.duration_ms
        )
        if result is None:
            phase.outcome, phase.detail = "failed", "see the agent log"
        else:
            record.archive_path, record.archive_sha256 = result.path, result.sha256
            phase.outcome, phase.detail = "ok", f"{result.files} files, {result.bytes} bytes at {result.path}"
        clock.phases.append(phase)

    async def _write(self, record: audit_pb2.Rollback, clock: _PhaseClock, event: TriggerEvent) -> None:
        record.phases.extend(clock.phases)
        for phase in clock.phases:
            self._metrics.rollback_phase.labels(self._traffic.model, phase.name).observe(phase.duration_ms / 1000.0)
        self._metrics.rollbacks.labels(self._traffic.model, event.cause.value, record.outcome).inc()
        await self._store.append(record, actor_of(event))
        self.on_rollback_record(record)

    async def record_suppressed(self, event: TriggerEvent, failing: str, why: str) -> None:
        record = audit_pb2.Rollback(
            rollback_id=uuid.uuid4().hex[:12],
            from_version=failing,
            trigger=event.record,
            outcome="suppressed",
            detail=why,
            from_policy=policy_to_pb(self._traffic.desired),
        )
        self._metrics.rollbacks.labels(self._traffic.model, event.cause.value, "suppressed").inc()
        await self._store.append(record, actor_of(event))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._report_failure)

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        # Never silent: a background step that raised is logged, counted, and shown as an escalation.
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        kind = task.get_name().split("-", 1)[0]
        self._metrics.background_failures.labels(kind).inc()
        self._escalation(self._traffic.model, "internal_error", f"{task.get_name()} failed: {exc!r}")
        log.error("background task %s failed", task.get_name(), exc_info=exc)
