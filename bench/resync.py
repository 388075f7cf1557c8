"""bench/resync: how long Envoy takes to re-sync with the agent after an agent outage, under steady load.

One real Envoy, the real agent and two model servers. Each cycle stops the agent (SIGTERM), keeps it down for
`--outage-s`, starts it again and measures "re-sync": from the moment the agent's xDS port accepts connections to
the agent's /readyz answering 200 (Envoy reconnected and ACKed the current config). Traffic runs through Envoy the
whole time; `failed_requests` counts requests that failed during outages and re-syncs (Envoy keeps serving its
last routes, so it should be 0).

`--envoy-default-backoff` removes the bootstrap's ADS retry policy, to compare with Envoy's own default backoff
(500 ms doubling up to 30 s).

The last line printed is one JSON object; it is also written to bench/results/resync.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.agent import start_agent, wait_http_ready  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import TrafficGenerator  # noqa: E402
from harness.measure import percentile, write_result  # noqa: E402
from harness.process import ManagedProcess  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import agent_config, sidecar_ports  # noqa: E402
from harness.wait import NotYet, http_status, wait_until  # noqa: E402
from refserver.client import sample_request  # noqa: E402

TOKEN = "bench-token"
MODEL = "cancer"


def first_accept(port: int, found: list[float], stop: threading.Event) -> None:
    """Append the monotonic time at which 127.0.0.1:`port` first accepts a TCP connection."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.05):
                found.append(time.monotonic())
                return
        except OSError:
            time.sleep(0.002)


def ready_at(url: str, timeout_s: float) -> float:
    def probe() -> float | NotYet:
        status = http_status(url, timeout_s=0.2)
        return time.monotonic() if status == 200 else NotYet(status)

    return wait_until(probe, timeout_s, interval_s=0.005, what=f"{url} 200")


def restart_and_time_resync(
    config: Path, logs: Path, ports: dict[str, int], stack: ExitStack
) -> tuple[ManagedProcess, float]:
    """Start the agent; returns it and the seconds from its xDS port accepting connections to /readyz 200."""
    listening: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(target=first_accept, args=(ports["xds"], listening, stop), daemon=True)
    watcher.start()
    try:
        agent = stack.enter_context(start_agent(config, logs, {"ROLLBACK_AGENT_TOKEN": TOKEN}))
        ready = ready_at(f"http://127.0.0.1:{ports['http']}/readyz", 120.0)
    finally:
        stop.set()
        watcher.join(5)
    agent.check_alive()
    if not listening:
        raise SystemExit("the agent never accepted a connection on its xDS port")
    return agent, ready - listening[0]


async def run(outage_s: float, cycles: int, rate: float, default_backoff: bool, work: Path) -> dict[str, Any]:
    bodies = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]
    with ExitStack() as stack:
        logs = work / "logs"
        logs.mkdir()
        v1 = stack.enter_context(RefServer(MODEL, "v1", None, logs).start(30))
        v2 = stack.enter_context(RefServer(MODEL, "v2", None, logs).start(30))
        ports = sidecar_ports()
        config = agent_config(
            model=MODEL,
            upstreams={"v1": v1.port, "v2": v2.port},
            ports=ports,
            state_dir=work / "state",
            stable="v1",
            candidate="v2",
        )
        config_path = work / "agent.yaml"
        config_path.write_text(yaml.safe_dump(config))
        agent = stack.enter_context(start_agent(config_path, logs, {"ROLLBACK_AGENT_TOKEN": TOKEN}))
        wait_http_ready(f"http://127.0.0.1:{ports['http']}/healthz", 20, process=agent)
        bootstrap = agent_bootstrap(
            xds_port=ports["xds"], node_id="bench-envoy", admin_port=ports["admin"], admin_host="127.0.0.1"
        )
        if default_backoff:
            del bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"]
        envoy = EnvoyProcess(bootstrap, work_dir=work / "envoy", log_dir=logs)
        stack.enter_context(envoy.start(15))
        wait_http_ready(f"http://127.0.0.1:{ports['http']}/readyz", 20, process=agent)

        resync_s: list[float] = []
        generator = TrafficGenerator(
            f"http://127.0.0.1:{ports['listener']}/v2/models/{MODEL}/infer",
            lambda i: bodies[i % len(bodies)],
            rate_per_s=rate,
            concurrency=8,
        )
        async with generator:
            await generator.wait_for_responses(int(rate), timeout_s=20)
            for i in range(cycles):
                agent.stop()
                print(f"cycle {i + 1}/{cycles}: agent down for {outage_s:g} s", file=sys.stderr, flush=True)
                await asyncio.sleep(outage_s)
                agent, took = await asyncio.to_thread(restart_and_time_resync, config_path, logs, ports, stack)
                resync_s.append(took)
                print(f"cycle {i + 1}/{cycles}: re-synced in {took:.3f} s", file=sys.stderr, flush=True)
            await generator.wait_for_responses(generator.sent, timeout_s=10)
        results = generator.results
    return {
        "bench": "resync",
        "outage_s": outage_s,
        "cycles": cycles,
        "ads_backoff": "envoy default (0.5 s .. 30 s)" if default_backoff else "bootstrap default (0.1 s .. 1 s)",
        "resync_s": [round(s, 3) for s in resync_s],
        "resync_s_p50": round(percentile(resync_s, 0.5), 3),
        "resync_s_max": round(max(resync_s), 3),
        "rate_per_s": rate,
        "requests": len(results),
        "failed_requests": len(results.failed()),
        "targets": {"resync_s_max": 1.5, "failed_requests": 0},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage-s", type=float, default=60.0, help="how long the agent stays down per cycle")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second through Envoy (open loop)")
    parser.add_argument("--envoy-default-backoff", action="store_true", help="drop the bootstrap's ADS retry policy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-resync-") as tmp:
        result = asyncio.run(run(args.outage_s, args.cycles, args.rate, args.envoy_default_backoff, Path(tmp)))
    write_result("resync", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
