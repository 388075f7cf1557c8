"""bench/canary: what a canary rollout's stage changes and its shadow stage cost, under load.

Real processes on 127.0.0.1: two reference model servers (v1 stable, v2 the candidate), a real Envoy fed by the
agent's own xDS server, route sink, traffic controller (SQLite state store, write-ahead audit) and mirror controller
in this process, and open-loop traffic through Envoy.

1. Stage changes. Each round walks a short rollout, one stage change at a time, as the rollout engine makes them
   (TrafficController.set_weights, then MirrorController.set_mirror): shadow (v1 100 %, 10 % mirrored to v2) ->
   5 % -> 25 % -> 100 % -> back to stable (a breach / abort). Figures:
   - `stage_change_to_ack_ms_p50` / `_p99`: the decision -> every connected Envoy ACKed the new split (and mirror),
     over every stage change;
   - `stage_change_to_all_traffic_ms_p50` / `_p99`: the decision -> the send time of the first request from which
     every request was answered as the new stage says, over the changes whose split says it per request (to 100 %
     and back to stable; a 5 % or 25 % split cannot be told apart request by request); the resolution is the gap
     between requests (1 / --rate).
   - `timeline`: one round's stage changes, milliseconds from the round's start.
2. Shadow cost on the user's path, side by side in the same seconds (as bench/detect's stream_on_vs_off): the
   agent's Envoy mirroring --shadow-fraction of requests to v2 through the shadow listener with the tap capture
   attached (every request's headers and bodies streamed to a capture process and joined), and a baseline Envoy
   beside it with the same bootstrap and the same resources (listeners, filters, the tap filter itself, the route to
   v1) from a second xDS server, never mirroring and with no tap attached; each gets half of --load-rate at once for
   --load-s, in two halves that start the two generators in opposite orders (harness.load.side_by_side: at one rate
   they fire in the same instants, and the first one's request reaches the stable server first). Both share the
   machine's noise, the same configuration and the same stable server, so the ratio of their p99s
   (`shadow_p99_overhead_ratio`) is the cost of mirroring + capture and nothing else. A first phase the same way
   without the capture attached gives mirroring's own share (`mirror_only_p99_overhead_ratio`).

The last line printed is one JSON object; it is also written to bench/results/canary.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.adapters.signals.shadow_tap import CaptureSettings, ShadowCapture  # noqa: E402
from agent.adapters.store.sqlite_store import SqliteStateStore  # noqa: E402
from agent.adapters.xds.cache import SnapshotCache  # noqa: E402
from agent.adapters.xds.resources import ModelTopology, ShadowSettings, VersionUpstream, shadow_tap_id  # noqa: E402
from agent.adapters.xds.route_sink import XdsRouteSink  # noqa: E402
from agent.adapters.xds.server import start_xds_server  # noqa: E402
from agent.domain.records import policy_to_pb  # noqa: E402
from agent.domain.shadow import ShadowJoin  # noqa: E402
from agent.domain.traffic import TrafficPolicy  # noqa: E402
from agent.engine.mirror import MirrorController  # noqa: E402
from agent.engine.traffic import TrafficController  # noqa: E402
from agent.pb.rollback_agent.v1 import audit_pb2  # noqa: E402
from agent.telemetry import AgentMetrics  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import TrafficGenerator, side_by_side  # noqa: E402
from harness.measure import percentile, write_result  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.wait import async_wait_until  # noqa: E402
from refserver.client import sample_request  # noqa: E402

MODEL = "cancer"
STABLE, CANDIDATE = "v1", "v2"
# (name, candidate weight, mirrored share): the rollout each round walks; the last step is the way back.
STAGES = (("shadow", 0, 0.1), ("5pct", 5, 0.0), ("25pct", 25, 0.0), ("100pct", 100, 0.0), ("stable", 0, 0.0))
TARGETS = {"stage_change_to_all_traffic_ms_p99": 25.0, "shadow_p99_overhead_ratio": 1.05}


def progress(message: str) -> None:
    print(f"[canary] {message}", file=sys.stderr, flush=True)


def rounded(value: float, digits: int = 3) -> float | None:
    return None if value != value else round(value, digits)


class Stack:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work, self.args = work, args
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.servers: dict[str, RefServer] = {}
        self.envoys: list[EnvoyProcess] = []

    async def start(self) -> None:
        # Every process is started before this process runs a gRPC server: a fork while gRPC's threads run has
        # crashed the child (SIGSEGV before exec) on this machine. Envoy retries the xDS server until it is up.
        for version in (STABLE, CANDIDATE):
            self.servers[version] = RefServer(MODEL, version, None, self.logs, ()).start(30)
        xds_port, baseline_xds_port = free_port(), free_port()
        envoy = EnvoyProcess(
            agent_bootstrap(xds_port=xds_port, node_id="canary-envoy"), work_dir=self.work / "envoy", log_dir=self.logs
        )
        self.envoys.append(envoy.start(15))
        self.envoy = envoy
        # The baseline: an Envoy with the same bootstrap, fed the same resources (shadow listener and tap filter
        # included) by a second xDS server of this process, whose split never mirrors and whose tap nobody attaches.
        baseline = EnvoyProcess(
            agent_bootstrap(xds_port=baseline_xds_port, node_id="canary-envoy-baseline"),
            work_dir=self.work / "envoy-baseline",
            log_dir=self.logs,
        )
        self.envoys.append(baseline.start(15))
        self.listener_port = free_port()
        self.topology = self._topology(self.listener_port)
        self.baseline_port = free_port()
        weights = ((STABLE, 100), (CANDIDATE, 0))
        self.baseline_cache = SnapshotCache()
        XdsRouteSink(self.baseline_cache, self._topology(self.baseline_port)).publish_initial(weights)
        self.baseline_server, _ = await start_xds_server(self.baseline_cache, "127.0.0.1", baseline_xds_port)
        policy = TrafficPolicy(weights, 1, "bench start", "bench", time.time())
        self.store = await SqliteStateStore.create(
            self.work / "state.db",
            model=MODEL,
            establish=audit_pb2.StateEstablished(how="first_start", policy=policy_to_pb(policy)),
            actor="bench",
        )
        self.cache = SnapshotCache()
        self.sink = XdsRouteSink(self.cache, self.topology)
        self.sink.publish_initial(weights)
        self.server, _ = await start_xds_server(self.cache, "127.0.0.1", xds_port)
        self.traffic = TrafficController(
            model=MODEL,
            versions=[STABLE, CANDIDATE],
            stable=STABLE,
            store=self.store,
            sink=self.sink,
            metrics=AgentMetrics(MODEL),
            ack_timeout_s=5.0,
        )
        await self.traffic.start()
        self.mirror = MirrorController(traffic=self.traffic, sink=self.sink, store=self.store, ack_timeout_s=5.0)
        await async_wait_until(self.cache.in_sync, 15, what="Envoy in sync with the agent's xDS")
        await async_wait_until(self.baseline_cache.in_sync, 15, what="the baseline Envoy in sync with its xDS")

    def _topology(self, listener_port: int) -> ModelTopology:
        return ModelTopology(
            model=MODEL,
            upstreams=tuple(VersionUpstream(v, "127.0.0.1", s.port) for v, s in self.servers.items()),
            listener_host="127.0.0.1",
            listener_port=listener_port,
            shadow=ShadowSettings(port=free_port()),
        )

    async def close(self) -> None:
        for envoy in self.envoys:
            envoy.stop()
        await self.server.stop(None)
        await self.baseline_server.stop(None)
        for server in self.servers.values():
            server.stop()

    @property
    def traffic_url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}/v2/models/{MODEL}/infer"

    async def stage(self, weight: int, mirror: float, reason: str) -> None:
        await self.traffic.set_weights({STABLE: 100 - weight, CANDIDATE: weight}, reason=reason, actor="bench")
        if mirror != self.mirror.state.fraction:
            await self.mirror.set_mirror(CANDIDATE, mirror, reason=reason, actor="bench")


async def stage_changes(stack: Stack, bodies: list[bytes]) -> dict[str, Any]:
    args = stack.args
    to_ack: list[float] = []
    to_all: list[float] = []
    timeline: list[dict[str, Any]] = []
    generator = TrafficGenerator(
        stack.traffic_url, lambda i: bodies[i % len(bodies)], rate_per_s=args.rate, concurrency=16
    )
    async with generator:
        await generator.wait_for_responses(int(args.rate), timeout_s=20)
        for round_no in range(args.rounds):
            round_start = time.monotonic()
            for name, weight, mirror in STAGES:
                decided = time.monotonic()
                await stack.stage(weight, mirror, f"bench round {round_no} stage {name}")
                acked = time.monotonic()
                to_ack.append((acked - decided) * 1000.0)
                if weight in (0, 100) and mirror == 0.0:
                    version = CANDIDATE if weight == 100 else STABLE
                    await asyncio.sleep(args.dwell_s)
                    first = generator.first_time_all_from(version, decided, ok_only=True)
                    to_all.append((first - decided) * 1000.0 if first is not None else float("nan"))
                else:
                    await asyncio.sleep(args.dwell_s)
                if round_no == 0:
                    timeline.append(
                        {"stage": name, "decided_ms": round((decided - round_start) * 1000.0, 1),
                         "acked_ms": round((acked - round_start) * 1000.0, 1)}
                    )  # fmt: skip
            progress(f"round {round_no + 1}/{args.rounds}: ack p50 {percentile(to_ack, 0.5):.2f} ms")
    failed = len(generator.results.failed())
    return {
        "stage_changes": len(to_ack),
        "stage_change_to_ack_ms_p50": rounded(percentile(to_ack, 0.5)),
        "stage_change_to_ack_ms_p99": rounded(percentile(to_ack, 0.99)),
        "stage_change_to_all_traffic_ms_p50": rounded(percentile(to_all, 0.5)),
        "stage_change_to_all_traffic_ms_p99": rounded(percentile(to_all, 0.99)),
        "all_traffic_samples": len(to_all),
        "all_traffic_not_reached": sum(1 for v in to_all if v != v),
        "failed_requests_during_changes": failed,
        "timeline": timeline,
    }


async def shadow_on_vs_off(stack: Stack, bodies: list[bytes], *, capture_on: bool) -> dict[str, Any]:
    """One side-by-side phase; `capture_on` False measures mirroring alone (no tap stream attached)."""
    args = stack.args
    prefix = "shadow" if capture_on else "mirror_only"
    await stack.stage(0, args.shadow_fraction, "bench: shadow on")
    child: asyncio.subprocess.Process | None = None
    try:
        # In a process of its own, as in the agent: its parsing must not slow this load generator.
        if capture_on:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--capture-child",
                stack.envoy.admin_url,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 15)
            if line.strip() != b"attached":
                raise RuntimeError(f"the shadow capture did not attach: {line!r}")
        urls = {"on": stack.traffic_url, "off": f"http://127.0.0.1:{stack.baseline_port}/v2/models/{MODEL}/infer"}
        measured = await side_by_side(
            urls, lambda i: bodies[i % len(bodies)], rate_per_s=args.load_rate / 2, seconds=args.load_s
        )
    finally:
        captured: dict[str, Any] = {}
        if child is not None:
            out, _ = await asyncio.wait_for(child.communicate(b""), 30)
            captured = json.loads(out.decode().strip().splitlines()[-1])
        await stack.stage(0, 0.0, "bench: shadow off")
    figures: dict[str, Any] = {}
    for side, latencies in measured.latencies_s.items():
        figures[f"{prefix}_{side}_p50_ms"] = rounded(percentile(latencies, 0.5) * 1000.0)
        figures[f"{prefix}_{side}_p99_ms"] = rounded(percentile(latencies, 0.99) * 1000.0)
        progress(
            f"{prefix} {side}: {len(latencies) / measured.seconds:.0f} req/s, "
            f"p99 {figures[f'{prefix}_{side}_p99_ms']} ms"
        )
    for q in ("p50", "p99"):
        on, off = figures[f"{prefix}_on_{q}_ms"], figures[f"{prefix}_off_{q}_ms"]
        figures[f"{prefix}_{q}_overhead_ratio"] = rounded(on / off) if on and off else None
    figures[f"{prefix}_failed_requests"] = sum(measured.failed.values())
    if captured:
        figures.update({f"shadow_capture_{k}": v for k, v in captured.items()})
    return figures


async def capture_child(admin_url: str) -> None:
    """The shadow capture alone: attach, say so, run until stdin closes, then print what it joined as JSON."""
    join = ShadowJoin()
    capture = ShadowCapture(
        admin_url=admin_url,
        config_id=shadow_tap_id(MODEL),
        join=join,
        settings=CaptureSettings(sample_rate=0.01, redact_fields=frozenset({"input-0"})),
    )
    task = asyncio.create_task(capture.run())
    started = time.monotonic()
    await async_wait_until(lambda: capture.attached, 10, what="the shadow capture attached")
    print("attached", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    elapsed = time.monotonic() - started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    stats = join.stats()
    summary = {
        "pairs": stats.pairs,
        "pairs_per_s": rounded(stats.pairs / elapsed, 1),
        "agreement_rate": stats.agreement_rate,
        "unmatched": {str(k): v for k, v in join.unmatched.items()},
        "samples": len(capture.samples),
        "cpu_s": rounded(time.process_time(), 2),
        "elapsed_s": rounded(elapsed, 1),
    }
    print(json.dumps(summary), flush=True)


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    stack = Stack(work, args)
    await stack.start()
    bodies = [json_body(i) for i in range(256)]
    try:
        result: dict[str, Any] = {"bench": "canary", "rounds": args.rounds, "rate": args.rate}
        result.update(await stage_changes(stack, bodies))
        if args.load_s > 0:
            result.update({"shadow_fraction": args.shadow_fraction, "load_rate": args.load_rate})
            result.update(await shadow_on_vs_off(stack, bodies, capture_on=False))
            result.update(await shadow_on_vs_off(stack, bodies, capture_on=True))
        result["targets"] = TARGETS
        return result
    finally:
        await stack.close()


def json_body(i: int) -> bytes:
    return json.dumps(sample_request(1, seed=i)).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="rollouts walked (5 stage changes each)")
    parser.add_argument("--rate", type=float, default=400.0, help="requests/s during the stage changes (open loop)")
    parser.add_argument("--dwell-s", type=float, default=0.5, help="time in each stage")
    parser.add_argument("--shadow-fraction", type=float, default=1.0, help="mirrored share in the shadow phase")
    parser.add_argument("--load-rate", type=float, default=400.0, help="requests/s of the side-by-side shadow phase")
    parser.add_argument("--load-s", type=float, default=20.0, help="seconds of the side-by-side phase (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) after the run")
    parser.add_argument("--capture-child", metavar="ENVOY_ADMIN_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capture_child:
        asyncio.run(capture_child(args.capture_child))
        return 0
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.keep:
        work = Path(tempfile.mkdtemp(prefix="bench-canary-"))
        progress(f"work directory (kept): {work}")
        result = asyncio.run(run(args, work))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
            result = asyncio.run(run(args, Path(tmp)))
    write_result("canary", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
