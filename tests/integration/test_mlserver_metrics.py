"""Model metrics from a real MLServer: read from its metrics port through its server profile, and a misconfigured
metrics location is a failed read the rules name, never "0 errors".

Two MLServer 1.7.1 processes (harness/mlserver.py), one per version; the agent reads v2 through the mlserver
profile (metrics port) and v1 as the reference server would be read (the inference port's /metrics, a 404 there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agent.adapters.signals.model_metrics_source import MetricsTarget, ModelMetricsSource
from agent.domain.server_profiles import PROFILES
from agent.domain.signals import Signal
from harness.binaries import MissingBinaryError
from harness.mlserver import MLServerModel, MLServerProcess, mlserver_binary
from harness.sidecar import agent_config, sidecar_ports
from harness.wait import NotYet, async_wait_until
from refserver.client import sample_request
from tests.integration.conftest import unavailable

MODEL = "cancer"
TOKEN = "integration-token"
REQUESTS = 60


@pytest.fixture
def mlserver_factory(tmp_path: Path, tmp_logs: Path) -> Iterator[Callable[..., MLServerProcess]]:
    try:
        mlserver_binary()
    except MissingBinaryError as err:
        unavailable(str(err))
    servers: list[MLServerProcess] = []

    def make(models: list[MLServerModel]) -> MLServerProcess:
        server = MLServerProcess(models, log_dir=tmp_logs, work_dir=tmp_path / f"mlserver{len(servers)}")
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.stop()


def send(server: MLServerProcess, n: int) -> int:
    """n inferences; returns how many failed (any status but 200)."""
    return sum(server.infer(MODEL, sample_request(1, seed=i)).status != 200 for i in range(n))


async def test_the_source_reads_mlservers_metrics_port_and_a_404_is_a_failed_read(mlserver_factory) -> None:
    server = mlserver_factory([MLServerModel(MODEL, faults={"errors": 0.5})])
    failed = send(server, REQUESTS)
    assert 0 < failed < REQUESTS
    mlserver = MetricsTarget(server.metrics_url, PROFILES["mlserver"].names, "mlserver", MODEL)
    old_default = MetricsTarget(f"{server.url}/metrics")  # what the agent read before profiles: the inference port
    async with aiohttp.ClientSession() as session:
        source = ModelMetricsSource(session, {"v2": mlserver, "v1": old_default}, 2.0)
        samples = await source.sample(1.0)
    assert samples["v2"].counters[Signal.MODEL_REQUESTS] == REQUESTS
    assert samples["v2"].counters[Signal.MODEL_ERRORS] == failed  # MLServer's 400s are model failures
    assert samples["v2"].gauges[Signal.MODEL_MEMORY_BYTES] > 0
    assert "model." not in samples["v2"].unavailable
    assert samples["v1"].unavailable["model."] == f"metrics read failed: HTTP 404 from {server.url}/metrics"
    assert not any(name.startswith("model.") for name in samples["v1"].counters)


async def test_the_agent_judges_model_failures_from_the_metrics_port_and_names_a_failed_read(
    tmp_path, mlserver_factory, agent_factory
) -> None:
    stable = mlserver_factory([MLServerModel(MODEL)])
    candidate = mlserver_factory([MLServerModel(MODEL, faults={"errors": 0.5})])
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "model": MODEL,
                "tier": "critical",
                "rules": [
                    {
                        "name": "model-errors",
                        "kind": "error_rate",
                        "source": "model",
                        "versions": "all",
                        "action": "alert",
                        "window": "60s",
                        "max_rate": 0.95,
                        "min_evidence": {"requests": 10, "coverage": 0.05},
                    }
                ],
            }
        )
    )
    ports = sidecar_ports()
    config: dict[str, Any] = agent_config(
        model=MODEL,
        upstreams={"v1": stable.port, "v2": candidate.port},
        ports=ports,
        state_dir=tmp_path / "state",
        stable="v1",
        candidate="v2",
        initial_weights={"v1": 50, "v2": 50},
        rules={"file": str(rules)},
        ack_timeout_s=5,
    )
    config["versions"][1]["server"] = {"profile": "mlserver", "metrics_port": candidate.metrics_port}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    agent_factory(path, env={"ROLLBACK_AGENT_TOKEN": TOKEN})
    control = f"http://127.0.0.1:{ports['control']}"
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async with aiohttp.ClientSession(headers=headers) as session:

        async def rule(version: str) -> dict[str, Any] | None:
            try:
                async with session.get(f"{control}/v1/status") as response:
                    body = await response.json()
            except aiohttp.ClientError:
                return None
            return next((r for r in body.get("rules", []) if r["version"] == version), None)

        await async_wait_until(lambda: rule("v2"), 20, what="the agent judging v2")
        failed = send(candidate, REQUESTS)
        send(stable, 5)

        async def judged() -> dict[str, Any] | None:
            status = await rule("v2")
            return status if status and status["evidence"] >= REQUESTS else NotYet(status)

        v2 = await async_wait_until(judged, 20, what="v2's model failures counted from MLServer's metrics port")
        assert v2["value"] == pytest.approx(failed / REQUESTS)
        v1 = await rule("v1")
        assert v1 is not None
        assert v1["state"] == "insufficient_evidence"
        assert v1["reason"] == f"insufficient evidence: metrics read failed: HTTP 404 from {stable.url}/metrics"
        async with session.get(f"http://127.0.0.1:{ports['http']}/metrics") as response:
            exported = await response.text()
    read_errors = {
        (s.labels["version"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(exported)
        for s in family.samples
        if s.name == "rollback_agent_model_metrics_read_errors_total"
    }
    assert read_errors[("v1", "http_status")] >= 1
    assert ("v2", "http_status") not in read_errors
