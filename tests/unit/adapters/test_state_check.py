"""Opening the state dir: a genuine first start creates a store; lost, damaged, foreign, truncated, rewritten or
edited state is refused with what was found and the recovery commands; the recoveries are explicit and audited."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.adapters.envoy_admin import EnvoyServing
from agent.adapters.store.sqlite_store import STATE_DB, SqliteStateStore, read_audit_records
from agent.adapters.store.state_check import MARKER, checkpoint, init_state, open_state, read_marker, restore_state
from agent.domain.audit_chain import seal, verify_chain
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2, traffic_pb2
from agent.ports.store import StateRefusedError

MODEL = "credit"
START = TrafficPolicy((("v1", 100), ("v2", 0)), 1, "initial weights from the config file", "config", 1.0)


def starting() -> TrafficPolicy:
    return START


async def unreachable() -> EnvoyServing:
    return EnvoyServing(False, None, "Envoy admin http://127.0.0.1:9 unreachable (connection refused)")


async def serving_our_route() -> EnvoyServing:
    return EnvoyServing(
        True, (("v1", 0), ("v2", 100)), "Envoy admin http://127.0.0.1:9901 serves route credit with v1=0 v2=100"
    )


async def first_start(state_dir: Path, model: str = MODEL, changes: int = 3) -> str:
    """A first start, a few traffic changes, a checkpoint, a clean stop; returns the store id."""
    opened = await open_state(state_dir, model=model, starting_policy=starting, envoy=unreachable)
    store = opened.store
    for revision in range(2, 2 + changes):
        weight = (10 * revision) % 100
        policy = TrafficPolicy((("v1", 100 - weight), ("v2", weight)), revision, "ramp", "operator:ana", 2.0)
        event = audit_pb2.TrafficIntent(intent_id=f"i{revision}", to_policy=policy_to_pb(policy), reason="ramp")
        await store.change_policy(policy, event, "operator:ana")
        await store.append(audit_pb2.TrafficChanged(outcome="acked", to_policy=policy_to_pb(policy)), "operator:ana")
    await checkpoint(store, state_dir)
    store_id = store.store_id
    await store.close()
    return store_id


async def reopen(state_dir: Path, envoy=unreachable):
    return await open_state(state_dir, model=MODEL, starting_policy=starting, envoy=envoy)


def refused_with(exc: pytest.ExceptionInfo[StateRefusedError], *found: str) -> None:
    message = str(exc.value)
    for text in found:
        assert text in message, message
    assert "state restore" in message and "state init" in message, message


def edit_db(db: Path, edit: Callable[[sqlite3.Connection], None]) -> None:
    with sqlite3.connect(db) as conn:
        edit(conn)
    conn.close()


# --- a genuine first start, and a normal restart ---------------------------------------------------------------


async def test_first_start_creates_a_store_whose_first_record_establishes_it(tmp_path: Path):
    state_dir = tmp_path / "state"
    opened = await reopen(state_dir)
    try:
        assert opened.created
        [record] = await opened.store.records()
        assert record.WhichOneof("event") == "state_established"
        established = record.state_established
        assert established.how == "first_start"
        assert established.store_id == opened.store.store_id
        assert [(w.version, w.weight) for w in established.policy.weights] == [("v1", 100), ("v2", 0)]
        assert "unreachable" in established.detail, "an unreachable Envoy admin is noted"
        assert await opened.store.load_policy() == START
        marker = read_marker(state_dir)
        assert marker is not None and (marker.store_id, marker.model, marker.head_seq) == (
            opened.store.store_id,
            MODEL,
            1,
        )
    finally:
        await opened.store.close()


async def test_a_restart_opens_the_same_store(tmp_path: Path):
    store_id = await first_start(tmp_path / "state")
    opened = await reopen(tmp_path / "state")
    try:
        assert not opened.created and opened.store.store_id == store_id
        assert (await opened.store.load_policy()).revision == 4
    finally:
        await opened.store.close()


# --- lost, damaged, foreign or tampered state is refused -------------------------------------------------------


async def test_a_deleted_db_is_refused(tmp_path: Path):
    store_id = await first_start(tmp_path / "state")
    (tmp_path / "state" / STATE_DB).unlink()
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "state lost", "is missing", store_id)
    assert not (tmp_path / "state" / STATE_DB).exists(), "no fresh store is created"


async def test_an_emptied_db_is_refused(tmp_path: Path):
    await first_start(tmp_path / "state")
    (tmp_path / "state" / STATE_DB).write_bytes(b"")
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "state lost", "0 bytes")


async def test_a_db_truncated_mid_file_is_refused(tmp_path: Path):
    await first_start(tmp_path / "state", changes=60)
    db = tmp_path / "state" / STATE_DB
    data = db.read_bytes()
    assert len(data) > 4 * 4096
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "damaged state", str(db))
    assert db.stat().st_size == len(data) // 2, "the damaged file is left as it is"


async def test_a_db_overwritten_with_garbage_is_refused(tmp_path: Path):
    await first_start(tmp_path / "state")
    db = tmp_path / "state" / STATE_DB
    garbage = bytes(range(256)) * 64
    db.write_bytes(garbage)
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "damaged state", "not a readable SQLite state store")
    assert db.read_bytes() == garbage


async def test_another_models_db_is_refused(tmp_path: Path):
    await first_start(tmp_path / "state")
    await first_start(tmp_path / "other", model="fraud")
    (tmp_path / "other" / STATE_DB).replace(tmp_path / "state" / STATE_DB)
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "foreign state", "'fraud'", "'credit'")


async def test_a_store_other_than_the_markers_is_refused(tmp_path: Path):
    store_id = await first_start(tmp_path / "state")
    other_id = await first_start(tmp_path / "other")
    (tmp_path / "other" / STATE_DB).replace(tmp_path / "state" / STATE_DB)
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "foreign state", store_id, other_id)


async def test_an_audit_trail_truncated_below_the_checkpoint_is_refused(tmp_path: Path):
    await first_start(tmp_path / "state")
    db = tmp_path / "state" / STATE_DB
    edit_db(db, lambda conn: conn.execute("DELETE FROM audit WHERE seq > 4"))
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "truncated state", "ends at record 4", "record 7")


async def test_a_record_rewritten_and_resealed_below_the_checkpoint_is_refused(tmp_path: Path):
    await first_start(tmp_path / "state")
    db = tmp_path / "state" / STATE_DB
    records = read_audit_records(db)
    # Rewrite record 3 (who did it) and re-seal it and everything after it: the chain itself is intact again.
    records[2].actor = "operator:mallory"
    resealed = records[:2]
    for record in records[2:]:
        resealed.append(seal(record, record.seq, resealed[-1].hash))
    assert verify_chain(resealed) == []

    def rewrite(conn: sqlite3.Connection) -> None:
        for record in resealed[2:]:
            conn.execute(
                "UPDATE audit SET record = ? WHERE seq = ?", (record.SerializeToString(deterministic=True), record.seq)
            )

    edit_db(db, rewrite)
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "rewritten state", "record 7")


@pytest.mark.parametrize("field", ["weights", "revision"])
async def test_a_policy_row_edited_outside_the_agent_is_refused(tmp_path: Path, field: str):
    await first_start(tmp_path / "state")
    db = tmp_path / "state" / STATE_DB

    def edit(conn: sqlite3.Connection) -> None:
        (blob,) = conn.execute("SELECT record FROM policy WHERE id = 1").fetchone()
        policy = traffic_pb2.TrafficPolicy.FromString(blob)
        if field == "weights":
            policy.weights[0].weight, policy.weights[1].weight = 0, 100
        else:
            policy.revision += 1
        conn.execute("UPDATE policy SET record = ? WHERE id = 1", (policy.SerializeToString(),))

    edit_db(db, edit)
    with pytest.raises(StateRefusedError) as exc:
        await reopen(tmp_path / "state")
    refused_with(exc, "damaged state", "traffic policy", "does not match audit record 6")


async def test_a_removed_state_dir_is_refused_while_envoy_serves_our_route(tmp_path: Path):
    state_dir = tmp_path / "state"
    await first_start(state_dir)
    for path in state_dir.iterdir():
        path.unlink()
    state_dir.rmdir()
    with pytest.raises(StateRefusedError) as exc:
        await reopen(state_dir, envoy=serving_our_route)
    refused_with(exc, "state lost", "the agent ran here before", "serves route credit")
    assert not (state_dir / STATE_DB).exists()


async def test_nothing_but_an_unreachable_envoy_is_a_first_start(tmp_path: Path):
    opened = await reopen(tmp_path / "fresh", envoy=unreachable)
    try:
        assert opened.created
        assert any("unreachable" in note for note in opened.notes)
        [record] = await opened.store.records()
        assert "first start" in record.state_established.detail
    finally:
        await opened.store.close()


# --- explicit, audited recovery --------------------------------------------------------------------------------


async def test_init_state_moves_the_old_files_aside_and_says_how_and_why(tmp_path: Path):
    state_dir = tmp_path / "state"
    old_id = await first_start(state_dir)
    old_db = (state_dir / STATE_DB).read_bytes()
    (state_dir / STATE_DB).write_bytes(b"garbage" * 100)
    damaged = (state_dir / STATE_DB).read_bytes()
    policy = TrafficPolicy((("v1", 0), ("v2", 100)), 1, "what Envoy serves", "operator:ana", 3.0)
    store, moved = await init_state(
        state_dir,
        model=MODEL,
        policy=policy,
        how="init_from_envoy",
        reason="INC-12: disk replaced",
        actor="operator:ana",
        detail="Envoy serves v1=0 v2=100",
    )
    try:
        assert moved and Path(moved).parent == state_dir
        assert (Path(moved) / STATE_DB).read_bytes() == damaged, "the old files are kept, never deleted"
        assert json.loads((Path(moved) / MARKER).read_text())["store_id"] == old_id
        assert old_db != damaged
        [record] = await store.records()
        established = record.state_established
        assert (established.how, established.reason) == ("init_from_envoy", "INC-12: disk replaced")
        assert established.previous_store_id == old_id and established.previous_files == moved
        assert record.actor == "operator:ana"
        assert await store.load_policy() == policy
        new_id = store.store_id
    finally:
        await store.close()
    opened = await reopen(state_dir)  # the new store is accepted from now on
    assert opened.store.store_id == new_id != old_id
    await opened.store.close()


async def test_restore_state_refuses_a_damaged_backup_and_accepts_a_good_one(tmp_path: Path):
    state_dir = tmp_path / "state"
    await first_start(state_dir)
    opened = await reopen(state_dir)
    backup = tmp_path / "backup.db"
    await opened.store.backup(backup)
    backup_records = await opened.store.records()
    await opened.store.close()

    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(backup.read_bytes())

    def edit(conn: sqlite3.Connection) -> None:
        (blob,) = conn.execute("SELECT record FROM policy WHERE id = 1").fetchone()
        policy = traffic_pb2.TrafficPolicy.FromString(blob)
        policy.weights[0].weight, policy.weights[1].weight = 100, 0
        conn.execute("UPDATE policy SET record = ? WHERE id = 1", (policy.SerializeToString(),))

    edit_db(damaged, edit)
    (state_dir / STATE_DB).unlink()
    with pytest.raises(StateRefusedError, match="does not match"):
        await restore_state(state_dir, damaged, model=MODEL, reason="x", actor="operator:ana")
    assert not (state_dir / STATE_DB).exists(), "a refused backup changes nothing"

    store, _moved = await restore_state(state_dir, backup, model=MODEL, reason="INC-13", actor="operator:ana")
    try:
        records = await store.records()
        assert records[: len(backup_records)] == backup_records
        restored = records[-1]
        assert restored.state_established.how == "restored"
        assert restored.state_established.reason == "INC-13" and str(backup) in restored.state_established.detail
        assert restored.actor == "operator:ana"
        assert verify_chain(records) == []
    finally:
        await store.close()
    opened = await reopen(state_dir)
    assert (await opened.store.load_policy()).revision == 4
    await opened.store.close()


async def test_a_store_opened_by_open_existing_is_not_created(tmp_path: Path):
    with pytest.raises(StateRefusedError):
        await SqliteStateStore.open_existing(tmp_path / STATE_DB)
    assert not (tmp_path / STATE_DB).exists()
