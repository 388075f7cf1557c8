"""The traffic controller with an in-memory sink: ordering of intent / push / outcome and every failure path."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import SqliteStateStore, read_audit_records
from agent.domain.audit_chain import verify_chain
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.engine.reconcile import open_intents
from agent.engine.traffic import TrafficChangeError, TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.route_sink import Confirmation, RouteApplied, RouteRejectedError, RouteTimeoutError
from agent.ports.store import StoreUnavailableError
from agent.telemetry import AgentMetrics


async def established_store(
    path: Path, weights: dict[str, int], model: str = "credit", clock: Callable[[], float] = time.time
) -> SqliteStateStore:
    """A store as a first start leaves it: its first record establishes the starting policy (revision 1)."""
    policy = TrafficPolicy(tuple(weights.items()), 1, "initial weights from the config file", "config", 1.0)
    return await SqliteStateStore.create(
        path,
        model=model,
        establish=audit_pb2.StateEstablished(how="first_start", policy=policy_to_pb(policy)),
        actor="agent",
        clock=clock,
    )


class ScriptedSink:
    def __init__(self, store):
        self.store = store
        self.fail: Exception | None = None
        self.applied = []
        self.persisted_at_push = []
        self.on_apply = None  # an async callable run when apply() is called, before anything else
        self._served = None

    async def apply(self, weights, timeout_s):
        if self.on_apply is not None:
            await self.on_apply()
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


def make_controller(store, sink, versions=("v1", "v2")) -> TrafficController:
    return TrafficController(
        model="credit",
        versions=list(versions),
        stable="v1",
        store=store,
        sink=sink,
        metrics=AgentMetrics("credit"),
        ack_timeout_s=1,
    )


@pytest.fixture
async def setup(tmp_path: Path):
    store = await established_store(tmp_path / "s.db", {"v1": 100, "v2": 0})
    sink = ScriptedSink(store)
    controller = make_controller(store, sink)
    await controller.start()
    yield controller, sink, store
    await store.close()


async def test_change_is_persisted_before_push_and_audited(setup):
    controller, sink, store = setup
    result = await controller.set_weights({"v2": 100}, reason="canary", actor="operator:me")
    assert result.changed and result.policy.revision == 2
    assert sink.persisted_at_push == [(("v1", 0), ("v2", 100))]
    records = await store.records()
    intent, outcome = records[-2:]
    assert intent.traffic_intent.reason == "canary"
    assert outcome.traffic_changed.outcome == "acked"
    assert outcome.traffic_changed.intent_seq == intent.seq
    assert outcome.traffic_changed.intent_id == intent.traffic_intent.intent_id
    assert outcome.actor == intent.actor == "operator:me"
    assert verify_chain(records) == []


async def test_the_intent_and_the_new_policy_are_on_disk_before_the_sink_is_called(setup, tmp_path: Path):
    controller, sink, _store = setup
    seen = {}

    async def inspect() -> None:
        # Another connection sees only what is committed: what a kill now would leave behind.
        seen["events"] = [r.WhichOneof("event") for r in read_audit_records(tmp_path / "s.db")]
        other = await SqliteStateStore.open_existing(tmp_path / "s.db", model="credit")
        try:
            seen["policy"] = (await other.load_policy()).weights
        finally:
            await other.close()

    sink.on_apply = inspect
    await controller.set_weights({"v2": 100}, reason="canary", actor="operator:me")
    assert seen["events"] == ["state_established", "traffic_intent"]
    assert seen["policy"] == (("v1", 0), ("v2", 100))


class Killed(BaseException):
    """The process dying under the write (nothing after it runs)."""


class KilledOnOutcome:
    """A store whose outcome write never happens (the agent is killed right after the push)."""

    def __init__(self, store: SqliteStateStore) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def append(self, event, actor):
        if isinstance(event, audit_pb2.TrafficChanged):
            raise Killed
        return await self._store.append(event, actor)


async def test_a_kill_before_the_outcome_write_leaves_an_open_intent(tmp_path: Path):
    store = await established_store(tmp_path / "s.db", {"v1": 100, "v2": 0})
    sink = ScriptedSink(store)
    controller = make_controller(KilledOnOutcome(store), sink)
    await controller.start()
    with pytest.raises(Killed):
        await controller.set_weights({"v2": 100}, reason="canary", actor="operator:me")
    await store.close()
    records = read_audit_records(tmp_path / "s.db")
    [intent] = open_intents(records)
    assert intent.traffic_intent.to_policy.weights[1].weight == 100
    assert sink.applied == [(("v1", 0), ("v2", 100))]


class Unwritable:
    """A store on a full or read-only disk: reads work, every write raises StoreUnavailableError."""

    def __init__(self, store: SqliteStateStore) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def change_policy(self, policy, event, actor):
        raise StoreUnavailableError("state store s.db: disk full (database or disk is full)")

    async def append(self, event, actor):
        raise StoreUnavailableError("state store s.db: disk full (database or disk is full)")

    async def record_setting(self, key, value, event, actor):
        raise StoreUnavailableError("state store s.db: disk full (database or disk is full)")


async def test_storage_failure_moves_nothing(tmp_path: Path):
    store = await established_store(tmp_path / "s.db", {"v1": 100, "v2": 0})
    sink = ScriptedSink(store)
    controller = make_controller(Unwritable(store), sink)
    await controller.start()
    with pytest.raises(TrafficChangeError, match=r"disk full.*nothing moved") as err:
        await controller.set_weights({"v2": 100}, reason="canary", actor="operator:me")
    assert err.value.code == "unavailable"
    assert sink.applied == [] and sink.persisted_at_push == [], "the sink is never called"
    assert controller.desired.weights == (("v1", 100), ("v2", 0))
    with pytest.raises(TrafficChangeError) as err:
        await controller.set_paused(True, reason="x", actor="op")
    assert err.value.code == "unavailable" and not controller.automation.paused
    assert [r.WhichOneof("event") for r in await store.records()] == ["state_established"]
    await store.close()


async def test_rejected_change_restores_the_previous_policy(setup):
    controller, sink, store = setup
    sink.fail = RouteRejectedError("Envoy rejected it")
    with pytest.raises(TrafficChangeError, match="Envoy rejected it; still serving revision 1") as err:
        await controller.set_weights({"v2": 100}, reason="x", actor="op")
    assert err.value.code == "rejected"
    assert controller.desired.weights == (("v1", 100), ("v2", 0))
    assert (await store.load_policy()).weights == (("v1", 100), ("v2", 0))
    intent, outcome = (await store.records())[-2:]
    assert outcome.traffic_changed.outcome == "rejected"
    assert outcome.traffic_changed.intent_seq == intent.seq
    assert (await store.policy_row())[1] == outcome.seq, "the restored policy is set by the outcome record"


async def test_timeout_keeps_the_change_stored_for_connect(setup):
    controller, sink, store = setup
    sink.fail = RouteTimeoutError("no Envoy connected")
    with pytest.raises(TrafficChangeError) as err:
        await controller.rollback(to="v2", reason="x", actor="op")
    assert err.value.code == "ack_timeout"
    assert (await store.load_policy()).weights == (("v1", 0), ("v2", 100))
    assert (await store.records())[-1].traffic_changed.outcome == "timeout"


@pytest.mark.parametrize(
    ("weights", "message"),
    [({"v3": 1}, "unknown version"), ({"v1": 0}, "more than 0"), ({"v1": -1}, "whole number")],
)
async def test_invalid_request_changes_nothing(setup, weights, message):
    controller, sink, store = setup
    with pytest.raises(TrafficChangeError, match=message):
        await controller.set_weights(weights, reason="x", actor="op")
    assert sink.applied == [] and controller.desired.revision == 1
    assert len(await store.records()) == 1


async def test_rollback_goes_to_stable_and_persisted_policy_wins_on_restart(setup):
    controller, sink, store = setup
    await controller.set_weights({"v2": 100}, reason="x", actor="op")
    await controller.rollback(reason="bad", actor="op")
    assert controller.desired.weights == (("v1", 100), ("v2", 0))
    await controller.set_weights({"v1": 10, "v2": 90}, reason="y", actor="op")
    restarted = make_controller(store, sink, versions=("v1", "v2", "v3"))
    policy = await restarted.start()
    assert policy.weights == (("v1", 10), ("v2", 90), ("v3", 0))
    assert policy.revision == 4


async def test_persisted_policy_naming_a_removed_version_refuses_start(setup):
    controller, sink, store = setup
    await controller.set_weights({"v2": 100}, reason="x", actor="op")
    restarted = make_controller(store, sink, versions=("v1",))
    with pytest.raises(ValueError, match="v2"):
        await restarted.start()


async def test_pause_is_persisted_and_audited(setup):
    controller, sink, store = setup
    await controller.set_paused(True, reason="maintenance", actor="op")
    assert controller.automation.paused
    assert await store.get_setting("automation_paused") == "maintenance"
    assert (await store.records())[-1].automation_toggled.paused
    restarted = make_controller(store, sink)
    await restarted.start()
    assert restarted.automation.paused and restarted.automation.reason == "maintenance"
