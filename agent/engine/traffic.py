"""Traffic control: every change of the model's split goes through here, one at a time.

validate -> persist (before the push, so a crash mid-push restarts on the intended policy) -> route sink (returns
once every connected Envoy ACKed) -> audit. A rejected split restores the previous policy: nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.domain.records import policy_to_pb, timestamp
from agent.domain.traffic import PolicyError, TrafficPolicy, normalize_weights
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.route_sink import Confirmation, RouteRejectedError, RouteSink, RouteTimeoutError
from agent.ports.store import StateStore
from agent.telemetry import AgentMetrics

log = logging.getLogger(__name__)

PAUSED_KEY = "automation_paused"


class TrafficChangeError(Exception):
    """A traffic change did not take effect as asked; the message says why and what is served now."""

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

    async def start(self, starting_weights: Mapping[str, int]) -> TrafficPolicy:
        """Load the persisted policy (it wins over the config file once one was set); else persist the starting one."""
        stored = await self._store.load_policy()
        if stored is not None:
            unknown = sorted({v for v, _ in stored.weights} - set(self.versions))
            if unknown:
                raise PolicyError(
                    f"the persisted traffic policy (revision {stored.revision}) routes to version(s) {unknown} that "
                    f"the config no longer has; restore them in the config, or remove the state dir to start over"
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
        else:
            self._desired = TrafficPolicy(
                weights=normalize_weights(starting_weights, self.versions),
                revision=1,
                reason="initial weights from the config file",
                actor="config",
                changed_at=self._wall(),
            )
            await self._store.save_policy(self._desired)
        paused = await self._store.get_setting(PAUSED_KEY)
        if paused:
            self.automation = Automation(paused=True, reason=paused)
        self._metrics.automation_paused.labels(self.model).set(1 if self.automation.paused else 0)
        self._metrics.set_weights("desired", self._desired.weights)
        return self._desired

    async def set_weights(
        self, requested: Mapping[str, int], *, reason: str, actor: str, entered_at: float | None = None
    ) -> ChangeResult:
        """Move traffic; returns once every connected Envoy ACKed the split. `entered_at` is a perf_counter()."""
        started = self._perf() if entered_at is None else entered_at
        try:
            weights = normalize_weights(requested, self.versions)
        except PolicyError as exc:
            self._metrics.traffic_changes.labels(self.model, "invalid").inc()
            raise TrafficChangeError("invalid_argument", str(exc)) from None
        async with self._lock:
            return await self._change(weights, reason=reason, actor=actor, started=started)

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

    async def set_paused(self, paused: bool, *, reason: str, actor: str) -> Automation:
        async with self._lock:
            await self._store.set_setting(PAUSED_KEY, (reason or "paused by operator") if paused else "")
            self.automation = Automation(paused=paused, reason=reason if paused else "")
            self._metrics.automation_paused.labels(self.model).set(1 if paused else 0)
            await self._audit(
                actor,
                audit_pb2.AuditRecord(automation_toggled=audit_pb2.AutomationToggled(paused=paused, reason=reason)),
            )
            log.warning("automation %s by %s: %s", "paused" if paused else "resumed", actor, reason)
            return self.automation

    async def _change(
        self, weights: tuple[tuple[str, int], ...], *, reason: str, actor: str, started: float
    ) -> ChangeResult:
        previous = self.desired
        unchanged = weights == previous.weights
        policy = previous if unchanged else TrafficPolicy(weights, previous.revision + 1, reason, actor, self._wall())
        if not unchanged:
            await self._store.save_policy(policy)
            self._desired = policy
            self._metrics.set_weights("desired", policy.weights)
        try:
            applied = await self._sink.apply(weights, self._ack_timeout_s)
        except RouteRejectedError as exc:
            if not unchanged:
                await self._store.save_policy(previous)
                self._desired = previous
                self._metrics.set_weights("desired", previous.weights)
            self._metrics.traffic_changes.labels(self.model, "rejected").inc()
            await self._audit_change(previous, policy, "", "rejected", started, str(exc), actor)
            raise TrafficChangeError(
                "rejected", f"{exc}; still serving revision {previous.revision} {dict(previous.weights)}"
            ) from None
        except RouteTimeoutError as exc:
            self._metrics.traffic_changes.labels(self.model, "timeout").inc()
            await self._audit_change(previous, policy, "", "timeout", started, str(exc), actor)
            raise TrafficChangeError("ack_timeout", str(exc)) from None
        elapsed_ms = (self._perf() - started) * 1000.0
        outcome = "acked" if (applied.changed or not unchanged) else "unchanged"
        self._metrics.traffic_changes.labels(self.model, outcome).inc()
        if outcome == "acked":
            self._metrics.decision_to_ack.labels(self.model).observe(elapsed_ms / 1000.0)
            await self._audit_change(previous, policy, applied.route_version, "acked", started, "", actor)
            log.info(
                "traffic %s -> %s acked by %s in %.1f ms (%s: %s)",
                dict(previous.weights),
                dict(weights),
                ", ".join(c.node for c in applied.confirmations),
                elapsed_ms,
                actor,
                reason,
            )
        self._metrics.set_weights("served", weights)
        return ChangeResult(policy, applied.route_version, applied.confirmations, elapsed_ms, outcome == "acked")

    async def _audit_change(
        self,
        previous: TrafficPolicy,
        policy: TrafficPolicy,
        route_version: str,
        outcome: str,
        started: float,
        detail: str,
        actor: str,
    ) -> None:
        event = audit_pb2.TrafficChanged(
            from_policy=policy_to_pb(previous),
            to_policy=policy_to_pb(policy),
            route_version=route_version,
            outcome=outcome,
            decision_to_ack_ms=(self._perf() - started) * 1000.0,
            detail=detail,
        )
        await self._audit(actor, audit_pb2.AuditRecord(traffic_changed=event))

    async def _audit(self, actor: str, record: audit_pb2.AuditRecord) -> None:
        record.at.CopyFrom(timestamp(self._wall()))
        record.model = self.model
        record.actor = actor
        await self._store.append_audit(record)
