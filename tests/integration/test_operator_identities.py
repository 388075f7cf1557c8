"""Named operator identities with roles (control.tokens_file), with the real agent process, CLI and Envoy."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys

import pytest

from agent.adapters.store.sqlite_store import read_audit_records
from tests.integration.agent_stack import ROOT, AgentStack

READER = "reader-token-7f3a9c1e"
OPERATOR = "operator-token-51d0b2aa"


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory):
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory)
    s.start_upstreams()
    return s


def cli(stack: AgentStack, *args: str, token_file: os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args, "--url", stack.control_url, "--token-file", str(token_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "USER": "ana.local"},
        check=False,
    )


async def test_a_reader_reads_but_cannot_move_traffic_and_an_operators_change_names_her(stack, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: rita, role: read-only, sha256: {hashlib.sha256(READER.encode()).hexdigest()}}}\n"
        f"  - {{name: ana, role: operator, sha256: {hashlib.sha256(OPERATOR.encode()).hexdigest()}}}\n"
    )
    (tmp_path / "rita.token").write_text(READER + "\n")
    (tmp_path / "ana.token").write_text(OPERATOR + "\n")
    stack.write_config()  # picks the ports
    stack.start_agent(control={"listen": {"port": stack.ports["control"]}, "tokens_file": str(tokens)})
    stack.start_envoy()
    await stack.wait_ready_async()
    db = stack.tmp / "state" / "state.db"

    status, body = await stack.control("GET", "/v1/status", token=READER)
    assert status == 200, body
    before = await asyncio.to_thread(read_audit_records, db)
    refused = cli(stack, "set-weights", "v2=100", "--reason", "try", token_file=tmp_path / "rita.token")
    assert refused.returncode == 1, refused
    assert (
        "error (403 permission_denied): POST /v1/traffic needs role operator or above; "
        "identity 'rita' has role read-only"
    ) in refused.stderr
    status, after = await stack.control("GET", "/v1/status", token=READER)
    assert after["desired"]["revision"] == body["desired"]["revision"]
    assert [(v["version"], v["served_weight"]) for v in after["versions"]] == [("v1", 100), ("v2", 0)]
    assert await asyncio.to_thread(read_audit_records, db) == before, "a refused request records nothing"
    status, _ = await stack.control("GET", "/v1/status", token="not-a-token")
    assert status == 401

    moved = cli(stack, "set-weights", "v2=100", "--reason", "canary", token_file=tmp_path / "ana.token")
    assert moved.returncode == 0, moved.stderr
    records = await asyncio.to_thread(read_audit_records, db)
    intent = next(r for r in records[len(before) :] if r.WhichOneof("event") == "traffic_intent")
    assert intent.actor == "operator:ana"
    operator = intent.traffic_intent.trigger.operator
    assert (operator.identity, operator.claimed_name) == ("ana", "ana.local")
    assert not [r for r in records if "127.0.0.1" in r.actor]
