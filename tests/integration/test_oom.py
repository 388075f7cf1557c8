"""A candidate that leaks memory under a real memory limit is rolled back: while it stays near the limit (near-OOM
rule), or once it died of it (the crash counted as an OOM).

Real Envoy, the real agent, two reference model servers; v2 runs with --memory-limit-mb (RLIMIT_AS), so its leak
ends in MemoryError and exit 137, as an OOM-killed container.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from harness.load import TrafficGenerator
from harness.refserver import RefServer
from harness.wait import async_wait_until, wait_until
from tests.integration.agent_stack import MODEL, ROOT, TOKEN, AgentStack, body_factory

LIMIT_MB = 256
NEAR = 0.9


def rules_file(tmp: Path) -> Path:
    path = tmp / "oom_rules.yaml"
    rules = [
        {"name": "near-oom", "kind": "near_oom", "window": "3s", "max_ratio": NEAR, "min_evidence": {"coverage": 0.5}},
        # Only OOM exits: a plain crash of v2 would not fire this rule.
        {"name": "oom", "kind": "crash", "events": ["health.oom"], "window": "5m", "min_evidence": {"coverage": 0}},
    ]
    path.write_text(yaml.safe_dump({"model": MODEL, "tier": "critical", "rules": rules}))
    return path


async def start(tmp: Path, agent_factory: Any, envoy_factory: Any, refserver_factory: Any) -> AgentStack:
    stack = AgentStack(tmp, agent_factory, envoy_factory, refserver_factory)
    stack.upstreams["v1"] = refserver_factory(MODEL, "v1")
    stack.upstreams["v2"] = refserver_factory(MODEL, "v2", memory_limit_mb=LIMIT_MB)
    stack.extra_config = {
        "versions": [
            {"tag": "v1", "endpoint": f"127.0.0.1:{stack.upstreams['v1'].port}"},
            {"tag": "v2", "endpoint": f"127.0.0.1:{stack.upstreams['v2'].port}", "memory_limit_mb": LIMIT_MB},
        ],
        # Readings twice a second: the last one before the leak's exit is close to the limit.
        "signals": {"interval_s": 0.5, "oom_memory_ratio": NEAR},
        "rules": {"file": str(rules_file(tmp))},
        "rollback": {"verify_window_s": 1},
    }
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    return stack


async def rule_state(stack: AgentStack, rule: str) -> str:
    _, body = await stack.control("GET", "/v1/status")
    return next((r["state"] for r in body["rules"] if r["rule"] == rule and r["version"] == "v2"), "")


async def rolled_back(stack: AgentStack) -> bool:
    _, body = await stack.control("GET", "/v1/status")
    return {v["version"]: v["served_weight"] for v in body["versions"]} == {"v1": 100, "v2": 0}


async def resident_ratio(url: str) -> float | None:
    """v2's resident memory / its limit, from its own /metrics (None once it is gone)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1]) / (LIMIT_MB * 2**20)
    return None


async def rollback_trigger(stack: AgentStack) -> dict[str, Any]:
    """The trigger of the recorded rollback, from the compliance report (read from the state dir)."""
    assert stack.config_path is not None

    async def recorded() -> dict[str, Any] | None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "agent", "report", "--format", "json", "--config", str(stack.config_path)),
            cwd=ROOT,
            env={**os.environ, "ROLLBACK_AGENT_TOKEN": TOKEN},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        done = [r for r in json.loads(out)["rollbacks"] if r["outcome"] not in ("", "suppressed")]
        return done[-1]["trigger"] if done else None

    return await async_wait_until(recorded, 15, interval_s=0.2, what="the rollback's audit record")


# ---- the reference server under its limit -------------------------------------------------------------------------


async def test_the_leak_grows_resident_memory_until_the_server_dies_with_137(refserver_factory):
    server = refserver_factory(MODEL, "v7", memory_limit_mb=LIMIT_MB)
    before = await async_wait_until(lambda: resident_ratio(server.url), 5, what="a memory reading")
    await server.set_faults_async({"leak_mb_per_s": 200})
    await async_wait_until(lambda: not server.process.alive, 10, interval_s=0.05, what="the server dies at its limit")
    assert before < NEAR
    assert server.process.returncode == 137
    log = server.process.log_path.read_text()
    assert "out of memory (leak fault" in log and "exiting with code 137" in log, log[-2000:]


async def test_the_leak_stops_when_the_fault_is_cleared_and_the_memory_stays(refserver_factory):
    server = refserver_factory(MODEL, "v7")  # no limit: the leak just grows
    before = await async_wait_until(lambda: resident_ratio(server.url), 5, what="a memory reading")
    await server.set_faults_async({"leak_mb_per_s": 100})

    async def grew() -> float | None:
        ratio = await resident_ratio(server.url)
        return ratio if ratio is not None and ratio > before + 30 / LIMIT_MB else None

    await async_wait_until(grew, 5, interval_s=0.05, what="30 MB leaked")
    await server.clear_faults_async()
    held = await resident_ratio(server.url)
    await asyncio.sleep(0.5)  # no leak step may happen in this half second (steps are every 0.1 s)
    after = await resident_ratio(server.url)
    assert held is not None and after is not None
    assert abs(after - held) < 5 / LIMIT_MB, "cleared: no more leaking, and nothing given back"
    assert server.process.alive


def test_a_limit_below_what_the_server_uses_is_refused(tmp_logs):
    server = RefServer(MODEL, "v7", None, tmp_logs, memory_limit_mb=10)
    server.process.start()
    try:
        wait_until(lambda: not server.process.alive, 30, interval_s=0.05, what="the server refuses the limit")
        assert server.process.returncode == 2
        assert "--memory-limit-mb 10 is below the" in server.process.log_path.read_text()
    finally:
        server.process.stop()


# ---- the agent -----------------------------------------------------------------------------------------------------


async def test_memory_held_near_the_limit_rolls_back_before_the_oom(
    tmp_path, agent_factory, envoy_factory, refserver_factory
):
    stack = await start(tmp_path, agent_factory, envoy_factory, refserver_factory)
    v2 = stack.upstreams["v2"]
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=100, concurrency=8) as generator:

        async def healthy() -> bool:
            return await rule_state(stack, "near-oom") == "ok"

        await async_wait_until(healthy, 15, what="near-oom judged ok for v2 before the leak")
        await v2.set_faults_async({"leak_mb_per_s": 25})

        async def near_the_limit() -> bool:
            ratio = await resident_ratio(v2.url)
            return ratio is not None and ratio >= NEAR + 0.03

        await async_wait_until(near_the_limit, 15, interval_s=0.02, what="v2's memory near its limit")
        await v2.set_faults_async({"leak_mb_per_s": 0})  # it stays there: leaked memory is never given back
        held = time.monotonic()
        await async_wait_until(lambda: rolled_back(stack), 15, interval_s=0.1, what="near-oom rolls v2 back")
        elapsed = time.monotonic() - held
    assert v2.process.alive, "rolled back before the OOM, not after it"
    verdict = await rollback_trigger(stack)
    assert (verdict["rule"], verdict["rule_kind"], verdict["version"]) == ("near-oom", "near_oom", "v2"), verdict
    assert NEAR < verdict["value"] < 1 and verdict["threshold"] == pytest.approx(NEAR), verdict
    assert "of the limit" in verdict["reason"], verdict
    assert elapsed < 10
    assert generator.results.failed() == []


async def test_a_leak_to_the_limit_dies_as_an_oom_and_rolls_back(
    tmp_path, agent_factory, envoy_factory, refserver_factory
):
    stack = await start(tmp_path, agent_factory, envoy_factory, refserver_factory)
    v2 = stack.upstreams["v2"]
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=100, concurrency=8):

        async def healthy() -> bool:
            return await rule_state(stack, "oom") == "ok"

        await async_wait_until(healthy, 15, what="oom judged ok for v2 before the leak")
        # ~8 MB between two readings: the last one before the exit is above 90 % of the limit.
        await v2.set_faults_async({"leak_mb_per_s": 15})
        await async_wait_until(lambda: not v2.process.alive, 20, interval_s=0.05, what="v2 dies at its limit")
        died = time.monotonic()
        assert v2.process.returncode == 137
        await async_wait_until(lambda: rolled_back(stack), 10, interval_s=0.1, what="oom rolls v2 back")
        elapsed = time.monotonic() - died
    verdict = await rollback_trigger(stack)
    assert (verdict["rule"], verdict["rule_kind"], verdict["version"]) == ("oom", "crash", "v2"), verdict
    assert verdict["value"] == 1 and "health.oom: 1" in verdict["reason"], verdict
    assert elapsed < 5
