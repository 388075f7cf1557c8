"""A fleet alert reaches every replica: three agents, three Envoys, one Alertmanager, one webhook receiver.

Each agent has its own Envoy, ports and state dir; all route to the same two reference model servers (v1 stable,
v2 candidate at 50 %) and pull `GET /api/v2/alerts` from one real Alertmanager. Only agent 0 is the webhook
receiver (config derived from rules/alertmanager/alertmanager.example.yml). One alert posted into Alertmanager's
API v2 puts every Envoy on v1 within seconds, and each agent acts on it exactly once: on the receiver, the webhook
delivery and the pull of the same alert are one action.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from pathlib import Path

import pytest

from harness.alertmanager import make_alert
from harness.load import TrafficGenerator
from harness.wait import NotYet, async_wait_until
from tests.integration.agent_stack import MODEL, AgentStack, body_factory
from tests.integration.test_alert_rollback import (
    ALERTNAME,
    agent_report,
    alertmanager_config,
    alerts_config,
    metric,
    rollback_labels,
    served,
    wait_rollback_records,
    write_token,
)

AGENTS = 3
POLL_INTERVAL_S = 1.0
ALL_STABLE_WITHIN_S = 5.0  # one poll interval, plus the rollback, with slack for a loaded 2-core machine


@pytest.fixture
def fleet(tmp_path: Path, agent_factory, envoy_factory, refserver_factory, alertmanager_factory):
    upstreams = {v: refserver_factory(MODEL, v) for v in ("v1", "v2")}
    token_file = write_token(tmp_path)
    stacks: list[AgentStack] = []
    for i in range(AGENTS):
        directory = tmp_path / f"agent-{i}"
        directory.mkdir()
        stack = AgentStack(directory, agent_factory, envoy_factory, refserver_factory)
        stack.upstreams = upstreams
        stack.write_config()  # picks the ports, so that Alertmanager can point at agent 0's webhook
        stacks.append(stack)
    am = alertmanager_factory(config=alertmanager_config(f"{stacks[0].http_url}/v1/alerts", token_file))
    for i, stack in enumerate(stacks):
        section = alerts_config(
            token_file if i == 0 else None, [am.url], poll_interval_s=POLL_INTERVAL_S, timeout_s=1.0
        )
        stack.start_agent(alerts=section, rollback={"verify_window_s": 1, "confirm_timeout_s": 3, "cooldown_s": 0})
        stack.start_envoy(node_id=f"envoy-{i}")
    return stacks, am


async def test_fleet_alert_rolls_back_every_replica_once(fleet):
    stacks, am = fleet
    await asyncio.gather(*(s.wait_ready_async() for s in stacks))
    for s in stacks:
        await s.set_weights(v1=50, v2=50)
    async with contextlib.AsyncExitStack() as exits:
        generators = [
            await exits.enter_async_context(TrafficGenerator(s.traffic_url, body_factory, rate_per_s=40, concurrency=2))
            for s in stacks
        ]
        await asyncio.gather(*(g.wait_for_responses(40, timeout_s=10) for g in generators))
        for g in generators:
            assert set(g.counts_by_version()) == {"v1", "v2"}, "every Envoy splits traffic before the alert"

        alert = make_alert(
            ALERTNAME,
            {k: v for k, v in rollback_labels("v2").items() if k != "alertname"},
            {"summary": "fleet: v2 error ratio above 5%"},
            starts_at=dt.datetime.now(dt.UTC),
            generator_url="http://prometheus.test:9090/graph?g0.expr=fleet",
        )
        posted = time.monotonic()
        await asyncio.to_thread(am.post_alerts, [alert])
        stable_after: dict[int, float] = {}

        async def all_on_stable() -> bool | NotYet:
            for i, s in enumerate(stacks):
                if i not in stable_after and await served(s) == {"v1": 100, "v2": 0}:
                    stable_after[i] = time.monotonic() - posted
            return len(stable_after) == len(stacks) or NotYet(stable_after)

        await async_wait_until(all_on_stable, ALL_STABLE_WITHIN_S + 5, interval_s=0.05, what="every agent on v1")
        slowest = max(stable_after.values())
        after = time.monotonic()
        await asyncio.gather(*(g.wait_for_responses(g.sent + 40, timeout_s=10) for g in generators))
        tails = [g.snapshot().counts_by_version(since=after) for g in generators]
    assert slowest <= ALL_STABLE_WITHIN_S, f"seconds from the post to v1 only, per agent: {stable_after}"
    assert all(set(tail) == {"v1"} for tail in tails), f"requests through each Envoy after the alert: {tails}"

    # The receiver saw the alert both ways (webhook and pull) and handed it over once.
    receiver_metrics = f"{stacks[0].http_url}/metrics"

    async def seen_both_ways() -> bool | NotYet:
        webhook = sum(
            [
                await metric(receiver_metrics, "rollback_agent_webhook_alerts_total", outcome=o)
                for o in ("accepted", "duplicate")
            ]
        )
        pulled = sum(
            [
                await metric(receiver_metrics, "rollback_agent_alertmanager_pulled_alerts_total", outcome=o)
                for o in ("accepted", "duplicate")
            ]
        )
        return (webhook >= 1 and pulled >= 1) or NotYet({"webhook": webhook, "pulled": pulled})

    await async_wait_until(seen_both_ways, 10, interval_s=0.1, what="the receiver to see the alert by webhook and pull")

    for i, s in enumerate(stacks):
        [record] = await wait_rollback_records(s.config_path)
        url = f"{s.http_url}/metrics"
        accepted = await metric(url, "rollback_agent_webhook_alerts_total", outcome="accepted") + await metric(
            url, "rollback_agent_alertmanager_pulled_alerts_total", outcome="accepted"
        )
        assert accepted == 1, f"agent {i}: the alert was handed to the decision handler {accepted} times"
        assert await metric(url, "rollback_agent_rollbacks_total", cause="alert") == 1, f"agent {i}"
        report = await agent_report(s.config_path)
        assert len(report["rollbacks"]) == 1, (i, report["rollbacks"])
        by_alert = [c for c in report["traffic_changes"] if c["actor"].startswith("alert:")]
        assert len(by_alert) == 1, (i, by_alert)
        assert (record["from_version"], record["to_version"], record["outcome"]) == ("v2", "v1", "recovered")
        trigger = record["trigger"]
        assert (trigger["alertname"], trigger["labels"]["version"]) == (ALERTNAME, "v2"), trigger
        assert trigger["generator_url"] == alert["generatorURL"]
        if i > 0:
            assert trigger["received_via"] == "api", f"agent {i} is no webhook receiver: {trigger}"
            assert await metric(url, "rollback_agent_webhook_alerts_total") == 0
