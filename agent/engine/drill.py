"""The agent's side of a rollback drill: the registration that makes the rollback a drill causes not fail the
drilled version, every step on record, and the drill metrics.

A drill registers (POST /v1/drill/start) before its fault is injected. While the registration stands, a rollback
away from the drilled version carries the drill's id (the orchestrator asks `drill_for`), and the orchestrator
skips marking the version failed; the rollback is otherwise the real procedure (detection, switch, verification,
archive; it counts toward the hourly cap and starts the cooldown). The registration lapses after its ttl, recorded
as an expired drill, so a drill client that dies cannot shield a later real incident. It is kept in memory only: an
agent restart ends it, and a rollback after that marks the version as any rollback does.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.domain.drill import DrillPhase, DrillSituation, refusals
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StateStore

log = logging.getLogger(__name__)

DRILL_OUTCOMES = ("passed", "failed", "expired", "refused", "skipped")
DRILL_PHASES = ("detection", "decision", "switch", "verification", "restore", "total")
DEFAULT_TTL_S = 900.0
_COOLDOWN_TAIL = 2000  # audit records read to find the last rollback


class DrillRefusedError(Exception):
    """A drill must not run now; the message names every reason."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("drill refused: " + "; ".join(reasons))
        self.reasons = tuple(reasons)


class DrillMetrics:
    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.model = model
        self.last_success = Gauge(
            "rollback_agent_drill_last_success_timestamp_seconds",
            "When the last drill that passed finished (Unix time).",
            ["model"],
            registry=registry,
        )
        self.duration = Gauge(
            "rollback_agent_drill_duration_seconds",
            "Each measured phase of the last finished drill (detection, decision, switch, verification, restore, "
            "total).",
            ["model", "phase"],
            registry=registry,
        )
        self.runs = Counter(
            "rollback_agent_drill_runs_total",
            "Drills by outcome: passed, failed, expired, refused (asked for, a precondition failed), skipped (a "
            "scheduled drill whose preconditions failed).",
            ["model", "outcome"],
            registry=registry,
        )
        for outcome in DRILL_OUTCOMES:
            self.runs.labels(model, outcome)

    def finished(self, outcome: str, phases: Sequence[DrillPhase], at: float) -> None:
        self.runs.labels(self.model, outcome).inc()
        for phase in phases:
            if phase.seconds is not None and phase.name in DRILL_PHASES:
                self.duration.labels(self.model, phase.name).set(phase.seconds)
        if outcome == "passed":
            self.last_success.labels(self.model).set(at)


@dataclass
class ActiveDrill:
    drill_id: str
    version: str
    fault: str
    actor: str
    started_at: float
    expires_at: float
    policy: TrafficPolicy
    rollbacks: dict[str, audit_pb2.Rollback] = field(default_factory=dict)  # rollback id -> latest record
    outcome: str = ""  # set once finished


class DrillDesk:
    def __init__(
        self,
        *,
        store: StateStore,
        desired: Callable[[], TrafficPolicy],
        metrics: DrillMetrics,
        cooldown_s: float,
        open_rollback: Callable[[], str] = lambda: "",
        rollout: Callable[[], str] = lambda: "",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._desired = desired
        self.metrics = metrics
        self._cooldown_s = cooldown_s
        self._open_rollback = open_rollback
        self._rollout = rollout
        self._wall = wall_clock
        self.current: ActiveDrill | None = None  # the registered drill, or the last one (finished)

    @property
    def active(self) -> ActiveDrill | None:
        drill = self.current
        if drill is None or drill.outcome or self._wall() >= drill.expires_at:
            return None
        return drill

    def drill_for(self, failing: str) -> str:
        """The id of the registered drill covering a rollback of `failing`, or "" (the orchestrator's question)."""
        drill = self.active
        return drill.drill_id if drill is not None and drill.version == failing else ""

    def observe(self, record: audit_pb2.Rollback) -> None:
        """Keep each record of a drill's rollback (switched, then its outcome) for GET /v1/drill."""
        drill = self.current
        if drill is not None and record.drill_id == drill.drill_id:
            kept = audit_pb2.Rollback()
            kept.CopyFrom(record)
            drill.rollbacks[record.rollback_id] = kept

    async def situation(self, base: DrillSituation) -> DrillSituation:
        """`base` (from the status) completed with what only the engine knows."""
        await self.expire()
        active = self.active
        return DrillSituation(
            stable=base.stable,
            desired=base.desired,
            served=base.served,
            statuses=base.statuses,
            ready=base.ready,
            paused=base.paused,
            pause_reason=base.pause_reason,
            holds=base.holds,
            rules_in_breach=base.rules_in_breach,
            pins=base.pins,
            rollout=base.rollout or self._rollout(),
            open_rollback=self._open_rollback(),
            cooldown_left_s=await self._cooldown_left(),
            active_drill=active.drill_id if active is not None else "",
        )

    async def _cooldown_left(self) -> float:
        now = self._wall()
        for record in reversed(await self._tail()):
            if record.WhichOneof("event") == "rollback" and record.rollback.outcome == "switched":
                return max(0.0, self._cooldown_s - (now - record.at.ToNanoseconds() / 1e9))
        return 0.0

    async def _tail(self) -> list[audit_pb2.AuditRecord]:
        seq, _ = await self._store.head()
        return await self._store.records(since_seq=max(0, seq - _COOLDOWN_TAIL))

    async def start(
        self,
        situation: DrillSituation,
        *,
        version: str,
        fault: str,
        reason: str,
        actor: str,
        ttl_s: float = DEFAULT_TTL_S,
        schedule: str = "",
    ) -> ActiveDrill:
        """Register a drill of `version` (DrillRefusedError naming every reason when it must not run)."""
        situation = await self.situation(situation)
        reasons = refusals(situation, version)
        if reasons:
            self.metrics.runs.labels(self.metrics.model, "skipped" if schedule else "refused").inc()
            log.warning("drill of %s by %s refused: %s", version or "-", actor, "; ".join(reasons))
            raise DrillRefusedError(reasons)
        now = self._wall()
        policy = self._desired()
        drill = ActiveDrill(
            drill_id="drill-" + uuid.uuid4().hex[:10],
            version=version,
            fault=fault,
            actor=actor,
            started_at=now,
            expires_at=now + ttl_s,
            policy=policy,
        )
        await self._store.append(
            audit_pb2.DrillStarted(
                drill_id=drill.drill_id,
                version=version,
                fault=fault,
                reason=reason,
                policy=policy_to_pb(policy),
                ttl_s=ttl_s,
                schedule=schedule,
            ),
            actor,
        )
        self.current = drill
        log.warning("drill %s of %s started by %s (fault %s): %s", drill.drill_id, version, actor, fault, reason)
        return drill

    async def finish(
        self,
        drill_id: str,
        *,
        outcome: str,
        detail: str,
        phases: Sequence[DrillPhase],
        rollback_id: str,
        actor: str,
    ) -> ActiveDrill:
        drill = self.current
        if drill is None or drill.drill_id != drill_id:
            raise LookupError(f"no drill {drill_id!r} is registered")
        if drill.outcome:
            raise LookupError(f"drill {drill_id} already finished ({drill.outcome})")
        await self._record_finish(drill, outcome, detail, phases, rollback_id, actor)
        return drill

    async def expire(self) -> None:
        """Record a registration that outlived its ttl as an expired drill."""
        drill = self.current
        if drill is not None and not drill.outcome and self._wall() >= drill.expires_at:
            detail = f"not finished within its ttl ({drill.expires_at - drill.started_at:.0f}s)"
            await self._record_finish(drill, "expired", detail, (), "", "agent")

    async def _record_finish(
        self,
        drill: ActiveDrill,
        outcome: str,
        detail: str,
        phases: Sequence[DrillPhase],
        rollback_id: str,
        actor: str,
    ) -> None:
        event = audit_pb2.DrillFinished(
            drill_id=drill.drill_id, version=drill.version, outcome=outcome, detail=detail, rollback_id=rollback_id
        )
        for phase in phases:
            event.phases.append(
                audit_pb2.Phase(
                    name=phase.name,
                    duration_ms=(phase.seconds or 0.0) * 1000.0,
                    outcome=phase.outcome,
                    detail=phase.detail,
                )
            )
        event.restored_policy.CopyFrom(policy_to_pb(self._desired()))  # the split in force as the drill ends
        await self._store.append(event, actor)
        drill.outcome = outcome
        self.metrics.finished(outcome, phases, self._wall())
        log.warning("drill %s of %s finished: %s (%s)", drill.drill_id, drill.version, outcome, detail)
