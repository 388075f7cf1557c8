"""Traffic control: every change of the model's split goes through here, one at a time.

validate -> guards (no weight increase for a failed, quarantined or held version unless an operator forces it)
-> write-ahead (the intent record and the new policy row in one transaction) -> route sink (returns once every
connected Envoy ACKed) -> outcome record naming the intent. A rejected split restores the previous policy (in
the transaction of its outcome record): nothing changes. A kill between intent and outcome leaves an intent without
outcome, which the next start reconciles (agent.engine.reconcile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.domain.records import policy_to_pb
from agent.domain.traffic import PolicyError, TrafficPolicy, normalize_weights
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.route_sink import Confirmation, RouteRejectedError, RouteSink, RouteTimeoutError
from agent.ports.store import StateStore, StoreUnavailableError
from agent.telemetry import AgentMetrics

log = logging.getLogger(__name__)

PAUSED_KEY = "automation_paused"


class TrafficChangeError(Exception):
    """A traffic change did not take effect as asked; the message says why and what is served now.

    Codes: invalid_argument (400), refused (409: a guard), rejected (409: Envoy NACKed), ack_timeout (504),
    unavailable (503: the state store cannot record it; nothing moved unless the message says so)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ChangeResult:
    policy: TrafficPolicy
    route_version: str
    confirmations: tuple[Confirmation, ...]
    decision_to_ack_ms: float
    changed: bool


@dataclass(frozen=True, slots=True)
class Automation:
    paused: bool
    reason: str = ""


# version -> why it must not receive more traffic ("failed", "quarantined", "held: ..."), or an empty list.
Guards = Callable[[str], Sequence[str]]


def _no_guards(_version: str) -> Sequence[str]:
    return ()


class TrafficController:
    def __init__(
        self,
        *,
        model: str,
        versions: list[str],
        stable: str,
        store: StateStore,
        sink: RouteSink,
        metrics: AgentMetrics,
        ack_timeout_s: float,
        guards: Guards = _no_guards,
        wall_clock: Callable[[], float] = time.time,
        perf_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model = model
        self.versions = list(versions)
        self.stable = stable
        self._store = store
        self._sink = sink
        self._metrics = metrics
        self._ack_timeout_s = ack_timeout_s
        self.guards = guards
        self._wall = wall_clock
        self._perf = perf_clock
        self._lock = asyncio.Lock()
        self._desired: TrafficPolicy | None = None
        self.automation = Automation(paused=False)

    @property
    def desired(self) -> TrafficPolicy:
        if self._desired is None:
            raise RuntimeError("traffic controller not started")
        return self._desired

    def served(self) -> tuple[tuple[str, int], ...] | None:
        return self._sink.served()

    def ready(self) -> bool:
        return self._sink.ready()

    async def start(self) -> TrafficPolicy:
        """Load the persisted policy (the state store was checked and, on a first start, created with its starting
        policy before this)."""
        stored = await self._store.load_policy()
        if stored is None:
            raise PolicyError("the state store holds no traffic policy")
        unknown = sorted({v for v, _ in stored.weights} - set(self.versions))
        if unknown:
            raise PolicyError(
                f"the persisted traffic policy (revision {stored.revision}) routes to version(s) {unknown} that "
                f"the config no longer has; restore them in the config (a version that served must stay declared)"
            )
        # Versions added to the config since get weight 0 until someone routes to them.
        self._desired = TrafficPolicy(
            weights=normalize_weights(dict(stored.weights), self.versions),
            revision=stored.revision,
            reason=stored.reason,
            actor=stored.actor,
            changed_at=stored.changed_at,
        )
        log.info("serving the persisted policy revision %d: %s", stored.revision, dict(stored.weights))
        paused = await self._store.get_setting(PAUSED_KEY)
        if paused:
            self.automation = Automation(paused=True, reason=paused)
        self._metrics.automation_paused.labels(self.model).set(1 if self.automation.paused else 0)
        self._metrics.set_weights("desired", self._desired.weights)
        return self._desired

    async def set_weights(
        self,
        requested: Mapping[str, int],
        *,
        reason: str,
        actor: str,
        entered_at: float | None = None,
        force: bool = False,
        trigger: audit_pb2.Trigger | None = None,
        rollback_id: str = "",
    ) -> ChangeResult:
        """Move traffic; returns once every connected Envoy ACKed the split. `entered_at` is a perf_counter()."""
        started = self._perf() if entered_at is None else entered_at
        try:
            weights = normalize_weights(requested, self.versions)
        except PolicyError as exc:
            self._metrics.traffic_changes.labels(self.model, "invalid").inc()
            raise TrafficChangeError("invalid_argument", str(exc)) from None
        async with self._lock:
            overridden = self._guarded(weights, force)
            return await self._change(
                weights,
                reason=reason,
                actor=actor,
                started=started,
                trigger=trigger,
                rollback_id=rollback_id,
                overridden=overridden,
            )

    async def rollback(
        self, *, to: str | None = None, reason: str, actor: str, entered_at: float | None = None
    ) -> ChangeResult:
        """All traffic to the stable version (or `to`)."""
        target = to or self.stable
        if target not in self.versions:
            self._metrics.traffic_changes.labels(self.model, "invalid").inc()
            raise TrafficChangeError(
                "invalid_argument", f"unknown version {target!r}; this model has {', '.join(self.versions)}"
            )
        return await self.set_weights({target: 100}, reason=reason, actor=actor, entered_at=entered_at)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Other changes of the data plane (batch-job lease routes) run one at a time with weight changes: a publish
        while another waits for its ACKs would supersede it."""
        async with self._lock:
            yield

    async def set_paused(self, paused: bool, *, reason: str, actor: str) -> Automation:
        async with self._lock:
            event = audit_pb2.AutomationToggled(paused=paused, reason=reason)
            try:
                await self._store.record_setting(
                    PAUSED_KEY, (reason or "paused by operator") if paused else "", event, actor
                )
            except StoreUnavailableError as exc:
                raise TrafficChangeError("unavailable", f"{exc}; automation unchanged") from None
            self.automation = Automation(paused=paused, reason=(reason or "paused by operator") if paused else "")
            self._metrics.automation_paused.labels(self.model).set(1 if paused else 0)
            log.warning("automation %s by %s: %s", "paused" if paused else "resumed", actor, reason)
            return self.automation

    def _guarded(self, weights: tuple[tuple[str, int], ...], force: bool) -> list[str]:
        """Guards a change would cross: raises TrafficChangeError("refused") unless forced; returns the overridden."""
        previous = self.desired
        crossed = [
            f"{version}: {why}"
            for version, weight in weights
            if weight > previous.weight(version)
            for why in self.guards(version)
        ]
        if crossed and not force:
            self._metrics.traffic_changes.labels(self.model, "refused").inc()
            raise TrafficChangeError(
                "refused",
                "refused: no weight increase for " + "; ".join(crossed) + " (an operator can override with force, "
                "which is recorded)",
            )
        return crossed

    async def _change(
        self,
        weights: tuple[tuple[str, int], ...],
        *,
        reason: str,
        actor: str,
        started: float,
        trigger: audit_pb2.Trigger | None,
        rollback_id: str,
        overridden: list[str],
    ) -> ChangeResult:
        previous = self.desired
        unchanged = weights == previous.weights
        policy = previous if unchanged else TrafficPolicy(weights, previous.revision + 1, reason, actor, self._wall())
        intent: audit_pb2.AuditRecord | None = None
        intent_id = uuid.uuid4().hex[:12]
        if not unchanged:
            event = audit_pb2.TrafficIntent(
                intent_id=intent_id,
                from_policy=policy_to_pb(previous),
                to_policy=policy_to_pb(policy),
                reason=reason,
                rollback_id=rollback_id,
                forced=bool(overridden),
                overridden=overridden,
            )
            if trigger is not None:
                event.trigger.CopyFrom(trigger)
            try:
                intent = await self._store.change_policy(policy, event, actor)
            except StoreUnavailableError as exc:
                self._metrics.traffic_changes.labels(self.model, "unavailable").inc()
                raise TrafficChangeError(
                    "unavailable", f"{exc}; nothing moved (still serving revision {previous.revision})"
                ) from None
            self._desired = policy
            self._metrics.set_weights("desired", policy.weights)
        try:
            applied = await self._sink.apply(weights, self._ack_timeout_s)
        except RouteRejectedError as exc:
            self._metrics.traffic_changes.labels(self.model, "rejected").inc()
            if intent is not None:
                outcome = self._outcome(previous, policy, intent, "", "rejected", started, str(exc))
                self._desired = previous
                self._metrics.set_weights("desired", previous.weights)
                await self._record(self._store.change_policy(previous, outcome, actor))
            raise TrafficChangeError(
                "rejected", f"{exc}; still serving revision {previous.revision} {dict(previous.weights)}"
            ) from None
        except RouteTimeoutError as exc:
            self._metrics.traffic_changes.labels(self.model, "timeout").inc()
            if intent is not None:
                outcome = self._outcome(previous, policy, intent, "", "timeout", started, str(exc))
                await self._record(self._store.append(outcome, actor))
            raise TrafficChangeError("ack_timeout", str(exc)) from None
        elapsed_ms = (self._perf() - started) * 1000.0
        outcome_name = "acked" if (applied.changed or not unchanged) else "unchanged"
        self._metrics.traffic_changes.labels(self.model, outcome_name).inc()
        if intent is not None:
            self._metrics.decision_to_ack.labels(self.model).observe(elapsed_ms / 1000.0)
            outcome = self._outcome(previous, policy, intent, applied.route_version, "acked", started, "")
            recorded = await self._record(self._store.append(outcome, actor))
            log.info(
                "traffic %s -> %s acked by %s in %.1f ms (%s: %s)",
                dict(previous.weights),
                dict(weights),
                ", ".join(c.node for c in applied.confirmations),
                elapsed_ms,
                actor,
                reason,
            )
            if not recorded:
                self._metrics.set_weights("served", weights)
                raise TrafficChangeError(
                    "unavailable",
                    f"traffic moved to {dict(weights)} (ACKed) but its outcome could not be recorded; the next start "
                    f"reconciles intent {intent.seq}",
                )
        self._metrics.set_weights("served", weights)
        return ChangeResult(policy, applied.route_version, applied.confirmations, elapsed_ms, outcome_name == "acked")

    def _outcome(
        self,
        previous: TrafficPolicy,
        policy: TrafficPolicy,
        intent: audit_pb2.AuditRecord,
        route_version: str,
        outcome: str,
        started: float,
        detail: str,
    ) -> audit_pb2.TrafficChanged:
        return audit_pb2.TrafficChanged(
            from_policy=policy_to_pb(previous),
            to_policy=policy_to_pb(policy),
            route_version=route_version,
            outcome=outcome,
            decision_to_ack_ms=(self._perf() - started) * 1000.0,
            detail=detail,
            intent_seq=intent.seq,
            intent_id=intent.traffic_intent.intent_id,
        )

    @staticmethod
    async def _record(write: object) -> bool:
        """Write an outcome record; a storage failure is logged (the intent stays open for reconciliation)."""
        try:
            await write  # type: ignore[misc]
        except StoreUnavailableError as exc:
            log.error("outcome not recorded: %s", exc)
            return False
        return True
