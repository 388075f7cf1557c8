"""Rollbacks against real MLServer 1.7.1: the agent process, a real Envoy, one MLServer per version (the
harness's fault-switchable scikit-learn runtime, harness/mlserver_models/fault_model.py).

(a) a candidate failing half its requests with HTTP 400 (MLServer's answer to a model's InferenceError) is rolled
    back, and the verdict names the 400s it counted (an error-rate rule counting only 5xx saw "0.0 %");
(b) a candidate giving wrong answers with HTTP 200 is rolled back by the shipped golden rule (rules/default.yaml);
(c) an unloaded rollback target is loaded through MLServer's repository API (the warm-up), then switched to.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.adapters.store.sqlite_store import read_audit_records
from agent.adapters.xds.resources import VERSION_HEADER
from agent.pb.rollback_agent.v1 import audit_pb2
from harness.binaries import MissingBinaryError
from harness.load import TrafficGenerator
from harness.mlserver import MLServerModel, MLServerProcess, mlserver_binary
from harness.wait import async_wait_until
from refserver.client import sample_request
from tests.integration.agent_stack import MODEL, ROOT, AgentStack, body_factory
from tests.integration.conftest import unavailable

VERSIONS = ("v1", "v2")
# What an MLServer user writes: 400 (InferenceError, ModelNotReady) and 404 (model not found) are the server's own
# failures here, next to 5xx and the failure counter of the mlserver profile.
MLSERVER_COUNT = ["5xx", "model_failures", 400, 404]
ERROR_RULES = {"error-rate", "error-rate-sequential"}
GOLDEN_REQUEST = sample_request(1, seed=0)


@pytest.fixture
def mlserver_factory(tmp_path: Path, tmp_logs: Path) -> Iterator[Callable[..., MLServerProcess]]:
    try:
        mlserver_binary()
    except MissingBinaryError as err:
        unavailable(str(err))
    servers: list[MLServerProcess] = []

    def make(models: list[MLServerModel], name: str) -> MLServerProcess:
        server = MLServerProcess(models, log_dir=tmp_logs, work_dir=tmp_path / name, name=name)
        servers.append(server)
        return server.start()

    yield make
    survivors = []
    for server in reversed(servers):
        server.stop()
        if server.alive:
            server.kill()
            survivors.append(repr(server))
    assert not survivors, f"processes survived stop(): {survivors}"


def write_rules(path: Path) -> Path:
    rules = {
        "tier": "critical",
        "rules": [
            {"name": "error-rate", "kind": "error_rate", "count": MLSERVER_COUNT},
            {"name": "error-rate-sequential", "kind": "error_rate_sequential", "count": MLSERVER_COUNT},
        ],
    }
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


async def start_stack(
    tmp_path: Path,
    agent_factory: Any,
    envoy_factory: Any,
    mlserver_factory: Callable[..., MLServerProcess],
    *,
    rules_file: Path,
    initial_weights: dict[str, int],
    golden: bool = False,
) -> AgentStack:
    stack = AgentStack(tmp_path, agent_factory, envoy_factory, None, versions=VERSIONS)
    servers = await asyncio.gather(
        *(asyncio.to_thread(mlserver_factory, [MLServerModel(MODEL, v)], f"mlserver-{v}") for v in VERSIONS)
    )
    stack.upstreams.update(zip(VERSIONS, servers, strict=True))
    config: dict[str, Any] = {
        "versions": [
            {
                "tag": v,
                "endpoint": f"127.0.0.1:{s.port}",
                "server": {"profile": "mlserver", "metrics_port": s.metrics_port},
            }
            for v, s in zip(VERSIONS, servers, strict=True)
        ],
        "initial_weights": initial_weights,
        "rules": {"file": str(rules_file)},
        "rollback": {"verify_window_s": 2, "cooldown_s": 0, "warm_timeout_s": 30},
    }
    if golden:
        # The golden answer is what the healthy model says; probed every second, three misses take about 3 s.
        answer = (await asyncio.to_thread(servers[0].infer, MODEL, GOLDEN_REQUEST)).json()
        expect = next(o["data"] for o in answer["outputs"] if o["name"] == "predict")
        config["probes"] = {
            "golden": {"request": GOLDEN_REQUEST, "output": "predict", "expect": expect},
            "golden_interval_s": 1,
        }
    await asyncio.to_thread(stack.start_agent, **config)
    await asyncio.to_thread(stack.start_envoy)
    await stack.wait_ready_async()
    return stack


@pytest.fixture
def factories(agent_factory, envoy_factory, mlserver_factory):
    return agent_factory, envoy_factory, mlserver_factory


def traffic(stack: AgentStack) -> TrafficGenerator:
    # MLServer (FastAPI) answers a body without a JSON content type with 422.
    return TrafficGenerator(
        stack.traffic_url,
        body_factory,
        rate_per_s=100,
        concurrency=4,
        headers={"Content-Type": "application/json"},
        version_header=VERSION_HEADER,
    )


async def served(stack: AgentStack) -> dict[str, int]:
    _, body = await stack.control("GET", "/v1/status")
    return {v["version"]: v.get("served_weight", 0) for v in body["versions"]}


async def rule_state(stack: AgentStack, version: str, rule: str) -> str:
    _, body = await stack.control("GET", "/v1/status")
    return next((r["state"] for r in body.get("rules", []) if r["version"] == version and r["rule"] == rule), "")


async def judged_healthy(stack: AgentStack, generator: TrafficGenerator, rule: str) -> None:
    await generator.wait_for_responses(300, timeout_s=20)
    statuses = generator.snapshot().counts_by_status()
    assert set(statuses) == {200}, f"healthy versions answer every request: {statuses}"

    async def ok() -> bool:
        return await rule_state(stack, "v2", rule) == "ok"

    await async_wait_until(ok, 30, interval_s=0.1, what=f"v2 judged healthy by {rule} before the fault")


async def all_on_v1(stack: AgentStack, generator: TrafficGenerator, injected: float, bound_s: float) -> float:
    async def moved() -> bool:
        return await served(stack) == {"v1": 100, "v2": 0}

    await async_wait_until(moved, bound_s + 5, interval_s=0.05, what="traffic all on v1")
    await generator.wait_for_responses(generator.sent + 50, timeout_s=10)
    first = generator.snapshot().first_time_all_from("v1", injected)
    assert first is not None, generator.snapshot().counts_by_version(since=injected)
    took = first - injected
    assert 0 <= took < bound_s, f"fault -> all traffic on v1 took {took:.2f}s (bound {bound_s}s)"
    print(f"fault -> all traffic on v1: {took * 1000:.0f} ms")
    return took


async def finished_rollback(stack: AgentStack, timeout_s: float = 20) -> audit_pb2.AuditRecord:
    db = stack.tmp / "state" / "state.db"

    async def written() -> audit_pb2.AuditRecord | None:
        records = await asyncio.to_thread(read_audit_records, db)
        done = [
            r
            for r in records
            if r.WhichOneof("event") == "rollback" and r.rollback.outcome not in ("suppressed", "switched")
        ]
        return done[-1] if done else None

    return await async_wait_until(written, timeout_s, interval_s=0.1, what="the Rollback audit record")


def assert_recovered(audit: audit_pb2.AuditRecord) -> audit_pb2.RuleVerdict:
    rollback = audit.rollback
    assert (rollback.from_version, rollback.to_version) == ("v2", "v1")
    assert rollback.outcome == "recovered", (rollback.outcome, rollback.detail)
    assert rollback.trigger.WhichOneof("source") == "rule", rollback.trigger
    return rollback.trigger.rule


async def test_candidate_failing_half_its_requests_with_400_is_rolled_back(tmp_path, factories):
    stack = await start_stack(
        tmp_path, *factories, rules_file=write_rules(tmp_path / "rules.yaml"), initial_weights={"v1": 50, "v2": 50}
    )
    v2: MLServerProcess = stack.upstreams["v2"]
    async with traffic(stack) as generator:
        await judged_healthy(stack, generator, "error-rate")
        assert await served(stack) == {"v1": 50, "v2": 50}, "no false rollback before the fault"
        injected = time.monotonic()
        await v2.set_faults_async(MODEL, "v2", {"errors": 0.5})
        await all_on_v1(stack, generator, injected, bound_s=10)
        statuses = generator.snapshot().counts_by_status(since=injected)
    assert statuses.get(400, 0) > 0 and not any(s >= 500 for s in statuses), f"the fault is 400s only: {statuses}"
    verdict = assert_recovered(await finished_rollback(stack))
    assert verdict.rule in ERROR_RULES, verdict
    assert "400" in verdict.reason, f"the verdict names the 400s it counted: {verdict.reason}"


async def test_candidate_giving_wrong_answers_with_200_is_rolled_back_by_the_shipped_golden_rule(tmp_path, factories):
    stack = await start_stack(
        tmp_path,
        *factories,
        rules_file=ROOT / "rules" / "default.yaml",
        initial_weights={"v1": 50, "v2": 50},
        golden=True,
    )
    v2: MLServerProcess = stack.upstreams["v2"]
    async with traffic(stack) as generator:
        await judged_healthy(stack, generator, "golden-answers")
        injected = time.monotonic()
        await v2.set_faults_async(MODEL, "v2", {"wrong": True})
        await all_on_v1(stack, generator, injected, bound_s=15)
        statuses = generator.snapshot().counts_by_status(since=injected)
    assert set(statuses) == {200}, f"wrong answers come with HTTP 200: no error rule can see them ({statuses})"
    verdict = assert_recovered(await finished_rollback(stack))
    assert verdict.rule == "golden-answers", verdict
    assert "consecutive failed golden checks" in verdict.reason, verdict.reason


async def test_unloaded_target_is_loaded_through_the_repository_api_then_switched_to(tmp_path, factories):
    stack = await start_stack(
        tmp_path, *factories, rules_file=write_rules(tmp_path / "rules.yaml"), initial_weights={"v2": 100}
    )
    v1: MLServerProcess = stack.upstreams["v1"]
    v2: MLServerProcess = stack.upstreams["v2"]
    await asyncio.to_thread(v1.unload, MODEL)
    assert await asyncio.to_thread(v1.model_ready_status, MODEL) == 404, "v1 is unloaded"
    async with traffic(stack) as generator:
        await judged_healthy(stack, generator, "error-rate")
        injected = time.monotonic()
        await v2.set_faults_async(MODEL, "v2", {"errors": 0.5})
        await all_on_v1(stack, generator, injected, bound_s=20)
        tail = generator.snapshot().counts_by_status(since=time.monotonic() - 0.5)
    assert set(tail) == {200}, f"v1 serves (loaded) once the traffic is on it: {tail}"
    assert await asyncio.to_thread(v1.model_ready_status, MODEL) == 200
    audit = await finished_rollback(stack)
    assert_recovered(audit)
    warm = next(p for p in audit.rollback.phases if p.name == "warm")
    assert warm.outcome == "ok", warm
    states = {m["name"]: m["state"] for m in await asyncio.to_thread(v1.repository_index)}
    assert states == {MODEL: "READY"}, states


def test_harness_fault_switches_act_on_the_next_request_of_one_version_only(mlserver_factory):
    server = mlserver_factory([MLServerModel(MODEL, "1"), MLServerModel(MODEL, "2")], "mlserver-faults")

    def statuses(version: str, n: int = 10) -> list[int]:
        return [server.infer(MODEL, GOLDEN_REQUEST, version=version).status for _ in range(n)]

    def predicted(version: str) -> list[int]:
        response = server.infer(MODEL, GOLDEN_REQUEST, version=version)
        assert response.status == 200 and response.headers.get("x-model-version") == version
        return next(o["data"] for o in response.json()["outputs"] if o["name"] == "predict")

    right = predicted("2")
    server.set_faults(MODEL, "2", {"errors": 0.5})
    assert statuses("2").count(400) == 5 and statuses("1") == [200] * 10  # exactly half, the other version intact
    server.set_faults(MODEL, "2", {"wrong": True})
    assert predicted("2") == [1 - p for p in right] and predicted("1") == right
    server.set_faults(MODEL, "2", {"server_errors": 1.0})
    assert statuses("2", 3) == [500] * 3
    server.set_faults(MODEL, "2", {"slow_ms": 300})
    started = time.monotonic()
    assert predicted("2") == right and time.monotonic() - started >= 0.3
    server.clear_faults(MODEL, "2")
    assert statuses("2") == [200] * 10
    pid = server.pid
    server.stop()
    assert not server.alive and pid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone
