"""`make demo`: the sidecar end to end on the embedded defaults, on this machine only (127.0.0.1).

Starts two versions of the reference model server, the agent and a real Envoy, sends steady traffic through Envoy,
and tells the story live: v1 is stable; traffic moves to v2 and back through the agent's CLI, each switch timed.
Then (unless --no-auto) a rollout takes v2 through judged stages: a shadow stage (half the live requests mirrored
to v2, its answers compared with v1's, never shown to a user), then 5 % and 25 %, each advanced on its gates'
evidence; a fault appears in v2 at 25 %, the agent goes back one stage by itself, and the operator aborts (all
traffic to v1, v2 quarantined). It ends with `audit verify` on the whole trail.
Every process it starts is stopped when it ends, whatever happens.

`--server mlserver` (`make demo-mlserver`) tells the same story on real MLServer 1.7.1 (one server per version, from
.venv-mlserver): the fault is then a model error that MLServer answers with HTTP 400, which the shipped rules count
through MLServer's own failure counter (the `mlserver` server profile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.agent import start_agent, wait_http_ready  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import TrafficGenerator  # noqa: E402
from harness.mlserver import MLServerModel, MLServerProcess  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import agent_config, sidecar_ports  # noqa: E402
from refserver.client import sample_request  # noqa: E402

MODEL = "credit-scorer"
TOKEN = "demo-token"
WORK = ROOT / ".demo"


def say(text: str = "") -> None:
    print(text, flush=True)


def cli(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *args, "--config", str(WORK / "agent.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "ROLLBACK_AGENT_TOKEN": TOKEN},
        timeout=60,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


class LiveView:
    """Prints, every interval, which versions answered the requests sent in that interval."""

    def __init__(self, generator: TrafficGenerator, interval_s: float = 0.5) -> None:
        self.generator = generator
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.interval_s)
            snap = self.generator.snapshot()
            counts = snap.counts_by_version(since=start - self.interval_s, until=start)
            failed = len(snap.failed(since=start - self.interval_s, until=start))
            total = sum(counts.values()) or 1
            bar = "  ".join(f"{v}: {100 * c / total:5.1f}%" for v, c in sorted(counts.items(), key=str))
            say(f"    live  {bar}   ({total} req, {failed} failed)")

    def __enter__(self) -> LiveView:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()


async def timed_switch(generator: TrafficGenerator, target: str, args: list[str]) -> None:
    say("    $ rollback-agent " + " ".join(args))
    code, out = await asyncio.to_thread(cli, *args, "--json")
    if code != 0:
        raise SystemExit(f"the CLI failed ({code}): {out}")
    change = json.loads(out)
    if not target:
        weights = " ".join(f"{w['version']}={w['weight']}" for w in change["policy"]["weights"])
        say(f"      traffic split {weights}; Envoy ACKed in {change['decision_to_ack_ms']:.1f} ms")
        return
    weights = " ".join(f"{w['version']}={w['weight']}" for w in change["policy"]["weights"])
    say(f"      traffic moved to {weights}; Envoy ACKed in {change['decision_to_ack_ms']:.1f} ms")
    # The agent stamps the decision with the wall clock; the traffic log uses the monotonic clock.
    decided_wall = datetime.fromisoformat(change["policy"]["changed_at"]).timestamp()
    decided = decided_wall - (time.time() - time.monotonic())
    await asyncio.sleep(0.6)
    first = generator.snapshot().first_time_all_from(target, decided)
    if first is not None:
        say(f"      every request sent {1000 * max(first - decided, 0.0):.1f} ms after the decision went to {target}")


async def rule_state(ports: dict[str, int], rule: str, version: str) -> str:
    code, out = await asyncio.to_thread(cli, "status", "--json")
    status = json.loads(out) if code == 0 else {}
    return next((r["state"] for r in status.get("rules", []) if r["rule"] == rule and r["version"] == version), "")


class Fault:
    """Half of v2's requests fail: a 5xx from the reference server, a model error (HTTP 400) from MLServer."""

    def __init__(self, server: RefServer | MLServerProcess) -> None:
        self.server = server
        self.what = "answered 500" if isinstance(server, RefServer) else "answered 400 (a model error in MLServer)"

    async def inject(self) -> None:
        if isinstance(self.server, RefServer):
            await self.server.set_faults_async({"error_rate": 0.5})
        else:
            await self.server.set_faults_async(MODEL, "v2", {"errors": 0.5})

    async def clear(self) -> None:
        if isinstance(self.server, RefServer):
            await self.server.clear_faults_async()
        else:
            await self.server.set_faults_async(MODEL, "v2", {})


# Short windows so that the demo's stages are judged in seconds (the shipped plans judge over minutes).
DEMO_GATES = [
    {"kind": "relative", "signal": "error_rate", "relative": 1.0, "absolute": 0.1, "window": "5s", "min_requests": 20},
    {"kind": "judge", "signal": "latency_ms", "confidence": 0.98, "min_points": 20, "tolerance": 1.0, "window": "5s"},
]
# Shadow: half of the live requests are copied to v2, its answers compared with v1's for the same request (the
# capture joins them by x-request-id); no user sees v2's answers.
SHADOW_GATES = [
    {"kind": "relative", "signal": "agreement_rate", "absolute": 0.05, "window": "5s", "min_requests": 50},
]
DEMO_PLAN = {
    "on_breach": "previous_stage",
    "max_breaches": 3,
    "stages": [
        {"name": "shadow", "mirror": "50%", "min_duration": "3s", "gates": SHADOW_GATES},
        {"name": "canary-5", "weight": 5, "min_duration": "4s", "gates": DEMO_GATES},
        {"name": "canary-25", "weight": 25, "min_duration": "60s", "gates": DEMO_GATES},
        {"name": "full", "weight": 100, "min_duration": "5s", "gates": [{"rule": "error-rate"}]},
    ],
}


async def rollout_status(ports: dict[str, int]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{ports['control']}/v1/rollout", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        return dict(await response.json())


def stage_of(status: dict[str, Any]) -> str:
    return str(status["stages"][int(status.get("stage", 0))]["name"]) if status.get("exists") else ""


async def wait_for(ports: dict[str, int], check: Any, timeout_s: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = await rollout_status(ports)
        if check(status):
            return status
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout_s:.0f} s (see .demo/logs/agent.log)")
        await asyncio.sleep(0.05)


async def operator(*args: str) -> str:
    say("    $ rollback-agent " + " ".join(args))
    code, out = await asyncio.to_thread(cli, *args)
    say("      " + out.strip().replace("\n", "\n      "))
    if code != 0:
        raise SystemExit(f"the CLI failed ({code})")
    return out


async def progressive_delivery(generator: TrafficGenerator, ports: dict[str, int], fault: Fault) -> bool:
    plan_path = WORK / "rollout-plan.yaml"
    plan_path.write_text(yaml.safe_dump(DEMO_PLAN, sort_keys=False))
    say(
        "\n== a rollout of v2 through judged stages: shadow (50 % mirrored) -> canary-5 (5 %) -> canary-25 (25 %) -> "
        f"full ({plan_path.name})"
    )
    await operator("rollout", "start", "v2", "--plan", str(plan_path), "--reason", "demo: release v2")
    status = await wait_for(ports, lambda s: stage_of(s) == "canary-5", 30, "v2 advanced from shadow to canary-5")
    say(f"    v2 answered mirrored requests in the shadow, and agreed with v1: {status.get('last_move', '')}")
    status = await wait_for(ports, lambda s: stage_of(s) == "canary-25", 30, "v2 advanced to canary-25")
    say(f"    the agent advanced v2 to canary-25 by itself: {status.get('last_move', '')}")
    await asyncio.sleep(1.5)
    say(f"\n== a fault appears in v2 at 25 %: half its requests fail, {fault.what}")
    injected = time.monotonic()
    await fault.inject()
    status = await wait_for(
        ports, lambda s: s.get("status") == "running" and stage_of(s) == "canary-5", 30, "v2 back in canary-5"
    )
    took = time.monotonic() - injected
    await fault.clear()
    say(f"    the agent went back one stage by itself, {took:.2f} s after the fault: {status.get('last_move', '')}")
    say(
        f"    breaches {status.get('breaches', 0)} of {status.get('max_breaches', 0)}; "
        "v2 keeps 5 % while it is judged again"
    )
    say("\n== the operator does not want v2 any more: abort (all traffic to v1, v2 quarantined)")
    await operator("rollout", "abort", "--reason", "demo: v2 failed at 25 %, back to the model team")
    status = await rollout_status(ports)
    return status.get("status") == "aborted"


async def story(ports: dict[str, int], fault: Fault, auto: bool) -> int:
    bodies = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]
    generator = TrafficGenerator(
        f"http://127.0.0.1:{ports['listener']}/v2/models/{MODEL}/infer",
        lambda i: bodies[i % len(bodies)],
        rate_per_s=200,
        concurrency=8,
        headers={"Content-Type": "application/json"},  # MLServer refuses a body without it (422)
    )
    rolled_back = True
    async with generator:
        say("\n== steady traffic through Envoy: 200 requests/s, v1 (stable) serving")
        with LiveView(generator):
            await asyncio.sleep(1.6)
            say("\n== move all traffic to v2")
            await timed_switch(generator, "v2", ["set-weights", "v1=0", "v2=100", "--reason", "demo: try v2"])
            await asyncio.sleep(1.1)
            say("\n== back to v1, the stable version")
            await timed_switch(generator, "v1", ["set-weights", "v1=100", "v2=0", "--reason", "demo: back to v1"])
            await asyncio.sleep(1.1)
            if auto:
                rolled_back = await progressive_delivery(generator, ports, fault)
        results = generator.results
    failed = len(results.failed())
    say(f"\n== {len(results)} requests sent, {failed} failed (the injected fault's, until the agent went back)")
    intact = False
    for args in (("status",), ("versions",), ("history",), ("audit", "verify")):
        code, out = cli(*args)
        say(f"\n$ rollback-agent {' '.join(args)}\n{out}")
        intact = code == 0 and "audit chain intact" in out
    return 0 if rolled_back and intact else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-auto", action="store_true", help="only the manual switches")
    parser.add_argument(
        "--server", choices=("refserver", "mlserver"), default="refserver", help="the model server of both versions"
    )
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "logs").mkdir(parents=True)
    ports = sidecar_ports()
    with ExitStack() as stack:
        servers: dict[str, RefServer | MLServerProcess]
        if args.server == "mlserver":
            say("== starting two MLServer 1.7.1 processes, one per version (a scikit-learn model, OIP v2)")
            servers = {
                v: stack.enter_context(
                    MLServerProcess(
                        [MLServerModel(MODEL, v)], log_dir=WORK / "logs", work_dir=WORK / v, name=f"mlserver-{v}"
                    ).start(60)
                )
                for v in ("v1", "v2")
            }
        else:
            say("== starting two versions of the reference model server (a scikit-learn model, OIP v2)")
            servers = {v: stack.enter_context(RefServer(MODEL, v, None, WORK / "logs").start(60)) for v in ("v1", "v2")}
        config = agent_config(
            model=MODEL,
            upstreams={v: s.port for v, s in servers.items()},
            ports=ports,
            state_dir=WORK / "state",
            stable="v1",
            candidate="v2",
            rules={"file": str(ROOT / "rules" / "default.yaml")},
            rollback={"verify_window_s": 3},
            rollout={"shadow": {"capture": True, "listener": {"port": free_port("127.0.0.1")}}},
        )
        for version in config["versions"]:
            server = servers[version["tag"]]
            if isinstance(server, MLServerProcess):  # its metrics are on their own port, under MLServer's names
                version["server"] = {"profile": "mlserver", "metrics_port": server.metrics_port}
        (WORK / "agent.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        say(f"== starting the agent (config {WORK / 'agent.yaml'}) and a real Envoy 1.40")
        agent = stack.enter_context(start_agent(WORK / "agent.yaml", WORK / "logs", {"ROLLBACK_AGENT_TOKEN": TOKEN}))
        wait_http_ready(f"http://127.0.0.1:{ports['http']}/healthz", 30, process=agent)
        bootstrap = agent_bootstrap(
            xds_port=ports["xds"],
            node_id="demo-sidecar",
            node_cluster=MODEL,
            xds_host="127.0.0.1",
            admin_port=ports["admin"],
            admin_host="127.0.0.1",
        )
        stack.enter_context(EnvoyProcess(bootstrap, work_dir=WORK / "envoy", log_dir=WORK / "logs").start(30))
        wait_http_ready(f"http://127.0.0.1:{ports['http']}/readyz", 30, process=agent)
        say("   agent ready: Envoy ACKed its config")
        code = asyncio.run(story(ports, Fault(servers["v2"]), auto=not args.no_auto))
    say(f"\n== all processes stopped; logs in {WORK / 'logs'}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
