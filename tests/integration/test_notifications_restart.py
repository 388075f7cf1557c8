"""Issue 13, notifications across a kill: a decision the receiver could not be told before the agent was
SIGKILLed is told after the restart, once; a clean restart after that tells nothing again. The real agent process,
a webhook receiver on 127.0.0.1 that is down, then up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness.http_util import request
from harness.wait import async_wait_until
from tests.integration.agent_stack import AgentStack
from tests.unit.adapters.notify.test_dispatcher import Receiver, free_port


def sample(text: str, name: str, receiver: str = "ops", outcome: str | None = None) -> float:
    want = f'{name}{{outcome="{outcome}",receiver="{receiver}"}}' if outcome else f'{name}{{receiver="{receiver}"}}'
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


async def metrics(stack: AgentStack) -> str:
    answer = await asyncio.to_thread(request, "GET", f"{stack.http_url}/metrics")
    assert answer.status == 200
    return answer.body.decode()


@pytest.fixture
def stack(tmp_path: Path, agent_factory, envoy_factory, refserver_factory) -> AgentStack:
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory)
    s.start_upstreams()
    return s


async def test_a_decision_not_told_before_a_kill_is_told_after_the_restart_once(stack: AgentStack) -> None:
    receiver = Receiver(free_port())  # not listening yet: every delivery attempt fails
    notifications = {
        "receivers": [{"name": "ops", "url": receiver.url, "events": ["hold"]}],
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "max_attempts": 100,
    }
    await asyncio.to_thread(stack.start_agent, notifications=notifications)
    status, body = await stack.control("POST", "/v1/hold", {"version": "v2", "reason": "INC-9 under review"})
    assert status == 200, body

    async def retried() -> bool:
        return sample(await metrics(stack), "rollback_agent_notification_retries_total") >= 2

    await async_wait_until(retried, 15, interval_s=0.1, what="the hold notification retried while the receiver is down")
    assert stack.agent is not None
    stack.agent.kill()

    await receiver.start()
    try:
        await asyncio.to_thread(stack.start_agent, notifications=notifications)
        await async_wait_until(lambda: len(receiver.bodies) >= 1, 15, interval_s=0.1, what="the hold told")

        async def delivered() -> bool:
            text = await metrics(stack)
            return sample(text, "rollback_agent_notifications_total", outcome="delivered") == 1

        await async_wait_until(delivered, 15, interval_s=0.1, what="the delivery counted")
        assert [b["reason"] for b in receiver.bodies] == ["INC-9 under review"], receiver.bodies
        assert receiver.bodies[0]["actor"].startswith("operator:")
        # A clean restart tells nothing again: its queue starts empty.
        stack.agent.stop()
        await asyncio.to_thread(stack.start_agent, notifications=notifications)
        text = await metrics(stack)
        assert sample(text, "rollback_agent_notification_queue_depth") == 0, text
        assert sample(text, "rollback_agent_notifications_total", outcome="delivered") == 0
        assert len(receiver.bodies) == 1, receiver.bodies
    finally:
        await receiver.stop()
