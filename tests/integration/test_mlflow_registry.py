"""The MLflow registry adapter against a real `mlflow server` (SQLite backend store, local artifact root).

The model, its versions, aliases and source runs (git commit, dataset input, parameters, metrics) are made through
MLflow's REST API, as a training pipeline would; the agent reads them, and a rollback writes its verdict back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.adapters.registry.mlflow_registry import MlflowRegistry, MlflowRegistryError
from agent.config import AgentConfig, parse_config
from agent.engine.planner import RegistryPlanner
from agent.ports.registry import VersionStatus
from agent.registry.compatibility import Constraints
from harness.binaries import MissingBinaryError
from harness.load import TrafficGenerator
from harness.mlflow import MlflowClient, MlflowServer, mlflow_binary
from harness.ports import free_port
from harness.wait import async_wait_until
from tests.integration.agent_stack import MODEL, ROOT, AgentStack, body_factory
from tests.integration.conftest import unavailable

COMMIT_V1 = "1" * 40
COMMIT_V2 = "2" * 40
DIGEST = "sha256:" + "b" * 64
PROVENANCE_TAGS = {
    "artifact_digest": DIGEST,
    "training_data_hash": DIGEST,
    "image": "registry.example/credit@" + DIGEST,
    "base_image_digest": DIGEST,
    "requirements.memory_mb": "1024",
    "requirements.cpu": "1",
    "requirements.runtime": "sklearn-1.4/python-3.11",
}


def _require_mlflow() -> None:
    try:
        mlflow_binary()
    except MissingBinaryError as err:
        unavailable(str(err))


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    _require_mlflow()
    work = tmp_path_factory.mktemp("mlflow")
    server = MlflowServer(work_dir=work, log_dir=work / "logs")
    try:
        yield server.start()
    finally:
        server.stop()
        assert not server.alive


def agent_config(state_dir: Path, url: str, model: str, **mlflow: Any) -> AgentConfig:
    text = f"""
model: {{name: {model}}}
versions:
  - {{tag: v1, endpoint: "127.0.0.1:{free_port()}"}}
  - {{tag: v2, endpoint: "127.0.0.1:{free_port()}"}}
stable: v1
candidate: v2
state_dir: {state_dir}
registry:
  mlflow: {json.dumps({"url": url, **mlflow})}
"""
    return parse_config(text, "agent.yaml")


def register(client: MlflowClient, model: str, experiment: str) -> dict[str, dict[str, Any]]:
    """v1 (verified, the previous champion) and v2 (the new champion), each from its own training run."""
    experiment_id = client.create_experiment(experiment)
    client.create_model(model)
    runs = {}
    for tag, commit, accuracy, depth in (("v1", COMMIT_V1, 0.91, 4), ("v2", COMMIT_V2, 0.93, 6)):
        run = client.create_run(experiment_id, tags={"mlflow.source.git.commit": commit})
        run_id = run["info"]["run_id"]
        client.log_params(run_id, {"max_depth": depth, "criterion": "gini"})
        client.log_metrics(run_id, {"accuracy": accuracy, "latency_p99_ms": 25.0, "error_rate": 0.001})
        source = json.dumps({"uri": f"s3://datasets/credit/{tag}.parquet"})
        client.log_dataset(run_id, f"credit-{tag}", "c" * 32, source)
        runs[tag] = client.create_version(model, run, tags=PROVENANCE_TAGS, description=f"trained for {tag}")
    client.call(
        "POST",
        "model-versions/set-tag",
        {"name": model, "version": "1", "key": "rollback_agent.status", "value": "verified"},
    )
    client.set_alias(model, "champion", "2")
    return runs


async def test_the_agent_reads_versions_aliases_tags_and_source_runs(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    client = mlflow_server.client()
    register(client, "reader", "reader-exp")
    config = agent_config(tmp_path / "state", mlflow_server.url, "reader")
    registry = await MlflowRegistry.connect(config, config.registry.mlflow)  # type: ignore[arg-type]
    try:
        versions = {v.tag: v for v in await registry.list_versions()}
        assert list(versions) == ["v1", "v2"]
        assert versions["v1"].status is VersionStatus.VERIFIED  # its status tag
        assert versions["v2"].status is VersionStatus.STABLE  # the champion alias
        v1 = versions["v1"]
        assert v1.provenance is not None
        assert v1.provenance.feature_code_commit == COMMIT_V1
        assert v1.provenance.training_data_uri == "s3://datasets/credit/v1.parquet"
        assert v1.provenance.hyperparameters == {"max_depth": 4, "criterion": "gini"}
        assert v1.provenance.artifact_uri.startswith("file://") and v1.provenance.artifact_uri.endswith("/model")
        assert v1.requirements is not None and v1.requirements.memory_mb == 1024
        assert v1.baseline is not None and v1.baseline.primary_metric is not None
        assert (v1.baseline.primary_metric.name, v1.baseline.primary_metric.value) == ("accuracy", 0.91)
        assert v1.baseline.latency_p99_ms == 25.0
        assert v1.description == f"trained for v1; git commit {COMMIT_V1}; params criterion=gini, max_depth=4"
        assert registry.origin == f"MLflow {mlflow_server.url} model 'reader'"
    finally:
        await registry.close()


async def test_a_rollback_writes_the_failed_tag_and_moves_the_champion(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    client = mlflow_server.client()
    register(client, "rollback", "rollback-exp")
    config = agent_config(tmp_path / "state", mlflow_server.url, "rollback", move_champion=True)
    registry = await MlflowRegistry.connect(config, config.registry.mlflow)  # type: ignore[arg-type]
    planner = RegistryPlanner(registry, Constraints())
    try:
        targets = await planner.targets("v2", None)
        assert [t.version for t in targets] == ["v1"]
        # What the rollback procedure does after the switch, then after the target's verification passed:
        before = await planner.mark_failed("v2", "rollback r-1: error rate 41% > 5%", "rule:error-rate")
        assert before == "stable"
        await registry.flush()  # the writes to MLflow run beside the decision
        tags = client.version_tags("rollback", "2")
        assert tags["rollback_agent.status"] == "failed"
        assert tags["rollback_agent.status_reason"] == "rollback r-1: error rate 41% > 5%"
        assert tags["rollback_agent.status_actor"] == "rule:error-rate"
        assert client.alias("rollback", "champion")["version"] == "2"  # not before the target is verified
        await planner.mark_verified("v1", "verified after rollback r-1: error_rate 0.1% <= limit 1.1%")
        await registry.flush()
        assert client.alias("rollback", "champion")["version"] == "1"
        verification = json.loads(client.version_tags("rollback", "1")["rollback_agent.verification"])
        assert verification["passed"] is True and "rollback r-1" in verification["detail"]
        # The overlay is the record: a new read of MLflow shows the same, and the failed version stays failed.
        await registry.refresh()
        versions = {v.tag: v for v in await registry.list_versions()}
        assert versions["v2"].status is VersionStatus.FAILED
        assert versions["v1"].status is VersionStatus.VERIFIED  # its status tag says more than the alias
        assert "post-rollback verification" in [e.name for e in versions["v1"].evidence]
        assert [t.version for t in await planner.targets("v2", None)] == ["v1"]
    finally:
        await registry.close()


async def test_the_champion_stays_when_it_is_healthy(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    client = mlflow_server.client()
    register(client, "healthy", "healthy-exp")
    config = agent_config(tmp_path / "state", mlflow_server.url, "healthy", move_champion=True)
    registry = await MlflowRegistry.connect(config, config.registry.mlflow)  # type: ignore[arg-type]
    try:
        await RegistryPlanner(registry, Constraints()).mark_verified("v1", "verified after an operator's rollback")
        await registry.flush()
        assert client.alias("healthy", "champion")["version"] == "2"
    finally:
        await registry.close()


async def test_a_version_the_agent_routes_to_must_be_registered(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    client = mlflow_server.client()
    client.create_model("lonely")
    experiment_id = client.create_experiment("lonely-exp")
    client.create_version("lonely", client.create_run(experiment_id))
    config = agent_config(tmp_path / "state", mlflow_server.url, "lonely")
    with pytest.raises(MlflowRegistryError, match=r"model 'lonely': no version for v2 \(in the agent config\)"):
        await MlflowRegistry.connect(config, config.registry.mlflow)  # type: ignore[arg-type]


async def test_an_unknown_model_and_an_unreachable_server_are_clear_errors(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    config = agent_config(tmp_path / "state", mlflow_server.url, "absent")
    with pytest.raises(MlflowRegistryError, match=r"answered HTTP 404 to GET registered-models/get"):
        await MlflowRegistry.connect(config, config.registry.mlflow)  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{free_port()}"
    config = agent_config(tmp_path / "state", url, "absent")
    with pytest.raises(MlflowRegistryError, match=rf"MLflow {url} unreachable"):
        await MlflowRegistry.connect(config, config.registry.mlflow)  # type: ignore[arg-type]
    assert not (tmp_path / "state" / "state.db").exists()  # nothing was created


async def test_mlflow_down_keeps_the_registry_and_the_verdict_reaches_mlflow_later(
    tmp_path: Path, tmp_logs: Path
) -> None:
    _require_mlflow()
    server = MlflowServer(work_dir=tmp_path / "mlflow", log_dir=tmp_logs)
    server.start()
    try:
        client = server.client()
        register(client, "outage", "outage-exp")
        config = agent_config(tmp_path / "state", server.url, "outage")
        registry = await MlflowRegistry.connect(config, config.registry.mlflow)  # type: ignore[arg-type]
        try:
            server.stop()
            with pytest.raises(MlflowRegistryError, match="unreachable"):
                await registry.refresh()
            assert [v.tag for v in await registry.list_versions()] == ["v1", "v2"]  # the last versions read
            await registry.set_status("v2", VersionStatus.FAILED, "rollback r-2: crash", "rule:crash")
            assert (await registry.get("v2")).status is VersionStatus.FAILED  # on record despite MLflow
            await registry.flush()  # the mirror write failed (logged); it waits for the next good read
            server = MlflowServer(work_dir=tmp_path / "mlflow", log_dir=tmp_logs, port=server.port, name="mlflow2")
            server.start()
            await registry.refresh()  # the first good read sends what MLflow missed
            await registry.flush()
            assert server.client().version_tags("outage", "2")["rollback_agent.status"] == "failed"
        finally:
            await registry.close()
    finally:
        server.stop()


async def test_the_running_agent_rolls_back_and_mlflow_shows_it(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    agent_factory: Any,
    envoy_factory: Any,
    refserver_factory: Any,
) -> None:
    """The real agent, Envoy and two reference servers, with MLflow as the registry: a failing champion (v2) is
    rolled back to v1, MLflow's v2 gets the failed tag with the rule's reason, and the champion alias moves to v1
    once v1 passed its verification."""
    client = mlflow_server.client()
    register(client, MODEL, "e2e-exp")
    extra = {
        "rules": {"file": str(ROOT / "rules" / "default.yaml")},
        "rollback": {"verify_window_s": 2, "cooldown_s": 0},
        "registry": {"mlflow": {"url": mlflow_server.url, "move_champion": True}},
    }
    stack = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, extra_config=extra)
    stack.start_upstreams()
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(400, timeout_s=10)
        await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})

        async def champion_back_on_v1() -> bool:
            return client.alias(MODEL, "champion")["version"] == "1"

        await async_wait_until(champion_back_on_v1, 30, interval_s=0.1, what="the champion alias back on v1")
    _, status = await stack.control("GET", "/v1/status")
    assert {v["version"]: v["served_weight"] for v in status["versions"]} == {"v1": 100, "v2": 0}
    tags = client.version_tags(MODEL, "2")
    assert tags["rollback_agent.status"] == "failed"
    assert tags["rollback_agent.status_actor"].startswith("rule:error-rate")
    assert tags["rollback_agent.status_reason"].startswith("rollback ")
    verification = json.loads(client.version_tags(MODEL, "1")["rollback_agent.verification"])
    assert verification["passed"] is True and verification["approved_by"] == "agent:verification"


async def test_a_read_missing_a_routed_version_is_refused_and_the_last_read_stays(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    client = mlflow_server.client()
    register(client, "shrinking", "shrinking-exp")
    config = agent_config(tmp_path / "state", mlflow_server.url, "shrinking")
    registry = await MlflowRegistry.connect(config, config.registry.mlflow)  # type: ignore[arg-type]
    try:
        client.call("DELETE", "model-versions/delete", {"name": "shrinking", "version": "2"})
        with pytest.raises(MlflowRegistryError, match=r"no version for v2 \(in the agent config\)"):
            await registry.refresh()
        assert [v.tag for v in await registry.list_versions()] == ["v1", "v2"]
    finally:
        await registry.close()
