"""Issue 3 end to end: the agent measures each version, evaluates the shipped rules and rolls back by itself.

Real Envoy, the real agent process, two reference model servers; faults injected into the candidate.
"""

from __future__ import annotations

import re
import time

import pytest

from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import ROOT, AgentStack, body_factory

RULES = {
    "rules": {"file": str(ROOT / "rules" / "default.yaml")},
    "rollback": {"verify_window_s": 2, "cooldown_s": 0},
}


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


async def rule_states(stack: AgentStack, version: str) -> dict[str, str]:
    _, body = await stack.control("GET", "/v1/status")
    return {r["rule"]: r["state"] for r in body["rules"] if r["version"] == version}


@pytest.mark.parametrize(
    ("fault", "rules"),
    [
        ({"error_rate": 0.5}, {"error-rate-sequential", "error-rate"}),
        # A crash is seen by several rules on the same tick: the crash rule (unreachable server, connect failures)
        # and the error rates (Envoy answers 503 for the refused connections). Any is a correct reason.
        ({"crash": True}, {"crash", "error-rate-sequential", "error-rate"}),
    ],
)
async def test_fault_in_candidate_rolls_traffic_back_to_stable(stack, fault, rules):
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(400, timeout_s=10)

        async def judged_healthy() -> bool:  # the candidate has been observed and judged healthy
            return (await rule_states(stack, "v2")).get("error-rate") == "ok"

        await async_wait_until(judged_healthy, 20, what="v2 judged healthy before the fault")
        assert await served(stack) == {"v1": 50, "v2": 50}, "no false rollback before the fault"
        injected = time.monotonic()
        await stack.upstreams["v2"].set_faults_async(fault)

        async def back_on_stable() -> bool:
            return await served(stack) == {"v1": 100, "v2": 0}

        await async_wait_until(back_on_stable, 20, interval_s=0.05, what="traffic back on v1")
        recovered = time.monotonic() - injected
        await generator.wait_for_responses(generator.sent + 200, timeout_s=10)
        tail = generator.snapshot().counts_by_version(since=time.monotonic() - 0.5)
    assert set(tail) == {"v1"}, tail
    assert recovered < 10, recovered
    _, status = await stack.control("GET", "/v1/status")
    actor = status["desired"]["actor"]
    assert actor.removeprefix("rule:") in rules, status["desired"]
    assert actor.removeprefix("rule:") in status["desired"]["reason"]


async def test_steady_healthy_traffic_makes_no_rollback(stack):
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(1600, timeout_s=20)  # ~8 s of steady traffic, ~8 rule ticks
        states = await rule_states(stack, "v2")
    assert await served(stack) == {"v1": 50, "v2": 50}
    assert generator.results.failed() == []
    assert "firing" not in states.values() and "pending" not in states.values(), states
    assert states["error-rate"] == "ok"


async def test_low_traffic_is_insufficient_evidence_not_a_rollback(stack):
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    await stack.upstreams["v2"].set_faults_async({"error_rate": 1.0})
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=4, concurrency=1) as generator:

        async def judged_for_a_while() -> bool:  # several ticks at low traffic, all inconclusive
            _, body = await stack.control("GET", "/v1/status")
            rule = next((r for r in body["rules"] if r["rule"] == "error-rate" and r["version"] == "v2"), None)
            return rule is not None and rule["state"] == "insufficient_evidence" and rule["for_s"] >= 3

        await async_wait_until(judged_for_a_while, 20, what="error-rate inconclusive for 3 s at low traffic")
        states = await rule_states(stack, "v2")
    assert generator.results.counts_by_status().get(500, 0) > 0, "the failing candidate did receive requests"
    assert states["error-rate"] == "insufficient_evidence"
    assert await served(stack) == {"v1": 50, "v2": 50}


async def test_paused_automation_records_but_does_not_move_traffic(stack):
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    status, body = await stack.control("POST", "/v1/pause", {"reason": "change freeze"})
    assert status == 200 and body["paused"] and body["pause_reason"] == "change freeze"
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(400, timeout_s=10)
        await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})

        async def firing() -> bool:
            return "firing" in {s for r, s in (await rule_states(stack, "v2")).items() if r.startswith("error-rate")}

        await async_wait_until(firing, 20, what="error-rate firing for v2 while paused")
    assert await served(stack) == {"v1": 50, "v2": 50}, "paused: no automatic rollback"
    assert generator.results.counts_by_status().get(500, 0) > 0

    async def suppressed_recorded() -> bool:  # the status shows "firing" a moment before the orchestrator counts
        async with stack.http_session() as session, session.get(f"{stack.http_url}/metrics") as response:
            found = re.search(
                r'^rollback_agent_rollbacks_total\{cause="rule",model="cancer",outcome="suppressed"\} (\S+)$',
                await response.text(),
                re.M,
            )
        return found is not None and float(found.group(1)) >= 1

    await async_wait_until(suppressed_recorded, 5, what="the suppressed rollback counted")
    assert await served(stack) == {"v1": 50, "v2": 50}
    async with stack.http_session() as session, session.get(f"{stack.http_url}/v1/health/versions") as response:
        health = await response.json()
    assert health["v1"]["ready"]["ok"] and health["v2"]["ready"]["ok"]
