"""Reconciliation at start-up: every decision the previous run recorded but never closed is closed on the record."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.domain.audit_chain import verify_chain
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.engine.reconcile import Served, open_intents, open_rollbacks, reconcile
from agent.pb.rollback_agent.v1 import audit_pb2

BEFORE = TrafficPolicy((("v1", 0), ("v2", 50), ("v3", 50)), 1, "canary", "operator:ana", 1.0)
AFTER = TrafficPolicy((("v1", 0), ("v2", 100), ("v3", 0)), 2, "rollback", "rule:error-rate", 2.0)


class Marks:
    def __init__(self, previous: str = "candidate") -> None:
        self.previous = previous
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(self, version: str, reason: str, actor: str) -> str:
        self.calls.append((version, reason, actor))
        return self.previous


@pytest.fixture
async def store(tmp_path: Path):
    s = await SqliteStateStore.open(tmp_path / "state.db", model="credit")
    yield s
    await s.close()


async def write_intent(store: SqliteStateStore, rollback_id: str = "") -> audit_pb2.AuditRecord:
    event = audit_pb2.TrafficIntent(
        intent_id="int-1",
        from_policy=policy_to_pb(BEFORE),
        to_policy=policy_to_pb(AFTER),
        reason="rollback",
        rollback_id=rollback_id,
    )
    return await store.change_policy(AFTER, event, "rule:error-rate")


@pytest.mark.parametrize(
    ("served", "finding"),
    [
        (Served((("v2", 100), ("v3", 0)), "served v2=100"), "Envoy serves the intended split"),
        (Served((("v2", 50), ("v3", 50)), "served v2=50 v3=50"), "Envoy still served the previous split"),
        (Served((("v1", 100),), "served v1=100"), "Envoy served neither the previous nor the intended split"),
        (Served(None, "Envoy admin unreachable"), "what Envoy served could not be read (Envoy admin unreachable)"),
    ],
)
async def test_an_intent_without_outcome_is_closed_as_interrupted_naming_what_envoy_served(
    store: SqliteStateStore, served: Served, finding: str
):
    intent = await write_intent(store)
    records = await store.records()
    assert open_intents(records) == [intent]
    notes = await reconcile(store, records, served, Marks())
    assert len(notes) == 1 and finding in notes[0]
    outcome = (await store.records())[-1]
    assert outcome.actor == "agent:reconcile"
    changed = outcome.traffic_changed
    assert changed.outcome == "interrupted"
    assert (changed.intent_seq, changed.intent_id) == (intent.seq, "int-1")
    assert finding in changed.detail and served.detail in changed.detail
    assert open_intents(await store.records()) == []
    assert verify_chain(await store.records()) == []


async def test_a_closed_intent_is_left_alone(store: SqliteStateStore):
    intent = await write_intent(store)
    await store.append(audit_pb2.TrafficChanged(outcome="acked", intent_seq=intent.seq), "rule:error-rate")
    records = await store.records()
    assert await reconcile(store, records, Served(None, "x"), Marks()) == []
    assert await store.records() == records


async def test_a_switched_rollback_without_final_record_is_interrupted_at_verification(store: SqliteStateStore):
    intent = await write_intent(store, rollback_id="rb-1")
    await store.append(audit_pb2.TrafficChanged(outcome="acked", intent_seq=intent.seq), "rule:error-rate")
    await store.append(
        audit_pb2.Rollback(rollback_id="rb-1", from_version="v3", to_version="v2", outcome="switched"),
        "rule:error-rate",
    )
    marks = Marks()
    records = await store.records()
    assert [(r.rollback_id, r.stage) for r in open_rollbacks(records)] == [("rb-1", "verification")]
    await reconcile(store, records, Served((("v2", 100),), "served v2=100"), marks)
    last = (await store.records())[-1]
    interrupted = last.rollback_interrupted
    assert (interrupted.rollback_id, interrupted.stage) == ("rb-1", "verification")
    assert (interrupted.from_version, interrupted.to_version) == ("v3", "v2")
    assert "not verified" in interrupted.detail
    assert marks.calls == [], "the switch's mark was recorded with it"
    assert open_rollbacks(await store.records()) == []


async def test_a_finished_rollback_is_not_reopened(store: SqliteStateStore):
    intent = await write_intent(store, rollback_id="rb-1")
    await store.append(audit_pb2.TrafficChanged(outcome="acked", intent_seq=intent.seq), "rule:error-rate")
    for outcome in ("switched", "recovered"):
        await store.append(audit_pb2.Rollback(rollback_id="rb-1", outcome=outcome), "rule:error-rate")
    records = await store.records()
    assert open_rollbacks(records) == []
    assert await reconcile(store, records, Served(None, "x"), Marks()) == []


async def test_a_rollback_intent_without_rollback_record_is_interrupted_at_the_switch(store: SqliteStateStore):
    intent = await write_intent(store, rollback_id="rb-2")
    marks = Marks(previous="candidate")
    records = await store.records()
    await reconcile(store, records, Served((("v2", 100),), "served v2=100"), marks)
    assert [(v, a) for v, _, a in marks.calls] == [("v3", "rule:error-rate")], "the failing version is marked"
    assert "rb-2" in marks.calls[0][1]
    tail = (await store.records())[intent.seq :]
    assert [r.WhichOneof("event") for r in tail] == [
        "traffic_changed",
        "version_status_changed",
        "rollback_interrupted",
    ]
    assert tail[0].traffic_changed.outcome == "interrupted"
    status = tail[1].version_status_changed
    assert (status.version, status.from_status, status.to_status) == ("v3", "candidate", "failed")
    interrupted = tail[2].rollback_interrupted
    assert (interrupted.rollback_id, interrupted.stage) == ("rb-2", "switch")
    assert (interrupted.from_version, interrupted.to_version) == ("v3", "v2")
    # Closed: a second start finds nothing open.
    assert await reconcile(store, await store.records(), Served(None, "x"), marks) == []
    assert len(marks.calls) == 1


async def test_an_already_failed_version_gets_no_second_status_record(store: SqliteStateStore):
    await write_intent(store, rollback_id="rb-3")
    await reconcile(store, await store.records(), Served(None, "x"), Marks(previous="failed"))
    events = [r.WhichOneof("event") for r in await store.records()]
    assert "version_status_changed" not in events and events[-1] == "rollback_interrupted"
