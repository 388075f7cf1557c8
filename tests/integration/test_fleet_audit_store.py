"""The fleet audit store against a real PostgreSQL: the outbox shipper loses and duplicates nothing.

Decisions are made by the real traffic controller on the real SQLite store (dry-run sink) and shipped by the real
shipper; one test runs the agent itself as a process (`run --dry-run`, no Envoy needed) and SIGKILLs it while a
shipment is in flight. Every test ends with the fleet store holding each record exactly once, and every chain
verified by `rollback-agent audit verify --fleet-dsn`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry

from agent.adapters.fleet.postgres_store import FleetConflictError, FleetWriter, StoreIdentity
from agent.adapters.fleet.shipper import FleetShipper, FleetShipperMetrics
from agent.adapters.nop_route_sink import NopRouteSink
from agent.adapters.store.sqlite_store import SqliteStateStore, read_audit_records
from agent.cli import main as cli_main
from agent.domain.audit_chain import seal
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.engine.traffic import TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.telemetry import AgentMetrics
from harness.agent import wait_http_ready
from harness.http_util import request
from harness.ports import free_ports
from harness.postgres import PostgresServer
from harness.process import ManagedProcess
from harness.wait import NotYet, async_wait_until, wait_until

MODEL = "credit"
TOKEN = "fleet-test-token-0123456789"


# --- helpers ---------------------------------------------------------------------------------------------------


def fleet_rows(dsn: str) -> dict[str, list[int]]:
    """store_id -> every shipped seq (with repeats, were there any), in order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT store_id, seq FROM audit_records ORDER BY store_id, seq").fetchall()
    out: dict[str, list[int]] = {}
    for store_id, seq in rows:
        out.setdefault(store_id, []).append(int(seq))
    return out


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(args))
    return code, out.getvalue(), err.getvalue()


def assert_exactly_once(dsn: str, store_id: str, local_head: int) -> None:
    seqs = fleet_rows(dsn).get(store_id, [])
    assert seqs == list(range(1, local_head + 1)), f"shipped {len(seqs)} rows for head {local_head}"


def assert_fleet_verifies(dsn: str) -> str:
    code, out, err = cli("audit", "verify", "--fleet-dsn", dsn)
    assert code == 0, err
    assert "fleet audit intact" in out
    return out


@dataclass
class Pod:
    store: SqliteStateStore
    traffic: TrafficController
    shipper: FleetShipper
    metrics: FleetShipperMetrics
    registry: CollectorRegistry
    task: asyncio.Task[None] | None = None

    async def decide(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            canary = 1 + i % 49
            await self.traffic.set_weights({"v1": 100 - canary, "v2": canary}, reason=f"step {i}", actor="operator:t")

    def value(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0


@contextlib.asynccontextmanager
async def running_pod(
    directory: Path, dsn: str, pod: str, *, batch: int = 7, weights: tuple[int, int] = (100, 0)
) -> AsyncIterator[Pod]:
    initial = TrafficPolicy((("v1", weights[0]), ("v2", weights[1])), 1, "initial weights", "config", time.time())
    store = await SqliteStateStore.create(
        directory / "state.db",
        model=MODEL,
        establish=audit_pb2.StateEstablished(how="first_start", policy=policy_to_pb(initial)),
        actor="agent",
    )
    traffic = TrafficController(
        model=MODEL,
        versions=["v1", "v2"],
        stable="v1",
        store=store,
        sink=NopRouteSink(),
        metrics=AgentMetrics(MODEL),
        ack_timeout_s=1,
    )
    await traffic.start()
    registry = CollectorRegistry()
    metrics = FleetShipperMetrics(registry)
    shipper = FleetShipper(
        store, FleetWriter(dsn), StoreIdentity(store.store_id, MODEL, pod), metrics, batch=batch, interval_s=0.05
    )
    # Retries come fast in tests; the jittered exponential backoff itself is covered by the unit tests.
    shipper.backoff_s = lambda failures: 0.1  # type: ignore[method-assign]
    p = Pod(store, traffic, shipper, metrics, registry)
    p.task = asyncio.create_task(shipper.run(), name=f"fleet-shipper-{pod}")
    try:
        yield p
    finally:
        p.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await p.task
        await store.close()


async def shipped_everything(pod: Pod, dsn: str, timeout_s: float = 15.0) -> int:
    head, _ = await pod.store.head()

    async def caught_up() -> bool | NotYet:
        seqs = await asyncio.to_thread(fleet_rows, dsn)
        got = seqs.get(pod.store.store_id, [])
        return (bool(got) and got[-1] == head) or NotYet(len(got))

    await async_wait_until(caught_up, timeout_s, interval_s=0.05, what=f"the fleet store to reach record {head}")
    return head


# --- tests -----------------------------------------------------------------------------------------------------


async def test_database_down_and_restarted_during_50_decisions(
    tmp_path: Path, postgres_factory: Callable[..., PostgresServer]
):
    pg = postgres_factory()
    async with running_pod(tmp_path, pg.dsn, "credit-0") as pod:
        await pod.decide(5)
        await shipped_everything(pod, pg.dsn)

        pg.stop()  # a clean shutdown, then a crash: the shipper must not care which
        await pod.decide(25)
        await async_wait_until(
            lambda: pod.value("rollback_agent_fleet_ship_errors_total") > 0 or NotYet(0), 10, what="a shipping error"
        )
        await asyncio.to_thread(pg.start)
        await shipped_everything(pod, pg.dsn)

        await pod.decide(25, start=25)  # 50 decisions in all while the database was away or just back
        await asyncio.to_thread(pg.kill)
        await pod.decide(5, start=50)
        await asyncio.to_thread(pg.start)
        head = await shipped_everything(pod, pg.dsn)

        assert_exactly_once(pg.dsn, pod.store.store_id, head)
        assert head >= 2 * 60  # intent + outcome per decision, after the first record
        # The harness's server runs with synchronous_commit=off: its crash loses commits it had acknowledged, and
        # the shipper, resuming from what the database holds, ships those again. Counted twice, stored once.
        assert pod.value("rollback_agent_fleet_shipped_records_total") >= head
        assert pod.value("rollback_agent_fleet_shipped_head_seq") == head
        assert pod.value("rollback_agent_fleet_conflicts_total") == 0
        await async_wait_until(
            lambda: pod.value("rollback_agent_fleet_lag_records") == 0 or NotYet(0), 5, what="lag back to 0"
        )
        assert pod.shipper.state.resumed >= 3  # at start, and after each outage: from the fleet store itself
    out = assert_fleet_verifies(pg.dsn)
    assert f"head {head}:" in out


async def test_two_pods_one_fleet_store_history_at_answers_for_both(
    tmp_path: Path, postgres_factory: Callable[..., PostgresServer]
):
    pg = postgres_factory()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        running_pod(tmp_path / "a", pg.dsn, "credit-0") as a,
        running_pod(tmp_path / "b", pg.dsn, "credit-1", weights=(50, 50)) as b,
    ):
        await a.traffic.set_weights({"v1": 90, "v2": 10}, reason="canary on pod 0", actor="operator:alice")
        await b.traffic.set_weights({"v1": 0, "v2": 100}, reason="promote on pod 1", actor="operator:bob")
        await shipped_everything(a, pg.dsn)
        await shipped_everything(b, pg.dsn)
        ids = {a.store.store_id: "credit-0", b.store.store_id: "credit-1"}

    now = datetime.now(UTC).isoformat()
    code, out, err = cli("history", "--at", now, "--fleet-dsn", pg.dsn, "--model", MODEL)
    assert code == 0, err
    assert "2 pod(s)" in out
    pod0, pod1 = out.split("== pod credit-0")[1].split("== pod credit-1")
    assert "v1=90, v2=10" in pod0 and "canary on pod 0" in pod0 and "operator:alice" in pod0
    assert "v1=0, v2=100" in pod1 and "promote on pod 1" in pod1 and "operator:bob" in pod1
    code, out, err = cli("history", "--at", "1h", "--fleet-dsn", pg.dsn, "--model", MODEL)
    assert code == 0 and "Unknown" in out, out  # before either pod started: not a guess

    code, out, err = cli("report", "--fleet-dsn", pg.dsn, "--model", MODEL, "--format", "json")
    assert code == 0, err
    reports = json.loads(out)["stores"]
    assert {r["pod"] for r in reports} == {"credit-0", "credit-1"}
    assert all(r["report"]["audit_chain"]["intact"] for r in reports), reports

    verified = assert_fleet_verifies(pg.dsn)
    assert verified.count("intact pod") == 2

    # Tampering in the fleet store is caught per pod: a deleted row is a gap, an edited row breaks its hash.
    victim = next(iter(ids))
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM audit_records WHERE store_id = %s AND seq = 2", (victim,))
    code, out, err = cli("audit", "verify", "--fleet-dsn", pg.dsn)
    assert code == 1
    assert f"BROKEN pod {ids[victim]}" in err and "records missing from the fleet store: 2" in err
    assert "intact pod" in out  # the other pod's chain is still verified


async def test_conflicting_record_is_refused_never_overwritten(
    tmp_path: Path, postgres_factory: Callable[..., PostgresServer]
):
    pg = postgres_factory()
    async with running_pod(tmp_path, pg.dsn, "credit-0") as pod:
        await pod.decide(2)
        head = await shipped_everything(pod, pg.dsn)
        records = await pod.store.records()
    forged = audit_pb2.AuditRecord()
    forged.CopyFrom(records[-1])
    forged.actor = "operator:mallory"
    forged = seal(forged, forged.seq, forged.prev_hash)  # re-sealed: a consistent record, but not the one shipped
    writer = FleetWriter(pg.dsn)
    try:
        identity = StoreIdentity(pod.store.store_id, MODEL, "credit-0")
        with pytest.raises(FleetConflictError, match=f"different record {head}"):
            await writer.ship(identity, [forged])
        assert await writer.ship(identity, records) == 0  # the same records again: taken once, no error
    finally:
        await writer.close()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT actor, hash FROM audit_records WHERE store_id = %s AND seq = %s", (pod.store.store_id, head)
        ).fetchone()
    assert row == (records[-1].actor, records[-1].hash)
    assert_exactly_once(pg.dsn, pod.store.store_id, head)


# --- the agent as a process ------------------------------------------------------------------------------------


@pytest.fixture
def agent_config(tmp_path: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    http, control, xds, v1, v2 = free_ports(5)
    config = {
        "model": {"name": MODEL},
        "versions": [{"tag": "v1", "endpoint": f"127.0.0.1:{v1}"}, {"tag": "v2", "endpoint": f"127.0.0.1:{v2}"}],
        "stable": "v1",
        "candidate": "v2",
        "state_dir": "state",
        "http": {"port": http},
        "xds": {"port": xds},
        "control": {"listen": {"port": control}},
        "signals": {"envoy_stats": False, "model_metrics": False, "health": False},
        "audit": {"fleet": {"dsn_file": "fleet-dsn", "pod": "credit-0", "batch": 3, "interval_s": 0.1}},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path, {"http": http, "control": control}


def post_weights(control_port: int, canary: int) -> None:
    resp = request(
        "POST",
        f"http://127.0.0.1:{control_port}/v1/traffic",
        json_body={"weights": [{"version": "v1", "weight": 100 - canary}, {"version": "v2", "weight": canary}]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout_s=5,
    )
    assert resp.ok, resp.text


def test_agent_killed_mid_shipment_after_an_outage_ships_every_record_once(
    tmp_path: Path,
    agent_config: tuple[Path, dict[str, int]],
    agent_factory: Callable[..., ManagedProcess],
    postgres_factory: Callable[..., PostgresServer],
):
    config_path, ports = agent_config
    pg = postgres_factory()
    (tmp_path / "fleet-dsn").write_text(pg.dsn + "\n")
    env = {"ROLLBACK_AGENT_TOKEN": TOKEN}
    agent = agent_factory(config_path, env, extra_args=("--dry-run",))
    wait_http_ready(f"http://127.0.0.1:{ports['http']}/healthz", 30, process=agent, require_2xx=False)
    db = tmp_path / "state" / "state.db"

    def local_head() -> int:
        return len(read_audit_records(db))

    def caught_up() -> bool | NotYet:
        agent.check_alive()
        seqs = fleet_rows(pg.dsn)
        got = next(iter(seqs.values()), [])
        return (bool(got) and got[-1] == local_head()) or NotYet(len(got))

    wait_until(caught_up, 15, interval_s=0.05, what="the agent's first records in the fleet store")

    pg.stop()
    for i in range(50):  # 50 decisions while the database is down
        post_weights(ports["control"], 1 + i % 49)
    # The database comes back, and the shipment it gets is held in flight: the agent's insert waits on a lock
    # the test takes at once (the shipper is still backing off), then the agent dies in mid-transaction.
    pg.start()
    with psycopg.connect(pg.dsn) as blocker:
        blocker.execute("LOCK TABLE audit_records IN SHARE MODE")

        def shipment_blocked() -> bool | NotYet:
            agent.check_alive()
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                waiting = conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'audit_records'::regclass"
                ).fetchone()
            return bool(waiting and waiting[0]) or NotYet(waiting)

        wait_until(shipment_blocked, 40, interval_s=0.05, what="the agent's shipment to wait on the lock")
        agent.kill()
        blocker.rollback()

    head = local_head()
    assert len(next(iter(fleet_rows(pg.dsn).values()))) < head  # the killed shipment did not commit
    agent = agent_factory(config_path, env, extra_args=("--dry-run",), name="agent-restarted")
    wait_http_ready(f"http://127.0.0.1:{ports['http']}/healthz", 30, process=agent, require_2xx=False)
    wait_until(caught_up, 20, interval_s=0.05, what="every record in the fleet store after the restart")
    agent.stop()
    records = read_audit_records(db)
    store_id = next(iter(fleet_rows(pg.dsn)))
    assert_exactly_once(pg.dsn, store_id, len(records))
    assert sum(1 for r in records if r.WhichOneof("event") == "traffic_intent") >= 50
    out = assert_fleet_verifies(pg.dsn)
    assert "pod credit-0" in out
