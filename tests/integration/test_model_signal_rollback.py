"""Faults only the model's own signals show (slow answers, low confidence, drifted inputs) roll traffic back too.

Real Envoy, the real agent, two reference model servers; the rule kinds of rules/default.yaml with test-sized
windows (tests/integration/fast_rules.yaml), comparing the candidate with the stable version's live figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import AgentStack, body_factory

FAST_RULES = Path(__file__).with_name("fast_rules.yaml")


@pytest.mark.parametrize(
    ("fault", "rule"),
    [
        ({"latency_ms": 150}, "p99-latency"),
        ({"confidence_shift": 0.4}, "confidence-drop"),
        ({"drift": 2.0}, "feature-drift"),
    ],
)
async def test_model_signal_fault_rolls_back(tmp_path, agent_factory, envoy_factory, refserver_factory, fault, rule):
    stack = AgentStack(
        tmp_path,
        agent_factory,
        envoy_factory,
        refserver_factory,
        extra_config={"rules": {"file": str(FAST_RULES)}, "rollback": {"verify_window_s": 1}},
    )
    stack.start_upstreams()
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)

    async def state() -> str:
        _, body = await stack.control("GET", "/v1/status")
        return next((r["state"] for r in body["rules"] if r["rule"] == rule and r["version"] == "v2"), "")

    async def served() -> dict[str, int]:
        _, body = await stack.control("GET", "/v1/status")
        return {v["version"]: v["served_weight"] for v in body["versions"]}

    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=150, concurrency=16) as generator:

        async def healthy() -> bool:
            return await state() == "ok"

        await async_wait_until(healthy, 30, what=f"{rule} judged ok for v2 before the fault")
        injected = time.monotonic()
        await stack.upstreams["v2"].set_faults_async(fault)

        async def rolled_back() -> bool:
            return await served() == {"v1": 100, "v2": 0}

        await async_wait_until(rolled_back, 30, interval_s=0.1, what=f"{rule} rolls v2 back")
        elapsed = time.monotonic() - injected
    _, body = await stack.control("GET", "/v1/status")
    assert body["desired"]["actor"] == f"rule:{rule}", body["desired"]
    assert elapsed < 20
    assert generator.results.failed() == []
