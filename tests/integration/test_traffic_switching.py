"""Issue 2's promises, proven with a real Envoy, the real agent process and reference model servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from harness.load import TrafficGenerator, split_within_tolerance
from tests.integration.agent_stack import AgentStack, body_factory


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory):
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory)
    s.start_upstreams()
    return s


def served_by(results, version):
    return results.counts_by_version().get(version, 0)


async def test_weight_shifts_follow_the_requested_split(stack):
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    for weights in ({"v1": 100, "v2": 0}, {"v1": 0, "v2": 100}, {"v1": 50, "v2": 50}):
        change = await stack.set_weights(**weights)
        assert change["acks"][0]["node_id"] == "envoy-1"
        generator = TrafficGenerator(stack.traffic_url, body_factory, concurrency=8)
        results = await generator.run(n=1500)
        assert results.failed() == []
        check = split_within_tolerance(results.counts_by_version(), weights)
        assert check, f"{weights}:\n{check}"


async def test_shift_under_continuous_load_loses_no_request(stack):
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    async with TrafficGenerator(stack.traffic_url, body_factory, concurrency=8) as generator:
        await generator.wait_for_responses(200, timeout_s=10)
        for i in range(10):
            target = "v2" if i % 2 == 0 else "v1"
            change = await stack.set_weights(**{target: 100})
            acked = asyncio.get_running_loop().time()
            assert change["changed"]
            await generator.wait_for_responses(generator.sent + 100, timeout_s=10)
            snap = generator.snapshot()
            assert snap.first_time_all_from(target, acked) is not None, f"switch {i} to {target} never completed"
    results = generator.results
    assert len(results) > 1000
    assert results.failed() == [], results.failed()[:5]


async def test_sigkilled_control_plane_envoy_keeps_serving_and_restart_serves_persisted_policy(stack):
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=0, v2=100)
    status, body = await stack.control("POST", "/v1/rollback", {"reason": "v2 is bad"})
    assert status == 200, body
    async with TrafficGenerator(stack.traffic_url, body_factory, concurrency=4) as generator:
        await generator.wait_for_responses(100, timeout_s=10)
        stack.agent.signal(signal.SIGKILL)
        stack.agent.wait(5)
        during = generator.sent
        await generator.wait_for_responses(during + 300, timeout_s=10)
        # Restart with a config whose initial weights would send everything to the rolled-back version.
        stack.start_agent(initial_weights={"v1": 0, "v2": 100})
        await stack.wait_ready_async()
        after = generator.sent
        await generator.wait_for_responses(after + 300, timeout_s=10)
    results = generator.results
    assert results.failed() == []
    assert served_by(results, "v2") == 0, results.counts_by_version()
    status, body = await stack.control("GET", "/v1/status")
    assert body["desired"]["revision"] == "3"  # initial, v2, rollback: the config's weights were not applied
    assert [v["served_weight"] for v in body["versions"]] == [100, 0]


async def test_restarted_envoy_resyncs_to_the_persisted_policy(stack):
    stack.start_agent()
    envoy = stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=0, v2=100)
    await asyncio.to_thread(envoy.restart)
    await stack.wait_ready_async()
    results = await TrafficGenerator(stack.traffic_url, body_factory, concurrency=4).run(n=300)
    assert results.failed() == []
    assert results.counts_by_version() == {"v2": 300}


async def test_several_envoys_all_ack_each_change(stack):
    stack.start_agent()
    from harness.ports import free_port

    stack.start_envoy("envoy-a")
    stack.start_envoy("envoy-b", admin_port=free_port())
    await stack.wait_ready_async()
    change = await stack.set_weights(v1=0, v2=100)
    assert sorted(a["node_id"] for a in change["acks"]) == ["envoy-a", "envoy-b"]
    _status, body = await stack.control("GET", "/v1/status")
    assert all(e["in_sync"] for e in body["envoys"]) and len(body["envoys"]) == 2


async def test_control_api_refuses_without_valid_token_and_nothing_changes(stack):
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    for token in (None, "wrong"):
        status, body = await stack.control(
            "POST", "/v1/traffic", {"weights": [{"version": "v2", "weight": 100}]}, token=token
        )
        assert status == 401, body
    status, body = await stack.control("GET", "/v1/status")
    assert body["desired"]["revision"] == "1"
    results = await TrafficGenerator(stack.traffic_url, body_factory, concurrency=4).run(n=200)
    assert results.counts_by_version() == {"v1": 200}


def test_invalid_config_exits_non_zero_naming_the_field(tmp_path):
    bad = tmp_path / "agent.yaml"
    bad.write_text("model: {name: m}\nversions: [{tag: v1, endpoint: 'nohost'}]\nstable: v1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ROLLBACK_AGENT_TOKEN": "x"},
    )
    assert proc.returncode == 2
    assert f"{bad}:2: versions.0.endpoint: endpoint must be HOST:PORT" in proc.stderr


def test_missing_token_refuses_to_start(stack):
    path = stack.write_config()
    env = {k: v for k, v in os.environ.items() if k != "ROLLBACK_AGENT_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 2 and "bearer token" in proc.stderr
