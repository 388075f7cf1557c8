"""Post-rollback verification on a real stack (two reference model servers, the agent, a real Envoy).

v1 (verified, with a registry baseline) is the stable version, v2 the candidate. A fault in v2 rolls traffic back to
v1; the agent then watches v1 for a 3 s verify window against v1's baseline:

- v1 starts failing right after the switch -> the rollback's audit record ends "verification_failed" and names the
  metric, its value, its limit and its baseline;
- v1 keeps serving well -> "recovered", every baseline metric checked and listed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.adapters.store.sqlite_store import read_audit_records
from agent.pb.rollback_agent.v1 import audit_pb2
from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import MODEL, ROOT, AgentStack, body_factory

VERSIONS = ("v1", "v2")
BASELINE = {"error_rate": 0.001, "latency_p99_ms": 1000}  # generous p99: only the error rate should decide


def write_registry(path: Path) -> Path:
    def entry(tag: str, status: str, created: str, n: int) -> dict[str, Any]:
        data: dict[str, Any] = {
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
            "requirements": {"memory_mb": 1024, "cpu": 1, "runtime": "sklearn-1.4/python-3.11"},
        }
        if status == "verified":
            data["baseline"] = BASELINE
            data["evidence"] = [
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
        return data

    registry = {
        "model": MODEL,
        "versions": [
            entry("v1", "verified", "2024-03-04T09:12:00Z", 1),
            entry("v2", "candidate", "2024-08-12T08:45:00Z", 2),
        ],
    }
    path.write_text(yaml.safe_dump(registry, sort_keys=False))
    return path


async def start_stack(tmp_path: Path, agent_factory: Any, envoy_factory: Any, refserver_factory: Any) -> AgentStack:
    stack = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, versions=VERSIONS)
    servers = await asyncio.gather(*(asyncio.to_thread(refserver_factory, MODEL, v) for v in VERSIONS))
    stack.upstreams.update(zip(VERSIONS, servers, strict=True))
    config = {
        "initial_weights": {"v1": 50, "v2": 50},
        "registry_file": str(write_registry(tmp_path / "registry.yaml")),
        "rules": {"file": str(ROOT / "rules" / "default.yaml")},
        # The default cooldown keeps a failing v1 from being rolled away from (there is nothing older anyway).
        "rollback": {"verify_window_s": 3, "warm_timeout_s": 20},
    }
    await asyncio.to_thread(stack.start_agent, **config)
    await asyncio.to_thread(stack.start_envoy)
    await stack.wait_ready_async()
    return stack


async def served(stack: AgentStack) -> dict[str, int]:
    _, body = await stack.control("GET", "/v1/status")
    return {v["version"]: v.get("served_weight", 0) for v in body["versions"]}


async def rule_state(stack: AgentStack, version: str, rule: str) -> str:
    _, body = await stack.control("GET", "/v1/status")
    return next((r["state"] for r in body.get("rules", []) if r["version"] == version and r["rule"] == rule), "")


async def rollback_record(stack: AgentStack, timeout_s: float = 30) -> audit_pb2.Rollback:
    """The final v2 -> v1 Rollback record, written once the procedure (verify window included) finished (the
    record with outcome "switched", written right after the switch, is not it)."""
    db = stack.tmp / "state" / "state.db"

    async def written() -> audit_pb2.Rollback | None:
        records = await asyncio.to_thread(read_audit_records, db)
        return next(
            (
                r.rollback
                for r in records
                if r.WhichOneof("event") == "rollback"
                and (r.rollback.from_version, r.rollback.to_version) == ("v2", "v1")
                and r.rollback.outcome != "switched"
            ),
            None,
        )

    return await async_wait_until(written, timeout_s, interval_s=0.1, what="the v2 -> v1 Rollback audit record")


@pytest.mark.parametrize("stable_fails", [True, False], ids=["stable-fails-after-switch", "stable-holds"])
async def test_the_rollback_target_is_verified_against_its_registry_baseline(
    tmp_path, agent_factory, envoy_factory, refserver_factory, stable_fails: bool
):
    stack = await start_stack(tmp_path, agent_factory, envoy_factory, refserver_factory)
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(400, timeout_s=15)

        async def judged_healthy() -> bool:
            return await rule_state(stack, "v2", "error-rate") == "ok"

        await async_wait_until(judged_healthy, 20, interval_s=0.1, what="v2 judged healthy before the fault")
        await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})

        async def all_on_v1() -> bool:
            return await served(stack) == {"v1": 100, "v2": 0}

        await async_wait_until(all_on_v1, 15, interval_s=0.05, what="traffic rolled back to v1")
        switched = time.monotonic()
        if stable_fails:
            await stack.upstreams["v1"].set_faults_async({"error_rate": 0.5})
            assert time.monotonic() - switched < 1.0, "the fault must land early in the 3 s verify window"
        record = await rollback_record(stack)

    verify = next(p for p in record.phases if p.name == "verify")
    print(f"{record.outcome}: {verify.detail}")
    if stable_fails:
        assert record.outcome == "verification_failed", (record.outcome, record.detail)
        assert record.detail.startswith("v1 failed verification after the rollback: 1 beyond the limit"), record.detail
        assert verify.outcome == "failed", verify
        # The failing metric comes first, with its value, limit and baseline.
        failing = verify.detail.split(": ", 1)[1].split("; ")[0]
        assert failing.startswith("error_rate "), verify.detail
        assert failing.endswith("> limit 1.10% (baseline 0.10%)"), verify.detail
    else:
        assert record.outcome == "recovered", (record.outcome, record.detail)
        assert verify.outcome == "ok", verify
        assert "error_rate 0.00% <= limit 1.10% (baseline 0.10%)" in verify.detail, verify.detail
    assert "<= limit 1500.0 ms (baseline 1000.0 ms)" in verify.detail, "p99 checked against its baseline too"
