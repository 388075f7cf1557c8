"""build_agent: every part wired from the config on a checked state store, with nothing listening."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.adapters.store.sqlite_store import STATE_DB, SqliteStateStore, read_audit_records
from agent.config import AgentConfig, parse_config
from agent.domain.records import policy_to_pb
from agent.domain.traffic import TrafficPolicy
from agent.engine.reconcile import open_intents
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StateRefusedError
from agent.runtime import build_agent
from tests.unit.test_config import GOOD


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config(tmp_path: Path) -> AgentConfig:
    # Envoy's admin on a port nothing listens on: the evidence is "unreachable", never a real Envoy's.
    text = GOOD + f"envoy: {{admin: {{address: 127.0.0.1, port: {unused_port()}}}}}\n"
    text = text.replace("control: {token_file: token}", "control: {token_file: token, token_name: ana}")
    return parse_config(text, "agent.yaml", tmp_path)


async def test_build_agent_wires_the_parts_on_a_new_store(config: AgentConfig):
    parts = await build_agent(config, token="s3cret", dry_run=True)
    try:
        assert parts.controller.guards == parts.admission.blockers, "every traffic change passes admission's guards"
        assert parts.orchestrator.on_follow_up == parts.admission.forget_last_rollback
        [first] = await parts.store.records()
        assert first.WhichOneof("event") == "state_established"
        assert first.state_established.how == "first_start"
        assert first.state_established.store_id == parts.store.store_id
        assert "unreachable" in first.state_established.detail
        assert parts.controller.desired.weights == (("v1", 100), ("v2", 0))
        assert (config.state_dir / STATE_DB).exists()
    finally:
        await parts.close()


async def test_build_agent_refuses_a_state_dir_whose_db_was_deleted(config: AgentConfig):
    parts = await build_agent(config, token="s3cret", dry_run=True)
    await parts.close()
    (config.state_dir / STATE_DB).unlink()
    with pytest.raises(StateRefusedError, match="state lost") as exc:
        await build_agent(config, token="s3cret", dry_run=True)
    assert "state restore" in str(exc.value) and "state init" in str(exc.value)
    assert not (config.state_dir / STATE_DB).exists(), "no fresh store replaces lost state"


async def test_build_agent_reconciles_an_open_intent(config: AgentConfig):
    parts = await build_agent(config, token="s3cret", dry_run=True)
    await parts.close()
    # The previous run recorded an intent and was killed before recording its outcome.
    db = config.state_dir / STATE_DB
    store = await SqliteStateStore.open_existing(db, model=config.model.name)
    before = await store.load_policy()
    intended = TrafficPolicy((("v1", 0), ("v2", 100)), before.revision + 1, "canary", "operator:ana", 2.0)
    await store.change_policy(
        intended,
        audit_pb2.TrafficIntent(
            intent_id="int-9", from_policy=policy_to_pb(before), to_policy=policy_to_pb(intended), reason="canary"
        ),
        "operator:ana",
    )
    await store.close()
    assert len(open_intents(read_audit_records(db))) == 1

    parts = await build_agent(config, token="s3cret", dry_run=True)
    try:
        records = await parts.store.records()
        assert open_intents(records) == []
        outcome = records[-1].traffic_changed
        assert outcome.outcome == "interrupted" and outcome.intent_id == "int-9"
        assert "could not be read" in outcome.detail and "unreachable" in outcome.detail
        assert any("int-9" in note for note in parts.state_notes)
        assert parts.controller.desired.weights == (("v1", 0), ("v2", 100)), "the persisted (intended) policy"
    finally:
        await parts.close()
