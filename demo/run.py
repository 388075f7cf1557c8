"""`make demo`: the sidecar end to end on the embedded defaults, on this machine only (127.0.0.1).

Starts two versions of the reference model server, the agent and a real Envoy, sends steady traffic through Envoy,
and tells the story live: v1 is stable; traffic moves to v2 and back through the agent's CLI, each switch timed.
With --auto (the default once rules exist), v2 then becomes the candidate, a fault appears in v2, and the agent
detects it and rolls back by itself, printing the verdict and the time from fault to recovery.
Every process it starts is stopped when it ends, whatever happens.
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

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.agent import start_agent, wait_http_ready  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import TrafficGenerator  # noqa: E402
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


async def automatic_rollback(generator: TrafficGenerator, ports: dict[str, int], v2: RefServer) -> bool:
    say("\n== v2 was rolled back, so the agent refuses to send it traffic again unless an operator forces it")
    args = ["set-weights", "v1=50", "v2=50", "--reason", "demo: canary v2"]
    say("    $ rollback-agent " + " ".join(args))
    code, out = await asyncio.to_thread(cli, *args)
    say("      " + out.strip().replace("\n", "\n      "))
    if code == 0:
        raise SystemExit("the agent sent traffic to a rolled-back version without --force")
    say(
        "\n== the operator re-admits v2 as a canary (recorded as forced): half the traffic, watched by the shipped "
        "rules"
    )
    await timed_switch(generator, "", [*args, "--force"])
    deadline = time.monotonic() + 30
    while await rule_state(ports, "error-rate", "v2") != "ok":
        if time.monotonic() > deadline:
            raise SystemExit("the agent never judged v2 (see .demo/logs/agent.log)")
        await asyncio.sleep(0.5)
    say("    the agent judged v2 healthy (error-rate: ok)")
    await asyncio.sleep(1.5)
    say("\n== a fault appears in v2: half its requests fail")
    injected = time.monotonic()
    await v2.set_faults_async({"error_rate": 0.5})
    deadline = injected + 30
    while True:
        await asyncio.sleep(0.1)
        code, out = await asyncio.to_thread(cli, "status", "--json")
        status = json.loads(out) if code == 0 else {}
        served = {v["version"]: v["served_weight"] for v in status.get("versions", [])}
        if served.get("v2") == 0:
            break
        if time.monotonic() > deadline:
            say("    no rollback within 30 s (see .demo/logs/agent.log)")
            return False
    await asyncio.sleep(1.0)
    first = generator.snapshot().first_time_all_from("v1", injected)
    desired = status["desired"]
    say(f"    the agent rolled back by itself: actor {desired['actor']}")
    say(f"    verdict: {desired['reason']}")
    if first is not None:
        say(f"    fault -> every request answered by v1 again: {first - injected:.2f} s")
    await v2.clear_faults_async()
    return True


async def story(ports: dict[str, int], v2: RefServer, auto: bool) -> int:
    bodies = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]
    generator = TrafficGenerator(
        f"http://127.0.0.1:{ports['listener']}/v2/models/{MODEL}/infer",
        lambda i: bodies[i % len(bodies)],
        rate_per_s=200,
        concurrency=8,
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
            await timed_switch(generator, "v1", ["rollback", "--reason", "demo: back to stable"])
            await asyncio.sleep(1.1)
            if auto:
                rolled_back = await automatic_rollback(generator, ports, v2)
        results = generator.results
    failed = len(results.failed())
    say(f"\n== {len(results)} requests sent, {failed} failed (the injected fault's, until the rollback)")
    for args in (("status",), ("versions",), ("history",), ("audit", "verify")):
        _code, out = cli(*args)
        say(f"\n$ rollback-agent {' '.join(args)}\n{out}")
    return 0 if rolled_back else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-auto", action="store_true", help="only the manual switches")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "logs").mkdir(parents=True)
    ports = sidecar_ports()
    with ExitStack() as stack:
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
        )
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
        code = asyncio.run(story(ports, servers["v2"], auto=not args.no_auto))
    say(f"\n== all processes stopped; logs in {WORK / 'logs'}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
