"""Issue 13, rollback drills end to end: `rollback-agent drill` against the real agent, a real Envoy and two
reference model servers (v1 stable, v2 the candidate at 20 %), under load.

The drill injects the error fault into v2 through the reference server's fault switch; the agent detects it,
rolls back to v1 and verifies v1; the drill clears the fault and restores v1=80 v2=20. Checked: the report's
figures, the restored split as Envoy serves it, the audit records (drill started by the authenticated identity,
the rollback marked as the drill's, the drill's result), the metrics, and that v2 is NOT failed afterwards. A drill
during a hold is refused before anything is injected.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.adapters.store.sqlite_store import read_audit_records
from agent.pb.rollback_agent.v1 import audit_pb2
from harness.http_util import request
from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import AgentStack, body_factory

RULES = """\
model: cancer
tier: critical
rules:
  - name: error-rate
    kind: error_rate
    window: 5s
    max_rate: 10%
    min_evidence: {requests: 30, coverage: 0.3}
"""


@pytest.fixture
def stack(tmp_path: Path, agent_factory, envoy_factory, refserver_factory) -> AgentStack:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    s = AgentStack(
        tmp_path,
        agent_factory,
        envoy_factory,
        refserver_factory,
        extra_config={
            "initial_weights": {"v1": 80, "v2": 20},
            "rules": {"file": str(rules)},
            "rollback": {"verify_window_s": 2, "cooldown_s": 0},
            "drills": {"detect_timeout_s": 30, "verify_timeout_s": 30, "settle_timeout_s": 15},
        },
    )
    s.start_upstreams()
    s.start_agent()
    s.start_envoy()
    return s


async def drill_cli(stack: AgentStack, *args: str) -> tuple[int, str, str]:
    """`drill ARGS` (the config is appended after them, which argparse takes either way)."""
    return await stack.cli("drill", *args, timeout_s=120)


async def status(stack: AgentStack) -> dict[str, Any]:
    code, body = await stack.control("GET", "/v1/status")
    assert code == 200, body
    return body


def served(body: dict[str, Any]) -> dict[str, int]:
    return {v["version"]: v["served_weight"] for v in body["versions"]}


def audit(stack: AgentStack) -> list[audit_pb2.AuditRecord]:
    return read_audit_records(stack.tmp / "state" / "state.db")


async def metric(stack: AgentStack, pattern: str) -> float:
    async with stack.http_session() as session, session.get(f"{stack.http_url}/metrics") as response:
        found = re.search(pattern, await response.text(), re.M)
    return float(found.group(1)) if found else -1.0


async def test_drill_rolls_back_measures_restores_and_leaves_the_version_unfailed(stack: AgentStack):
    await stack.wait_ready_async()
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(400, timeout_s=15)

        async def judged_healthy() -> bool:
            body = await status(stack)
            return any(r["version"] == "v2" and r["state"] == "ok" for r in body["rules"])

        await async_wait_until(judged_healthy, 20, interval_s=0.1, what="v2 judged healthy before the drill")
        code, out, err = await drill_cli(stack, "--json")
        after = await status(stack)

    assert code == 0, f"stdout: {out}\nstderr: {err}"
    report = json.loads(out)
    assert report["outcome"] == "passed", report
    assert report["version"] == "v2" and report["target"] == "v1" and report["fault"] == "errors"
    assert report["actor"] == "operator:control-token"  # the identity of the token presented, not a claimed name
    assert report["rollback_outcome"] in ("recovered", "inconclusive")
    phases = {p["name"]: p for p in report["phases"]}
    assert set(phases) == {"detection", "decision", "switch", "verification", "restore", "total"}
    assert all(p["outcome"] == "ok" for p in phases.values()), phases
    assert 0 < phases["detection"]["seconds"] < 20, phases["detection"]
    assert 0 < phases["decision"]["seconds"] < 1, phases["decision"]
    assert 0 < phases["switch"]["seconds"] < 1, phases["switch"]
    assert 1.9 < phases["verification"]["seconds"] < 30, phases["verification"]  # the 2 s window and the confirm
    assert phases["total"]["seconds"] > phases["detection"]["seconds"] + phases["verification"]["seconds"]
    assert report["original_split"] == report["restored_split"] == {"v1": 80, "v2": 20}
    assert report["version_status_before"] == report["version_status_after"] == "candidate"
    assert "drill: fault errors injected into v2" in err  # progress while it runs
    assert "drill: rollback " in err and "drill: split restored: v1=80 v2=20" in err

    # What Envoy serves now, and v2's status: not failed.
    assert served(after) == {"v1": 80, "v2": 20}
    assert {v["version"]: v["registry_status"] for v in after["versions"]}["v2"] == "candidate"
    faults = request("GET", f"{stack.upstreams['v2'].url}/faults", timeout_s=5).json()
    assert faults["error_rate"] == 0.0, "the fault is cleared"

    # The audit trail: started (by whom), the rollback as the drill's (no status change), the restore, the result.
    records = await asyncio.to_thread(audit, stack)
    kinds = [r.WhichOneof("event") for r in records]
    assert "version_status_changed" not in kinds
    [started] = [r for r in records if r.WhichOneof("event") == "drill_started"]
    assert started.actor == "operator:control-token" and started.drill_started.drill_id == report["drill_id"]
    assert started.drill_started.version == "v2" and started.drill_started.fault == "errors"
    rollbacks = [r.rollback for r in records if r.WhichOneof("event") == "rollback"]
    assert {r.drill_id for r in rollbacks} == {report["drill_id"]}
    final = [r for r in rollbacks if r.outcome != "switched"][-1]
    assert final.rollback_id == report["rollback_id"]
    mark = next(p for p in final.phases if p.name == "mark")
    assert mark.outcome == "skipped" and "keeps its status" in mark.detail
    [finished] = [r for r in records if r.WhichOneof("event") == "drill_finished"]
    assert finished.drill_finished.outcome == "passed" and finished.drill_finished.rollback_id == final.rollback_id
    assert [w.weight for w in finished.drill_finished.restored_policy.weights] == [80, 20]
    assert kinds.index("drill_started") < kinds.index("rollback") < kinds.index("drill_finished")

    # Metrics and the report files.
    assert await metric(stack, r'^rollback_agent_drill_runs_total\{model="cancer",outcome="passed"\} (\S+)$') == 1
    assert await metric(stack, r"^rollback_agent_drill_last_success_timestamp_seconds\{[^}]*\} (\S+)$") > 0
    detection = await metric(
        stack, r'^rollback_agent_drill_duration_seconds\{model="cancer",phase="detection"\} (\S+)$'
    )
    assert detection == pytest.approx(phases["detection"]["seconds"], abs=1e-3)
    written = sorted((stack.tmp / "state" / "drills").glob(f"drill-*-{report['drill_id']}.*"))
    assert [p.suffix for p in written] == [".json", ".txt"]
    assert json.loads(written[0].read_text())["outcome"] == "passed"


async def test_drill_is_refused_during_a_hold_and_injects_nothing(stack: AgentStack):
    await stack.wait_ready_async()
    code, body = await stack.control("POST", "/v1/hold", {"version": "v2", "reason": "under review"})
    assert code == 200, body

    code, out, err = await drill_cli(stack)

    assert code == 1, f"stdout: {out}\nstderr: {err}"
    assert "REFUSED" in out and "held: v2 (under review" in out
    faults = request("GET", f"{stack.upstreams['v2'].url}/faults", timeout_s=5).json()
    assert faults["error_rate"] == 0.0, "nothing injected"
    records = await asyncio.to_thread(audit, stack)
    assert not [r for r in records if r.WhichOneof("event") in ("drill_started", "rollback")]
    assert served(await status(stack)) == {"v1": 80, "v2": 20}
    assert await metric(stack, r'^rollback_agent_drill_runs_total\{model="cancer",outcome="refused"\} (\S+)$') == 1
