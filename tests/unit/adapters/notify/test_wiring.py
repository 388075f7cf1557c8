"""The agent tells its receivers every decision its store seals: the wiring, the metrics, a refused secret."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.config import AgentConfig, parse_config
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.runtime import StartupError, build_agent
from tests.unit.adapters.notify.test_dispatcher import Receiver, free_port, until
from tests.unit.test_config import GOOD


def config_with(tmp_path: Path, receiver: str) -> AgentConfig:
    text = GOOD + f"envoy: {{admin: {{address: 127.0.0.1, port: {free_port()}}}}}\n"
    text += f"notifications: {{receivers: [{receiver}], backoff_initial_s: 50ms, backoff_max_s: 200ms}}\n"
    return parse_config(text, "agent.yaml", tmp_path)


async def test_a_decision_sealed_by_the_agents_store_reaches_the_receiver(tmp_path: Path) -> None:
    receiver = Receiver(free_port())
    await receiver.start()
    config = config_with(tmp_path, f'{{name: ops, url: "{receiver.url}", events: [hold], headers_env: OPS_HOOK}}')
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPS_HOOK", '{"Authorization": "Bearer hook-secret"}')
        parts = await build_agent(config, token="s3cret", dry_run=True)
    assert parts.notifier is not None
    sample = parts.metrics.registry.get_sample_value
    assert sample("rollback_agent_notifications_total", {"receiver": "ops", "outcome": "delivered"}) == 0
    task = asyncio.create_task(parts.notifier.run(), name="notifications")
    try:
        await parts.store.append(audit_pb2.HoldChanged(version="v2", held=True, reason="INC-7"), "operator:ana")
        await until(lambda: len(receiver.bodies) == 1)
        assert receiver.bodies[0]["model"] == parts.config.model.name
        assert receiver.bodies[0]["id"] == f"{parts.store.store_id}:{receiver.bodies[0]['seq']}"
        assert receiver.headers[0]["Authorization"] == "Bearer hook-secret"
        await until(
            lambda: sample("rollback_agent_notifications_total", {"receiver": "ops", "outcome": "delivered"}) == 1
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await parts.close()
        await receiver.stop()


async def test_an_unreadable_headers_secret_stops_the_start_naming_it(tmp_path: Path) -> None:
    config = config_with(tmp_path, '{name: ops, url: "http://127.0.0.1:9/x", headers_file: missing.yaml}')
    with pytest.raises(StartupError, match=r"notifications.receivers ops: headers_file .*missing.yaml: cannot read"):
        await build_agent(config, token="s3cret", dry_run=True)
