"""The real agent process with audit.signing: every record it seals is signed, its head is anchored outside the pod
(the /metrics head series and one JSON log line per record), and `audit verify` with that anchor catches a trail
truncated after the agent stopped. A key file that cannot be read is refused at start, naming the file."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import aiohttp
import pytest

from agent.adapters.store.sqlite_store import read_audit_records
from harness.pyproc import REPO_ROOT
from tests.integration.agent_stack import TOKEN, AgentStack

pytestmark = pytest.mark.integration

SIGNING = {"signing": {"mode": "hmac", "key_file": "audit-hmac.key", "key_id": "pod-a-2026"}}


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


async def head_from_metrics(stack: AgentStack) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(stack.http_url + "/metrics") as response:
        text = await response.text()
    seq = re.search(r'^rollback_agent_audit_head_seq\{model="cancer"\} (\S+)$', text, re.M)
    info = re.search(
        r'^rollback_agent_audit_head_info\{hash="([0-9a-f]{64})",key_id="([^"]*)",model="cancer",seq="(\d+)"\} 1\.0$',
        text,
        re.M,
    )
    assert seq and info, text
    assert int(float(seq.group(1))) == int(info.group(3))
    return int(info.group(3)), info.group(1), info.group(2)


async def test_signed_trail_anchored_by_metric_and_log_catches_truncation(stack: AgentStack):
    (stack.tmp / "audit-hmac.key").write_bytes(os.urandom(32))
    agent = stack.start_agent(audit=SIGNING)
    stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=90, v2=10)
    await stack.set_weights(v1=50, v2=50)
    seq, digest, key_id = await head_from_metrics(stack)
    assert key_id == "pod-a-2026" and seq >= 5  # established, two intents and their outcomes

    # The log carries one JSON line per record: the external copy a log pipeline keeps.
    logged = {}
    for line in agent.log_path.read_text().splitlines():
        if "audit_record " in line:
            entry = json.loads(line.split("audit_record ", 1)[1])
            logged[entry["seq"]] = entry
    assert sorted(logged) == list(range(1, seq + 1))
    assert logged[seq]["hash"] == digest and logged[seq]["key_id"] == "pod-a-2026"
    assert {logged[s]["kind"] for s in logged} >= {"state_established", "traffic_intent", "traffic_changed"}
    assert logged[seq]["model"] == "cancer"
    agent.stop()

    records = read_audit_records(stack.tmp / "state" / "state.db")
    assert records[seq - 1].hash.hex() == digest
    assert all(r.key_id == "pod-a-2026" and r.signature for r in records)
    done = cli(stack, "audit", "verify", "--anchor", f"{seq}:{digest}", "--min-seq", str(seq))
    assert done.returncode == 0, done.stderr
    assert "signed by key 'pod-a-2026' (hmac-sha256)" in done.stdout
    assert "signatures valid (pod-a-2026)" in done.stdout

    # Someone with file access drops the newest records: the chain and the signatures still hold; the anchor not.
    with sqlite3.connect(stack.tmp / "state" / "state.db") as conn:
        conn.execute("DELETE FROM audit WHERE seq > ?", (seq - 2,))
    assert cli(stack, "audit", "verify").returncode == 0
    done = cli(stack, "audit", "verify", "--anchor", f"{seq}:{digest}")
    assert done.returncode == 1
    assert f"anchor {seq}: the trail ends at record {seq - 2}, but record {seq} existed (truncated)" in done.stderr


def test_a_key_file_that_cannot_be_read_is_refused_at_start(stack: AgentStack):
    stack.write_config(audit=SIGNING)  # audit-hmac.key does not exist
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(stack.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "ROLLBACK_AGENT_TOKEN": TOKEN},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    key = stack.tmp / "audit-hmac.key"
    assert f"error: audit.signing: {key}: cannot read the signing key: No such file or directory" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (stack.tmp / "state" / "state.db").exists()  # nothing was started or written
