"""Batch-job leases: acquire, renew, release, revoke, expire; persisted, audited, pushed to Envoy ACK-confirmed.

Each change is written first (the lease as a setting and its LeaseChanged record, one transaction), then the lease
routes are published beside the split being served (one at a time with weight changes: TrafficController.exclusive)
and confirmed by every connected Envoy. A new lease whose route is refused ends as `unconfirmed` (recorded), so no
lease is on record as serving when it never did. A rollback of live traffic changes only the weighted route: the
lease routes, and every version's cluster, stay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from prometheus_client import Counter, Gauge

from agent.domain.lease import LEASE_HEADER, Lease, LeaseBook, LeaseError
from agent.engine.traffic import Guards, TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.route_sink import RouteApplied, RouteRejectedError, RouteTimeoutError
from agent.ports.store import StateStore, StoreUnavailableError
from agent.telemetry import AgentMetrics

log = logging.getLogger(__name__)

LEASE_PREFIX = "lease:"
EXPIRY_ACTOR = "agent:lease-expiry"


class LeaseRoutes(Protocol):
    leases: tuple[tuple[str, str], ...]

    async def apply_leases(self, leases: tuple[tuple[str, str], ...], timeout_s: float) -> RouteApplied:
        """Publish the lease routes (lease id, version) and return once every connected Envoy ACKed them."""
        ...


class LeaseMetrics:
    def __init__(self, metrics: AgentMetrics) -> None:
        self.live = Gauge(
            "rollback_agent_leases",
            "Live batch-job leases, by the version they pin and their holder.",
            ["model", "version", "holder"],
            registry=metrics.registry,
        )
        self.ended = Counter(
            "rollback_agent_lease_ends_total",
            "Batch-job leases that ended: expired, released, revoked (forced off) or unconfirmed.",
            ["model", "version", "how"],
            registry=metrics.registry,
        )


class LeaseManager:
    def __init__(
        self,
        *,
        model: str,
        traffic: TrafficController,
        store: StateStore,
        routes: LeaseRoutes | None,
        metrics: AgentMetrics,
        ack_timeout_s: float,
        interval_s: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = model
        self._traffic = traffic
        self._store = store
        self._routes = routes
        self._metrics = LeaseMetrics(metrics)
        self._ack_timeout_s = ack_timeout_s
        self.interval_s = interval_s
        self._wall = wall_clock
        self._lock = asyncio.Lock()
        self.book = LeaseBook()

    @property
    def guards(self) -> Guards:
        return self._traffic.guards

    def leases(self) -> list[Lease]:
        return self.book.all()

    async def restore(self) -> None:
        """Load the persisted leases and set their routes (before the first snapshot is published); leases whose
        time ran out while the agent was down end as expired, on the record."""
        stored = await self._store.settings_with_prefix(LEASE_PREFIX)
        leases = []
        for key, text in stored.items():
            try:
                leases.append(Lease.from_json(text))
            except (ValueError, TypeError) as exc:
                log.error("lease setting %s is not readable (%s); ignored", key, exc)
        self.book = LeaseBook(leases)
        now = self._wall()
        undeclared = [x for x in self.book.live(now) if x.version not in self._traffic.versions]
        endings = [(x, "revoked", f"{x.version} is no longer declared in the config") for x in undeclared]
        endings += [(x, "expired", "its time ran out while the agent was down") for x in self.book.due(now)]
        for lease, how, why in endings:
            ended = self.book.ending(lease.lease_id, how, now=now, why=why)
            try:
                await self._persist(ended, how, why, EXPIRY_ACTOR)
            except LeaseError as exc:  # the expiry task retries; an undeclared version's route is left out anyway
                log.error("lease %s could not be ended at start-up: %s", lease.lease_id, exc)
                continue
            self.book.put(ended)
            self._metrics.ended.labels(self.model, lease.version, how).inc()
        if self._routes is not None:
            self._routes.leases = self._declared(self.book.routes(now))
        self._export(now)
        for lease in self.book.live(now):
            log.info(
                "lease %s restored: %s pins %s until %.0f",
                lease.lease_id,
                lease.holder,
                lease.version,
                lease.expires_at,
            )

    async def acquire(
        self, *, version: str, holder: str, ttl_s: float, reason: str, actor: str, force: bool = False
    ) -> Lease:
        async with self._lock:
            now = self._wall()
            lease = self.book.new_lease(
                version=version,
                holder=holder,
                ttl_s=ttl_s,
                now=now,
                known_versions=self._traffic.versions,
                reason=reason,
                actor=actor,
            )
            crossed = [f"{version}: {why}" for why in self.guards(version)]
            if crossed and not force:
                raise LeaseError(
                    "refused",
                    "refused: a lease on " + "; ".join(crossed) + " (an admin can override with force, which is "
                    "recorded)",
                )
            await self._persist(lease, "acquired", reason, actor, crossed)
            self.book.put(lease)
            try:
                await self._publish(now)
            except LeaseError as exc:
                if exc.code == "rejected":  # never served: ended on the record
                    ended = self.book.ending(lease.lease_id, "unconfirmed", now=self._wall(), why=str(exc))
                    await self._persist(ended, "unconfirmed", str(exc), actor)
                    self.book.put(ended)
                    self._metrics.ended.labels(self.model, version, "unconfirmed").inc()
                    self._export(self._wall())
                raise
            log.warning(
                "lease %s: %s pins %s for %.0fs (%s: %s)", lease.lease_id, holder, version, ttl_s, actor, reason
            )
            return lease

    async def renew(self, lease_id: str, *, ttl_s: float, reason: str, actor: str, force: bool = False) -> Lease:
        async with self._lock:
            now = self._wall()
            renewed = self.book.renewed(lease_id, ttl_s=ttl_s, now=now)
            # Renewing keeps a batch on a version the agent now refuses new traffic for: when it is quarantined (a
            # safety reason) that needs an admin's force; a failed version (rolled back) may finish its batch.
            crossed = [f"{renewed.version}: {why}" for why in self.guards(renewed.version) if "quarantined" in why]
            if crossed and not force:
                raise LeaseError(
                    "refused",
                    f"refused: lease {lease_id} pins " + "; ".join(crossed) + " (an admin can renew it with force, "
                    "which is recorded)",
                )
            await self._persist(renewed, "renewed", reason, actor, crossed)
            self.book.put(renewed)
            self._export(now)
            return renewed

    async def release(self, lease_id: str, *, reason: str, actor: str) -> Lease:
        async with self._lock:
            return (await self._end([self.book.get(lease_id)], "released", reason or "released", actor))[0]

    async def revoke(self, version: str, *, reason: str, actor: str) -> list[Lease]:
        """Force every live lease of `version` off (an admin's decision, e.g. the version is quarantined)."""
        if version not in self._traffic.versions:
            raise LeaseError(
                "invalid_argument", f"unknown version {version!r}; this model has {', '.join(self._traffic.versions)}"
            )
        async with self._lock:
            live = self.book.of_version(version, self._wall())
            if not live:
                raise LeaseError("not_found", f"{version} has no live lease")
            return await self._end(live, "revoked", reason, actor, forced=True)

    async def expire_due(self) -> list[Lease]:
        async with self._lock:
            due = self.book.due(self._wall())
            if not due:
                self.book.prune(self._wall())
                return []
            return await self._end(due, "expired", "its time ran out", EXPIRY_ACTOR)

    async def run(self) -> None:
        """The lease-expiry task: ends leases whose time is up (audited), and takes their routes away."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.expire_due()
            except (LeaseError, StoreUnavailableError) as exc:
                log.error("lease expiry: %s; retried in %.1fs", exc, self.interval_s)

    # -- internals ------------------------------------------------------------------------------------------------

    async def _end(
        self, leases: Sequence[Lease], how: str, reason: str, actor: str, *, forced: bool = False
    ) -> list[Lease]:
        now = self._wall()
        ended = []
        for lease in leases:
            done = self.book.ending(lease.lease_id, how, now=now, why=reason)
            await self._persist(done, how, reason, actor, ["forced off"] if forced else [])
            self.book.put(done)
            ended.append(done)
            self._metrics.ended.labels(self.model, lease.version, how).inc()
            log.warning(
                "lease %s of %s on %s %s (%s: %s)", lease.lease_id, lease.holder, lease.version, how, actor, reason
            )
        self.book.prune(now)
        await self._publish(now)
        return ended

    async def _persist(
        self, lease: Lease, action: str, reason: str, actor: str, overridden: Sequence[str] = ()
    ) -> None:
        event = audit_pb2.LeaseChanged(
            lease_id=lease.lease_id,
            version=lease.version,
            holder=lease.holder,
            action=action,
            acquired_at=lease.acquired_at,
            expires_at=lease.expires_at,
            reason=reason,
            forced=bool(overridden),
            overridden=list(overridden),
        )
        try:
            await self._store.record_setting(LEASE_PREFIX + lease.lease_id, lease.to_json(), event, actor)
        except StoreUnavailableError as exc:
            raise LeaseError("unavailable", f"{exc}; lease {lease.lease_id} unchanged") from None

    async def _publish(self, now: float) -> None:
        self._export(now)
        if self._routes is None:
            return
        routes = self._declared(self.book.routes(now))
        async with self._traffic.exclusive():
            try:
                await self._routes.apply_leases(routes, self._ack_timeout_s)
            except RouteRejectedError as exc:
                raise LeaseError("rejected", f"Envoy refused the lease routes: {exc}") from None
            except RouteTimeoutError as exc:
                raise LeaseError(
                    "ack_timeout", f"{exc}; the lease routes stay published and are served on reconnect"
                ) from None

    def _declared(self, routes: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return tuple((lease_id, v) for lease_id, v in routes if v in self._traffic.versions)

    def _export(self, now: float) -> None:
        self._metrics.live.clear()
        counts: dict[tuple[str, str], int] = {}
        for lease in self.book.live(now):
            counts[(lease.version, lease.holder)] = counts.get((lease.version, lease.holder), 0) + 1
        for (version, holder), count in counts.items():
            self._metrics.live.labels(self.model, version, holder).set(count)


__all__ = ["LEASE_HEADER", "LeaseManager", "LeaseMetrics", "LeaseRoutes"]
