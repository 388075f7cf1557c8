"""bench/rollback: where the time of a full automatic rollback goes, phase by phase, under load.

Real processes on 127.0.0.1: three reference model servers (v1 and v2 verified, v3 the candidate, in a version
registry file), the agent, a real Envoy, and ~200 requests/s open loop through Envoy. Each run: v2=50 v3=50, the
agent judges v3 healthy, the bench injects a fault into v3 (refserver POST /faults {"error_rate": 0.5}), the rule
fires and the orchestrator rolls v3 back to v2 (the most recent verified older version, loaded: a warm target).
The bench reads the run's Rollback audit record from the state dir (SQLite, read-only) and the traffic log.

Figures (milliseconds):

- per phase, p50 and max over the runs: detect (rule decision -> the orchestrator starts), select, validate
  (static compatibility + live checks of the target), warm (skipped: v2 is loaded), switch (policy persisted, xDS
  pushed, every Envoy ACKed), ack (decision -> every Envoy ACKed, overlapping the phases before it), mark (v3
  marked failed), confirm (Envoy's own counters show requests reaching v2), verify (the verification window),
  archive (building the forensic bundle; it captures once the switch is over, beside mark/confirm/verify);
- `decision_to_traffic_ms`: the decision (start of the `detect` phase; its wall time mapped onto the monotonic
  clock the traffic log uses) -> the send time of the first request from which every request was answered by v2
  (`Results.first_time_all_from`); its resolution is the 5 ms gap between requests at 200/s;
- `procedure_ms_excluding_verify`: the decision -> the Rollback record written, minus the verify phase: everything
  the procedure does besides watching the target (select ... confirm, and waiting for the archive if it were still
  running after the window);
- `fault_to_decision_ms` (for context): dominated by the agent's 1 s sampling tick.

Re-arming between runs (a clean way, no agent restart):

1. clear the fault on v3 (refserver DELETE /faults);
2. route v2=50 v3=50 with an operator set-weights with `force` (control API): v3 stays `failed` in the registry
   (the agent never un-fails a version by itself), and the operator's override is recorded in the intent;
3. wait until the agent judges v3 healthy.

The evidence has to be clean too: the agent keeps each version's signal history while it gets no traffic, so the
fault's errors would stay in a 30 s error-rate window and roll v3 back again on re-arm (rightly). The bench's rule
file is therefore the shipped error-rate rule with a 5 s window (`error-rate-bench`); the procedure measured here
does not depend on the rule. Rollback settings: cooldown_s 0 (it only holds rollbacks away from the last target
anyway), max_per_hour 1000, verify_window_s 1.

The last line printed is one JSON object; it is also written to bench/results/rollback.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.adapters.store.sqlite_store import read_audit_records  # noqa: E402
from agent.pb.rollback_agent.v1 import audit_pb2  # noqa: E402
from harness.agent import start_agent, wait_http_ready  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import TrafficGenerator  # noqa: E402
from harness.measure import percentile, wall_to_monotonic_offset, write_result  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import PORT_NAMES, agent_config, sidecar_ports  # noqa: E402
from harness.wait import async_wait_until  # noqa: E402
from refserver.client import sample_request  # noqa: E402

TOKEN = "bench-token"
MODEL = "cancer"
VERSIONS = ("v1", "v2", "v3")
RULE_WINDOW_S = 5.0
PHASES = ("detect", "select", "validate", "warm", "switch", "ack", "mark", "confirm", "verify", "archive")
RULES = {
    "model": MODEL,
    "tier": "critical",
    "rules": [{"name": "error-rate-bench", "kind": "error_rate", "window": "5s"}],  # RULE_WINDOW_S
}


def registry(created: dict[str, str]) -> dict[str, Any]:
    def entry(tag: str, n: int, status: str) -> dict[str, Any]:
        version: dict[str, Any] = {
            "tag": tag,
            "status": status,
            "created": created[tag],
            "provenance": {
                "artifact_uri": f"s3://bench/{MODEL}/{tag}/model.joblib",
                "artifact_digest": "sha256:" + str(n) * 64,
                "training_data_uri": f"s3://bench/{MODEL}/data/{tag}/",
                "training_data_hash": "sha256:" + str(n + 3) * 64,
                "feature_code_commit": str(n) * 40,
                "image": f"bench/{MODEL}@sha256:" + str(n) * 64,
                "base_image_digest": "sha256:" + "a" * 64,
            },
            "requirements": {"memory_mb": 512, "cpu": 1, "runtime": "sklearn-1.4/python-3.11"},
        }
        if status == "verified":
            version["evidence"] = [
                {"name": "holdout_accuracy", "passed": True, "at": created[tag], "approved_by": "bench"}
            ]
        return version

    return {
        "model": MODEL,
        "versions": [entry("v1", 1, "verified"), entry("v2", 2, "verified"), entry("v3", 3, "candidate")],
    }


def rollback_records(db: Path) -> list[audit_pb2.AuditRecord]:
    """Final rollback records (a rollback that moved traffic also has an earlier "switched" record)."""
    return [
        r for r in read_audit_records(db) if r.WhichOneof("event") == "rollback" and r.rollback.outcome != "switched"
    ]


class Stack:
    def __init__(self, work: Path, control: int, http: int, db: Path) -> None:
        self.work = work
        self.control_url = f"http://127.0.0.1:{control}"
        self.http_url = f"http://127.0.0.1:{http}"
        self.db = db
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})

    async def status(self) -> dict[str, Any]:
        async with self.session.get(f"{self.control_url}/v1/status") as response:
            body: dict[str, Any] = await response.json()
            return body

    async def served(self) -> dict[str, int]:
        return {v["version"]: v.get("served_weight", 0) for v in (await self.status())["versions"]}

    async def rule_state(self, version: str) -> str:
        rules = (await self.status()).get("rules", [])
        return next((r["state"] for r in rules if r["version"] == version), "")

    async def set_weights(self, **weights: int) -> None:
        body = {
            "weights": [{"version": v, "weight": w} for v, w in weights.items()],
            "reason": "bench: re-arm",
            "force": True,  # v3 was rolled back (failed): re-admitting it is an operator's recorded override
        }
        async with self.session.post(f"{self.control_url}/v1/traffic", json=body) as response:
            if response.status != 200:
                raise SystemExit(f"re-arm failed: {response.status} {await response.text()}")


async def one_run(
    stack: Stack, servers: dict[str, RefServer], generator: TrafficGenerator, offset: float, index: int
) -> dict[str, Any]:
    # Re-arm (see the module docstring). First the evidence: the previous fault's errors must have left v3's
    # error-rate window (the last v3 error, plus the window, plus two sampling ticks).
    await servers["v3"].clear_faults_async()
    failed = generator.snapshot().failed(since=time.monotonic() - 60)
    if failed:
        await asyncio.sleep(max(0.0, max(r.t_done for r in failed) + RULE_WINDOW_S + 2.0 - time.monotonic()))
    rearmed = time.monotonic()
    await stack.set_weights(v1=0, v2=50, v3=50)

    async def judged_healthy() -> bool:
        return await stack.rule_state("v3") == "ok"

    await async_wait_until(judged_healthy, 30, interval_s=0.05, what=f"run {index}: v3 judged healthy")
    before = len(await asyncio.to_thread(rollback_records, stack.db))
    fault = time.monotonic()
    await servers["v3"].set_faults_async({"error_rate": 0.5})

    async def on_v2() -> bool:
        return await stack.served() == {"v1": 0, "v2": 100, "v3": 0}

    await async_wait_until(on_v2, 20, interval_s=0.025, what=f"run {index}: traffic back on v2")

    async def recorded() -> audit_pb2.AuditRecord | None:
        records = await asyncio.to_thread(rollback_records, stack.db)
        return records[before] if len(records) > before else None

    audit = await async_wait_until(recorded, 20, interval_s=0.05, what=f"run {index}: the Rollback audit record")
    rollback = audit.rollback
    if (rollback.from_version, rollback.to_version, rollback.outcome) != ("v3", "v2", "recovered"):
        raise SystemExit(
            f"run {index}: unexpected rollback {rollback.from_version} -> {rollback.to_version}: "
            f"{rollback.outcome} {rollback.detail}"
        )
    phases = {p.name: p for p in rollback.phases}
    decision_wall = phases["detect"].started_at.ToNanoseconds() / 1e9
    decision = decision_wall - offset
    await generator.wait_for_responses(generator.sent + 50, timeout_s=10)
    first = generator.snapshot().first_time_all_from("v2", decision)
    if first is None:
        raise SystemExit(f"run {index}: traffic not all on v2 after the decision")
    written = audit.at.ToNanoseconds() / 1e9
    result = {
        "phases_ms": {name: p.duration_ms for name, p in phases.items()},
        "decision_to_traffic_ms": (first - decision) * 1000.0,
        "procedure_ms_excluding_verify": (written - decision_wall) * 1000.0 - phases["verify"].duration_ms,
        "fault_to_decision_ms": (decision - fault) * 1000.0,
        "rearm_to_fault_s": fault - rearmed,
        "trigger": rollback.trigger.rule.rule,
    }
    print(
        f"run {index}: decision -> all traffic on v2 {result['decision_to_traffic_ms']:.1f} ms, "
        f"ack {phases['ack'].duration_ms:.1f} ms, procedure w/o verify "
        f"{result['procedure_ms_excluding_verify']:.0f} ms, fault -> decision {result['fault_to_decision_ms']:.0f} ms",
        file=sys.stderr,
    )
    return result


async def run(runs: int, rate: float, verify_window_s: float, work: Path) -> dict[str, object]:
    bodies = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]
    with ExitStack() as stack:
        logs = work / "logs"
        logs.mkdir()
        servers = {v: stack.enter_context(RefServer(MODEL, v, None, logs).start(30)) for v in VERSIONS}
        ports = sidecar_ports()
        listener, admin, xds, http, control = (ports[n] for n in PORT_NAMES)
        (work / "rules.yaml").write_text(yaml.safe_dump(RULES))
        created = {"v1": "2024-03-04T09:12:00Z", "v2": "2024-05-20T14:30:00Z", "v3": "2024-08-12T08:45:00Z"}
        (work / "registry.yaml").write_text(yaml.safe_dump(registry(created), sort_keys=False))
        config = agent_config(
            model=MODEL,
            upstreams={v: servers[v].port for v in VERSIONS},
            ports=ports,
            state_dir=work / "state",
            stable="v2",
            candidate="v3",
            initial_weights={"v2": 100},
            registry_file=str(work / "registry.yaml"),
            rules={"file": str(work / "rules.yaml")},
            rollback={"cooldown_s": 0, "max_per_hour": 1000, "verify_window_s": verify_window_s},
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

        bench = Stack(work, control, http, work / "state" / "state.db")
        offset = wall_to_monotonic_offset()
        results: list[dict[str, Any]] = []
        try:
            generator = TrafficGenerator(
                f"http://127.0.0.1:{listener}/v2/models/{MODEL}/infer",
                lambda i: bodies[i % len(bodies)],
                rate_per_s=rate,
                concurrency=16,
            )
            async with generator:
                await generator.wait_for_responses(int(rate), timeout_s=20)
                for index in range(runs):
                    results.append(await one_run(bench, servers, generator, offset, index))
                await servers["v3"].clear_faults_async()
            total = generator.results
        finally:
            await bench.session.close()

    def stats(values: list[float]) -> dict[str, float]:
        return {"p50": round(percentile(values, 0.5), 2), "max": round(max(values), 2)}

    phases = {
        name: stats([r["phases_ms"][name] for r in results if name in r["phases_ms"]])
        for name in PHASES
        if any(name in r["phases_ms"] for r in results)
    }
    to_traffic = [r["decision_to_traffic_ms"] for r in results]
    procedure = [r["procedure_ms_excluding_verify"] for r in results]
    detection = [r["fault_to_decision_ms"] for r in results]
    return {
        "bench": "rollback",
        "runs": len(results),
        "rate_per_s": rate,
        "verify_window_s": verify_window_s,
        "phases_ms": phases,
        "decision_to_traffic_ms_p50": round(percentile(to_traffic, 0.5), 2),
        "decision_to_traffic_ms_p99": round(percentile(to_traffic, 0.99), 2),
        "procedure_ms_excluding_verify_p50": round(percentile(procedure, 0.5), 1),
        "procedure_ms_excluding_verify_max": round(max(procedure), 1),
        "fault_to_decision_ms_p50": round(percentile(detection, 0.5), 1),
        "fault_to_decision_ms_max": round(max(detection), 1),
        "triggers": sorted({r["trigger"] for r in results}),
        "requests": len(total),
        "targets": {"decision_to_traffic_ms_p99": 25, "procedure_ms_excluding_verify_max": 1000},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=12, help="automatic rollbacks to measure (at least 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (open loop)")
    parser.add_argument("--verify-window-s", type=float, default=1.0, help="the agent's rollback.verify_window_s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        result = asyncio.run(run(args.runs, args.rate, args.verify_window_s, Path(tmp)))
    write_result("rollback", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
