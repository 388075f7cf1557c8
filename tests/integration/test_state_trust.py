"""A rolled-back version is never served again unless an operator says so, whatever happens to the state files:
lost, emptied, foreign or edited state is a refusal to start (exit 4) with an audited recovery path. Proven with a
real Envoy, the real agent process and reference model servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import read_audit_records
from harness.load import TrafficGenerator
from harness.pyproc import REPO_ROOT
from harness.wait import wait_until
from tests.integration.agent_stack import TOKEN, AgentStack, body_factory

EXIT_STATE_REFUSED = 4


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory):
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory)
    s.start_upstreams()
    return s


def cli(stack: AgentStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "--config", str(stack.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "ROLLBACK_AGENT_TOKEN": TOKEN},
    )


def run_agent_expecting_refusal(stack: AgentStack) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(stack.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "ROLLBACK_AGENT_TOKEN": TOKEN},
    )
    assert proc.returncode == EXIT_STATE_REFUSED, (proc.returncode, proc.stderr[-2000:])
    assert "state refused" in proc.stderr
    assert "state restore" in proc.stderr and "state init" in proc.stderr
    return proc


async def served_counts(stack: AgentStack, n: int = 200) -> dict[str, int]:
    results = await TrafficGenerator(stack.traffic_url, body_factory, concurrency=4).run(n=n)
    assert results.failed() == []
    return results.counts_by_version()


async def rolled_back_stack(stack: AgentStack) -> None:
    """v2 served, then rolled back by an operator: v2 is failed and gets nothing; the agent is then stopped."""
    stack.start_agent(initial_weights={"v1": 0, "v2": 100})
    stack.start_envoy()
    await stack.wait_ready_async()
    status, body = await stack.control("POST", "/v1/rollback", {"reason": "v2 is bad"})
    assert status == 200 and body["outcome"] == "rolled_back", body
    assert await served_counts(stack) == {"v1": 200}
    assert stack.agent is not None
    stack.agent.stop()


def damage_policy_row(db: Path) -> None:
    # Point the policy row at the rolled-back version, as a hand edit would: the row no longer matches its record.
    from agent.domain.records import policy_to_pb
    from agent.domain.traffic import TrafficPolicy

    forged = policy_to_pb(TrafficPolicy((("v1", 0), ("v2", 100)), 3, "edited", "someone", 0.0))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE policy SET record = ? WHERE id = 1", (forged.SerializeToString(deterministic=True),))


DAMAGES = ("delete_db", "empty_db", "truncate_db", "garbage_db", "edit_policy_row", "foreign_db", "remove_state_dir")


def inflict(damage: str, state: Path, tmp_path: Path) -> None:
    db = state / "state.db"
    if damage == "delete_db":
        db.unlink()
    elif damage == "empty_db":
        db.write_bytes(b"")
    elif damage == "truncate_db":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    elif damage == "garbage_db":
        data = bytearray(db.read_bytes())
        data[100:4000] = os.urandom(3900)
        db.write_bytes(bytes(data))
    elif damage == "edit_policy_row":
        damage_policy_row(db)
    elif damage == "foreign_db":
        # Another store's database copied in: its id is not the one the marker names.
        (state / "store.json").write_text(
            '{"store_id": "elsewhere", "model": "cancer", "head_seq": 0, "head_hash": ""}'
        )
    elif damage == "remove_state_dir":
        shutil.rmtree(state)


async def test_lost_or_damaged_state_refuses_to_start_and_envoy_keeps_the_rollback(stack, tmp_path):
    await rolled_back_stack(stack)
    state = stack.tmp / "state"
    for suffix in ("-wal", "-shm"):
        (state / f"state.db{suffix}").unlink(missing_ok=True)
    good = tmp_path / "good-state"
    shutil.copytree(state, good)
    for damage in DAMAGES:
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(good, state)
        inflict(damage, state, tmp_path)
        proc = run_agent_expecting_refusal(stack)
        assert "serving revision" not in proc.stderr, damage
        # Envoy keeps the rollback while the agent refuses.
        assert await served_counts(stack, 100) == {"v1": 100}, damage


async def test_recovery_from_envoy_is_audited_and_never_reserves_the_rolled_back_version(stack):
    await rolled_back_stack(stack)
    state = stack.tmp / "state"
    shutil.rmtree(state)
    run_agent_expecting_refusal(stack)
    # --from-config would serve v2 (the config's initial weights): refused without --force.
    refused = cli(stack, "state", "init", "--from-config", "--reason", "disk replaced")
    assert refused.returncode == 1 and "--from-envoy" in refused.stderr, refused.stderr
    done = cli(stack, "state", "init", "--from-envoy", "--reason", "disk replaced")
    assert done.returncode == 0, done.stderr
    stack.start_agent(initial_weights={"v1": 0, "v2": 100})
    await stack.wait_ready_async()
    assert await served_counts(stack) == {"v1": 200}
    first = read_audit_records(state / "state.db")[0]
    assert first.WhichOneof("event") == "state_established"
    assert first.state_established.how == "init_from_envoy"
    assert first.state_established.reason == "disk replaced"
    assert first.actor.startswith("local:")
    verify = cli(stack, "audit", "verify")
    assert verify.returncode == 0, verify.stderr


async def test_backup_restore_round_trip(stack, tmp_path):
    await rolled_back_stack(stack)
    backup = tmp_path / "backup.db"
    made = cli(stack, "state", "backup", str(backup))
    assert made.returncode == 0, made.stderr
    (stack.tmp / "state" / "state.db").write_bytes(b"")
    run_agent_expecting_refusal(stack)
    restored = cli(stack, "state", "restore", str(backup), "--reason", "restore after disk fault")
    assert restored.returncode == 0, restored.stderr
    stack.start_agent()
    await stack.wait_ready_async()
    assert await served_counts(stack) == {"v1": 200}
    records = read_audit_records(stack.tmp / "state" / "state.db")
    assert any(r.WhichOneof("event") == "state_established" and r.state_established.how == "restored" for r in records)


async def test_kill_during_the_verification_window_leaves_a_true_trail(stack):
    stack.start_agent(initial_weights={"v1": 0, "v2": 100}, rollback={"verify_window_s": 30})
    stack.start_envoy()
    await stack.wait_ready_async()
    status, body = await stack.control("POST", "/v1/rollback", {"reason": "v2 is bad", "actor": "rule:error-rate"})
    assert status == 200 and body["outcome"] == "rolled_back", body
    assert stack.agent is not None
    stack.agent.kill()
    stack.agent.wait(5)
    db = stack.tmp / "state" / "state.db"
    records = read_audit_records(db)
    kinds = [r.WhichOneof("event") for r in records]
    # On record before the caller heard "rolled_back": the intent, its outcome, and the switched rollback.
    assert "traffic_intent" in kinds and "traffic_changed" in kinds
    switched = [r for r in records if r.WhichOneof("event") == "rollback"]
    assert switched and switched[-1].rollback.outcome == "switched"
    # The actor is the authenticated credential, never the body's claim.
    assert switched[-1].actor == "operator:control-token"
    assert switched[-1].rollback.trigger.operator.claimed_name == "rule:error-rate"
    stack.start_agent()
    await stack.wait_ready_async()
    assert await served_counts(stack) == {"v1": 200}

    def reconciled() -> bool:
        return any(r.WhichOneof("event") == "rollback_interrupted" for r in read_audit_records(db))

    await asyncio.to_thread(wait_until, reconciled, 10, what="the interrupted verification on record")
    interrupted = [r for r in read_audit_records(db) if r.WhichOneof("event") == "rollback_interrupted"]
    assert interrupted[0].rollback_interrupted.stage == "verification"
    verify = cli(stack, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    # The failed version stays out: without force, an operator cannot route to it; with force it is recorded.
    status, body = await stack.control("POST", "/v1/traffic", {"weights": [{"version": "v2", "weight": 10}]})
    assert status == 409 and "failed" in body["message"], body
    status, body = await stack.control(
        "POST",
        "/v1/traffic",
        {"weights": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}], "force": True},
    )
    assert status == 200, body
    intent = [r for r in read_audit_records(db) if r.WhichOneof("event") == "traffic_intent"][-1]
    assert intent.traffic_intent.forced and "v2" in intent.traffic_intent.overridden[0]
