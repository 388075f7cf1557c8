"""bench/failover: traffic switches under steady load through a real Envoy, the real agent and two model servers.

For each switch the bench records the moment it sends the control API call (the decision; the agent receives it
about 0.2-0.5 ms later on the loopback, so the figures below are conservative), the agent's own decision -> ACK
time (returned by the API: from the request entering the agent to the last Envoy ACK), and "all traffic": the
send time of the first request after which every request was answered by the target version.

The last line printed is one JSON object; it is also written to bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.agent import start_agent, wait_http_ready  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import TrafficGenerator  # noqa: E402
from harness.measure import percentile, rss_mb, write_result  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import PORT_NAMES, agent_config, sidecar_ports  # noqa: E402
from refserver.client import sample_request  # noqa: E402

TOKEN = "bench-token"
MODEL = "cancer"


async def histogram_mean(session: aiohttp.ClientSession, url: str, name: str, label: str) -> tuple[float, float]:
    async with session.get(url) as response:
        text = await response.text()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum{{") and label in line:
            total = float(line.rsplit(" ", 1)[1])
        if line.startswith(f"{name}_count{{") and label in line:
            count = float(line.rsplit(" ", 1)[1])
    return total, count


async def run(switches: int, rate: float, settle_s: float, work: Path) -> dict[str, object]:
    bodies = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]
    with ExitStack() as stack:
        logs = work / "logs"
        logs.mkdir()
        v1 = stack.enter_context(RefServer(MODEL, "v1", None, logs).start(30))
        v2 = stack.enter_context(RefServer(MODEL, "v2", None, logs).start(30))
        ports = sidecar_ports()
        listener, admin, xds, http, control = (ports[n] for n in PORT_NAMES)
        config = agent_config(
            model=MODEL,
            upstreams={"v1": v1.port, "v2": v2.port},
            ports=ports,
            state_dir=work / "state",
            stable="v1",
            candidate="v2",
        )
        (work / "agent.yaml").write_text(yaml.safe_dump(config))
        agent = stack.enter_context(start_agent(work / "agent.yaml", logs, {"ROLLBACK_AGENT_TOKEN": TOKEN}))
        wait_http_ready(f"http://127.0.0.1:{http}/healthz", 20, process=agent)
        envoy = EnvoyProcess(
            agent_bootstrap(
                xds_port=xds, node_id="bench-envoy", xds_host="127.0.0.1", admin_port=admin, admin_host="127.0.0.1"
            ),
            work_dir=work / "envoy",
            log_dir=logs,
        )
        stack.enter_context(envoy.start(15))
        wait_http_ready(f"http://127.0.0.1:{http}/readyz", 20, process=agent)

        metrics_url = f"http://127.0.0.1:{http}/metrics"
        decision_to_ack: list[float] = []
        decision_to_all: list[float] = []
        incomplete = 0
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            push_sum0, push_n0 = await histogram_mean(
                session, metrics_url, "rollback_agent_xds_push_to_ack_seconds", 'type="RouteConfiguration"'
            )
            generator = TrafficGenerator(
                f"http://127.0.0.1:{listener}/v2/models/{MODEL}/infer",
                lambda i: bodies[i % len(bodies)],
                rate_per_s=rate,
                concurrency=16,
            )
            async with generator:
                await generator.wait_for_responses(int(rate), timeout_s=20)
                decisions: list[tuple[float, str]] = []
                for i in range(switches):
                    target = "v2" if i % 2 == 0 else "v1"
                    body = {"weights": [{"version": target, "weight": 100}], "reason": f"bench switch {i}"}
                    sent = time.monotonic()
                    async with session.post(f"http://127.0.0.1:{control}/v1/traffic", json=body) as response:
                        payload = await response.json()
                    if response.status != 200:
                        raise SystemExit(f"switch {i} failed: {payload}")
                    decision_to_ack.append(float(payload["decision_to_ack_ms"]))
                    decisions.append((sent, target))
                    await asyncio.sleep(settle_s)
                await generator.wait_for_responses(generator.sent, timeout_s=10)
            results = generator.results
            push_sum1, push_n1 = await histogram_mean(
                session, metrics_url, "rollback_agent_xds_push_to_ack_seconds", 'type="RouteConfiguration"'
            )
        for (sent, target), nxt in zip(decisions, [*decisions[1:], (float("inf"), "")], strict=True):
            first = results.first_time_all_from(target, sent, until=None if nxt[0] == float("inf") else nxt[0])
            if first is None:
                incomplete += 1
                continue
            decision_to_all.append((first - sent) * 1000.0)
        agent_rss = rss_mb(agent.pid) if agent.pid else float("nan")
        push_to_ack_ms = (push_sum1 - push_sum0) / max(push_n1 - push_n0, 1) * 1000.0
        return {
            "bench": "failover",
            "switches": switches,
            "rate_per_s": rate,
            "decision_to_ack_ms_p50": round(percentile(decision_to_ack, 0.5), 2),
            "decision_to_ack_ms_p99": round(percentile(decision_to_ack, 0.99), 2),
            "decision_to_all_traffic_ms_p50": round(percentile(decision_to_all, 0.5), 2),
            "decision_to_all_traffic_ms_p99": round(percentile(decision_to_all, 0.99), 2),
            "switches_not_completed": incomplete,
            "push_to_ack_ms_mean": round(push_to_ack_ms, 2),
            "agent_side_ms_mean": round(statistics.fmean(decision_to_ack) - push_to_ack_ms, 2),
            "requests": len(results),
            "failed_requests": len(results.failed()),
            "agent_rss_mb": round(agent_rss, 1),
            "targets": {
                "decision_to_ack_ms_p99": 20,
                "decision_to_all_traffic_ms_p99": 25,
                "failed_requests": 0,
                "agent_rss_mb": 60,
            },
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--switches", type=int, default=60)
    parser.add_argument("--rate", type=float, default=400.0, help="requests per second (open loop)")
    parser.add_argument("--settle-s", type=float, default=0.25, help="pause after each switch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        result = asyncio.run(run(args.switches, args.rate, args.settle_s, Path(tmp)))
    write_result("failover", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
