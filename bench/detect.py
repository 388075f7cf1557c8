"""bench/detect: fault -> detection -> recovery, with the agent deciding by itself.

Real processes on 127.0.0.1: two reference model servers (v1 stable, v2 candidate), the agent with the shipped
rules (rules/default.yaml, tier critical: the sequential error-rate and p99 tests paired with the 30 s / 1 min
window rules; the p99 SLA set to `--latency-sla-ms`, 25 ms, an Envoy bucket edge, since the reference server
answers in a few ms), a real Envoy, and ~200 requests/s open loop through Envoy. The rollback settings are the
bench's: `cooldown_s: 0`, `max_per_hour: 1000`, `verify_window_s: 2` (so runs are quick); everything else is the
agent's default (signals every 1 s).

Each run: v2 gets 50 % (operator set-weights through the control API); the bench waits until the agent has judged
v2 healthy (rule `error-rate` for v2 is `ok` in GET /v1/status), optionally `--healthy-s` more, injects the fault
into v2 at a stratified phase of the agent's sampling cycle (below; refserver POST /faults, default
{"error_rate": 0.5}), and measures on one monotonic clock:

- fault -> detected: the agent's decision, i.e. the start of the Rollback audit record's `detect` phase (the
  moment the rule's decision reached the orchestrator; its wall time is mapped onto the monotonic clock);
- fault -> status: the first GET /v1/status (polled every 25 ms) whose served weights show v2 at 0;
- fault -> recovered: `first_time_all_from("v1", fault, ok_only=True)` over the traffic log: the send time of the
  first request after which every request (up to the next re-arm) was answered 200 by v1.

Then the fault is cleared and the bench waits for the final Rollback audit record (written after the verification
window, with every phase; the record with outcome `switched`, written right after the switch, is not it). After the
runs comes a steady run (`--steady-s`, default 300): v2 at 50 %, no fault; every rollback in it (Rollback audit
records, one per rollback id, cross-checked with `rollback_agent_rollbacks_total` and the served weights) is a
false rollback. `failed_requests_outside_fault_windows` counts failed requests that were not in flight between
a fault's injection and its recovery (expected 0: re-arming, agent restarts and the steady run lose nothing).

Re-arming. The orchestrator marking v2 `failed` and the cooldown do not block anything here: a failed version
is never an automatic target, but an operator set-weights with `force` still routes to it (the override is
recorded in the TrafficIntent), and `cooldown_s: 0` lets the next rollback away from v2 go at once. What blocks
re-arming is the evidence: the agent keeps each version's signal history in memory, also while the version gets
no traffic, so the fault's errors stay in v2's 30 s error-rate window for 30 s after the rollback. Giving v2
traffic earlier makes the agent roll it back again on the first tick, rightly (the evidence is real). Two clean
ways:

- `--rearm restart` (default): restart the agent process (SIGTERM, same config and state dir: the persisted
  policy, the registry overlay and one audit chain carry over; Envoy keeps serving its last config meanwhile, so
  no request fails). 1-1.5 s, plus the 3 s of samples the rule needs as window coverage before it judges.
- `--rearm drain`: keep the agent and wait until the fault's errors have left v2's window (the rule's window
  after the last failed v2 response, plus two sampling intervals): ~30 s per run, so the default run takes
  ~11 minutes instead of ~6.5; the long-lived-agent variant, for comparison.

The 5-minute/1-hour error-budget-burn rule needs 30 minutes of samples (coverage 0.5 of 1 h) before it judges,
so it stays `insufficient_evidence` in either mode. An agent up for longer would hold the runs' errors in that
rule's 5-minute window too, and drain mode would then need 5-minute drains.

Where the time goes (restart mode, 2-core machine; the JSON has each part as a median over the runs in
`breakdown_p50`; values below are ranges over several invocations):

- fault -> first 5xx at the client, 15-30 ms: the POST /faults round trip (from a worker thread) plus the 10 ms
  gap between requests to v2 (100/s), twice on average at a 50 % error rate.
- 5xx -> visible in Envoy's admin stats, 2-9 ms, i.e. within the bench's 10 ms poll: counters are live. The 1 s
  `stats_flush_interval` only delays histograms (latency), which the error-rate rule does not use.
- visible -> the tick that decides, 0.7-1.0 s: this dominates. The agent samples once per `signals.interval_s`
  (1 s); a fault lands at a uniform phase of that cycle (the runs spread the injection phase evenly over it,
  stratified: the status shows a verdict right after a tick, so injecting "as soon as judged healthy" would
  always be the worst phase). `for: 0s`, so the first tick that breaches decides; but the first tick after the
  fault breaches only once the errors outweigh the healthy requests already in the 30 s window: at error
  fraction e the rate crosses 5 % after t > 0.05 * H / (e - 0.05) seconds of fault, H being the seconds of
  healthy v2 traffic in the window (`candidate_traffic_before_fault_s_p50`, 3.1 s in the default run: the
  3 s of coverage, then the phase). So a fault that lands less than ~0.4 s before a tick is decided one tick
  later: in the default run the five runs injected in the first half of the cycle were decided by the first
  tick (0.52-0.90 s), the other five by the second (0.99-1.39 s); p50 0.94 s. Drain mode has H ~ 2 s (3 runs:
  p50 0.80 s). A candidate that served healthy traffic for a full window (`--healthy-s 30`, the default) needs
  150 errors over 3,000 requests before the 30 s rule breaches: with that rule alone, p50 3.76 s, max 4.09 s
  (4 runs). The shipped rules therefore pair it with `error-rate-fast` (> 10 % over 5 s, >= 50 requests), which
  crosses after ~1 s of a 50 % fault whatever the history: default run p50 1.80 s, max 2.20 s (10 runs, all
  decided by error-rate-fast), 0 false rollbacks in 300 s of healthy traffic.
- the deciding tick -> the decision, 30-60 ms (37 ms p50 in the default run): a tick reads every source
  concurrently and waits for the slowest (Envoy stats, both model servers' /metrics, OIP health), evaluates the
  rules, then writes the firing rule's VerdictChanged audit record (one SQLite commit, synchronous=FULL:
  `verdict_audit_to_decision_ms`, 1-5 ms) before the decision reaches the orchestrator. Measured from the
  deciding verdict's error count matched against the bench's 10 ms poll of Envoy's counter, so +-20 ms.
- decision -> every Envoy ACKed, 5-30 ms (5 ms p50 in the default run): target selection (~0.5 ms: registry
  read), live checks of the target (health is at most 1 s old, so no probe), the SQLite commit of the policy
  (1-10 ms here) and the xDS push and ACK (2-8 ms); bench/failover measures 3 ms for a switch alone. The spread
  is the machine (2 cores shared with Envoy, two model servers and the load): running without the forensic
  archive (which starts beside the switch) did not change it.
- ACK -> all traffic on v1, -10 to 0 ms: Envoy applies the route before its ACK reaches the agent, and at 200/s
  nothing is in flight to v2 for long.

Issue 12 additions (keys added, none renamed): after the `--runs` of `--fault` (the top-level figures), each of
`SCENARIOS` runs `--scenario-runs` times (`scenarios`: a 10 % error fault; a p99 x5 latency fault, `latency_ms`
= 4x the candidate's healthy p99 measured through Envoy just before). The steady run (`--steady-s`, now 600 s: the
10 minutes of the false-alarm proof) carries realistic noise on both versions (`--steady-noise`: 0.5 % errors,
2 +- 2 ms added latency); its failed requests are `failed_requests_steady_noise`, not counted as outside the fault
windows. Last, a load phase at `--load-rate` (1,000/s) for `--load-s` with the access-log stream on (agent CPU as %
of one core, RSS and anonymous RSS); then the stream's cost on the user's path, on and off in the same seconds: the
agent's Envoy (streaming) and a second, plain Envoy with the same 50/50 route to the same model servers, each given
half the rate at once (`stream_p99_ms_on` / `_off`, `stream_p99_overhead_ratio` = on / off, and the p50s); last,
after an agent restart with `signals.access_log.enabled: false`, the agent's CPU with the stream off (and, for
comparison with earlier results, the p99 before and after that restart: `stream_p99_ms_on_before_restart`,
`stream_p99_ms_off_after_restart`). The breakdown above was measured
with Envoy stats sampling only; with the stream, `envoy_stats_to_deciding_tick_ms` no longer applies (null).

The last line printed is one JSON object; it is also written to bench/results/detect.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.adapters.store.sqlite_store import read_audit_records  # noqa: E402
from agent.pb.rollback_agent.v1 import audit_pb2  # noqa: E402
from harness.agent import start_agent, wait_http_ready, wait_http_ready_async  # noqa: E402
from harness.bootstraps import StaticUpstream, agent_bootstrap, static_weighted_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import Results, TrafficGenerator, side_by_side  # noqa: E402
from harness.measure import percentile, rss_mb, wall_to_monotonic_offset, write_result  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.process import ManagedProcess  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import agent_config, sidecar_ports  # noqa: E402
from refserver.client import sample_request  # noqa: E402

TOKEN = "bench-token"
MODEL = "cancer"
STABLE, CANDIDATE = "v1", "v2"
RULE = "error-rate"
MAIN = "main"
# Extra faults after the main runs (--scenario-runs each): a milder error fault and a p99 x5 latency fault (the
# added latency is 4x the candidate's healthy p99 measured through Envoy just before, so its p99 becomes ~5x).
SCENARIOS = ("errors_10pct", "latency_p99_x5")
STATUS_POLL_S = 0.025
STATS_POLL_S = 0.01
SIGNAL_INTERVAL_S = 1.0  # the agent's default `signals.interval_s`, which the bench keeps


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def progress(message: str) -> None:
    print(f"[detect {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Run:
    index: int
    armed_at: float  # set-weights v1=50 v2=50 sent
    healthy_at: float = math.nan  # the agent's status first showed error-rate ok for v2
    injected_at: float = math.nan  # POST /faults sent
    fault_set_at: float = math.nan  # POST /faults answered
    envoy_5xx_before: float | None = None  # v2's 5xx counter in Envoy's admin stats before the fault
    envoy_series: list[tuple[float, float]] = field(default_factory=list)  # (time, increase) at each change
    sampled_at: float = math.nan  # (about) when the deciding agent tick read Envoy's stats
    desired_at: float = math.nan  # status first showed v2 at 0 in the desired policy
    status_at: float = math.nan  # status first showed v2 at 0 in the served (ACKed) weights
    cleared_at: float = math.nan
    until: float | None = None  # the next re-arm: the end of this run's traffic window
    rollback: audit_pb2.Rollback | None = None
    decided_at: float = math.nan  # the rollback's detect phase start, on the monotonic clock
    verdict_at: float = math.nan  # the firing rule transition's audit record, on the monotonic clock
    first_5xx_at: float = math.nan  # first 5xx response completed after the injection
    recovered_at: float = math.nan
    actor: str = ""
    reason: str = ""
    phases_ms: dict[str, float] = field(default_factory=dict)
    scenario: str = MAIN  # MAIN: the --fault runs behind the top-level keys; else a SCENARIOS name

    @property
    def envoy_5xx_at(self) -> float:
        """When the bench first saw v2's 5xx counter rise in Envoy's admin stats."""
        return self.envoy_series[0][0] if self.envoy_series else math.nan


class Stack:
    """The processes and the clients the bench talks to."""

    def __init__(self, work: Path, verify_window_s: float, latency_sla_ms: float = 25.0) -> None:
        self.work = work
        self.latency_sla_ms = latency_sla_ms
        self.logs = work / "logs"
        self.logs.mkdir()
        self.verify_window_s = verify_window_s
        self.stack = ExitStack()
        self.upstreams: dict[str, RefServer] = {}
        self.agent: ManagedProcess | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ports: dict[str, int] = {}
        self.offset = wall_to_monotonic_offset()

    def start(self) -> None:
        for version in (STABLE, CANDIDATE):
            self.upstreams[version] = self.stack.enter_context(RefServer(MODEL, version, None, self.logs).start(30))
        self.ports = sidecar_ports()
        config = agent_config(
            model=MODEL,
            upstreams={v: s.port for v, s in self.upstreams.items()},
            ports=self.ports,
            state_dir=self.work / "state",
            stable=STABLE,
            candidate=CANDIDATE,
            rules={"file": str(self.rules_file())},
            rollback={"cooldown_s": 0, "max_per_hour": 1000, "verify_window_s": self.verify_window_s},
        )
        (self.work / "agent.yaml").write_text(yaml.safe_dump(config))
        self.agent = self.stack.enter_context(
            start_agent(self.work / "agent.yaml", self.logs, {"ROLLBACK_AGENT_TOKEN": TOKEN})
        )
        wait_http_ready(f"{self.http_url}/healthz", 20, process=self.agent)
        envoy = EnvoyProcess(
            agent_bootstrap(
                xds_port=self.ports["xds"],
                node_id="bench-envoy",
                node_cluster=MODEL,
                xds_host="127.0.0.1",
                admin_port=self.ports["admin"],
                admin_host="127.0.0.1",
            ),
            work_dir=self.work / "envoy",
            log_dir=self.logs,
        )
        self.stack.enter_context(envoy.start(15))
        wait_http_ready(f"{self.http_url}/readyz", 20, process=self.agent)

    def close(self) -> None:
        self.stack.close()

    def rules_file(self) -> Path:
        """rules/default.yaml with the latency SLA of both p99 rules at --latency-sla-ms (an Envoy bucket edge):
        the shipped 250 ms is far above the reference server's few milliseconds, where a x5 fault stays."""
        rules = yaml.safe_load((ROOT / "rules" / "default.yaml").read_text())
        for rule in rules["rules"]:
            if rule["kind"] in ("latency_p99", "latency_p99_sequential"):
                rule["sla_ms"] = self.latency_sla_ms
        path = self.work / "rules.yaml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
        return path

    def set_access_log(self, enabled: bool) -> None:
        """signals.access_log.enabled in agent.yaml (read at the next agent start)."""
        path = self.work / "agent.yaml"
        config = yaml.safe_load(path.read_text())
        config.setdefault("signals", {}).setdefault("access_log", {})["enabled"] = enabled
        path.write_text(yaml.safe_dump(config))

    @property
    def agent_pid(self) -> int | None:
        return self.agent.pid if self.agent is not None else None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['control']}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    @property
    def traffic_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['listener']}/v2/models/{MODEL}/infer"

    def to_monotonic(self, ts: Any) -> float:
        """A protobuf Timestamp (wall clock, taken by the agent) on this process' monotonic clock."""
        return float(ts.ToNanoseconds()) / 1e9 - self.offset

    # -- control API, metrics, Envoy --------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get(f"{self.control_url}/v1/status") as response:
            body: dict[str, Any] = await response.json()
        if response.status != 200:
            raise RuntimeError(f"GET /v1/status answered {response.status}: {body}")
        return body

    async def set_weights(self, weights: dict[str, int], reason: str, force: bool = False) -> None:
        assert self.session is not None
        body = {"weights": [{"version": v, "weight": w} for v, w in weights.items()], "reason": reason, "force": force}
        async with self.session.post(f"{self.control_url}/v1/traffic", json=body) as response:
            payload = await response.json()
        if response.status != 200:
            raise RuntimeError(f"set-weights {weights} failed ({response.status}): {payload}")

    async def rollbacks_total(self) -> float:
        assert self.session is not None
        async with self.session.get(f"{self.http_url}/metrics") as response:
            text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("rollback_agent_rollbacks_total{")
        )

    async def envoy_5xx(self, version: str) -> float | None:
        assert self.session is not None
        name = f"cluster.{MODEL}__{version}.upstream_rq_5xx"
        async with self.session.get(f"{self.admin_url}/stats", params={"filter": f"^{name}$"}) as response:
            text = await response.text()
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return float(value)
        return None

    # -- the audit trail (read straight from the state dir, as `rollback-agent audit` does) ---------------------

    def _audit_after(self, seq: int) -> list[audit_pb2.AuditRecord]:
        return [r for r in read_audit_records(self.work / "state" / "state.db") if r.seq > seq]

    async def audit_after(self, seq: int) -> list[audit_pb2.AuditRecord]:
        return await asyncio.to_thread(self._audit_after, seq)

    def _audit_head(self) -> int:
        records = read_audit_records(self.work / "state" / "state.db")
        return records[-1].seq if records else 0

    async def audit_head(self) -> int:
        return await asyncio.to_thread(self._audit_head)

    # -- the agent process -------------------------------------------------------------------------------------

    async def restart_agent(self) -> None:
        agent = self.agent
        assert agent is not None
        await asyncio.to_thread(agent.stop, 10.0)
        await asyncio.to_thread(agent.start)
        await wait_http_ready_async(f"{self.http_url}/healthz", 20, process=agent)
        await wait_http_ready_async(f"{self.http_url}/readyz", 30, process=agent)


def weights_of(status: dict[str, Any], key: str) -> dict[str, int]:
    return {v["version"]: int(v.get(key, 0)) for v in status["versions"]}


def rule_of(status: dict[str, Any], rule: str, version: str) -> dict[str, Any] | None:
    return next((r for r in status["rules"] if r["rule"] == rule and r["version"] == version), None)


class Bench:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.generator: TrafficGenerator | None = None
        self.runs: list[Run] = []
        self.rearm_s: list[float] = []
        self.window_s = 30.0
        self.healthy_p99_ms: list[float] = []

    async def arm(self, index: int, reason: str) -> Run:
        """v2 back to 50 %, then wait until the agent judged it healthy (its error-rate rule is `ok`)."""
        stack = self.stack
        run = Run(index=index, armed_at=time.monotonic())
        # After a run v2 is `failed` (rolled back): giving it traffic again is an operator's override, recorded in
        # the intent (the first arm crosses no guard, so nothing is recorded as overridden).
        await stack.set_weights({STABLE: 50, CANDIDATE: 50}, reason, force=True)
        deadline = time.monotonic() + 30
        while True:
            status = await stack.status()
            if weights_of(status, "served_weight").get(CANDIDATE, 0) == 0:
                raise RuntimeError(f"{CANDIDATE} was rolled back while being re-armed: {status['desired']}")
            rule = rule_of(status, RULE, CANDIDATE)
            if rule is not None and rule["state"] == "ok":
                run.healthy_at = time.monotonic()
                self.window_s = float(rule.get("window_s") or self.window_s)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{CANDIDATE} not judged healthy within 30 s: {rule}")
            await asyncio.sleep(0.05)
        return run

    async def rearm_wait(self, previous: Run | None) -> None:
        """Make the agent's evidence about v2 clean again (see the module docstring)."""
        if previous is None:
            return
        started = time.monotonic()
        if self.args.rearm == "restart":
            await self.stack.restart_agent()
        else:
            assert self.generator is not None
            failed = [r.t_done for r in self.generator.failed(since=previous.injected_at - 1) if r.version]
            last_error = max(failed, default=previous.status_at)
            wait = last_error + self.window_s + 2.0 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self.rearm_s.append(time.monotonic() - started)

    async def watch_envoy(self, run: Run, stop: asyncio.Event) -> None:
        """v2's 5xx counter in Envoy's admin stats, polled every 10 ms: (time, increase since the fault) at each
        change, until the rollback shows in the agent's status."""
        deadline = time.monotonic() + self.args.timeout_s
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                value = await self.stack.envoy_5xx(CANDIDATE)
            except aiohttp.ClientError:
                value = None
            now = time.monotonic()
            if value is not None and run.envoy_5xx_before is not None:
                increase = value - run.envoy_5xx_before
                if increase > 0 and (not run.envoy_series or run.envoy_series[-1][1] != increase):
                    run.envoy_series.append((now, increase))
            await asyncio.sleep(STATS_POLL_S)

    async def fault_run(self, index: int, previous: Run | None, scenario: str = MAIN, runs: int | None = None) -> Run:
        stack = self.stack
        await self.rearm_wait(previous)
        run = await self.arm(index, f"bench detect run {index} ({scenario})")
        run.scenario = scenario
        runs = runs or self.args.runs
        if previous is not None:
            previous.until = run.armed_at
        # The status showed the verdict right after an agent tick: injecting now would always land just after a
        # tick (the worst case, a full interval to wait). A fault arrives at any phase of the sampling cycle, so
        # the runs spread the injection evenly over one interval (stratified, so 10 runs give a stable median).
        await asyncio.sleep(self.args.healthy_s + (index % runs + 0.5) / runs * SIGNAL_INTERVAL_S)
        status = await stack.status()
        if weights_of(status, "served_weight") != {STABLE: 50, CANDIDATE: 50}:
            raise RuntimeError(f"rolled back before the fault (a false rollback): {status['desired']}")
        seq = await stack.audit_head()
        run.envoy_5xx_before = await stack.envoy_5xx(CANDIDATE)
        stop = asyncio.Event()
        run.injected_at = time.monotonic()
        watcher = asyncio.create_task(self.watch_envoy(run, stop))
        await stack.upstreams[CANDIDATE].set_faults_async(self.fault_of(scenario))
        run.fault_set_at = time.monotonic()
        deadline = run.injected_at + self.args.timeout_s
        while time.monotonic() < deadline:
            status = await stack.status()
            now = time.monotonic()
            if math.isnan(run.desired_at) and weights_of(status, "desired_weight").get(CANDIDATE, 0) == 0:
                run.desired_at = now
            if weights_of(status, "served_weight").get(CANDIDATE, 0) == 0:
                run.status_at = now
                run.actor = status["desired"].get("actor", "")
                run.reason = status["desired"].get("reason", "")
                break
            await asyncio.sleep(STATUS_POLL_S)
        stop.set()
        await stack.upstreams[CANDIDATE].clear_faults_async()
        run.cleared_at = time.monotonic()
        await watcher
        if math.isnan(run.status_at):
            progress(f"run {index + 1}: NOT rolled back within {self.args.timeout_s:g} s; moving v2 off by hand")
            await stack.set_weights({STABLE: 100}, f"bench detect run {index}: no automatic rollback")
            return run
        await self.collect_audit(run, seq)
        return run

    def fault_label(self, scenario: str) -> str:
        if scenario == "latency_p99_x5":
            healthy = percentile(self.healthy_p99_ms, 0.5)
            return (
                f"latency_ms = max(4 x the candidate's healthy p99 (p50 over runs {healthy:.1f} ms), "
                f"2 x the SLA {self.stack.latency_sla_ms:g} ms)"
            )
        return json.dumps(self.fault_of(scenario))

    def fault_of(self, scenario: str) -> dict[str, Any]:
        if scenario == MAIN:
            return dict(self.args.fault)
        if scenario == "errors_10pct":
            return {"error_rate": 0.1}
        assert self.generator is not None
        since = time.monotonic() - 10
        healthy = [r.latency_s for r in self.generator.results.records(since) if r.version == CANDIDATE and r.ok]
        p99_ms = percentile(healthy, 0.99) * 1000.0
        self.healthy_p99_ms.append(p99_ms)
        # The p99 rules judge against an absolute SLA: on a quiet machine 5x a few ms stays under it (and correctly
        # is no breach), so the added latency is at least 2x the SLA: the resulting p99 is >= 5x healthy AND >= 3x
        # the SLA.
        return {"latency_ms": round(max(4 * p99_ms, 2 * self.stack.latency_sla_ms), 1)}

    async def collect_audit(self, run: Run, seq: int) -> None:
        """Wait for the final Rollback record (written after the verification window) and take its timings."""
        deadline = time.monotonic() + self.stack.verify_window_s + 15
        while time.monotonic() < deadline:
            records = await self.stack.audit_after(seq)
            rollback = next(
                (
                    r.rollback
                    for r in records
                    if r.WhichOneof("event") == "rollback" and r.rollback.outcome != "switched"
                ),
                None,
            )
            if rollback is not None:
                run.rollback = rollback
                break
            await asyncio.sleep(0.2)
        else:
            progress(f"run {run.index + 1}: no Rollback audit record within the wait")
            return
        for record in records:
            if record.WhichOneof("event") == "verdict_changed":
                changed = record.verdict_changed
                if changed.state == "firing" and changed.verdict.version == CANDIDATE and math.isnan(run.verdict_at):
                    run.verdict_at = self.stack.to_monotonic(record.at)
        for phase in run.rollback.phases:
            run.phases_ms[phase.name] = phase.duration_ms
            if phase.name == "detect":
                run.decided_at = self.stack.to_monotonic(phase.started_at)
        # When did the deciding tick read Envoy? Its verdict counted value * samples errors; the first time the
        # bench saw v2's 5xx counter that far above its pre-fault value bounds that read from below (within the
        # 10 ms poll and the ~20 ms between errors). Only meaningful when the window held no earlier errors,
        # which re-arming guarantees.
        verdict = run.rollback.trigger.rule
        if verdict.rule == RULE and verdict.samples > 0 and not math.isnan(verdict.value):
            errors = round(verdict.value * verdict.samples)
            run.sampled_at = next((t for t, n in run.envoy_series if n >= errors), math.nan)

    async def steady(self, previous: Run | None) -> dict[str, Any]:
        stack = self.stack
        await self.rearm_wait(previous)
        run = await self.arm(-1, "bench detect steady run")
        if previous is not None:
            previous.until = run.armed_at
        seq = await stack.audit_head()
        metric_before = await stack.rollbacks_total()
        noise = self.args.steady_noise
        if noise:  # realistic noise on both versions: a few errors, latency jitter
            await asyncio.gather(*(u.set_faults_async(noise) for u in stack.upstreams.values()))
        started = time.monotonic()
        end = started + self.args.steady_s
        observed: list[str] = []
        exposed_until = end
        next_report = started + 30
        while (now := time.monotonic()) < end:
            status = await stack.status()
            if exposed_until == end and weights_of(status, "served_weight").get(CANDIDATE, 0) == 0:
                exposed_until = now
                observed.append(f"{status['desired'].get('actor', '')}: {status['desired'].get('reason', '')}")
                progress(f"steady: FALSE ROLLBACK after {now - started:.1f} s: {observed[-1]}")
            if now >= next_report:
                rule = rule_of(status, RULE, CANDIDATE)
                state = f"{rule['state']} ({rule['reason']})" if rule else "not judged"
                progress(f"steady {now - started:.0f}/{self.args.steady_s:g} s: {RULE} for {CANDIDATE}: {state}")
                next_report += 30
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
        if noise:
            await asyncio.gather(*(u.clear_faults_async() for u in stack.upstreams.values()))
        await asyncio.sleep(stack.verify_window_s + 3)  # a rollback at the very end writes its record after verify
        records = await stack.audit_after(seq)
        rollbacks = rollbacks_of(records)
        firings = sorted(
            {
                f"{r.verdict_changed.verdict.rule}/{r.verdict_changed.verdict.version}"
                for r in records
                if r.WhichOneof("event") == "verdict_changed" and r.verdict_changed.state == "firing"
            }
        )
        metric_delta = await stack.rollbacks_total() - metric_before
        return {
            "steady_s": self.args.steady_s,
            "started_at": started,
            "ended_at": end,
            "false_rollbacks": max(len(rollbacks), int(metric_delta), len(observed)),
            "false_rollbacks_audit": len(rollbacks),
            "false_rollbacks_metric": int(metric_delta),
            "false_rollback_reasons": [r.rollback.trigger.rule.reason or r.rollback.detail for r in rollbacks]
            or observed,
            "rules_fired": firings,
            "candidate_exposed_s": round(exposed_until - started, 1),
            "noise": noise,
        }


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far, NaN when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_anon_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


async def load_phase(stack: Stack, args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    """~--load-rate requests/s at 50/50 for --load-s with the access-log stream on (agent CPU, RSS, client p99),
    then the agent restarted with it off for the same time (client p99): the stream's cost on the user's path,
    measured in the same run."""

    async def measure(label: str) -> dict[str, float]:
        generator = TrafficGenerator(
            stack.traffic_url, lambda i: bodies[i % len(bodies)], rate_per_s=args.load_rate, concurrency=32
        )
        async with generator:
            await generator.wait_for_responses(int(args.load_rate), timeout_s=20)  # warm connections
            pid = stack.agent_pid
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(args.load_s)
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            rss, anon = rss_mb(pid), rss_anon_mb(pid)
        latencies = generator.results.latencies_s(since=t0, until=t1)
        achieved = len(latencies) / (t1 - t0)
        progress(f"load ({label}): {achieved:.0f} requests/s, agent CPU {100 * (cpu1 - cpu0) / (t1 - t0):.1f} %")
        return {
            "rate": achieved,
            "p99_ms": percentile(latencies, 0.99) * 1000.0,
            "cpu_percent": 100.0 * (cpu1 - cpu0) / (t1 - t0),
            "rss_mb": rss,
            "rss_anon_mb": anon,
            "failed": len(generator.results.failed(since=t0, until=t1)),
        }

    await stack.set_weights({STABLE: 50, CANDIDATE: 50}, "bench detect load phase", force=True)
    on = await measure("access-log stream on")
    side_by_side = await stream_on_vs_off(stack, args, bodies)
    await asyncio.to_thread(stack.set_access_log, False)
    await stack.restart_agent()
    off = await measure("access-log stream off")
    await asyncio.to_thread(stack.set_access_log, True)
    return {
        "load_rate_per_s": args.load_rate,
        "load_s": args.load_s,
        "load_rate_per_s_achieved": rounded(on["rate"], 0),
        "agent_cpu_percent_of_one_core": rounded(on["cpu_percent"], 1),
        "agent_rss_mb": rounded(on["rss_mb"], 1),
        "agent_rss_anon_mb": rounded(on["rss_anon_mb"], 1),
        "stream_p99_ms_on": rounded(side_by_side["on"], 2),
        "stream_p99_ms_off": rounded(side_by_side["off"], 2),
        "stream_p99_overhead_ratio": rounded(side_by_side["on"] / side_by_side["off"])
        if side_by_side["off"] > 0
        else None,
        "stream_p50_ms_on": rounded(side_by_side["on_p50"], 2),
        "stream_p50_ms_off": rounded(side_by_side["off_p50"], 2),
        "stream_p99_ms_on_before_restart": rounded(on["p99_ms"], 2),
        "stream_p99_ms_off_after_restart": rounded(off["p99_ms"], 2),
        "load_failed_requests": int(on["failed"] + off["failed"] + side_by_side["failed"]),
        "agent_cpu_percent_stream_off": rounded(off["cpu_percent"], 1),
    }


async def stream_on_vs_off(stack: Stack, args: argparse.Namespace, bodies: list[bytes]) -> dict[str, float]:
    """The stream's cost on the user's path, on and off in the same seconds: the agent's Envoy (streaming every
    request to the agent) and a second Envoy beside it with the same 50/50 route to the same model servers and no
    access log, each given half of --load-rate at once for --load-s (two halves starting the generators in opposite
    orders: harness.load.side_by_side). Both share the machine's noise, so the p99 ratio
    is the stream's cost, not the difference between two moments (an agent restart between phases made that ratio
    swing from 0.7 to 1.9 on this 2-core machine). Each Envoy has its own worker thread, so the streaming one's work
    cannot leak into the other's latencies."""
    plain_port = free_port("127.0.0.1")
    bootstrap = static_weighted_bootstrap(
        listener_port=plain_port,
        admin_port=free_port("127.0.0.1"),
        upstreams=[StaticUpstream(f"{MODEL}__{v}", s.port, 50) for v, s in stack.upstreams.items()],
        route_timeout="15s",
        node_id="bench-plain-envoy",
    )
    plain = EnvoyProcess(bootstrap, work_dir=stack.work / "envoy-plain", log_dir=stack.logs)
    with plain.start(15):
        urls = {"on": stack.traffic_url, "off": f"http://127.0.0.1:{plain_port}/v2/models/{MODEL}/infer"}
        measured = await side_by_side(
            urls, lambda i: bodies[i % len(bodies)], rate_per_s=args.load_rate / 2, seconds=args.load_s
        )
    figures: dict[str, float] = {"failed": float(sum(measured.failed.values()))}
    for side, latencies in measured.latencies_s.items():
        figures[side] = percentile(latencies, 0.99) * 1000.0
        figures[f"{side}_p50"] = percentile(latencies, 0.5) * 1000.0
        progress(
            f"load side by side ({side}): {len(latencies) / measured.seconds:.0f} requests/s, "
            f"p99 {figures[side]:.2f} ms"
        )
    return figures


def rollbacks_of(records: list[audit_pb2.AuditRecord]) -> list[audit_pb2.AuditRecord]:
    """One record per rollback: its final record, or its "switched" record when the final one is not written yet."""
    latest: dict[str, audit_pb2.AuditRecord] = {}
    for record in records:
        if record.WhichOneof("event") == "rollback":
            latest[record.rollback.rollback_id] = record  # records are in seq order: the final one comes last
    return list(latest.values())


def first_5xx_after(results: Results, run: Run) -> float:
    done = [r.t_done for r in results.failed(since=run.injected_at - 1.0) if r.t_done >= run.injected_at]
    return min(done, default=math.nan)


def scenario_figures(runs: list[Run]) -> dict[str, Any]:
    recovered = [r.recovered_at - r.injected_at for r in runs]
    detected = [r.decided_at - r.injected_at for r in runs]
    actors: dict[str, int] = {}
    for run in runs:
        actors[run.actor or "none"] = actors.get(run.actor or "none", 0) + 1
    return {
        "runs": len(runs),
        "runs_not_recovered": sum(1 for v in recovered if math.isnan(v)),
        "fault_to_recovered_s_p50": rounded(percentile(recovered, 0.5)),
        "fault_to_recovered_s_max": rounded(max((v for v in recovered if not math.isnan(v)), default=math.nan)),
        "fault_to_detected_s_p50": rounded(percentile(detected, 0.5)),
        "decided_by": actors,
        "evidence": [r.rollback.trigger.rule.reason if r.rollback is not None else r.reason for r in runs],
    }


def analyse(
    bench: Bench, results: Results, steady: dict[str, Any], load: dict[str, Any] | None = None
) -> dict[str, Any]:
    every_run = bench.runs
    for run in every_run:
        run.first_5xx_at = first_5xx_after(results, run)
        back = results.first_time_all_from(STABLE, run.injected_at, until=run.until, ok_only=True)
        # A run the agent did not roll back (the bench moved v2 off by hand at the timeout) is not recovered.
        rolled_back = not math.isnan(run.status_at)
        run.recovered_at = back if back is not None and rolled_back else math.nan
    runs = [r for r in every_run if r.scenario == MAIN]

    def deltas(a: str, b: str, scale: float = 1.0) -> list[float]:
        return [(getattr(r, b) - getattr(r, a)) * scale for r in runs]

    recovered = deltas("injected_at", "recovered_at")
    detected = deltas("injected_at", "decided_at")
    status = deltas("injected_at", "status_at")
    ack_ms = [r.phases_ms.get("ack", math.nan) for r in runs]
    acked_at = [r.decided_at + a / 1000.0 for r, a in zip(runs, ack_ms, strict=True)]
    windows = [(r.injected_at, r.recovered_at if not math.isnan(r.recovered_at) else r.cleared_at) for r in every_run]
    noise_window = (steady["started_at"], steady["ended_at"] + 1.0) if steady.get("noise") else None

    def in_noise(f: Any) -> bool:
        return noise_window is not None and f.t_done >= noise_window[0] and f.t_sent <= noise_window[1]

    failed = [f for f in results.failed() if not in_noise(f)]
    outside = [f for f in failed if not any(f.t_done >= lo and f.t_sent <= hi for lo, hi in windows)]
    failed_in_fault = sum(1 for f in failed if any(f.t_done >= lo and f.t_sent <= hi for lo, hi in windows))
    actors: dict[str, int] = {}
    for run in runs:
        actors[run.actor or "none"] = actors.get(run.actor or "none", 0) + 1

    def p50(values: list[float], digits: int = 3) -> float | None:
        return rounded(percentile(values, 0.5), digits)

    return {
        "bench": "detect",
        "fault": bench.args.fault,
        "rate_per_s": bench.args.rate,
        "rearm": bench.args.rearm,
        "signals_interval_s": SIGNAL_INTERVAL_S,
        "healthy_s": bench.args.healthy_s,
        "runs": len(runs),
        "runs_not_recovered": sum(1 for v in recovered if math.isnan(v)),
        "fault_to_recovered_s_p50": p50(recovered),
        "fault_to_recovered_s_max": rounded(max((v for v in recovered if not math.isnan(v)), default=math.nan)),
        "fault_to_detected_s_p50": p50(detected),
        "fault_to_detected_s_max": rounded(max((v for v in detected if not math.isnan(v)), default=math.nan)),
        "fault_to_status_s_p50": p50(status),
        "fault_to_status_s_max": rounded(max((v for v in status if not math.isnan(v)), default=math.nan)),
        "breakdown_p50": {
            "fault_to_first_5xx_ms": p50(deltas("injected_at", "first_5xx_at", 1000.0), 1),
            "first_5xx_to_envoy_stats_ms": p50(deltas("first_5xx_at", "envoy_5xx_at", 1000.0), 1),
            "envoy_stats_to_deciding_tick_ms": p50(deltas("envoy_5xx_at", "sampled_at", 1000.0), 1),
            "deciding_tick_to_decision_ms": p50(deltas("sampled_at", "decided_at", 1000.0), 1),
            "verdict_audit_to_decision_ms": p50(deltas("verdict_at", "decided_at", 1000.0), 2),
            "decision_to_ack_ms": p50(ack_ms, 2),
            "ack_to_recovered_ms": p50([(r.recovered_at - a) * 1000.0 for r, a in zip(runs, acked_at, strict=True)], 1),
            "select_validate_warm_switch_ms": {
                name: p50([r.phases_ms.get(name, math.nan) for r in runs], 2)
                for name in ("select", "validate", "warm", "switch")
            },
        },
        "candidate_traffic_before_fault_s_p50": p50(deltas("armed_at", "injected_at")),
        "rearm_s_p50": p50(bench.rearm_s, 2),
        "decided_by": actors,
        "per_run": [
            {
                "recovered_s": rounded(r.recovered_at - r.injected_at),
                "detected_s": rounded(r.decided_at - r.injected_at),
                "status_s": rounded(r.status_at - r.injected_at),
                "evidence": r.rollback.trigger.rule.reason if r.rollback is not None else r.reason,
            }
            for r in runs
        ],
        "false_rollbacks": steady["false_rollbacks"],
        "steady_s": steady["steady_s"],
        "steady": {
            k: v for k, v in steady.items() if k not in ("false_rollbacks", "steady_s", "started_at", "ended_at")
        },
        "requests": len(results),
        "failed_requests": len(results.failed()),
        "failed_requests_in_fault_windows": failed_in_fault,
        "failed_requests_outside_fault_windows": len(outside),
        "failed_requests_steady_noise": len(results.failed()) - len(failed),
        "scenarios": {
            name: {
                "fault": bench.fault_label(name),
                **scenario_figures([r for r in every_run if r.scenario == name]),
            }
            for name in SCENARIOS
            if any(r.scenario == name for r in every_run)
        },
        "latency_sla_ms": bench.stack.latency_sla_ms,
        **(load or {}),
        "targets": {
            "fault_to_recovered_s_p50": 0.5,
            "fault_to_recovered_s_max": 1.0,
            "false_rollbacks": 0,
            "stream_p99_overhead_ratio": 1.05,
            "agent_cpu_percent_of_one_core": 25,
        },
    }


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    bodies = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]
    stack = Stack(work, args.verify_window_s, args.latency_sla_ms)
    try:
        progress(f"starting the stack in {work}")
        await asyncio.to_thread(stack.start)
        bench = Bench(args, stack)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            stack.session = session
            generator = TrafficGenerator(
                stack.traffic_url, lambda i: bodies[i % len(bodies)], rate_per_s=args.rate, concurrency=16
            )
            bench.generator = generator
            async with generator:
                await generator.wait_for_responses(int(args.rate), timeout_s=20)
                progress(f"stack up, {args.rate:g} requests/s through Envoy; {args.runs} fault runs ({args.rearm})")
                previous: Run | None = None
                for index in range(args.runs):
                    run_ = await bench.fault_run(index, previous)
                    bench.runs.append(run_)
                    previous = run_
                    progress(
                        f"run {index + 1}/{args.runs}: detected {run_.decided_at - run_.injected_at:.3f} s, "
                        f"status {run_.status_at - run_.injected_at:.3f} s after the fault "
                        f"({run_.rollback.trigger.rule.reason if run_.rollback else run_.reason})"
                    )
                for scenario in SCENARIOS:
                    for index in range(args.scenario_runs):
                        run_ = await bench.fault_run(len(bench.runs), previous, scenario, args.scenario_runs)
                        bench.runs.append(run_)
                        previous = run_
                        progress(
                            f"{scenario} run {index + 1}/{args.scenario_runs}: detected "
                            f"{run_.decided_at - run_.injected_at:.3f} s after the fault "
                            f"({run_.rollback.trigger.rule.reason if run_.rollback else run_.reason})"
                        )
                progress(f"steady run: {CANDIDATE} at 50 %, no fault, {args.steady_s:g} s")
                steady = await bench.steady(previous)
                progress(f"steady run done: {steady['false_rollbacks']} false rollback(s)")
                await generator.wait_for_responses(generator.sent, timeout_s=10)
            results = generator.results
            load = await load_phase(stack, args, bodies) if args.load_s > 0 else None
        return analyse(bench, results, steady, load)
    finally:
        await asyncio.to_thread(stack.close)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="fault runs")
    parser.add_argument("--steady-s", type=float, default=600.0, help="steady run without a fault, seconds")
    parser.add_argument(
        "--steady-noise",
        type=json.loads,
        default={"error_rate": 0.005, "latency_ms": 2.0, "latency_jitter_ms": 2.0},
        help="refserver faults on both versions during the steady run (realistic noise; {} for none)",
    )
    parser.add_argument("--scenario-runs", type=int, default=3, help=f"runs of each extra fault: {SCENARIOS}")
    parser.add_argument("--latency-sla-ms", type=float, default=25.0, help="SLA of the p99 rules (a bucket edge)")
    parser.add_argument("--load-rate", type=float, default=1000.0, help="requests/s of the CPU/RSS/stream phase")
    parser.add_argument("--load-s", type=float, default=20.0, help="seconds per half of that phase (0: skip it)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second through Envoy (open loop)")
    parser.add_argument("--fault", type=json.loads, default={"error_rate": 0.5}, help="refserver POST /faults body")
    parser.add_argument(
        "--healthy-s", type=float, default=30.0, help="healthy v2 traffic after it was judged ok (a full window)"
    )
    parser.add_argument("--rearm", choices=("restart", "drain"), default="restart", help="see the docstring")
    parser.add_argument("--verify-window-s", type=float, default=2.0, help="the agent's rollback.verify_window_s")
    parser.add_argument("--timeout-s", type=float, default=20.0, help="give up on a run after this long")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    write_result("detect", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
