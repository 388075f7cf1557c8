"""Issue 4 end to end: the rollback procedure on a real stack (three reference model servers, the agent with a version
registry, a real Envoy). v1 verified (oldest), v2 verified (the config's stable), v3 the candidate (newest); rules:
the shipped rules/default.yaml.

(a) a fault in v3 -> traffic to v2 (the most recent verified older version), v3 marked failed, a Rollback audit
    record with the rule trigger and the phases, the forensic bundle with its manifest;
(b) v2 needs more memory than the pod's constraints -> skipped with the reason, traffic to v1;
(c) v2 not loaded -> warmed through the OIP repository load call, then switched to;
(d) an operator's `rollback-agent rollback --reason ...` runs the same procedure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agent.adapters.signals.oip_health import OipHealthSource, VersionProbe
from agent.adapters.store.sqlite_store import read_audit_records
from agent.pb.rollback_agent.v1 import audit_pb2
from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import MODEL, ROOT, AgentStack, body_factory

VERSIONS = ("v1", "v2", "v3")
PHASES = {"detect", "select", "validate", "warm", "switch", "ack", "mark", "confirm", "verify", "archive"}
ERROR_RULES = {"error-rate", "error-rate-sequential", "error-budget-burn"}  # any is a correct reason for 50 % errors


def _entry(tag: str, status: str, created: str, memory_mb: int, n: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "tag": tag,
        "status": status,
        "created": created,
        "description": f"reference model {tag}",
        "provenance": {
            "artifact_uri": f"s3://ml-artifacts/{MODEL}/{tag}/model.joblib",
            "artifact_digest": "sha256:" + f"{n}" * 64,
            "training_data_uri": f"s3://ml-datasets/{MODEL}/{tag}/",
            "training_data_hash": "sha256:" + f"{n + 3}" * 64,
            "feature_code_commit": f"{n}" * 40,
            "image": f"registry.example/{MODEL}@sha256:" + f"{n}" * 64,
            "base_image_digest": "sha256:" + "a" * 64,
        },
        "requirements": {"memory_mb": memory_mb, "cpu": 1, "runtime": "sklearn-1.4/python-3.11"},
    }
    if status == "verified":
        entry["evidence"] = [
            {
                "name": "holdout_accuracy",
                "value": 0.95,
                "threshold": 0.9,
                "comparison": ">=",
                "passed": True,
                "at": created,
                "approved_by": "model-risk",
            }
        ]
    return entry


def write_registry(path: Path, v2_memory_mb: int = 1536) -> Path:
    registry = {
        "model": MODEL,
        "versions": [
            _entry("v1", "verified", "2024-03-04T09:12:00Z", 1024, 1),
            _entry("v2", "verified", "2024-05-20T14:30:00Z", v2_memory_mb, 2),
            _entry("v3", "candidate", "2024-08-12T08:45:00Z", 2048, 3),
        ],
    }
    path.write_text(yaml.safe_dump(registry, sort_keys=False))
    return path


async def start_stack(
    tmp_path: Path,
    factories: tuple[Any, Any, Any],
    *,
    initial_weights: dict[str, int],
    v2_memory_mb: int = 1536,
    constraints: dict[str, Any] | None = None,
    v2_unloaded: bool = False,
) -> AgentStack:
    agent_factory, envoy_factory, refserver_factory = factories
    stack = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, versions=VERSIONS)

    def upstream(version: str) -> Any:
        if version == "v2" and v2_unloaded:
            return refserver_factory(MODEL, version, extra_args=("--load-delay-s", "1"), start_unloaded=True)
        return refserver_factory(MODEL, version)

    servers = await asyncio.gather(*(asyncio.to_thread(upstream, v) for v in VERSIONS))
    stack.upstreams.update(zip(VERSIONS, servers, strict=True))
    config: dict[str, Any] = {
        "stable": "v2",
        "candidate": "v3",
        "initial_weights": initial_weights,
        "registry_file": str(write_registry(tmp_path / "registry.yaml", v2_memory_mb)),
        "rules": {"file": str(ROOT / "rules" / "default.yaml")},
        "rollback": {"verify_window_s": 2, "cooldown_s": 0, "warm_timeout_s": 20},
    }
    if constraints is not None:
        config["constraints"] = constraints
    await asyncio.to_thread(stack.start_agent, **config)
    await asyncio.to_thread(stack.start_envoy)
    await stack.wait_ready_async()
    return stack


@pytest.fixture
def factories(agent_factory, envoy_factory, refserver_factory):
    return agent_factory, envoy_factory, refserver_factory


# --- helpers ------------------------------------------------------------------------------------------------------


async def served(stack: AgentStack) -> dict[str, int]:
    _, body = await stack.control("GET", "/v1/status")
    return {v["version"]: v.get("served_weight", 0) for v in body["versions"]}


async def rule_state(stack: AgentStack, version: str, rule: str) -> str:
    _, body = await stack.control("GET", "/v1/status")
    return next((r["state"] for r in body.get("rules", []) if r["version"] == version and r["rule"] == rule), "")


def _audit(db: Path) -> list[audit_pb2.AuditRecord]:
    return read_audit_records(db)


async def finished_rollback(stack: AgentStack, timeout_s: float = 20) -> audit_pb2.AuditRecord:
    """The Rollback record, written once the procedure finished (after the verify window)."""
    db = stack.tmp / "state" / "state.db"

    async def written() -> audit_pb2.AuditRecord | None:
        records = await asyncio.to_thread(_audit, db)
        done = [
            r
            for r in records
            if r.WhichOneof("event") == "rollback" and r.rollback.outcome not in ("suppressed", "switched")
        ]
        return done[-1] if done else None

    return await async_wait_until(written, timeout_s, interval_s=0.1, what="the Rollback audit record")


async def cli(stack: AgentStack, *args: str) -> tuple[int, str, str]:
    return await stack.cli(*args)


async def version_statuses(stack: AgentStack) -> dict[str, str]:
    code, out, err = await cli(stack, "versions")
    assert code == 0, err
    statuses = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in VERSIONS:
            statuses[parts[0]] = parts[1]
    return statuses


async def all_on(stack: AgentStack, version: str) -> bool:
    return await served(stack) == {v: (100 if v == version else 0) for v in VERSIONS}


async def warm_up(stack: AgentStack, generator: TrafficGenerator, candidate: str = "v3") -> None:
    """Enough traffic that the candidate is observed and judged healthy before any fault."""
    await generator.wait_for_responses(400, timeout_s=15)

    async def judged_healthy() -> bool:
        return await rule_state(stack, candidate, "error-rate") == "ok"

    await async_wait_until(judged_healthy, 20, interval_s=0.1, what=f"{candidate} judged healthy before the fault")


async def fault_to_traffic(
    stack: AgentStack, generator: TrafficGenerator, target: str, injected: float, bound_s: float
) -> float:
    """Wait until every request goes to `target`; returns fault -> first request of the all-target run (s)."""
    await async_wait_until(lambda: all_on(stack, target), bound_s + 5, interval_s=0.05, what=f"traffic on {target}")
    await generator.wait_for_responses(generator.sent + 100, timeout_s=10)
    first = generator.snapshot().first_time_all_from(target, injected)
    assert first is not None, generator.snapshot().counts_by_version(since=injected)
    took = first - injected
    assert 0 <= took < bound_s, f"fault -> all traffic on {target} took {took:.2f}s (bound {bound_s}s)"
    print(f"fault -> all traffic on {target}: {took * 1000:.0f} ms")
    return took


def assert_rollback_record(audit: audit_pb2.AuditRecord, source: str, from_version: str, to_version: str) -> None:
    rollback = audit.rollback
    assert rollback.trigger.WhichOneof("source") == source, rollback.trigger
    assert (rollback.from_version, rollback.to_version) == (from_version, to_version)
    assert rollback.outcome == "recovered", (rollback.outcome, rollback.detail)
    names = [p.name for p in rollback.phases]
    assert set(names) == PHASES, names
    assert names.index("validate") < names.index("switch") < names.index("ack") < names.index("mark"), names
    for p in rollback.phases:
        assert p.duration_ms >= 0 and p.started_at.seconds > 0, p
    by_name = {p.name: p for p in rollback.phases}
    assert by_name["switch"].outcome == "ok" and by_name["confirm"].outcome == "ok", by_name["confirm"]
    assert by_name["verify"].outcome in ("ok", "skipped"), by_name["verify"]
    assert {w.version: w.weight for w in rollback.to_policy.weights}[to_version] == 100


def assert_forensic_bundle(audit: audit_pb2.AuditRecord, archive_root: Path) -> None:
    rollback = audit.rollback
    bundle = Path(rollback.archive_path)
    assert bundle.parent == archive_root.resolve(), bundle
    manifest_bytes = (bundle / "manifest.json").read_bytes()
    assert hashlib.sha256(manifest_bytes).hexdigest() == rollback.archive_sha256
    manifest = json.loads(manifest_bytes)
    assert manifest["rollback_id"] == rollback.rollback_id
    files = manifest["files"]
    for name in ("trigger.json", "config/agent.json", "registry/versions.json", "envoy/config_dump.json"):
        assert name in files, sorted(files)
    for name, entry in files.items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == entry["sha256"], name
    trigger = json.loads((bundle / "trigger.json").read_text())
    assert trigger["failing_version"] == rollback.from_version


# --- the scenarios ------------------------------------------------------------------------------------------------


async def test_fault_in_candidate_rolls_back_to_the_most_recent_verified_version(tmp_path, factories):
    stack = await start_stack(tmp_path, factories, initial_weights={"v2": 50, "v3": 50})
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await warm_up(stack, generator)
        assert await served(stack) == {"v1": 0, "v2": 50, "v3": 50}, "no false rollback before the fault"
        injected = time.monotonic()
        await stack.upstreams["v3"].set_faults_async({"error_rate": 0.5})
        await fault_to_traffic(stack, generator, "v2", injected, bound_s=10)
    audit = await finished_rollback(stack)
    assert_rollback_record(audit, "rule", "v3", "v2")
    assert audit.rollback.trigger.rule.rule in ERROR_RULES
    assert audit.actor == f"rule:{audit.rollback.trigger.rule.rule}"
    assert list(audit.rollback.skipped) == []
    assert (await version_statuses(stack))["v3"] == "failed"
    assert_forensic_bundle(audit, tmp_path / "state" / "archive")


async def test_target_exceeding_the_pod_constraints_is_skipped(tmp_path, factories):
    stack = await start_stack(
        tmp_path,
        factories,
        initial_weights={"v3": 100},
        v2_memory_mb=6144,
        constraints={"memory_mb": 4096, "cpu": 2},
    )
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await warm_up(stack, generator)
        injected = time.monotonic()
        await stack.upstreams["v3"].set_faults_async({"error_rate": 0.5})
        await fault_to_traffic(stack, generator, "v1", injected, bound_s=10)
    audit = await finished_rollback(stack)
    assert_rollback_record(audit, "rule", "v3", "v1")
    assert [(s.version, s.reason) for s in audit.rollback.skipped] == [
        ("v2", "incompatible: needs 6144 MB of memory, the pod has 4096 MB")
    ]
    statuses = await version_statuses(stack)
    assert statuses["v3"] == "failed" and statuses["v2"] == "verified", statuses


async def test_unloaded_target_is_warmed_through_the_oip_load_call_then_switched_to(tmp_path, factories):
    stack = await start_stack(tmp_path, factories, initial_weights={"v3": 100}, v2_unloaded=True)
    v2 = stack.upstreams["v2"]
    assert await asyncio.to_thread(v2.ready_status) == 503, "v2 starts unloaded"
    async with aiohttp.ClientSession() as session:  # not loaded is not unhealthy: the warm-up will load it
        health = OipHealthSource(session, [VersionProbe("v2", v2.url, MODEL)])
        checks = {c.name: c for c in await health.live_checks("v2", max_age_s=0)}
    assert set(checks) == {"model_loaded"} and not checks["model_loaded"].passed, checks
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await warm_up(stack, generator)
        injected = time.monotonic()
        await stack.upstreams["v3"].set_faults_async({"error_rate": 0.5})
        # Detection (seconds) + the load call (1 s simulated warm-up + training) + the switch.
        await fault_to_traffic(stack, generator, "v2", injected, bound_s=15)
        tail = generator.snapshot().counts_by_status(since=time.monotonic() - 0.5)
    assert set(tail) == {200}, f"v2 serves (loaded) once the traffic is on it: {tail}"
    assert await asyncio.to_thread(v2.ready_status) == 200
    audit = await finished_rollback(stack)
    assert_rollback_record(audit, "rule", "v3", "v2")
    warm = next(p for p in audit.rollback.phases if p.name == "warm")
    assert warm.outcome == "ok", warm
    assert warm.duration_ms >= 1000, f"the warm-up includes the 1 s load delay: {warm}"
    assert list(audit.rollback.skipped) == []
    # Loaded but not ready is unhealthy (not "not loaded"): such a target is skipped, never warmed.
    await v2.set_faults_async({"unready": True})
    async with aiohttp.ClientSession() as session:
        health = OipHealthSource(session, [VersionProbe("v2", v2.url, MODEL)])
        checks = {c.name: c for c in await health.live_checks("v2", max_age_s=0)}
    assert "model_loaded" not in checks and not checks["ready"].passed, checks


async def test_operator_rollback_runs_the_same_procedure(tmp_path, factories):
    stack = await start_stack(tmp_path, factories, initial_weights={"v2": 50, "v3": 50})
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(200, timeout_s=15)
        asked = time.monotonic()
        code, out, err = await cli(stack, "rollback", "--reason", "scores look wrong (drill)")
        assert code == 0, (out, err)
        # The CLI returns once Envoy ACKed: the next requests go to v2. The bound includes the CLI's start-up.
        await fault_to_traffic(stack, generator, "v2", asked, bound_s=5)
    assert "moved" in out, out
    audit = await finished_rollback(stack)
    assert_rollback_record(audit, "operator", "v3", "v2")
    assert audit.rollback.trigger.operator.reason == "scores look wrong (drill)"
    assert audit.actor.startswith("operator:")
    assert (await version_statuses(stack))["v3"] == "failed"
    assert_forensic_bundle(audit, tmp_path / "state" / "archive")
