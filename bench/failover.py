"""bench/failover: traffic switches under steady load through a real Envoy, the real agent and two model servers.

For each switch the bench records the moment it sends the control API call (the decision; the agent receives it
about 0.2-0.5 ms later on the loopback, so the figures below are conservative), the agent's own decision -> ACK
time (returned by the API: from the request entering the agent to the last Envoy ACK), and "all traffic": the
send time of the first request after which every request was answered by the target version.

The floor (`floor_*` keys; `--floor-switches 0` skips it): in the same run, right after the agent's phase, the agent
stops and bench/floor.py, a bare grpc.aio ADS server with no agent logic, takes over its xDS port and serves the same
Envoy the resources the agent served (from the Envoy's config dump); under the same load it pushes the same route
changes and waits for each ACK. `*_ratio_p50` / `*_ratio_p99` = agent / floor: the agent's overhead, less
sensitive to a noisy machine than the absolute times.

Agent memory, at the end of the agent's phase, from /proc/PID/smaps_rollup: `agent_anon_mb` (Anonymous: heap,
Python objects, arenas: what the agent itself allocates), `agent_file_mb` (Rss - Anonymous: resident pages of
mapped files, i.e. the interpreter, extension modules and shared libraries), `agent_shared_mb` (Shared_Clean +
Shared_Dirty: pages also mapped by another process right now), `agent_pss_mb`.

The last line printed is one JSON object; it is also written to bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
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
from harness.load import Results, TrafficGenerator  # noqa: E402
from harness.measure import percentile, rss_mb, write_result  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import PORT_NAMES, agent_config, sidecar_ports  # noqa: E402
from refserver.client import sample_request  # noqa: E402

TOKEN = "bench-token"
MODEL = "cancer"
FLOOR = Path(__file__).resolve().parent / "floor.py"
MIB = 1024.0


def smaps_rollup_mb(pid: int | None) -> dict[str, float]:
    """/proc/PID/smaps_rollup in MiB (Rss, Pss, Shared_Clean, Anonymous, ...); empty when the process is gone."""
    fields: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (OSError, TypeError):
        return fields
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name.strip()] = int(parts[0]) / MIB
    return fields


def memory_keys(pid: int | None) -> dict[str, float]:
    rollup = smaps_rollup_mb(pid)
    if not rollup:
        return {}
    return {
        "agent_anon_mb": round(rollup["Anonymous"], 1),
        "agent_file_mb": round(rollup["Rss"] - rollup["Anonymous"], 1),
        "agent_shared_mb": round(rollup.get("Shared_Clean", 0.0) + rollup.get("Shared_Dirty", 0.0), 1),
        "agent_pss_mb": round(rollup["Pss"], 1),
    }


class FloorServer:
    """bench/floor.py as a child process: the bare ADS server on the agent's xDS port."""

    def __init__(self, port: int, dump: Path, log: Path) -> None:
        self.argv = [sys.executable, str(FLOOR), "--port", str(port), "--dump", str(dump)]
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> FloorServer:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def event(self, timeout_s: float) -> dict[str, object]:
        """The next JSON line it prints; NACKs are fatal."""
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise SystemExit(f"bench/floor.py exited: see {self.log}")
        event: dict[str, object] = json.loads(line)
        if event.get("event") in ("nack", "error"):
            raise SystemExit(f"bench/floor.py: {event}")
        return event

    async def wait_for(self, name: str, timeout_s: float) -> None:
        while (await self.event(timeout_s)).get("event") != name:
            pass

    async def switch(self, version: str) -> float:
        """Decision -> ACK (ms) as the floor server measured it."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(f"switch {version}\n".encode())
        await self.process.stdin.drain()
        return float(str((await self.event(10))["decision_to_ack_ms"]))


def decision_to_all_ms(results: Results, decisions: list[tuple[float, str]]) -> tuple[list[float], int]:
    """Per switch, decision -> the first request after which all were answered by the target; and the misses."""
    out: list[float] = []
    incomplete = 0
    for i, ((sent, target), nxt) in enumerate(zip(decisions, [*decisions[1:], (float("inf"), "")], strict=True)):
        first = results.first_time_all_from(target, sent, until=None if nxt[0] == float("inf") else nxt[0])
        if first is None:
            print(f"switch {i} of {len(decisions)} to {target}: not all traffic on it before the next", file=sys.stderr)
            incomplete += 1
            continue
        out.append((first - sent) * 1000.0)
    return out, incomplete


async def dump_served_resources(envoy: EnvoyProcess, path: Path) -> None:
    sections = ("dynamic_active_clusters", "dynamic_listeners", "dynamic_route_configs")
    dumps = {section: await envoy.config_dump_async(section) for section in sections}
    await asyncio.to_thread(path.write_text, json.dumps(dumps))


async def run_floor(
    envoy: EnvoyProcess,
    xds_port: int,
    work: Path,
    generator: TrafficGenerator,
    switches: int,
    settle_s: float,
    first_target: str,
) -> dict[str, object]:
    """The same route changes, under the same load, through the same Envoy, pushed by bench/floor.py."""
    dump = work / "served-resources.json"
    await dump_served_resources(envoy, dump)
    async with FloorServer(xds_port, dump, work / "logs" / "floor.log") as floor:
        await floor.wait_for("listening", 15)
        await floor.wait_for("synced", 15)  # Envoy reconnected (its ADS backoff) and ACKed the route
        ack_ms: list[float] = []
        decisions: list[tuple[float, str]] = []
        async with generator:
            await generator.wait_for_responses(int(generator.rate_per_s or 100), timeout_s=20)
            other = {"v1": "v2", "v2": "v1"}
            target = first_target
            for _ in range(switches):
                sent = time.monotonic()
                ack_ms.append(await floor.switch(target))
                decisions.append((sent, target))
                target = other[target]
                await asyncio.sleep(settle_s)
            await generator.wait_for_responses(generator.sent, timeout_s=10)
        results = generator.results
    all_ms, incomplete = decision_to_all_ms(results, decisions)
    return {
        "floor_switches": switches,
        "floor_decision_to_ack_ms_p50": round(percentile(ack_ms, 0.5), 2),
        "floor_decision_to_ack_ms_p99": round(percentile(ack_ms, 0.99), 2),
        "floor_decision_to_all_traffic_ms_p50": round(percentile(all_ms, 0.5), 2),
        "floor_decision_to_all_traffic_ms_p99": round(percentile(all_ms, 0.99), 2),
        "floor_switches_not_completed": incomplete,
        "floor_requests": len(results),
        "floor_failed_requests": len(results.failed()),
    }


def ratio(agent: object, floor: object) -> float | None:
    if not isinstance(agent, float) or not isinstance(floor, float) or not floor > 0 or math.isnan(agent):
        return None
    return round(agent / floor, 2)


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


async def run(switches: int, rate: float, settle_s: float, floor_switches: int, work: Path) -> dict[str, object]:
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
        decision_to_all, incomplete = decision_to_all_ms(results, decisions)
        agent_rss = rss_mb(agent.pid) if agent.pid else float("nan")
        agent_memory = memory_keys(agent.pid)
        push_to_ack_ms = (push_sum1 - push_sum0) / max(push_n1 - push_n0, 1) * 1000.0
        floor: dict[str, object] = {}
        if floor_switches > 0:
            await asyncio.to_thread(agent.stop)
            floor_generator = TrafficGenerator(
                f"http://127.0.0.1:{listener}/v2/models/{MODEL}/infer",
                lambda i: bodies[i % len(bodies)],
                rate_per_s=rate,
                concurrency=16,
            )
            last_target = decisions[-1][1] if decisions else "v1"
            first_target = "v1" if last_target == "v2" else "v2"
            floor = await run_floor(envoy, xds, work, floor_generator, floor_switches, settle_s, first_target)
        result: dict[str, object] = {
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
            **agent_memory,
            "targets": {
                "decision_to_ack_ms_p99": 20,
                "decision_to_all_traffic_ms_p99": 25,
                "failed_requests": 0,
                "agent_rss_mb": 60,
            },
        }
        if floor:
            result.update(floor)
            for figure in ("decision_to_ack", "decision_to_all_traffic"):
                for q in ("p50", "p99"):
                    agent_ms, floor_ms = result[f"{figure}_ms_{q}"], floor[f"floor_{figure}_ms_{q}"]
                    result[f"{figure}_ratio_{q}"] = ratio(agent_ms, floor_ms)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--switches", type=int, default=60)
    parser.add_argument("--rate", type=float, default=400.0, help="requests per second (open loop)")
    parser.add_argument("--settle-s", type=float, default=0.25, help="pause after each switch")
    parser.add_argument(
        "--floor-switches", type=int, default=None, help="switches of the bare-ADS floor (default: --switches; 0: skip)"
    )
    args = parser.parse_args()
    floor_switches = args.switches if args.floor_switches is None else args.floor_switches
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        result = asyncio.run(run(args.switches, args.rate, args.settle_s, floor_switches, Path(tmp)))
    write_result("failover", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
