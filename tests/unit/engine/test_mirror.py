"""The mirror controller: guarded, serialized with weight changes, ACK-confirmed and on record."""

import asyncio
from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import read_audit_records
from agent.engine.mirror import MirrorController, MirrorState
from agent.engine.traffic import TrafficChangeError
from agent.ports.route_sink import Confirmation, RouteApplied, RouteRejectedError, RouteTimeoutError
from tests.unit.engine.test_traffic import ScriptedSink, established_store, make_controller


class ScriptedMirrorSink:
    def __init__(self):
        self.fail: Exception | None = None
        self.applied: list[tuple[str, float]] = []
        self.gate: asyncio.Event | None = None
        self._served: tuple[str, float] | None = None

    async def apply_mirror(self, version, fraction, timeout_s):
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise self.fail
        effective = (version, fraction) if fraction > 0 else None
        changed = effective != self._served
        self._served = effective
        self.applied.append((version, fraction))
        return RouteApplied(f"rv-{version}-{fraction}", (Confirmation("envoy-1", 1.0),), changed)


@pytest.fixture
async def setup(tmp_path: Path):
    store = await established_store(tmp_path / "s.db", {"v1": 100, "v2": 0})
    traffic = make_controller(store, ScriptedSink(store))
    await traffic.start()
    sink = ScriptedMirrorSink()
    mirror = MirrorController(traffic=traffic, sink=sink, store=store, ack_timeout_s=1)
    yield mirror, sink, traffic, tmp_path / "s.db"


def mirror_records(path):
    return [r for r in read_audit_records(path) if r.WhichOneof("event") == "mirror_changed"]


async def test_a_mirror_change_is_applied_and_recorded_with_its_outcome(setup):
    mirror, sink, _, path = setup
    await mirror.set_mirror("v2", 0.2, reason="stage shadow", actor="agent:rollout")
    assert sink.applied == [("v2", 0.2)]
    assert mirror.state == MirrorState("v2", 0.2)
    [record] = mirror_records(path)
    event = record.mirror_changed
    assert (event.version, event.from_fraction, event.to_fraction) == ("v2", 0.0, pytest.approx(0.2))
    assert (event.outcome, event.route_version, event.reason) == ("acked", "rv-v2-0.2", "stage shadow")
    assert record.actor == "agent:rollout"


async def test_zero_stops_mirroring_and_a_non_change_is_not_recorded(setup):
    mirror, sink, _, path = setup
    await mirror.set_mirror("v2", 0.0, reason="stage 5%: nothing to mirror", actor="a")
    assert mirror_records(path) == [] and sink.applied == [("v2", 0.0)]
    await mirror.set_mirror("v2", 0.2, reason="shadow", actor="a")
    await mirror.set_mirror("v2", 0.0, reason="stage 5%", actor="a")
    assert mirror.state.fraction == 0.0
    records = mirror_records(path)
    assert [(r.mirror_changed.from_fraction, r.mirror_changed.to_fraction) for r in records] == [
        (0.0, pytest.approx(0.2)),
        (pytest.approx(0.2), 0.0),
    ]


@pytest.mark.parametrize(("version", "fraction"), [("v9", 0.5), ("v2", 1.01), ("v2", -0.5), ("v2", float("nan"))])
async def test_bad_input_is_refused_and_changes_nothing(setup, version, fraction):
    mirror, sink, _, path = setup
    with pytest.raises(TrafficChangeError) as caught:
        await mirror.set_mirror(version, fraction, reason="x", actor="a")
    assert caught.value.code == "invalid_argument"
    assert sink.applied == [] and mirror_records(path) == []


async def test_a_guarded_version_is_refused_unless_forced_and_the_override_is_recorded(setup):
    mirror, sink, traffic, path = setup
    traffic.guards = lambda v: ["quarantined"] if v == "v2" else []
    with pytest.raises(TrafficChangeError, match="quarantined") as caught:
        await mirror.set_mirror("v2", 0.5, reason="x", actor="a")
    assert caught.value.code == "refused" and sink.applied == []
    # Stopping the mirror is never guarded; forcing is recorded with the guard it overrode.
    await mirror.set_mirror("v2", 0.5, reason="operator", actor="operator:alice", force=True)
    event = mirror_records(path)[-1].mirror_changed
    assert event.forced and list(event.overridden) == ["v2: quarantined"]
    await mirror.set_mirror("v2", 0.0, reason="stop", actor="a")
    assert mirror.state.fraction == 0.0


async def test_a_rejected_mirror_keeps_the_previous_one_and_is_recorded(setup):
    mirror, sink, _, path = setup
    await mirror.set_mirror("v2", 0.1, reason="shadow", actor="a")
    sink.fail = RouteRejectedError("NACK from envoy-1")
    with pytest.raises(TrafficChangeError, match=r"still mirroring 10\.0% to v2") as caught:
        await mirror.set_mirror("v2", 0.9, reason="more", actor="a")
    assert caught.value.code == "rejected"
    assert mirror.state == MirrorState("v2", 0.1)
    assert mirror_records(path)[-1].mirror_changed.outcome == "rejected"


async def test_an_ack_timeout_is_reported_and_recorded(setup):
    mirror, sink, _, path = setup
    sink.fail = RouteTimeoutError("no ACK within 1 s")
    with pytest.raises(TrafficChangeError) as caught:
        await mirror.set_mirror("v2", 0.3, reason="x", actor="a")
    assert caught.value.code == "ack_timeout"
    assert mirror_records(path)[-1].mirror_changed.outcome == "timeout"


async def test_a_mirror_change_waits_for_a_weight_change_in_flight(setup):
    mirror, sink, traffic, _ = setup
    order: list[str] = []
    sink.gate = asyncio.Event()
    async with traffic.exclusive():
        task = asyncio.create_task(mirror.set_mirror("v2", 0.3, reason="x", actor="a"))
        await asyncio.sleep(0)
        sink.gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        order.append("weights done")
        assert not task.done()
    await task
    order.append("mirror done")
    assert order == ["weights done", "mirror done"]
