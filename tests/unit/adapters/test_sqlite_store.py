from pathlib import Path

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.domain.audit_chain import verify_chain
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2


async def test_policy_survives_reopen(tmp_path: Path):
    store = await SqliteStateStore.open(tmp_path / "s.db")
    assert await store.load_policy() is None
    policy = TrafficPolicy((("v1", 0), ("v2", 100)), 7, "why", "operator:me", 1700000000.5)
    await store.save_policy(policy)
    await store.set_setting("automation_paused", "maintenance")
    await store.close()
    store = await SqliteStateStore.open(tmp_path / "s.db")
    assert await store.load_policy() == policy
    assert await store.get_setting("automation_paused") == "maintenance"
    await store.close()


async def test_audit_chain_detects_edit_removal_and_reorder(tmp_path: Path):
    store = await SqliteStateStore.open(tmp_path / "s.db")
    for i in range(4):
        await store.append_audit(
            audit_pb2.AuditRecord(actor=f"a{i}", automation_toggled=audit_pb2.AutomationToggled(paused=bool(i % 2)))
        )
    records = await store.audit_records()
    await store.close()
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert verify_chain(records) == []

    edited = [audit_pb2.AuditRecord.FromString(r.SerializeToString()) for r in records]
    edited[1].actor = "someone else"
    assert [p.seq for p in verify_chain(edited)] == [2]

    removed = records[:1] + records[2:]
    assert verify_chain(removed)

    reordered = [records[0], records[2], records[1], records[3]]
    assert verify_chain(reordered)
