"""Batch-job leases and operator overrides end to end: real Envoy, the real agent, two reference model servers.

A lease holder's requests stay on its version through an automatic rollback while other traffic moves; a lease
ends on time and its requests then get 410; a pin suppresses the automatic rollback (on record) until unpinned;
`quarantine add` and an admin's `rollback --to --force` onto the quarantined version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from agent.adapters.store.sqlite_store import read_audit_records
from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import ROOT, TOKEN, AgentStack, body_factory

RULES = {
    "rules": {"file": str(ROOT / "rules" / "default.yaml")},
    "rollback": {"verify_window_s": 2, "cooldown_s": 0},
}
LEASE_HEADER = "x-rollback-lease"


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory):
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, extra_config=RULES)
    s.start_upstreams()
    s.start_agent()
    s.start_envoy()
    return s


async def served(stack: AgentStack) -> dict[str, int]:
    _, body = await stack.control("GET", "/v1/status")
    return {v["version"]: v["served_weight"] for v in body["versions"]}


async def acquire(stack: AgentStack, version: str, holder: str, ttl_s: float) -> str:
    status, lease = await stack.control("POST", "/v1/leases", {"version": version, "holder": holder, "ttl_s": ttl_s})
    assert status == 200, lease
    return str(lease["lease_id"])


async def one_request(stack: AgentStack, headers: dict[str, str]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(stack.traffic_url, data=body_factory(0), headers=headers) as r,
    ):
        await r.read()
        return r.status, r.headers.get("x-served-by-version", "")


def audit(stack: AgentStack) -> list:
    return read_audit_records(stack.tmp / "state" / "state.db")


def cli(stack: AgentStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ROLLBACK_AGENT_TOKEN": TOKEN},
        cwd=ROOT,
    )


async def test_a_lease_holder_stays_on_its_version_through_an_automatic_rollback_and_the_lease_expires(stack):
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    taken = cli(
        stack,
        "lease",
        "acquire",
        "--version",
        "v2",
        "--ttl",
        "2m",
        "--holder",
        "nightly-scoring",
        "--json",
        "--url",
        stack.control_url,
    )
    assert taken.returncode == 0, taken.stderr
    lease = json.loads(taken.stdout)["lease_id"]
    short = await acquire(stack, "v2", "short-job", ttl_s=4)
    # Which version answered, as Envoy's route stamps it (also on the candidate's injected 500s).
    batch = TrafficGenerator(
        stack.traffic_url,
        body_factory,
        rate_per_s=30,
        concurrency=2,
        headers={LEASE_HEADER: lease},
        version_header="x-served-by-version",
    )
    live = TrafficGenerator(
        stack.traffic_url, body_factory, rate_per_s=150, concurrency=6, version_header="x-served-by-version"
    )
    async with live, batch:
        await live.wait_for_responses(300, timeout_s=15)
        await batch.wait_for_responses(30, timeout_s=15)
        await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})

        async def rolled_back() -> bool:
            return await served(stack) == {"v1": 100, "v2": 0}

        await async_wait_until(rolled_back, 30, interval_s=0.05, what="the automatic rollback to v1")
        switched = time.monotonic()
        await stack.upstreams["v2"].clear_faults_async()
        await live.wait_for_responses(live.sent + 150, timeout_s=15)
        await batch.wait_for_responses(batch.sent + 30, timeout_s=15)
        live_after = live.counts_by_version(since=switched + 0.5)
        batch_all = batch.counts_by_version()
    assert set(live_after) == {"v1"}, f"other traffic moved to v1: {live_after}"
    assert set(batch_all) == {"v2"}, f"the lease holder stayed on v2 throughout: {batch_all}"
    assert batch.snapshot().counts_by_status().get(410, 0) == 0
    rollback = [r for r in audit(stack) if r.WhichOneof("event") == "rollback" and r.rollback.outcome == "switched"]
    assert rollback and rollback[-1].rollback.to_version == "v1" and rollback[-1].actor.startswith("rule:")

    # The short lease ends on time: its requests get 410, on record as expired, shown in the list.
    async def short_expired() -> bool:
        return (await one_request(stack, {LEASE_HEADER: short}))[0] == 410

    await async_wait_until(short_expired, 15, what="the 4 s lease's requests answered 410")
    assert await one_request(stack, {LEASE_HEADER: lease}) == (200, "v2")
    assert await one_request(stack, {}) == (200, "v1")
    _, listed = await stack.control("GET", "/v1/leases")
    states = {x["lease_id"]: x["state"] for x in listed["leases"]}
    assert states == {lease: "active", short: "expired"}
    shown = cli(stack, "lease", "list", "--url", stack.control_url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[1].split()[:4] == [lease, "v2", "nightly-scoring", "active"], shown.stdout
    assert lines[2].split()[:4] == [short, "v2", "short-job", "expired"], shown.stdout
    expired = [
        r for r in audit(stack) if r.WhichOneof("event") == "lease_changed" and r.lease_changed.action == "expired"
    ]
    assert [r.lease_changed.lease_id for r in expired] == [short]
    async with aiohttp.ClientSession() as s, s.get(stack.http_url + "/metrics") as r:
        metrics = await r.text()
    assert 'rollback_agent_leases{holder="nightly-scoring",model="cancer",version="v2"} 1.0' in metrics
    assert 'rollback_agent_leases{holder="short-job"' not in metrics


async def test_a_pin_blocks_the_automatic_rollback_on_record_until_unpinned(stack):
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    status, shown = await stack.control("POST", "/v1/pin", {"version": "v2", "reason": "INC-9 known false alarm"})
    assert status == 200 and shown["pins"] == {"v2": "INC-9 known false alarm"}, shown
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=150, concurrency=6) as live:
        await live.wait_for_responses(300, timeout_s=15)
        await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})

        def suppressed() -> list:
            return [
                r.rollback
                for r in audit(stack)
                if r.WhichOneof("event") == "rollback" and r.rollback.outcome == "suppressed"
            ]

        async def on_record() -> bool:
            return bool(suppressed())

        await async_wait_until(on_record, 30, what="the suppressed rollback on record")
        assert "v2 is pinned by an operator (INC-9 known false alarm)" in suppressed()[0].detail
        assert await served(stack) == {"v1": 50, "v2": 50}
        status, _ = await stack.control("POST", "/v1/unpin", {"version": "v2", "reason": "over"})
        assert status == 200

        async def rolled_back() -> bool:
            return await served(stack) == {"v1": 100, "v2": 0}

        await async_wait_until(rolled_back, 30, interval_s=0.05, what="the rollback once unpinned")
    events = [r.WhichOneof("event") for r in audit(stack) if r.WhichOneof("event") == "pin_changed"]
    assert events == ["pin_changed", "pin_changed"]


async def test_quarantine_add_then_an_admin_rolls_back_onto_it_with_force(stack):
    await stack.wait_ready_async()
    await stack.set_weights(v1=0, v2=100)
    config = str(stack.config_path)
    added = cli(stack, "quarantine", "add", "v1", "--reason", "INC-11 feature leak", "--config", config)
    assert added.returncode == 0, added.stderr
    assert "v1: quarantined" in added.stdout
    refused = cli(stack, "rollback", "--to", "v1", "--reason", "back to v1", "--config", config)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert await served(stack) == {"v1": 0, "v2": 100}
    forced = cli(stack, "rollback", "--to", "v1", "--force", "--reason", "v2 worse than leak", "--config", config)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert await served(stack) == {"v1": 100, "v2": 0}
    records = audit(stack)
    quarantined = [r for r in records if r.WhichOneof("event") == "version_status_changed"]
    assert quarantined[0].version_status_changed.to_status == "quarantined"
    intent = [r for r in records if r.WhichOneof("event") == "traffic_intent"][-1].traffic_intent
    assert intent.forced and any("quarantined" in o for o in intent.overridden), intent
