"""The lease engine on a real state store with a scripted data plane: every change on record before it is
published, guards with an admin's override, expiry by the clock, restart, and a refused route."""

from pathlib import Path

import pytest

from agent.domain.lease import LeaseError
from agent.engine.leases import LeaseManager
from agent.engine.traffic import TrafficController
from agent.ports.route_sink import Confirmation, RouteApplied, RouteRejectedError
from agent.telemetry import AgentMetrics
from tests.unit.engine.test_traffic import ScriptedSink, established_store


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class LeaseSink(ScriptedSink):
    """The traffic sink that also takes lease routes; records what each publish carried."""

    def __init__(self, store):
        super().__init__(store)
        self.leases: tuple[tuple[str, str], ...] = ()
        self.lease_pushes: list[tuple[tuple[str, str], ...]] = []
        self.reject_leases = False

    async def apply_leases(self, leases, timeout_s):
        if self.reject_leases:
            raise RouteRejectedError("envoy-1 NACKed the route: bad header matcher")
        self.leases = leases
        self.lease_pushes.append(leases)
        return RouteApplied("rv-lease", (Confirmation("envoy-1", 1.0),), True)


class Rig:
    def __init__(self, store, clock: Clock, statuses: dict[str, str]) -> None:
        self.store = store
        self.clock = clock
        self.sink = LeaseSink(store)
        self.metrics = AgentMetrics("credit")
        self.traffic = TrafficController(
            model="credit",
            versions=["v1", "v2"],
            stable="v1",
            store=store,
            sink=self.sink,
            metrics=self.metrics,
            ack_timeout_s=1,
            guards=lambda v: [f"its registry status is {statuses[v]}"] if v in statuses else [],
        )
        self.leases = LeaseManager(
            model="credit",
            traffic=self.traffic,
            store=store,
            routes=self.sink,
            metrics=self.metrics,
            ack_timeout_s=1,
            wall_clock=clock,
        )

    async def start(self) -> "Rig":
        await self.traffic.start()
        await self.leases.restore()
        return self

    def live_metric(self, version: str, holder: str) -> float:
        labels = {"model": "credit", "version": version, "holder": holder}
        return self.metrics.registry.get_sample_value("rollback_agent_leases", labels) or 0.0

    def ends(self, version: str, how: str) -> float:
        labels = {"model": "credit", "version": version, "how": how}
        return self.metrics.registry.get_sample_value("rollback_agent_lease_ends_total", labels) or 0.0

    async def lease_records(self):
        return [r for r in await self.store.records() if r.WhichOneof("event") == "lease_changed"]


@pytest.fixture
async def store(tmp_path: Path):
    s = await established_store(tmp_path / "state.db", {"v1": 90, "v2": 10})
    yield s
    await s.close()


@pytest.fixture
def statuses() -> dict[str, str]:
    return {}


@pytest.fixture
async def rig(store, statuses):
    return await Rig(store, Clock(), statuses).start()


async def test_a_lease_is_on_record_published_and_counted(rig):
    lease = await rig.leases.acquire(
        version="v2", holder="nightly-scoring", ttl_s=7200, reason="Q3 backfill", actor="operator:ana"
    )
    assert rig.sink.lease_pushes == [((lease.lease_id, "v2"),)]
    [record] = await rig.lease_records()
    assert record.actor == "operator:ana"
    event = record.lease_changed
    assert (event.lease_id, event.version, event.holder, event.action) == (
        lease.lease_id,
        "v2",
        "nightly-scoring",
        "acquired",
    )
    assert event.expires_at == rig.clock.now + 7200 and not event.forced
    assert rig.live_metric("v2", "nightly-scoring") == 1


@pytest.mark.parametrize("status", ["failed", "quarantined"])
async def test_a_lease_on_a_refused_version_needs_force_and_the_override_is_recorded(rig, statuses, status):
    statuses["v2"] = status
    with pytest.raises(LeaseError, match=f"refused: a lease on v2: its registry status is {status}") as err:
        await rig.leases.acquire(version="v2", holder="job", ttl_s=60, reason="", actor="operator:bob")
    assert err.value.code == "refused"
    assert await rig.lease_records() == [] and rig.sink.lease_pushes == []
    await rig.leases.acquire(
        version="v2", holder="job", ttl_s=60, reason="forensics", actor="operator:root", force=True
    )
    [record] = await rig.lease_records()
    assert record.lease_changed.forced
    assert list(record.lease_changed.overridden) == [f"v2: its registry status is {status}"]


async def test_a_lease_expires_on_time_on_record_and_its_route_goes(rig):
    lease = await rig.leases.acquire(version="v2", holder="job", ttl_s=60, reason="", actor="operator:ana")
    rig.clock.now += 59
    assert await rig.leases.expire_due() == []
    rig.clock.now += 1
    [ended] = await rig.leases.expire_due()
    assert (ended.lease_id, ended.state) == (lease.lease_id, "expired")
    assert rig.sink.leases == ()
    last = (await rig.lease_records())[-1]
    assert (last.lease_changed.action, last.actor) == ("expired", "agent:lease-expiry")
    assert rig.live_metric("v2", "job") == 0 and rig.ends("v2", "expired") == 1
    with pytest.raises(LeaseError, match="has ended"):
        await rig.leases.renew(lease.lease_id, ttl_s=60, reason="", actor="operator:ana")


async def test_leases_survive_a_restart_and_one_that_ran_out_meanwhile_expires_on_record(rig, store, statuses):
    short = await rig.leases.acquire(version="v2", holder="short-job", ttl_s=60, reason="", actor="operator:ana")
    long = await rig.leases.acquire(version="v1", holder="long-job", ttl_s=3600, reason="", actor="operator:ana")
    clock = rig.clock
    clock.now += 120
    restarted = await Rig(store, clock, statuses).start()
    assert restarted.sink.leases == ((long.lease_id, "v1"),), "the first snapshot already carries the live lease"
    states = {x.lease_id: x.state for x in restarted.leases.leases()}
    assert states == {short.lease_id: "expired", long.lease_id: "active"}
    assert (await restarted.lease_records())[-1].lease_changed.action == "expired"
    assert restarted.live_metric("v1", "long-job") == 1


async def test_renewal_of_a_lease_on_a_quarantined_version_needs_force_but_a_failed_one_may_finish(rig, statuses):
    lease = await rig.leases.acquire(version="v2", holder="job", ttl_s=60, reason="", actor="operator:ana")
    statuses["v2"] = "failed"  # rolled back while the batch runs: it may finish
    renewed = await rig.leases.renew(lease.lease_id, ttl_s=600, reason="longer batch", actor="operator:ana")
    assert renewed.expires_at == rig.clock.now + 600
    statuses["v2"] = "quarantined"
    with pytest.raises(LeaseError, match="an admin can renew it with force") as err:
        await rig.leases.renew(lease.lease_id, ttl_s=600, reason="", actor="operator:ana")
    assert err.value.code == "refused"


async def test_an_admin_revokes_every_live_lease_of_a_version_and_holders_see_why(rig):
    a = await rig.leases.acquire(version="v2", holder="job-a", ttl_s=600, reason="", actor="operator:ana")
    b = await rig.leases.acquire(version="v2", holder="job-b", ttl_s=600, reason="", actor="operator:ana")
    keep = await rig.leases.acquire(version="v1", holder="job-c", ttl_s=600, reason="", actor="operator:ana")
    ended = await rig.leases.revoke("v2", reason="v2 quarantined: leaks PII", actor="operator:root")
    assert {x.lease_id for x in ended} == {a.lease_id, b.lease_id}
    assert rig.sink.leases == ((keep.lease_id, "v1"),)
    shown = {x.lease_id: (x.state, x.end_reason) for x in rig.leases.leases()}
    assert shown[a.lease_id] == ("revoked", "v2 quarantined: leaks PII")
    records = [r.lease_changed for r in await rig.lease_records() if r.lease_changed.action == "revoked"]
    assert len(records) == 2 and all(r.forced for r in records)
    with pytest.raises(LeaseError, match="v2 has no live lease"):
        await rig.leases.revoke("v2", reason="again", actor="operator:root")


async def test_a_lease_whose_route_is_refused_never_served_and_says_so(rig):
    rig.sink.reject_leases = True
    with pytest.raises(LeaseError, match="Envoy refused the lease routes") as err:
        await rig.leases.acquire(version="v2", holder="job", ttl_s=60, reason="", actor="operator:ana")
    assert err.value.code == "rejected"
    assert [r.lease_changed.action for r in await rig.lease_records()] == ["acquired", "unconfirmed"]
    assert [x.state for x in rig.leases.leases()] == ["unconfirmed"]
    assert rig.live_metric("v2", "job") == 0


async def test_a_lease_on_a_version_the_config_no_longer_declares_ends_at_start_and_never_routes(rig, store, statuses):
    lease = await rig.leases.acquire(version="v2", holder="job", ttl_s=600, reason="", actor="operator:ana")
    restarted = Rig(store, rig.clock, statuses)
    restarted.traffic.versions = ["v1"]
    await restarted.leases.restore()
    assert restarted.sink.leases == ()
    [ended] = restarted.leases.leases()
    assert (ended.lease_id, ended.state, ended.end_reason) == (
        lease.lease_id,
        "revoked",
        "v2 is no longer declared in the config",
    )
