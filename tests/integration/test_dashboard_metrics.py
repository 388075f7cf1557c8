"""The running agent's /metrics, as Prometheus and the shipped Grafana dashboard see them (real Envoy, real agent).

Right after start-up, with no traffic change: the served weights are there, counters with known labels are at 0,
the process metrics are there, and every metric name a dashboard query reads is exported.
"""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.wait import async_wait_until
from tests.integration.agent_stack import MODEL, AgentStack
from tests.unit.dashboard_queries import exposed_names, metric_names, queries


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory):
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory)
    s.start_upstreams()
    return s


async def scrape(stack: AgentStack) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.http_url}/metrics") as response:
        assert response.status == 200
        return await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_after_start_up_serve_the_dashboard(stack: AgentStack) -> None:
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()

    def served(text: str, version: str) -> float | None:
        return samples(text).get(
            ("rollback_agent_route_weight", frozenset({"model": MODEL, "version": version, "state": "served"}.items()))
        )

    async def served_present() -> str | None:
        text = await scrape(stack)
        return text if served(text, "v1") is not None else None

    # /readyz said every Envoy ACKed the start-up route: the served split is exported without any change.
    text = await async_wait_until(served_present, 5, what="served route weight on /metrics")
    assert (served(text, "v1"), served(text, "v2")) == (100, 0)
    values = samples(text)
    recovered = {"model": MODEL, "cause": "rule", "outcome": "recovered"}
    assert values[("rollback_agent_rollbacks_total", frozenset(recovered.items()))] == 0
    nacks = {"type": "RouteConfiguration"}
    assert values[("rollback_agent_xds_nacks_total", frozenset(nacks.items()))] == 0
    assert values[("process_resident_memory_bytes", frozenset())] > 0

    exported = exposed_names(text)
    missing = {name: where for where, expr in queries() for name in metric_names(expr) if name not in exported}
    assert not missing, f"dashboard queries read metrics the running agent does not export: {missing}"
