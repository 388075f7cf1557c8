"""bench/chaos: an adversarial proof run of the agent's promises, with real processes on 127.0.0.1.

Two reference model servers (v1 stable, v2 candidate), the agent, a real Envoy and steady open-loop load through
Envoy for the whole run. The agent config starts v1=50 v2=50 (`initial_weights`), so an agent that forgets its
state and starts fresh sends traffic to a rolled-back v2 again: the harness sees it in the traffic.

Scenarios (`--only kill,storage,outage,envoy-restarts,fuzz`, each runnable alone; docs/chaos.md):

- kill: rollbacks triggered in turn by an operator (POST /v1/rollback), an alert (Alertmanager v4 webhook) and
  a rule (a 50 % error fault injected into v2), each with a SIGKILL of the agent at a random instant after the
  trigger; restart, then: a decision that was acknowledged, or already on Envoy when the agent died, holds with
  no retry; otherwise the trigger is retried (as an operator or Alertmanager would; a rule fires again); v2 then
  gets 0 of N requests; `audit verify` exits 0; the rollback is on record; re-admitting v2 without --force is
  refused (409) and with `set-weights --force` works.
- storage: after a rollback, each state fault (delete, truncate to 0, truncate mid-file, random bytes, another
  model's state.db, state dir removed) then a restart: the agent must refuse (exit 4, `error: state refused:`),
  Envoy keeps serving the last config, `state restore BACKUP` brings it back and v2 still gets nothing. While
  running, with v2 back at 50 %: a read-only state dir (chattr +i) and a full disk (RLIMIT_FSIZE proxy): state
  changes (set-weights, pause, a rollback alert) answer 503 naming the cause and traffic does not move; once
  the fault is lifted the alert's retry rolls v2 back.
- outage: the agent stopped for `--outage-s` under load: Envoy keeps serving; after the restart, the time to
  every Envoy in sync and /readyz 200.
- envoy-restarts: Envoy restarted `--envoy-restarts` times: time to the desired route, served split == desired.
- fuzz: `pytest tests/fuzz` with FUZZ_EXAMPLES=`--fuzz-examples`: examples, failures and duration per surface.

Every check is counted per scenario (each also checks that the agent logged no traceback meanwhile); the failing
ones are listed with what was seen. The result is one JSON
object (last line printed; bench/results/chaos.json, or --output). Exit 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.adapters.store.sqlite_store import read_audit_records  # noqa: E402
from agent.pb.rollback_agent.v1 import audit_pb2  # noqa: E402
from harness.agent import start_agent  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.chaos import (  # noqa: E402
    STATE_FAULTS,
    damage_state,
    file_size_limit,
    immutable,
    immutable_supported,
    parse_hypothesis_statistics,
    parse_junit,
    route_weights,
)
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import TrafficGenerator  # noqa: E402
from harness.measure import percentile, write_result  # noqa: E402
from harness.process import ManagedProcess  # noqa: E402
from harness.pyproc import module_argv, python_env  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import agent_config, sidecar_ports  # noqa: E402
from harness.wait import NotYet, WaitTimeout, async_wait_until, http_status  # noqa: E402
from refserver.client import sample_request  # noqa: E402

MODEL = "cancer"
STABLE, CANDIDATE = "v1", "v2"
TOKEN = "chaos-control-token"
WEBHOOK_TOKEN = "chaos-webhook-token"
SCENARIOS = ("kill", "storage", "outage", "envoy-restarts", "fuzz")
TRIGGERS = ("operator", "alert", "rule")
EXIT_STATE_REFUSED = 4
REFUSAL_PREFIX = "error: state refused:"
RULE_WINDOW_S = 3.0
VERIFY_WINDOW_S = 1.0
RULES = {
    "model": MODEL,
    "tier": "critical",
    "rules": [{"name": "error-rate-chaos", "kind": "error_rate", "window": "3s"}],
}
STORAGE_CAUSE = re.compile(
    r"read-only|read only|not permitted|permission|no space|disk|full|too large|EFBIG|ENOSPC|EPERM|EROFS", re.I
)
CHAOS_WEIGHTS = {STABLE: 50, CANDIDATE: 50}


class Checks:
    """Pass/fail counts per check name for one scenario, and what was seen when one failed."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.counts: dict[str, dict[str, int]] = {}
        self.failures: list[str] = []

    def record(self, name: str, ok: bool, detail: str = "", where: str = "") -> bool:
        entry = self.counts.setdefault(name, {"passed": 0, "failed": 0})
        entry["passed" if ok else "failed"] += 1
        if not ok:
            place = f"{self.scenario}[{where}]" if where else self.scenario
            self.failures.append(f"{place} {name}: {detail or 'failed'}"[:600])
            print(f"FAIL {place} {name}: {detail}"[:600], file=sys.stderr, flush=True)
        return ok

    @property
    def failed(self) -> int:
        return sum(c["failed"] for c in self.counts.values())

    def summary(self) -> dict[str, Any]:
        return {"checks": self.counts, "checks_failed": self.failed, "failures": self.failures}


def alert_payload(cycle: int) -> dict[str, Any]:
    """A firing ModelVersionHighErrorRate alert for v2 (action=rollback), Alertmanager webhook version 4."""
    starts = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    labels = {
        "alertname": "ModelVersionHighErrorRate",
        "model": MODEL,
        "version": CANDIDATE,
        "severity": "critical",
        "action": "rollback",
    }
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"chaos cycle {cycle}"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.chaos:9090/graph",
        "fingerprint": f"c4a05{cycle:011x}{random.getrandbits(32):08x}",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ModelVersionHighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "rollback-agent",
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.chaos:9093",
        "alerts": [alert],
    }


def _weights(policy: Any) -> dict[str, int]:
    return {w.version: w.weight for w in policy.weights}


def closed_rollback_of_candidate(records: Sequence[audit_pb2.AuditRecord]) -> tuple[str, str]:
    """(how, '') when `records` hold v2's rollback as a decision recorded write-ahead and closed: a TrafficIntent
    taking v2 out of traffic, its TrafficChanged outcome naming it (`acked`, or `interrupted` when the agent died
    before recording it and the next start reconciled it), and the rollback it belongs to closed by a final
    Rollback record or a RollbackInterrupted one; else ('', what is missing)."""
    outcomes = {
        r.traffic_changed.intent_seq: r.traffic_changed.outcome
        for r in records
        if r.WhichOneof("event") == "traffic_changed" and r.traffic_changed.intent_seq
    }
    closures: dict[str, str] = {}
    for r in records:
        which = r.WhichOneof("event")
        if which == "rollback" and r.rollback.outcome != "switched":
            closures[r.rollback.rollback_id] = r.rollback.outcome
        elif which == "rollback_interrupted":
            closures[r.rollback_interrupted.rollback_id] = f"interrupted at the {r.rollback_interrupted.stage}"
    intents = [
        r
        for r in records
        if r.WhichOneof("event") == "traffic_intent"
        and _weights(r.traffic_intent.from_policy).get(CANDIDATE, 0) > 0
        and _weights(r.traffic_intent.to_policy).get(CANDIDATE, 0) == 0
    ]
    if not intents:
        return "", f"no traffic intent taking {CANDIDATE} out; events {[r.WhichOneof('event') for r in records]}"
    seen = []
    for intent in intents:
        outcome = outcomes.get(intent.seq, "")
        rollback_id = intent.traffic_intent.rollback_id
        closure = closures.get(rollback_id, "") if rollback_id else ""
        if outcome in ("acked", "interrupted") and closure:
            return f"intent {outcome}; rollback {closure}", ""
        seen.append(
            f"intent {intent.seq} (rollback {rollback_id or 'none'}): outcome {outcome or 'none'}, "
            f"rollback closed: {closure or 'no'}"
        )
    return "", "; ".join(seen)


class Stack:
    """The processes under test and the ways to poke them."""

    def __init__(self, work: Path, stack: ExitStack, rate: float, window: int) -> None:
        self.work = work
        self.exit_stack = stack
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.window_n = window
        self.state_dir = work / "state"
        self.config_path = work / "agent.yaml"
        self.ports: dict[str, int] = {}
        self.servers: dict[str, RefServer] = {}
        self.agent: ManagedProcess | None = None
        self.envoy: EnvoyProcess | None = None
        self.generator: TrafficGenerator | None = None
        self.session: aiohttp.ClientSession | None = None
        self.quiet_at = 0.0  # injected v2 errors have left the rule's window by then (monotonic)

    # -- setup ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        started = await asyncio.gather(
            *(asyncio.to_thread(RefServer(MODEL, v, None, self.logs).start, 30) for v in (STABLE, CANDIDATE))
        )
        for server in started:
            self.servers[server.version] = server
            self.exit_stack.callback(server.stop)
        self.ports = sidecar_ports()
        self.write_config(self.config_path, MODEL, self.state_dir, self.ports)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.agent = self.exit_stack.enter_context(
            start_agent(self.config_path, self.logs, {"ROLLBACK_AGENT_TOKEN": TOKEN}, name="agent")
        )
        await self.wait_http("/healthz", 20)
        bootstrap = agent_bootstrap(
            xds_port=self.ports["xds"],
            node_id="chaos-envoy",
            node_cluster=MODEL,
            admin_port=self.ports["admin"],
        )
        self.envoy = EnvoyProcess(bootstrap, work_dir=self.work / "envoy", log_dir=self.logs)
        self.exit_stack.callback(self.envoy.stop)
        await self.envoy.start_async(15)
        await self.wait_ready(30)
        bodies = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]
        self.generator = TrafficGenerator(
            f"http://127.0.0.1:{self.ports['listener']}/v2/models/{MODEL}/infer",
            lambda i: bodies[i % len(bodies)],
            rate_per_s=self.rate,
            concurrency=16,
        )
        await self.generator.start()
        await self.generator.wait_for_responses(int(self.rate // 2), timeout_s=20)

    async def close(self) -> None:
        if self.generator is not None:
            await self.generator.stop()
        if self.session is not None:
            await self.session.close()

    def write_config(self, path: Path, model: str, state_dir: Path, ports: dict[str, int]) -> None:
        rules = self.work / "rules.yaml"
        rules.write_text(yaml.safe_dump({**RULES, "model": model}))
        token = self.work / "webhook-token"
        token.write_text(WEBHOOK_TOKEN + "\n")
        token.chmod(0o600)
        config = agent_config(
            model=model,
            upstreams={v: s.port for v, s in self.servers.items()},
            ports=ports,
            state_dir=state_dir,
            stable=STABLE,
            candidate=CANDIDATE,
            initial_weights=CHAOS_WEIGHTS,
            ack_timeout_s=5,
            rules={"file": str(rules), "reload_interval_s": 2},
            rollback={
                "cooldown_s": 0,
                "max_per_hour": 100000,
                "verify_window_s": VERIFY_WINDOW_S,
                "confirm_timeout_s": 2,
            },
            alerts={
                "routes": [{"match": {"alertname": {"regex": "ModelVersion.*"}}, "action": "from_label"}],
                "webhook": {"enabled": True, "bearer_token_file": str(token)},
            },
        )
        path.write_text(yaml.safe_dump(config))

    # -- the agent ------------------------------------------------------------------------------------------

    @property
    def proc(self) -> ManagedProcess:
        assert self.agent is not None
        return self.agent

    @property
    def gen(self) -> TrafficGenerator:
        assert self.generator is not None
        return self.generator

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['control']}"

    async def wait_http(self, path: str, timeout_s: float) -> None:
        def probe() -> bool | NotYet:
            self.proc.check_alive()
            status = http_status(self.http_url + path, timeout_s=0.5)
            return status == 200 or NotYet(status)

        await async_wait_until(lambda: asyncio.to_thread(probe), timeout_s, 0.02, f"agent {path} 200")

    async def wait_ready(self, timeout_s: float = 30) -> float:
        """Wait for /readyz 200 (every connected Envoy ACKed the current config); returns when (monotonic)."""
        await self.wait_http("/readyz", timeout_s)
        return time.monotonic()

    def restart_agent(self) -> float:
        """Start the agent process again; returns the moment it was started (monotonic)."""
        if self.proc.alive:
            self.proc.stop()
        started = time.monotonic()
        self.proc.start()
        return started

    def log_offset(self) -> int:
        return self.proc.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.proc.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    async def control(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 30
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a control API call; status 0 when nothing answered."""
        assert self.session is not None
        try:
            async with self.session.request(
                method,
                self.control_url + path,
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                text = await response.text()
                try:
                    return response.status, json.loads(text or "{}")
                except ValueError:
                    return response.status, {"message": text}
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, {"error": f"{type(exc).__name__}: {exc}"}

    async def post_alert(self, payload: dict[str, Any], timeout_s: float = 30) -> tuple[int, str]:
        assert self.session is not None
        try:
            async with self.session.post(
                self.http_url + "/v1/alerts",
                json=payload,
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    async def cli(self, *args: str, timeout_s: float = 60) -> tuple[int, str]:
        """`rollback-agent ARGS --config F` as a subprocess: (exit code, stdout + stderr)."""
        argv = module_argv("agent", [*args, "--config", str(self.config_path)])
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=python_env({"ROLLBACK_AGENT_TOKEN": TOKEN}),
            cwd=ROOT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            return -1, f"timed out after {timeout_s}s"
        return process.returncode or 0, out.decode(errors="replace").strip()

    # -- Envoy and traffic -----------------------------------------------------------------------------------

    async def route(self) -> dict[str, int]:
        """{version: weight} of the route Envoy serves now."""
        assert self.envoy is not None
        dump = await self.envoy.config_dump_async("dynamic_route_configs")
        prefix = f"{MODEL}__"
        return {name.removeprefix(prefix): w for name, w in route_weights(dump).items()}

    async def wait_route(self, accept: Callable[[dict[str, int]], bool], timeout_s: float, what: str) -> bool:
        try:
            await async_wait_until(
                lambda: self._route_or_not_yet(accept), timeout_s, interval_s=0.05, what=f"Envoy's route {what}"
            )
        except WaitTimeout:
            return False
        return True

    async def _route_or_not_yet(self, accept: Callable[[dict[str, int]], bool]) -> dict[str, int] | NotYet:
        weights = await self.route()
        return weights if accept(weights) else NotYet(weights)

    async def window(self, n: int | None = None) -> tuple[dict[str | None, int], int, float]:
        """Send-time window of about `n` requests from now: (responses by version, failed, window start)."""
        n = n or self.window_n
        since = time.monotonic()
        await self.gen.wait_for_responses(len(self.gen.log) + self.gen.in_flight + n, timeout_s=30)
        until = time.monotonic()
        snapshot = self.gen.snapshot()
        counts = snapshot.counts_by_version(since, until)
        return counts, len(snapshot.failed(since, until)), since

    # -- records ---------------------------------------------------------------------------------------------

    def audit_records(self) -> list[audit_pb2.AuditRecord]:
        return read_audit_records(self.state_dir / "state.db")

    async def last_seq(self) -> int:
        try:
            records = await asyncio.to_thread(self.audit_records)
        except (sqlite3.Error, OSError):
            return 0
        return records[-1].seq if records else 0

    async def rollback_on_record(self, after_seq: int, timeout_s: float) -> tuple[str, str]:
        """('', how the rollback closed) once the records after `after_seq` hold v2's rollback as a closed
        decision (see `closed_rollback_of_candidate`), else (what the trail has, '')."""
        last: list[str] = []

        async def found() -> str | NotYet:
            records = [r for r in await asyncio.to_thread(self.audit_records) if r.seq > after_seq]
            how, missing = closed_rollback_of_candidate(records)
            last[:] = [missing]
            return how or NotYet(missing)

        try:
            how = await async_wait_until(found, timeout_s, interval_s=0.1, what="the rollback on record")
        except WaitTimeout:
            return last[0] if last else "no records", ""
        return "", str(how)

    # -- operations ------------------------------------------------------------------------------------------

    async def readmit(self, checks: Checks, where: str) -> None:
        """Put v2 back in traffic at 50/50: first without --force (must be refused: v2 failed), then with
        `set-weights --force` (the operator's word). When --force is not there the control API is used without
        it so the run can go on (the check stays failed)."""
        await asyncio.sleep(max(0.0, self.quiet_at - time.monotonic()))
        weights = [{"version": v, "weight": w} for v, w in CHAOS_WEIGHTS.items()]
        status, body = await self.control("POST", "/v1/traffic", {"weights": weights, "reason": "chaos: no force"})
        checks.record("unforced_readmit_refused_409", status == 409, f"answered {status}: {body}", where)
        code, out = await self.cli(
            "set-weights", *(f"{v}={w}" for v, w in CHAOS_WEIGHTS.items()), "--force", "--reason", "chaos: re-admit"
        )
        if not checks.record("forced_readmit", code == 0, f"exit {code}: {out[-300:]}", where) and status != 200:
            await self.control("POST", "/v1/traffic", {"weights": weights, "reason": "chaos: fallback re-admit"})
        await self.wait_route(lambda r: r.get(CANDIDATE, 0) > 0, 15, "with v2")

    async def ensure_rolled_back(self) -> None:
        """v2 out of traffic (an operator rollback if it is in)."""
        if (await self.route()).get(CANDIDATE, 0) > 0:
            await self.control("POST", "/v1/rollback", {"reason": "chaos: set-up"})
            if not await self.wait_route(lambda r: r.get(CANDIDATE, 0) == 0, 20, "without v2"):
                raise RuntimeError(f"set-up: could not roll v2 back; route {await self.route()}")


# -- kill -----------------------------------------------------------------------------------------------------


def kill_delay(rng: random.Random, trigger: str) -> float:
    """Seconds from the trigger to the SIGKILL: mostly within 300 ms, sometimes later (the verification window).
    A rule decides about 0.5-2 s after its fault is injected, so its delays are counted from the fault and
    spread over that span."""
    if trigger == "rule":
        return rng.uniform(0.3, 3.0)
    if rng.random() < 0.6:
        return rng.uniform(0.0, 0.3)
    return rng.uniform(0.3, 0.3 + VERIFY_WINDOW_S + 0.5)


async def send_trigger(stack: Stack, trigger: str, cycle: int, payload: dict[str, Any]) -> tuple[int, str]:
    if trigger == "operator":
        status, body = await stack.control("POST", "/v1/rollback", {"reason": f"chaos cycle {cycle}"})
        return status, json.dumps(body)[:300]
    return await stack.post_alert(payload)


async def kill_cycle(stack: Stack, checks: Checks, cycle: int, trigger: str, delay: float) -> dict[str, Any]:
    where = f"{cycle}:{trigger}"
    gen = stack.gen
    if (await stack.route()).get(CANDIDATE, 0) == 0:
        await stack.readmit(checks, where)
    before_seq = await stack.last_seq()
    payload = alert_payload(cycle)
    began = time.monotonic()
    if trigger == "rule":
        await stack.servers[CANDIDATE].set_faults_async({"error_rate": 0.5})
    sent = time.monotonic()
    task = None if trigger == "rule" else asyncio.create_task(send_trigger(stack, trigger, cycle, payload))
    await asyncio.sleep(max(0.0, sent + delay - time.monotonic()))
    stack.proc.kill()
    killed = time.monotonic()
    answer = (0, "")
    if task is not None:
        answer = await task  # the connection dies with the agent, so this is quick
    acknowledged = 200 <= answer[0] < 300
    at_kill = await stack.route()
    switched = at_kill.get(CANDIDATE, 0) == 0
    restarted = stack.restart_agent()
    ready_ok = True
    try:
        ready = await stack.wait_ready(30)
    except (WaitTimeout, RuntimeError) as exc:
        ready_ok = checks.record("restarted_ready", False, str(exc), where)
        ready = time.monotonic()
    retried = False
    if ready_ok:

        def out(route: dict[str, int]) -> bool:
            return route.get(CANDIDATE, 0) == 0

        if acknowledged or switched:
            held = await stack.wait_route(out, 10, "without v2 (no retry)")
            checks.record(
                "decision_held_without_retry",
                held,
                f"acknowledged={acknowledged} switched_before_kill={switched}; route now {await stack.route()}",
                where,
            )
        elif not out(await stack.route()):
            retried = True
            if trigger != "rule":
                answer = await send_trigger(stack, trigger, cycle, payload)
            held = await stack.wait_route(out, 20, "without v2 (after the retry)")
            checks.record("rolled_back_after_retry", held, f"retry answered {answer}; {await stack.route()}", where)
    counts, _, _ = await stack.window()
    v2_since_kill = gen.snapshot().counts_by_version(killed + 0.05).get(CANDIDATE, 0) if switched else 0
    checks.record(
        "rolled_back_version_no_traffic",
        counts.get(CANDIDATE, 0) == 0 and v2_since_kill == 0,
        f"{counts} in the window after ready; {v2_since_kill} v2 responses since the kill",
        where,
    )
    missing, closed_as = await stack.rollback_on_record(before_seq, 10)
    checks.record("decision_on_record", not missing, missing, where)
    code, out_text = await stack.cli("audit", "verify")
    checks.record("audit_verify", code == 0, f"exit {code}: {out_text[-400:]}", where)
    ended = time.monotonic()
    failed = gen.snapshot().failed(began, ended)
    injected = sum(1 for r in failed if trigger == "rule" and r.version == CANDIDATE and r.status == 500)
    if trigger == "rule":
        await stack.servers[CANDIDATE].clear_faults_async()
        last_error = max((r.t_done for r in failed if r.version == CANDIDATE), default=ended)
        stack.quiet_at = last_error + RULE_WINDOW_S + 2.0
    record = {
        "cycle": cycle,
        "trigger": trigger,
        "kill_delay_ms": round(delay * 1000, 1),
        "acknowledged_before_kill": acknowledged,
        "switched_before_kill": switched,
        "retried": retried,
        "on_record": closed_as,
        "restart_to_ready_s": round(ready - restarted, 3),
        "failed_requests": len(failed) - injected,
        "injected_errors": injected,
        "checks": {},
    }
    print(
        f"kill {cycle} {trigger}: delay {delay * 1000:.0f} ms ack={acknowledged} switched={switched} "
        f"retried={retried} ready in {ready - restarted:.2f}s, {record['failed_requests']} failed requests",
        file=sys.stderr,
        flush=True,
    )
    return record


async def kill_scenario(stack: Stack, n: int, rng: random.Random) -> dict[str, Any]:
    checks = Checks("kill")
    cycles = []
    for cycle in range(n):
        trigger = TRIGGERS[cycle % len(TRIGGERS)]
        before = {k: dict(v) for k, v in checks.counts.items()}
        record = await kill_cycle(stack, checks, cycle, trigger, kill_delay(rng, trigger))
        record["checks"] = {
            name: c["failed"] == before.get(name, {}).get("failed", 0) for name, c in checks.counts.items()
        }
        cycles.append(record)
    if cycles:
        await stack.readmit(checks, "end")
    ready_s = [c["restart_to_ready_s"] for c in cycles]
    return {
        "cycles": len(cycles),
        "by_trigger": {t: sum(1 for c in cycles if c["trigger"] == t) for t in TRIGGERS},
        "acknowledged_before_kill": sum(c["acknowledged_before_kill"] for c in cycles),
        "switched_before_kill": sum(c["switched_before_kill"] for c in cycles),
        "retried": sum(c["retried"] for c in cycles),
        "failed_requests": sum(c["failed_requests"] for c in cycles),
        "restart_to_ready_s_p50": round(percentile(ready_s, 0.5), 3) if ready_s else None,
        "restart_to_ready_s_max": round(max(ready_s), 3) if ready_s else None,
        **checks.summary(),
        "per_cycle": cycles,
    }


# -- storage --------------------------------------------------------------------------------------------------


async def foreign_state_db(stack: Stack) -> Path:
    """Another model's state.db: an agent for model `fraud-scorer` run against the same servers until it serves
    (its store complete), then stopped."""
    work = stack.work / "foreign"
    work.mkdir(exist_ok=True)
    config = work / "agent.yaml"
    ports = sidecar_ports()
    stack.write_config(config, "fraud-scorer", work / "state", ports)
    other = ManagedProcess(
        module_argv("agent", ["run", "--config", str(config)]),
        name="foreign-agent",
        log_dir=stack.logs,
        env=python_env({"ROLLBACK_AGENT_TOKEN": TOKEN}),
        cwd=ROOT,
    )
    with other.start():
        db = work / "state" / "state.db"

        def serving() -> bool | NotYet:
            other.check_alive()
            status = http_status(f"http://127.0.0.1:{ports['http']}/healthz", timeout_s=0.5)
            return (status == 200 and db.exists()) or NotYet(status)

        await async_wait_until(lambda: asyncio.to_thread(serving), 20, 0.05, "the foreign agent serving")
    return db


async def start_expecting_refusal(stack: Stack, timeout_s: float = 20) -> tuple[int | None, str, bool]:
    """Start the agent on damaged state: (exit code or None, its refusal line or '', started_fresh)."""
    offset = stack.log_offset()
    stack.restart_agent()

    def outcome() -> bool | NotYet:
        if not stack.proc.alive:
            return True
        return http_status(stack.http_url + "/healthz", timeout_s=0.5) == 200 or NotYet("starting")

    with contextlib.suppress(WaitTimeout):
        await async_wait_until(lambda: asyncio.to_thread(outcome), timeout_s, 0.05, "the agent to exit or serve")
    text = stack.log_since(offset)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith(REFUSAL_PREFIX)), "")
    if stack.proc.alive:
        return None, line, True
    return stack.proc.returncode, line, False


def snapshot_state(stack: Stack, into: Path) -> None:
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(stack.state_dir, into)


def put_back_state(stack: Stack, snapshot: Path) -> None:
    shutil.rmtree(stack.state_dir, ignore_errors=True)
    shutil.copytree(snapshot, stack.state_dir)


async def storage_offline(stack: Stack, checks: Checks, rng: random.Random, faults: Sequence[str]) -> list[Any]:
    backup = stack.work / "backup.db"
    code, out = await stack.cli("state", "backup", str(backup))
    checks.record("backup_command", code == 0 and backup.exists(), f"exit {code}: {out[-300:]}", "setup")
    stack.proc.stop()
    snapshot = stack.work / "state-snapshot"
    snapshot_state(stack, snapshot)
    if not backup.exists():
        shutil.copyfile(snapshot / "state.db", backup)  # so `state restore` can still be judged
    foreign = await foreign_state_db(stack) if "foreign" in faults else None
    rows = []
    for fault in faults:
        done = damage_state(fault, stack.state_dir, rng, foreign)
        code_or_none, line, fresh = await start_expecting_refusal(stack)
        refused = code_or_none == EXIT_STATE_REFUSED and bool(line)
        seen = "it started fresh" if fresh else f"exit {code_or_none}, refusal line {line!r}"
        checks.record("refused_exit_4", refused, f"{done}: {seen}", fault)
        fresh_v2 = None
        if fresh:
            with contextlib.suppress(WaitTimeout, RuntimeError):
                await stack.wait_ready(10)
            counts, _, _ = await stack.window()
            fresh_v2 = counts.get(CANDIDATE, 0)
            stack.proc.stop()
        counts, failed, _ = await stack.window()
        checks.record(
            "envoy_kept_last_config",
            counts.get(CANDIDATE, 0) == 0 and failed == 0,
            f"{counts}, {failed} failed" + (f" (the fresh agent had sent {fresh_v2} to v2)" if fresh else ""),
            fault,
        )
        code, out = await stack.cli("state", "restore", str(backup), "--reason", f"chaos: {fault}")
        recovered = checks.record("recovery_command", code == 0, f"exit {code}: {out[-300:]}", fault)
        if not recovered:
            put_back_state(stack, snapshot)  # a harness repair, so the next fault starts from the same state
        stack.restart_agent()
        try:
            await stack.wait_ready(30)
        except (WaitTimeout, RuntimeError) as exc:
            checks.record("ready_after_recovery", False, str(exc), fault)
            put_back_state(stack, snapshot)
            stack.restart_agent()
            await stack.wait_ready(30)
        counts, _, _ = await stack.window()
        checks.record(
            "rolled_back_version_no_traffic_after_recovery",
            counts.get(CANDIDATE, 0) == 0,
            f"{counts} after {'state restore' if recovered else 'a harness repair'}",
            fault,
        )
        rows.append({"fault": fault, "done": done, "refused": refused, "exit": code_or_none, "started_fresh": fresh})
        print(f"storage {fault}: {seen}; recovery {'ok' if recovered else 'FAILED'}", file=sys.stderr, flush=True)
        stack.proc.stop()
    stack.restart_agent()
    await stack.wait_ready(30)
    return rows


async def refused_while_faulty(stack: Stack, checks: Checks, fault: str, payload: dict[str, Any]) -> None:
    """With a storage fault in force and v2 serving: every state change (set-weights taking v2 out, pause, a
    rollback alert) answers 503 naming the cause; traffic does not move."""
    route_before = await stack.route()
    code, out = await stack.cli("set-weights", f"{STABLE}=100", f"{CANDIDATE}=0", "--reason", "chaos: storage")
    checks.record(
        "set_weights_503_naming_cause",
        code != 0 and "503" in out and bool(STORAGE_CAUSE.search(out)),
        f"exit {code}: {out[-300:]}",
        fault,
    )
    status, body = await stack.control("POST", "/v1/pause", {"reason": "chaos: storage"})
    text = json.dumps(body)
    checks.record(
        "pause_503_naming_cause", status == 503 and bool(STORAGE_CAUSE.search(text)), f"{status}: {text}", fault
    )
    status, text = await stack.post_alert(payload)
    checks.record(
        "webhook_503_naming_cause", status == 503 and bool(STORAGE_CAUSE.search(text)), f"{status}: {text}", fault
    )
    counts, _, _ = await stack.window()
    route_after = await stack.route()
    checks.record(
        "traffic_did_not_move",
        route_after == route_before and counts.get(CANDIDATE, 0) > 0 and counts.get(STABLE, 0) > 0,
        f"route {route_before} -> {route_after}; window {counts}",
        fault,
    )
    checks.record("agent_survived", stack.proc.alive, f"exit {stack.proc.returncode}", fault)


async def after_fault(stack: Stack, checks: Checks, fault: str, payload: dict[str, Any]) -> None:
    """The fault lifted: the agent (restarted if the fault killed it; `agent_survived` says so) takes the
    alert's retry, as Alertmanager sends it after a 503, and v2 leaves the route."""
    if not stack.proc.alive:
        stack.restart_agent()
    await stack.wait_ready(30)
    status, text = await stack.post_alert(payload)
    out = await stack.wait_route(lambda r: r.get(CANDIDATE, 0) == 0, 15, "without v2 (the alert's retry)")
    checks.record(
        "alert_retry_acts_after_fault", status == 200 and out, f"{status}: {text[-300:]}; {await stack.route()}", fault
    )


async def storage_scenario(stack: Stack, rng: random.Random, faults: Sequence[str]) -> dict[str, Any]:
    checks = Checks("storage")
    await stack.ensure_rolled_back()
    rows = await storage_offline(stack, checks, rng, faults)
    running: dict[str, str] = {}
    why_not = immutable_supported(stack.state_dir)
    if why_not is None:
        await stack.readmit(checks, "read_only")
        payload = alert_payload(10_001)
        with immutable(stack.state_dir):
            await refused_while_faulty(stack, checks, "read_only", payload)
        running["read_only"] = "chattr +i on the state dir and its files (EPERM on every write)"
        await after_fault(stack, checks, "read_only", payload)
    else:
        running["read_only"] = f"not run: {why_not}"
    await stack.readmit(checks, "disk_full")
    if stack.proc.alive and stack.proc.pid is not None:
        payload = alert_payload(10_002)
        with file_size_limit(stack.proc.pid):
            await refused_while_faulty(stack, checks, "disk_full", payload)
        running["disk_full"] = "proxy: RLIMIT_FSIZE 0 on the agent (EFBIG on every file write), not a real ENOSPC"
        await after_fault(stack, checks, "disk_full", payload)
    code, out = await stack.cli("audit", "verify")
    checks.record("audit_verify", code == 0, f"exit {code}: {out[-400:]}", "end")
    return {"faults": rows, "running_faults": running, **checks.summary()}


# -- outage and Envoy restarts --------------------------------------------------------------------------------


async def outage_scenario(stack: Stack, outage_s: float) -> dict[str, Any]:
    checks = Checks("outage")
    route_before = await stack.route()
    stopped = time.monotonic()
    stack.proc.stop()
    await asyncio.sleep(outage_s)  # the outage itself: the agent is down this long under load
    route_during = await stack.route()
    down = stack.gen.snapshot()
    failed_during = len(down.failed(stopped, time.monotonic()))
    requests_during = sum(down.counts_by_status(stopped, time.monotonic()).values())
    checks.record("route_kept_during_outage", route_during == route_before, f"{route_before} -> {route_during}")
    checks.record("no_failed_requests_during_outage", failed_during == 0, f"{failed_during} of {requests_during}")
    started = stack.restart_agent()

    async def in_sync() -> bool | NotYet:
        status, body = await stack.control("GET", "/v1/status", timeout_s=2)
        envoys = body.get("envoys", []) if status == 200 else []
        return (bool(envoys) and all(e.get("in_sync") for e in envoys)) or NotYet(envoys or status)

    resync_s = ready_s = None
    try:
        await async_wait_until(in_sync, 30, 0.02, "every Envoy in sync")
        resync_s = time.monotonic() - started
        ready_s = await stack.wait_ready(30) - started
        checks.record("resynced", True)
    except (WaitTimeout, RuntimeError) as exc:
        checks.record("resynced", False, str(exc))
    route_after = await stack.route()
    checks.record("route_after_restart_unchanged", route_after == route_before, f"{route_before} -> {route_after}")
    return {
        "outage_s": outage_s,
        "requests_during_outage": requests_during,
        "failed_requests_during_outage": failed_during,
        "agent_start_to_envoy_in_sync_s": None if resync_s is None else round(resync_s, 3),
        "agent_start_to_readyz_s": None if ready_s is None else round(ready_s, 3),
        **checks.summary(),
    }


async def envoy_restart_scenario(stack: Stack, n: int) -> dict[str, Any]:
    checks = Checks("envoy-restarts")
    assert stack.envoy is not None
    if (await stack.route()).get(CANDIDATE, 0) == 0:
        await stack.readmit(checks, "setup")
    _, body = await stack.control("GET", "/v1/status")
    desired = {v["version"]: int(v.get("desired_weight", 0)) for v in body.get("versions", [])}
    rows = []
    for k in range(n):
        began = time.monotonic()
        await stack.envoy.restart_async(15)
        up = time.monotonic()
        synced = await stack.wait_route(lambda r: r == desired, 30, f"== desired {desired}")
        resync = time.monotonic() - up
        checks.record("resynced", synced, f"route {await stack.route()} vs desired {desired}", str(k))
        await stack.wait_ready(30)
        since = time.monotonic()
        await stack.gen.wait_for_responses(len(stack.gen.log) + stack.gen.in_flight + stack.window_n * 2, 30)
        snapshot = stack.gen.snapshot()
        split = snapshot.split({v: w for v, w in desired.items() if w > 0}, since, time.monotonic())
        checks.record("served_split_equals_desired", bool(split), str(split), str(k))
        failed = len(snapshot.failed(began, since))
        rows.append({"restart": k, "resync_s": round(resync, 3), "failed_requests": failed, "split_ok": bool(split)})
    resyncs = [r["resync_s"] for r in rows]
    return {
        "restarts": n,
        "desired": desired,
        "envoy_start_to_route_s_p50": round(percentile(resyncs, 0.5), 3) if resyncs else None,
        "envoy_start_to_route_s_max": round(max(resyncs), 3) if resyncs else None,
        "failed_requests": sum(r["failed_requests"] for r in rows),
        "per_restart": rows,
        **checks.summary(),
    }


# -- fuzz -----------------------------------------------------------------------------------------------------


async def fuzz_scenario(work: Path, examples: int, timeout_s: float) -> dict[str, Any]:
    checks = Checks("fuzz")
    suites = ROOT / "tests" / "fuzz"
    if not checks.record("fuzz_suites_present", any(suites.glob("test_*.py")), f"no tests/fuzz/test_*.py in {ROOT}"):
        return {"examples_per_test": examples, "surfaces": {}, **checks.summary()}
    junit = work / "fuzz-junit.xml"
    argv = module_argv(
        "pytest",
        [str(suites), "-q", "-rA", "-p", "no:cacheprovider", "--hypothesis-show-statistics", f"--junitxml={junit}"],
    )
    proc = ManagedProcess(
        argv, name="fuzz-pytest", log_dir=work / "logs", env=python_env({"FUZZ_EXAMPLES": str(examples)}), cwd=ROOT
    )
    began = time.monotonic()
    with proc.start():
        try:
            code = await asyncio.to_thread(proc.wait, timeout_s)
        except Exception:  # subprocess.TimeoutExpired
            code = -1
    duration = time.monotonic() - began
    output = proc.log_path.read_text(errors="replace")
    stats = parse_hypothesis_statistics(output)
    outcomes = parse_junit(junit) if junit.exists() else []
    checks.record("pytest_completed", code in (0, 1) and bool(outcomes), f"exit {code}; log {proc.log_path}")
    surfaces: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        surface = outcome.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
        entry = surfaces.setdefault(
            surface,
            {"tests": 0, "examples": 0, "failing_examples": 0, "failed_tests": 0, "duration_s": 0.0, "failures": []},
        )
        counts = next((v for k, v in stats.items() if k.endswith(outcome.nodeid.split("::", 1)[1])), {})
        entry["tests"] += 1
        entry["examples"] += sum(counts.values())
        entry["failing_examples"] += counts.get("failing", 0)
        entry["duration_s"] = round(entry["duration_s"] + outcome.duration_s, 2)
        if outcome.outcome in ("failed", "error"):
            entry["failed_tests"] += 1
            entry["failures"].append(f"{outcome.nodeid}: {outcome.message[:300]}")
    for surface, entry in surfaces.items():
        checks.record(f"fuzz_{surface}", entry["failed_tests"] == 0, "; ".join(entry["failures"]) or "failed")
    return {"examples_per_test": examples, "duration_s": round(duration, 1), "surfaces": surfaces, **checks.summary()}


# -- main -----------------------------------------------------------------------------------------------------


TRACEBACK = "Traceback (most recent call last)"


async def timed_on_stack(stack: Stack, scenario: str, run_scenario: Callable[[], Any]) -> dict[str, Any]:
    """Run one scenario; add its duration and the check that the agent logged no traceback meanwhile."""
    offset = stack.log_offset()
    began = time.monotonic()
    part: dict[str, Any] = await run_scenario()
    part["duration_s"] = round(time.monotonic() - began, 1)
    text = stack.log_since(offset)
    tracebacks = text.count(TRACEBACK)
    entry = part["checks"].setdefault("no_traceback_in_agent_log", {"passed": 0, "failed": 0})
    if tracebacks:
        at = text.index(TRACEBACK)
        detail = f"{scenario} no_traceback_in_agent_log: {tracebacks} in {stack.proc.log_path}; first: "
        part["failures"].append((detail + text[max(0, at - 200) : at + 1200])[:1500])
        part["checks_failed"] += 1
        entry["failed"] += 1
        print(f"FAIL {part['failures'][-1]}", file=sys.stderr, flush=True)
    else:
        entry["passed"] += 1
    return part


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    began = time.monotonic()
    rng = random.Random(args.seed)
    only = args.only
    result: dict[str, Any] = {
        "bench": "chaos",
        "seed": args.seed,
        "rate_per_s": args.rate,
        "window_requests": args.window,
        "scenarios_run": only,
    }
    stack_scenarios = [s for s in only if s != "fuzz"]
    with ExitStack() as exits:
        if stack_scenarios:
            stack = Stack(work, exits, args.rate, args.window)
            try:
                started = time.monotonic()
                await stack.start()
                result["setup_s"] = round(time.monotonic() - started, 1)
                faults = args.storage_faults
                scenarios: list[tuple[str, str, Callable[[], Any]]] = [
                    ("kill", "kill", lambda: kill_scenario(stack, args.kills, rng)),
                    ("storage", "storage", lambda: storage_scenario(stack, rng, faults)),
                    ("outage", "outage", lambda: outage_scenario(stack, args.outage_s)),
                    ("envoy-restarts", "envoy_restarts", lambda: envoy_restart_scenario(stack, args.envoy_restarts)),
                ]
                for name, key, scenario in scenarios:
                    if name in only:
                        result[key] = await timed_on_stack(stack, name, scenario)
                result["requests"] = len(stack.gen.log)
            finally:
                await stack.close()
    if "fuzz" in only:  # after the stack is stopped: the fuzzing has the CPU to itself
        result["fuzz"] = await fuzz_scenario(work, args.fuzz_examples, args.fuzz_timeout_s)
    result["duration_s"] = round(time.monotonic() - began, 1)
    parts = [result[k] for k in ("kill", "storage", "outage", "envoy_restarts", "fuzz") if k in result]
    result["checks_failed"] = sum(p["checks_failed"] for p in parts)
    result["all_checks_passed"] = result["checks_failed"] == 0 and len(parts) == len(only)
    result["failures"] = [f for p in parts for f in p["failures"]]
    return result


def parse_only(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {', '.join(unknown)}; one of {', '.join(SCENARIOS)}")
    return [s for s in SCENARIOS if s in names]


def parse_faults(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STATE_FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {', '.join(unknown)}; one of {', '.join(STATE_FAULTS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=parse_only, default=list(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--kills", type=int, default=51, help="kill cycles (operator, alert, rule in turn)")
    parser.add_argument(
        "--storage-faults", type=parse_faults, default=list(STATE_FAULTS), help="comma-separated state faults"
    )
    parser.add_argument("--outage-s", type=float, default=60.0, help="how long the agent is down")
    parser.add_argument("--envoy-restarts", type=int, default=20)
    parser.add_argument("--fuzz-examples", type=int, default=10000, help="FUZZ_EXAMPLES for tests/fuzz")
    parser.add_argument("--fuzz-timeout-s", type=float, default=3600.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second through Envoy")
    parser.add_argument("--window", type=int, default=200, help="N: requests counted per traffic check")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, recorded)")
    parser.add_argument("--output", type=Path, help="write the JSON here instead of bench/results/chaos.json")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)

    async def guarded() -> dict[str, Any]:
        # SIGTERM/SIGINT cancel the run, so every `with` and ExitStack unwinds and stops what it started.
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
            try:
                return await run(args, Path(tmp))
            finally:
                keep = os.environ.get("CHAOS_KEEP_LOGS")
                if keep and (Path(tmp) / "logs").is_dir():
                    shutil.copytree(Path(tmp) / "logs", keep, dirs_exist_ok=True)

    try:
        result = asyncio.run(guarded())
    except asyncio.CancelledError:
        print("chaos: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result), flush=True)
    else:
        write_result("chaos", result)
    return 0 if result["all_checks_passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
