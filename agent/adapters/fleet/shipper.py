"""The outbox shipper: copies the local audit trail (the SQLite store's audit table is the outbox) to the fleet
store, in order, in batches, idempotently.

Where to resume is asked of the fleet store itself (this store's newest shipped record) at start and after every
error, never remembered locally: a shipment cut off by a dead database, a restarted database or a killed agent
either committed (the next resume point is after it) or did not (it is sent again); a record sent twice is taken
once (ON CONFLICT DO NOTHING, same hash). Before resuming, the shipped head must be a record of the local trail: a
fleet store ahead of the local trail, or holding another record at that seq, is a conflict (a truncated or
restored local trail, two stores with one id), reported and retried, never papered over.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.adapters.fleet.postgres_store import FleetConflictError, FleetWriter, StoreIdentity, driver, read_dsn
from agent.config import FleetSection
from agent.ports.store import AuditLog, StateStore

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
OPERATION_TIMEOUT_S = 30.0  # a database that stops answering mid-statement is an error, not a hang


class FleetShipperMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.shipped = Counter(
            "rollback_agent_fleet_shipped_records_total",
            "Audit records this agent shipped to the fleet store (new rows; a re-sent record is not counted).",
            registry=registry,
        )
        self.errors = Counter(
            "rollback_agent_fleet_ship_errors_total",
            "Failed attempts to ship to the fleet store (database unreachable, timeout, conflict); retried.",
            registry=registry,
        )
        self.conflicts = Counter(
            "rollback_agent_fleet_conflicts_total",
            "The fleet store held a record of this store that differs from the local one (never overwritten).",
            registry=registry,
        )
        self.shipped_head = Gauge(
            "rollback_agent_fleet_shipped_head_seq",
            "Sequence number of this store's newest record in the fleet store (an anchor outside the pod).",
            registry=registry,
        )
        self.lag = Gauge(
            "rollback_agent_fleet_lag_records",
            "Local audit head minus the shipped head: records not yet in the fleet store.",
            registry=registry,
        )


@dataclass
class ShipperState:
    shipped_seq: int = 0
    local_seq: int = 0
    resumed: int = 0  # how many times the resume point was read from the fleet store


class FleetShipper:
    def __init__(
        self,
        source: AuditLog,
        fleet: FleetWriter,
        identity: StoreIdentity,
        metrics: FleetShipperMetrics,
        *,
        batch: int = 500,
        interval_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.source = source
        self.fleet = fleet
        self.identity = identity
        self.metrics = metrics
        self.batch = batch
        self.interval_s = interval_s
        self.state = ShipperState()
        self._sleep = sleep
        self._jitter = jitter

    def backoff_s(self, failures: int) -> float:
        """Exponential from the interval, capped, with jitter (0.5x to 1.5x): pods do not retry in step."""
        base = min(MAX_BACKOFF_S, self.interval_s * 2.0 ** min(failures - 1, 16))
        return base * (0.5 + self._jitter())

    async def _resume(self) -> None:
        seq, hash_ = await self.fleet.shipped_head(self.identity)
        self.state.resumed += 1
        if seq > 0:
            local = await self.source.records(since_seq=seq - 1, limit=1)
            if not local or local[0].seq != seq:
                raise FleetConflictError(
                    f"store {self.identity.store_id}: the fleet store has records up to {seq}, beyond the local "
                    f"trail (truncated, or restored from an older backup): not shipping over them"
                )
            if local[0].hash != hash_:
                raise FleetConflictError(
                    f"store {self.identity.store_id}: record {seq} in the fleet store differs from the local one "
                    f"(a rewritten local trail, or two stores with one id): not shipping over it"
                )
        self.state.shipped_seq = seq
        self.metrics.shipped_head.set(seq)

    async def ship_once(self) -> int:
        """Ship the next batch after the shipped head; returns how many records were sent."""
        records = await self.source.records(since_seq=self.state.shipped_seq, limit=self.batch)
        if records:
            new = await self.fleet.ship(self.identity, records)
            self.metrics.shipped.inc(new)
            self.state.shipped_seq = records[-1].seq
            self.metrics.shipped_head.set(self.state.shipped_seq)
        head, _ = await self.source.head()
        self.state.local_seq = head
        self.metrics.lag.set(max(0, head - self.state.shipped_seq))
        return len(records)

    async def run(self) -> None:
        failures = 0
        resume = True
        while True:
            try:
                async with asyncio.timeout(OPERATION_TIMEOUT_S):
                    if resume:
                        await self._resume()
                        resume = False
                    sent = await self.ship_once()
            except asyncio.CancelledError:
                await self.fleet.close()
                raise
            except Exception as exc:
                failures += 1
                resume = True
                self.metrics.errors.inc()
                if isinstance(exc, FleetConflictError):
                    self.metrics.conflicts.inc()
                    log.error("fleet audit store: %s", exc)
                else:
                    log.warning("fleet audit store: shipping failed (%d in a row), retrying: %r", failures, exc)
                await self.fleet.close()
                await self._sleep(self.backoff_s(failures))
                continue
            if failures:
                log.info("fleet audit store: shipping again after %d failed attempt(s)", failures)
                failures = 0
            if sent < self.batch:
                await self._sleep(self.interval_s)


def fleet_shipper(fleet: FleetSection, store: StateStore, model: str, registry: CollectorRegistry) -> FleetShipper:
    """The shipper for `audit.fleet`; FleetError when the driver is missing or the DSN cannot be read (the
    database itself may be down: the shipper waits for it)."""
    driver()
    writer = FleetWriter(read_dsn(fleet))
    identity = StoreIdentity(store.store_id, model, fleet.pod)
    return FleetShipper(
        store, writer, identity, FleetShipperMetrics(registry), batch=fleet.batch, interval_s=fleet.interval_s
    )
