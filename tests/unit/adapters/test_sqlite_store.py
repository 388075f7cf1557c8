from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import SqliteStateStore, read_audit_records
from agent.domain.audit_chain import verify_chain
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StateRefusedError, StoreUnavailableError


def intent(policy: TrafficPolicy) -> audit_pb2.TrafficIntent:
    return audit_pb2.TrafficIntent(intent_id="i1", to_policy=policy_to_pb(policy), reason=policy.reason)


async def test_policy_survives_reopen(tmp_path: Path):
    store = await SqliteStateStore.open(tmp_path / "s.db", model="credit")
    assert await store.load_policy() is None
    policy = TrafficPolicy((("v1", 0), ("v2", 100)), 7, "why", "operator:me", 1700000000.5)
    await store.change_policy(policy, intent(policy), "operator:me")
    await store.record_setting(
        "automation_paused", "maintenance", audit_pb2.AutomationToggled(paused=True, reason="maintenance"), "op"
    )
    store_id = store.store_id
    await store.close()
    store = await SqliteStateStore.open_existing(tmp_path / "s.db", model="credit")
    assert store.store_id == store_id
    assert await store.load_policy() == policy
    assert await store.get_setting("automation_paused") == "maintenance"
    # Each state change is in the trail with the record that made it, stamped by the log.
    records = await store.records()
    assert [r.WhichOneof("event") for r in records] == ["traffic_intent", "automation_toggled"]
    assert all(r.model == "credit" for r in records)
    assert (await store.policy_row())[1] == records[0].seq
    await store.close()


async def test_a_setting_is_cleared_with_its_record(tmp_path: Path):
    store = await SqliteStateStore.open(tmp_path / "s.db")
    await store.record_setting("hold:v2", "canary", audit_pb2.HoldChanged(version="v2", held=True), "op")
    await store.record_setting("hold:v3", "x", audit_pb2.HoldChanged(version="v3", held=True), "op")
    await store.record_setting("hold:v2", "", audit_pb2.HoldChanged(version="v2", held=False), "op")
    assert await store.settings_with_prefix("hold:") == {"hold:v3": "x"}
    assert len(await store.records()) == 3
    await store.close()


async def test_audit_chain_detects_edit_removal_and_reorder(tmp_path: Path):
    store = await SqliteStateStore.open(tmp_path / "s.db")
    for i in range(4):
        await store.append(audit_pb2.AutomationToggled(paused=bool(i % 2)), f"a{i}")
    records = await store.records()
    await store.close()
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert verify_chain(records) == []
    assert read_audit_records(tmp_path / "s.db") == records

    edited = [audit_pb2.AuditRecord.FromString(r.SerializeToString()) for r in records]
    edited[1].actor = "someone else"
    assert [p.seq for p in verify_chain(edited)] == [2]

    removed = records[:1] + records[2:]
    assert verify_chain(removed)

    reordered = [records[0], records[2], records[1], records[3]]
    assert verify_chain(reordered)


async def test_open_existing_never_creates_and_refuses_a_foreign_database(tmp_path: Path):
    with pytest.raises(StateRefusedError, match="does not exist"):
        await SqliteStateStore.open_existing(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StateRefusedError, match="not a state store"):
        await SqliteStateStore.open_existing(other)


async def test_a_read_only_store_names_the_cause_and_records_nothing(tmp_path: Path):
    store = await SqliteStateStore.open(tmp_path / "s.db")
    await store.append(audit_pb2.AutomationToggled(paused=True), "op")
    await store.close()
    store = SqliteStateStore(tmp_path / "s.db")
    await store._run(lambda: setattr(store, "_conn", store._connect(f"file:{tmp_path / 's.db'}?mode=ro")))
    with pytest.raises(StoreUnavailableError, match="read-only"):
        await store.append(audit_pb2.AutomationToggled(paused=False), "op")
    await store.close()
    assert len(read_audit_records(tmp_path / "s.db")) == 1
