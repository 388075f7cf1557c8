"""The traffic controller with an in-memory sink: ordering of persist / push / audit and every failure path."""

from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.domain.audit_chain import verify_chain
from agent.engine.traffic import TrafficChangeError, TrafficController
from agent.ports.route_sink import Confirmation, RouteApplied, RouteRejectedError, RouteTimeoutError
from agent.telemetry import AgentMetrics


class ScriptedSink:
    def __init__(self, store):
        self.store = store
        self.fail: Exception | None = None
        self.applied = []
        self.persisted_at_push = []
        self._served = None

    async def apply(self, weights, timeout_s):
        self.persisted_at_push.append((await self.store.load_policy()).weights)
        if self.fail:
            raise self.fail
        changed = weights != self._served
        self._served = weights
        self.applied.append(weights)
        return RouteApplied("rv-" + "-".join(str(w) for _, w in weights), (Confirmation("envoy-1", 1.0),), changed)

    def served(self):
        return self._served

    def ready(self):
        return self._served is not None


@pytest.fixture
async def setup(tmp_path: Path):
    store = await SqliteStateStore.open(tmp_path / "s.db")
    sink = ScriptedSink(store)
    controller = TrafficController(
        model="credit",
        versions=["v1", "v2"],
        stable="v1",
        store=store,
        sink=sink,
        metrics=AgentMetrics("credit"),
        ack_timeout_s=1,
    )
    await controller.start({"v1": 100})
    yield controller, sink, store
    await store.close()


async def test_change_is_persisted_before_push_and_audited(setup):
    controller, sink, store = setup
    result = await controller.set_weights({"v2": 100}, reason="canary", actor="operator:me")
    assert result.changed and result.policy.revision == 2
    assert sink.persisted_at_push == [(("v1", 0), ("v2", 100))]
    records = await store.audit_records()
    assert records[-1].traffic_changed.outcome == "acked"
    assert records[-1].actor == "operator:me"
    assert verify_chain(records) == []


async def test_rejected_change_restores_the_previous_policy(setup):
    controller, sink, store = setup
    sink.fail = RouteRejectedError("Envoy rejected it")
    with pytest.raises(TrafficChangeError, match="Envoy rejected it; still serving revision 1") as err:
        await controller.set_weights({"v2": 100}, reason="x", actor="op")
    assert err.value.code == "rejected"
    assert controller.desired.weights == (("v1", 100), ("v2", 0))
    assert (await store.load_policy()).weights == (("v1", 100), ("v2", 0))
    assert (await store.audit_records())[-1].traffic_changed.outcome == "rejected"


async def test_timeout_keeps_the_change_stored_for_connect(setup):
    controller, sink, store = setup
    sink.fail = RouteTimeoutError("no Envoy connected")
    with pytest.raises(TrafficChangeError) as err:
        await controller.rollback(to="v2", reason="x", actor="op")
    assert err.value.code == "ack_timeout"
    assert (await store.load_policy()).weights == (("v1", 0), ("v2", 100))


@pytest.mark.parametrize(
    ("weights", "message"),
    [({"v3": 1}, "unknown version"), ({"v1": 0}, "more than 0"), ({"v1": -1}, "whole number")],
)
async def test_invalid_request_changes_nothing(setup, weights, message):
    controller, sink, _store = setup
    with pytest.raises(TrafficChangeError, match=message):
        await controller.set_weights(weights, reason="x", actor="op")
    assert sink.applied == [] and controller.desired.revision == 1


async def test_rollback_goes_to_stable_and_persisted_policy_wins_on_restart(setup, tmp_path):
    controller, sink, store = setup
    await controller.set_weights({"v2": 100}, reason="x", actor="op")
    await controller.rollback(reason="bad", actor="op")
    assert controller.desired.weights == (("v1", 100), ("v2", 0))
    await controller.set_weights({"v1": 10, "v2": 90}, reason="y", actor="op")
    restarted = TrafficController(
        model="credit",
        versions=["v1", "v2", "v3"],
        stable="v1",
        store=store,
        sink=sink,
        metrics=AgentMetrics("credit"),
        ack_timeout_s=1,
    )
    policy = await restarted.start({"v1": 100})
    assert policy.weights == (("v1", 10), ("v2", 90), ("v3", 0))
    assert policy.revision == 4


async def test_persisted_policy_naming_a_removed_version_refuses_start(setup):
    controller, sink, store = setup
    await controller.set_weights({"v2": 100}, reason="x", actor="op")
    restarted = TrafficController(
        model="credit",
        versions=["v1"],
        stable="v1",
        store=store,
        sink=sink,
        metrics=AgentMetrics("credit"),
        ack_timeout_s=1,
    )
    with pytest.raises(ValueError, match="v2"):
        await restarted.start({"v1": 100})


async def test_pause_is_persisted_and_audited(setup):
    controller, _sink, store = setup
    await controller.set_paused(True, reason="maintenance", actor="op")
    assert controller.automation.paused
    assert await store.get_setting("automation_paused") == "maintenance"
    assert (await store.audit_records())[-1].automation_toggled.paused
