"""The outbox shipper against a fake fleet store: resume point read from the fleet after every error, nothing
lost or duplicated, conflicts refused, backoff with jitter. The real PostgreSQL is in
tests/integration/test_fleet_audit_store.py."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.adapters.fleet.postgres_store import GENESIS_HASH, FleetConflictError, StoreIdentity
from agent.adapters.fleet.shipper import MAX_BACKOFF_S, FleetShipper, FleetShipperMetrics
from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.pb.rollback_agent.v1 import audit_pb2
from harness.wait import NotYet, async_wait_until

IDENTITY = StoreIdentity("store-1", "credit", "credit-0")


class FakeFleet:
    """Fails the next `failures` calls; may forget what it held (a database that lost acknowledged commits)."""

    def __init__(self) -> None:
        self.rows: dict[int, audit_pb2.AuditRecord] = {}
        self.inserts: list[int] = []
        self.failures = 0
        self.head_reads = 0

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unreachable")

    async def shipped_head(self, identity: StoreIdentity) -> tuple[int, bytes]:
        self._maybe_fail()
        self.head_reads += 1
        if not self.rows:
            return 0, GENESIS_HASH
        seq = max(self.rows)
        return seq, self.rows[seq].hash

    async def ship(self, identity: StoreIdentity, records: Sequence[audit_pb2.AuditRecord]) -> int:
        self._maybe_fail()
        new = 0
        for record in records:
            if record.seq in self.rows:
                continue
            self.rows[record.seq] = record
            self.inserts.append(record.seq)
            new += 1
        return new

    async def close(self) -> None:
        pass


async def make_store(tmp_path: Path, n: int) -> SqliteStateStore:
    store = await SqliteStateStore.open(tmp_path / "state.db", model="credit")
    for i in range(n):
        await store.append(audit_pb2.AutomationToggled(paused=bool(i % 2), reason=f"r{i}"), "operator:t")
    return store


def shipper_for(store: SqliteStateStore, fleet: FakeFleet, **kwargs: object) -> tuple[FleetShipper, CollectorRegistry]:
    registry = CollectorRegistry()

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    shipper = FleetShipper(
        store,
        fleet,  # type: ignore[arg-type]
        IDENTITY,
        FleetShipperMetrics(registry),
        batch=4,
        interval_s=0.01,
        sleep=no_wait,
        **kwargs,  # type: ignore[arg-type]
    )
    return shipper, registry


async def run_until(shipper: FleetShipper, done: object, timeout_s: float = 5.0) -> None:
    task = asyncio.create_task(shipper.run())
    try:
        await async_wait_until(lambda: done() or NotYet(False), timeout_s, interval_s=0.001)  # type: ignore[operator]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def value(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


async def test_ships_in_order_in_batches_each_record_once_through_outages(tmp_path: Path):
    store = await make_store(tmp_path, 23)
    fleet = FakeFleet()
    fleet.failures = 3  # down at start
    shipper, registry = shipper_for(store, fleet)
    # the lag is set after the batch is shipped and the local head read: wait for that pass, not only the rows
    await run_until(shipper, lambda: len(fleet.rows) == 23 and value(registry, "rollback_agent_fleet_lag_records") == 0)
    assert fleet.inserts == list(range(1, 24))
    assert value(registry, "rollback_agent_fleet_ship_errors_total") == 3
    assert value(registry, "rollback_agent_fleet_shipped_records_total") == 23
    assert value(registry, "rollback_agent_fleet_lag_records") == 0
    await store.close()


async def test_resume_point_is_read_from_the_fleet_store_after_every_error(tmp_path: Path):
    store = await make_store(tmp_path, 10)
    fleet = FakeFleet()
    shipper, _ = shipper_for(store, fleet)
    await run_until(shipper, lambda: len(fleet.rows) == 10)
    # The database loses its newest rows (acknowledged commits lost in a crash, a lagging replica promoted).
    for seq in (8, 9, 10):
        del fleet.rows[seq]
    for i in range(5):
        await store.append(audit_pb2.AutomationToggled(reason=f"more {i}"), "operator:t")
    fleet.failures = 1
    reads = fleet.head_reads
    await run_until(shipper, lambda: len(fleet.rows) == 15)
    assert fleet.head_reads > reads
    assert sorted(fleet.rows) == list(range(1, 16))
    await store.close()


async def test_a_fleet_store_ahead_of_the_local_trail_is_a_conflict_not_overwritten(tmp_path: Path):
    store = await make_store(tmp_path, 3)
    fleet = FakeFleet()
    other = await make_store(tmp_path / "other", 5)  # another store's longer trail under the same id
    for record in await other.records():
        fleet.rows[record.seq] = record
    shipper, registry = shipper_for(store, fleet)
    await run_until(shipper, lambda: value(registry, "rollback_agent_fleet_conflicts_total") >= 2)
    assert fleet.inserts == []
    with pytest.raises(FleetConflictError, match="beyond the local trail"):
        await shipper._resume()
    del fleet.rows[5], fleet.rows[4]  # now the same length: record 3 differs
    with pytest.raises(FleetConflictError, match="differs from the local one"):
        await shipper._resume()
    await store.close()
    await other.close()


def test_backoff_grows_is_capped_and_jittered():
    low, _ = FleetShipper.__new__(FleetShipper), None
    low.interval_s, low._jitter = 1.0, lambda: 0.0
    high = FleetShipper.__new__(FleetShipper)
    high.interval_s, high._jitter = 1.0, lambda: 0.999
    assert [low.backoff_s(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert high.backoff_s(2) == pytest.approx(2 * 1.499)
    assert low.backoff_s(50) == MAX_BACKOFF_S * 0.5
    assert high.backoff_s(50) <= MAX_BACKOFF_S * 1.5


def test_an_agent_without_a_fleet_store_never_imports_the_driver():
    code = "import sys, agent.runtime, agent.cli_records; sys.exit('psycopg' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
