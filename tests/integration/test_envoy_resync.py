"""Envoy re-syncs within about a second of the agent listening again, however long the agent was down.

Envoy's default ADS reconnect backoff grows to 30 s, so after a long outage a sidecar kept its old routes for
many seconds after the agent was back; the rendered bootstrap caps the backoff at 1 s (agent/envoy_bootstrap.py).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from agent.envoy_bootstrap import render_bootstrap
from harness.envoy import envoy_binary
from harness.load import TrafficGenerator
from harness.wait import NotYet, http_status, wait_until
from tests.integration.agent_stack import AgentStack, body_factory

OUTAGE_S = 20.0  # long enough for Envoy's default backoff (500 ms doubling to 30 s) to wait ~8 s on average
RESYNC_LIMIT_S = 1.5


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory):
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory)
    s.start_upstreams()
    return s


def _validate(bootstrap: dict[str, object], path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump(bootstrap))
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
    )


def test_rendered_bootstrap_passes_envoy_validation_with_the_ads_backoff(tmp_path: Path) -> None:
    common = {"node_id": "pod-1", "node_cluster": "credit", "xds_host": "127.0.0.1", "xds_port": 18000}
    default = render_bootstrap(**common)
    backoff = default["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"]
    assert backoff == {"retry_back_off": {"base_interval": "0.100s", "max_interval": "1.000s"}}
    result = _validate(default, tmp_path / "default.yaml")
    assert result.returncode == 0, result.stderr[-2000:]

    tuned = render_bootstrap(**common, ads_retry_base_s=0.25, ads_retry_max_s=4)
    result = _validate(tuned, tmp_path / "tuned.yaml")
    assert result.returncode == 0, result.stderr[-2000:]

    for base, cap in ((0.0, 1.0), (2.0, 1.0), (0.0005, 1.0), (0.1, float("inf")), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="ads_retry_base_s"):
            render_bootstrap(**common, ads_retry_base_s=base, ads_retry_max_s=cap)


def _first_accept(port: int, found: list[float], stop: threading.Event) -> None:
    """Append the monotonic time at which 127.0.0.1:`port` first accepts a TCP connection."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.05):
                found.append(time.monotonic())
                return
        except OSError:
            time.sleep(0.002)


def _ready_at(url: str, timeout_s: float) -> float:
    def probe() -> float | NotYet:
        status = http_status(url, timeout_s=0.2)
        return time.monotonic() if status == 200 else NotYet(status)

    return wait_until(probe, timeout_s, interval_s=0.005, what=f"{url} 200")


async def test_envoy_resyncs_within_a_second_after_a_long_agent_outage(stack: AgentStack) -> None:
    stack.start_agent()
    envoy = stack.start_envoy()
    await stack.wait_ready_async()
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=50, concurrency=4) as generator:
        await generator.wait_for_responses(20, timeout_s=10)
        assert stack.agent is not None
        stack.agent.stop()
        fails_before = envoy.cluster_stat("rollback_agent_xds", "upstream_cx_connect_fail", default=0)
        await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for readiness
        # Envoy kept trying all along: with the backoff capped at 1 s it tries about twice a second (the default
        # backoff would have made ~6 attempts in 20 s).
        attempts = envoy.cluster_stat("rollback_agent_xds", "upstream_cx_connect_fail", default=0) - fails_before
        assert attempts >= OUTAGE_S / 2, f"only {attempts} reconnect attempts during a {OUTAGE_S:.0f} s outage"

        listening: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_first_accept, args=(stack.ports["xds"], listening, stop), daemon=True)
        watcher.start()
        try:
            await asyncio.to_thread(stack.start_agent)
            ready = await asyncio.to_thread(_ready_at, f"{stack.http_url}/readyz", 15.0)
        finally:
            stop.set()
            watcher.join(5)
        assert listening, "the agent never accepted a connection on its xDS port"
        resync_s = ready - listening[0]
        assert 0 <= resync_s < RESYNC_LIMIT_S, f"Envoy re-synced {resync_s:.2f} s after the agent listened again"
        await generator.wait_for_responses(generator.sent + 20, timeout_s=10)
    # Envoy served its last routes through the whole outage and the re-sync.
    assert generator.results.failed() == [], generator.results.failed()[:5]
