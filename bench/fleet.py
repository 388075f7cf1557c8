"""bench/fleet: one fleet alert, N sidecars (agent + Envoy each) on this machine, one real Alertmanager.

For each size N (default 10, 25, 50): N agents, each with its own Envoy (own ports, own state dir), all routing to
the same two reference model servers (v1 stable, v2 candidate) and pulling GET /api/v2/alerts from one Alertmanager
(no webhook: the pull is the only path, as for every replica a webhook did not reach). The sidecars start in
parallel batches. Then, per poll interval (the agent's default 2 s, then 0.5 s; the agents restart with the new
interval and a fresh Alertmanager, the Envoys keep running and re-sync):

1. every agent is re-armed to v1=50 v2=50 (operator set-weights with `force`: after a run v2 is `failed`, and the
   override is recorded) and every Envoy shows that route;
2. one fleet alert (ModelVersionHighErrorRate, model=<model>, version=v2, action=rollback) is POSTed to
   Alertmanager's API v2; the clock starts just before the POST;
3. `alert_to_all_stable_s`: until EVERY Envoy's active route (admin /config_dump?resource=dynamic_route_configs,
   polled every 50 ms, only the Envoys not yet switched) sends all traffic to v1, i.e. what the Envoy itself
   serves; then requests through each Envoy's listener (GET /v2/health/ready, answered by the model server and
   tagged x-model-version by the route) must all be answered by v1 (`verified_by_requests`).

Settings: the agents' defaults, except that the signals only rules use are off (no rule file here; the health
probes, which the rollback's target check uses, stay on): co-located, N agents sampling the two shared model servers
and their Envoys' stats every second saturate the model servers: the target's live health check before the switch
then times out and those agents rightly escalate instead of rolling back (18 of 50 at N=50 with all signals on).

Memory: before each N, MemAvailable must cover N x (agent + Envoy) with a margin, else the bench stops there with a
note. Startup: `startup_s` is the wall time until all N agents are ready (every Envoy ACKed); `restart_s` the same
for the restart with the next interval (batch by batch; it includes each Envoy's xDS reconnect backoff). The
machine has 2 cores shared by all N sidecars (and whatever else runs): large N measures contention as much as the
agent; `loadavg_1m` is recorded with each run.

The last line printed is one JSON object; it is also written to bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.agent import start_agent  # noqa: E402
from harness.alertmanager import AlertmanagerProcess, make_alert, webhook_config  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.measure import percentile, rss_mb, write_result  # noqa: E402
from harness.ports import free_ports  # noqa: E402
from harness.process import ManagedProcess  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import agent_config  # noqa: E402
from harness.wait import NotYet, async_wait_until  # noqa: E402

TOKEN = "bench-fleet-token"
MODEL = "cancer"
ALERTNAME = "ModelVersionHighErrorRate"
DEFAULT_POLL_INTERVAL_S = 2.0  # agent/alerts/config.py AlertmanagerSection.poll_interval_s
PAIR_MB = 170.0  # agent (~80 MB RSS) + Envoy (~70 MB) + margin
RESERVE_MB = 1024.0
VERIFY_REQUESTS = 10


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def serving(route_dump: dict[str, Any]) -> dict[str, int]:
    """{cluster: weight} of the weighted route in Envoy's dynamic route config dump (weights > 0 only)."""
    for config in route_dump.get("configs", []):
        for vhost in config.get("route_config", {}).get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                clusters = route.get("route", {}).get("weighted_clusters", {}).get("clusters", [])
                if clusters:
                    return {c["name"]: int(c.get("weight", 0)) for c in clusters if int(c.get("weight", 0)) > 0}
                if "cluster" in route.get("route", {}):
                    return {route["route"]["cluster"]: 1}
    return {}


@dataclass
class Sidecar:
    index: int
    work: Path
    listener: int
    admin: int
    xds: int
    http: int
    control: int
    agent: ManagedProcess | None = None
    envoy: EnvoyProcess | None = None
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config_path = self.work / "agent.yaml"

    def cluster(self, version: str) -> str:
        return f"{MODEL}__{version}"

    def write_config(self, upstreams: dict[str, int], am_url: str, poll_interval_s: float) -> None:
        pull: dict[str, Any] = {"urls": [am_url]}
        if poll_interval_s != DEFAULT_POLL_INTERVAL_S:
            pull["poll_interval_s"] = poll_interval_s
        ports = {"listener": self.listener, "admin": self.admin, "xds": self.xds, "http": self.http}
        config = agent_config(
            model=MODEL,
            upstreams=upstreams,
            ports={**ports, "control": self.control},
            state_dir=self.work / "state",
            stable="v1",
            candidate="v2",
            # No rule file: the alert is the only trigger, so the rule signals are off. N agents sampling two
            # shared model servers and their Envoys' stats every second would saturate them (in a pod, an agent
            # samples only its own), and the target's live health check before the switch would time out.
            signals={"envoy_stats": False, "model_metrics": False},
            alerts={
                "routes": [{"match": {"alertname": {"regex": "ModelVersion.*"}}, "action": "from_label"}],
                "alertmanager": pull,
            },
        )
        self.config_path.write_text(yaml.safe_dump(config))


class Fleet:
    def __init__(self, n: int, work: Path, upstreams: dict[str, int], pool: ThreadPoolExecutor) -> None:
        self.work = work
        self.upstreams = upstreams
        self.pool = pool
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        ports = free_ports(5 * n)
        self.sidecars = []
        for i in range(n):
            directory = work / f"sidecar-{i:02d}"
            directory.mkdir(parents=True, exist_ok=True)
            self.sidecars.append(Sidecar(i, directory, *ports[5 * i : 5 * i + 5]))
        self.am: AlertmanagerProcess | None = None
        self.session: aiohttp.ClientSession | None = None

    async def _in_threads(self, fn: Callable[[Sidecar], Any], sidecars: Sequence[Sidecar]) -> list[Any]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self.pool, fn, s) for s in sidecars)))

    def http(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32), timeout=aiohttp.ClientTimeout(total=10)
            )
        return self.session

    async def start_alertmanager(self, name: str) -> str:
        if self.am is not None:
            await asyncio.to_thread(self.am.stop)
        self.am = AlertmanagerProcess(self.work, config=webhook_config(None), log_dir=self.logs, name=name)
        await asyncio.to_thread(self.am.start, 15)
        return self.am.url

    async def _agent_up(self, sidecar: Sidecar, path: str, timeout_s: float) -> None:
        url = f"http://127.0.0.1:{sidecar.http}{path}"

        async def up() -> bool | NotYet:
            assert sidecar.agent is not None
            sidecar.agent.check_alive()
            try:
                async with self.http().get(url) as response:
                    return response.status == 200 or NotYet(response.status)
            except aiohttp.ClientError as exc:
                return NotYet(repr(exc))

        await async_wait_until(up, timeout_s, interval_s=0.1, what=f"sidecar {sidecar.index} {path}")

    async def start(self, am_url: str, poll_interval_s: float, batch: int, with_envoys: bool) -> float:
        """Start the agents, and the Envoys if `with_envoys`, in batches; returns the seconds until every agent is
        ready (every Envoy ACKed its config). Running agents are restarted batch by batch (stopped just before
        their batch starts), so an Envoy's xDS reconnect backoff stays short."""
        started = time.monotonic()
        for k in range(0, len(self.sidecars), batch):
            group = self.sidecars[k : k + batch]
            await self._in_threads(lambda s: s.agent.stop(10) if s.agent else None, group)
            for s in group:
                s.write_config(self.upstreams, am_url, poll_interval_s)
                env = {"ROLLBACK_AGENT_TOKEN": TOKEN}
                s.agent = start_agent(s.config_path, self.logs, env, name=f"agent-{s.index}")
            await asyncio.gather(*(self._agent_up(s, "/healthz", 120) for s in group))
            if with_envoys:
                await self._in_threads(self._start_envoy, group)
            await asyncio.gather(*(self._agent_up(s, "/readyz", 120) for s in group))
        return time.monotonic() - started

    def _start_envoy(self, s: Sidecar) -> None:
        bootstrap = agent_bootstrap(
            xds_port=s.xds, node_id=f"fleet-envoy-{s.index}", node_cluster=MODEL, admin_port=s.admin
        )
        s.envoy = EnvoyProcess(bootstrap, work_dir=s.work / "envoy", log_dir=self.logs, name=f"envoy-{s.index}")
        s.envoy.start(60)

    async def stop_agents(self) -> None:
        await self._in_threads(lambda s: s.agent.stop(10) if s.agent else None, self.sidecars)

    async def stop(self) -> None:
        await self.stop_agents()
        await self._in_threads(lambda s: s.envoy.stop(10) if s.envoy else None, self.sidecars)
        if self.am is not None:
            await asyncio.to_thread(self.am.stop)
        if self.session is not None:
            await self.session.close()

    async def set_weights(self, s: Sidecar, **weights: int) -> None:
        body = {
            "weights": [{"version": v, "weight": w} for v, w in weights.items()],
            "reason": "bench re-arm",
            "force": True,  # after a run v2 is rolled back (failed): re-admitting it is an operator's recorded override
        }
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with self.http().post(f"http://127.0.0.1:{s.control}/v1/traffic", json=body, headers=headers) as r:
            if r.status != 200:
                raise SystemExit(f"sidecar {s.index}: re-arm failed: {r.status} {await r.text()}")

    async def route(self, s: Sidecar) -> dict[str, int]:
        url = f"http://127.0.0.1:{s.admin}/config_dump?resource=dynamic_route_configs"
        async with self.http().get(url) as response:
            return serving(await response.json(content_type=None))

    async def answered_by(self, s: Sidecar, n: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _ in range(n):
            async with self.http().get(f"http://127.0.0.1:{s.listener}/v2/health/ready") as response:
                await response.read()
                version = response.headers.get("x-model-version", f"status {response.status}")
                counts[version] = counts.get(version, 0) + 1
        return counts

    async def run_alert(self, label: str) -> dict[str, Any]:
        assert self.am is not None
        await asyncio.gather(*(self.set_weights(s, v1=50, v2=50) for s in self.sidecars))
        first = self.sidecars[0]
        split = {first.cluster("v1"): 50, first.cluster("v2"): 50}
        stable = {first.cluster("v1"): 100}

        async def all_split() -> bool | NotYet:
            routes = await asyncio.gather(*(self.route(s) for s in self.sidecars))
            wrong = [i for i, r in enumerate(routes) if r != split]
            return not wrong or NotYet(wrong)

        await async_wait_until(all_split, 30, interval_s=0.1, what="every Envoy on v1=50 v2=50")
        alert = make_alert(
            ALERTNAME,
            {"model": MODEL, "version": "v2", "severity": "critical", "action": "rollback", "run": label},
            {"summary": f"fleet bench {label}: v2 failing"},
            starts_at=dt.datetime.now(dt.UTC),
        )
        posted = time.monotonic()
        await asyncio.to_thread(self.am.post_alerts, [alert])
        stable_after: dict[int, float] = {}

        async def all_stable() -> bool | NotYet:
            pending = [s for s in self.sidecars if s.index not in stable_after]
            routes = await asyncio.gather(*(self.route(s) for s in pending))
            now = time.monotonic()
            for s, r in zip(pending, routes, strict=True):
                if r == stable:
                    stable_after[s.index] = now - posted
            return len(stable_after) == len(self.sidecars) or NotYet([s.index for s in pending])

        await async_wait_until(all_stable, 60, interval_s=0.05, what="every Envoy serving v1 only")
        answers = await asyncio.gather(*(self.answered_by(s, VERIFY_REQUESTS) for s in self.sidecars))
        not_v1 = sum(n for a in answers for v, n in a.items() if v != "v1")
        times = list(stable_after.values())
        return {
            "alert_to_all_stable_s": round(max(times), 3),
            "alert_to_stable_s_p50": round(percentile(times, 0.5), 3),
            "alert_to_first_stable_s": round(min(times), 3),
            "verified_by_requests": not_v1 == 0,
            "requests_not_answered_by_v1": not_v1,
        }

    def rss(self) -> dict[str, float]:
        agents = [rss_mb(s.agent.pid if s.agent else None) for s in self.sidecars]
        envoys = [rss_mb(s.envoy.pid if s.envoy else None) for s in self.sidecars]
        return {
            "agent_rss_mb_mean": round(statistics.fmean(agents), 1),
            "agent_rss_mb_max": round(max(agents), 1),
            "envoy_rss_mb_mean": round(statistics.fmean(envoys), 1),
        }


async def run_size(
    n: int, intervals: Sequence[float], batch: int, work: Path, upstreams: dict[str, int]
) -> dict[str, Any]:
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="fleet") as pool:
        fleet = Fleet(n, work, upstreams, pool)
        result: dict[str, Any] = {"n": n, "runs": []}
        try:
            for k, interval in enumerate(intervals):
                am_url = await fleet.start_alertmanager(f"alertmanager-{k}")
                if k == 0:
                    result["startup_s"] = round(await fleet.start(am_url, interval, batch, with_envoys=True), 2)
                    restart = None
                else:
                    restart = round(await fleet.start(am_url, interval, batch, with_envoys=False), 2)
                run = {"poll_interval_s": interval, **await fleet.run_alert(f"n{n}-i{interval}")}
                if restart is not None:
                    run["restart_s"] = restart
                run.update(fleet.rss())
                run["loadavg_1m"] = round(os.getloadavg()[0], 2)
                result["runs"].append(run)
                print(f"N={n} interval={interval}s: {json.dumps(run)}", file=sys.stderr, flush=True)
        finally:
            await fleet.stop()
    return result


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    intervals = [DEFAULT_POLL_INTERVAL_S, *[i for i in args.intervals if i != DEFAULT_POLL_INTERVAL_S]]
    result: dict[str, Any] = {
        "bench": "fleet",
        "model": MODEL,
        "settings": {
            "poll_intervals_s": intervals,
            "start_batch": args.batch,
            "agent_config": "defaults; pull only (no webhook); signals envoy_stats and model_metrics off (no rules)",
            "stable_check": "Envoy admin config_dump route, every 50 ms; then requests through every listener",
        },
        "sizes": [],
        "notes": [],
    }
    with ExitStack() as stack:
        logs = work / "logs"
        logs.mkdir()
        upstreams = {v: stack.enter_context(RefServer(MODEL, v, None, logs).start(30)).port for v in ("v1", "v2")}
        for n in args.sizes:
            available = mem_available_mb()
            needed = n * PAIR_MB + RESERVE_MB
            if needed > available:
                note = f"N={n} skipped: needs about {needed:.0f} MB, {available:.0f} MB available"
                result["notes"].append(note)
                print(note, file=sys.stderr)
                break
            started = time.monotonic()
            size = await run_size(n, intervals, args.batch, work / f"n{n}", upstreams)
            size["memory_available_mb_before"] = round(available)
            size["wall_s"] = round(time.monotonic() - started, 1)
            result["sizes"].append(size)
    target = next((s for s in result["sizes"] if s["n"] == 50), None)
    default_run = (
        next((r for r in target["runs"] if r["poll_interval_s"] == DEFAULT_POLL_INTERVAL_S), None) if target else None
    )
    result["target"] = {"alert_to_all_stable_s_at_n50_default_interval": 3.0}
    result["met"] = None if default_run is None else default_run["alert_to_all_stable_s"] <= 3.0
    result["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", type=lambda t: [int(x) for x in t.split(",")], default=[10, 25, 50], help="e.g. 10,25,50"
    )
    parser.add_argument(
        "--intervals",
        type=lambda t: [float(x) for x in t.split(",")],
        default=[0.5],
        help="poll intervals besides the default 2 s, e.g. 0.5,1",
    )
    parser.add_argument("--batch", type=int, default=10, help="sidecars started together")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (logs, configs, state)")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(main_async(args, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            result = asyncio.run(main_async(args, Path(tmp)))
    write_result("fleet", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
