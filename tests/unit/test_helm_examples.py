"""The chart's documented examples (helm/rollback-agent/examples/*.yaml and the sidecar parent chart in
helm/examples/credit-model), rendered by the real Helm engine; the agent's own `check-config` runs on every
rendered agent.yaml. Also: the sidecar mode, the monitoring objects (PodMonitor, fleet rules, dashboard) and the
values the agent needed that the chart could not pass before (registry file, constraints, extra mounts)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from agent.cli import main as cli_main
from agent.registry.loader import load_registry
from tests.unit.test_helm_chart import FULLNAME, NAMESPACE, RELEASE, Rendered, chart, helm, render, render_error

__all__ = ["chart", "helm", "render"]  # the fixtures this module uses

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rollback-agent"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
PARENT = REPO / "helm" / "examples" / "credit-model"
DEPLOY_DOC = (REPO / "docs" / "deploy.md").read_text()


def check_config(agent_yaml: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "agent.yaml"
    path.write_text(agent_yaml)
    code = cli_main(["check-config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def example_values(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text())
    return values


def render_parent(helm: ModuleType, tmp_path: Path, agent_values: dict[str, Any] | None = None) -> Rendered:
    """The sidecar example chart with this chart as its dependency (as `helm dependency build` lays it out)."""
    parent = tmp_path / "credit-model"
    shutil.copytree(PARENT, parent)
    shutil.copytree(CHART, parent / "charts" / "rollback-agent")
    loaded = helm.Chart.load(str(parent))
    try:
        values = {"rollback-agent": agent_values} if agent_values is not None else {}
        return Rendered(loaded.render(values, name=RELEASE, namespace=NAMESPACE))
    finally:
        loaded.close()


def test_every_example_is_documented() -> None:
    assert EXAMPLES, "no examples shipped"
    for path in [*EXAMPLES, PARENT]:
        assert str(path.relative_to(REPO)) in DEPLOY_DOC, f"{path.relative_to(REPO)} is not in docs/deploy.md"


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if example_values(p).get("mode") != "sidecar"], ids=lambda p: p.name
)
def test_all_in_one_examples_render_a_config_the_agent_accepts(
    chart: Any, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = example_values(path)
    rendered = Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))
    code, output = check_config(rendered.agent_yaml, tmp_path, capsys)
    assert code == 0, output
    assert f"model {values['model']['name']}" in output
    assert [c["name"] for c in rendered.pod["containers"]][-2:] == ["envoy", "agent"]


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if example_values(p).get("mode") == "sidecar"], ids=lambda p: p.name
)
def test_sidecar_examples_render_inside_a_parent_chart(
    helm: ModuleType, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = render_parent(helm, tmp_path, example_values(path))
    code, output = check_config(rendered.agent_yaml, tmp_path, capsys)
    assert code == 0, output


def test_sidecar_mode_adds_the_agent_to_the_parents_deployment(
    helm: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = render_parent(helm, tmp_path)
    (deployment,) = r.all("Deployment")  # the parent's: this chart renders no workload in mode sidecar
    assert deployment["metadata"]["name"] == f"{RELEASE}-credit-model"
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["model-v1", "model-v2", "envoy", "agent"]
    assert [c["name"] for c in pod["initContainers"]] == ["envoy-bootstrap"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # The agent reads the config and rules this chart renders for the release.
    assert volumes["agent-config"]["configMap"]["name"] == f"{FULLNAME}-agent"
    assert volumes["rules"]["configMap"]["name"] == f"{FULLNAME}-rules"
    assert {f"{FULLNAME}-agent", f"{FULLNAME}-rules"} <= {c["metadata"]["name"] for c in r.all("ConfigMap")}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/agent-config"]
    # Traffic goes through Envoy; metrics and the PodMonitor select the parent's pods.
    services = {s["metadata"]["name"]: s for s in r.all("Service")}
    assert services[f"{RELEASE}-credit-model"]["spec"]["ports"][0]["targetPort"] == "traffic"
    agent_service = services[FULLNAME]["spec"]
    assert agent_service["selector"] == {"app.kubernetes.io/name": "credit-model"}
    assert [p["name"] for p in agent_service["ports"]] == ["metrics"]
    assert "PodDisruptionBudget" not in r.kinds
    monitor = r.one("PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "credit-model"}
    config = r.agent_config
    assert [e["targetPort"] for e in monitor["spec"]["podMetricsEndpoints"]] == [v.port for v in config.versions]
    code, output = check_config(r.agent_yaml, tmp_path, capsys)
    assert code == 0, output


def test_sidecar_mode_refuses_model_servers_and_needs_the_pod_selector(chart: Any, helm: ModuleType) -> None:
    assert "leave modelServers empty" in render_error(
        chart, helm, {"mode": "sidecar", "sidecar": {"podSelector": {"a": "b"}}}
    )
    no_selector = {"mode": "sidecar", "modelServers": None}
    assert "sidecar.podSelector" in render_error(chart, helm, no_selector)
    assert "value must be one of 'allInOne', 'sidecar'" in render_error(chart, helm, {"mode": "both"})


def test_documented_alertmanager_setting_is_the_agents(
    chart: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = example_values(CHART / "examples" / "alertmanager.yaml")
    rendered = Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))
    config = rendered.agent_config
    assert [str(u) for u in config.alerts.alertmanager.urls] == ["http://alertmanager-operated.monitoring:9093"]
    assert rendered.mount("agent", "webhook-token")["mountPath"] == str(config.alerts.webhook.bearer_token_file.parent)
    assert any(v["name"] == "webhook-token" for v in rendered.pod["volumes"])
    # The key the docs used to show is refused by the agent (the init container crash-looped on it).
    values["agent"]["config"] = {"alertmanager": values["agent"]["config"]["alerts"]["alertmanager"]}
    wrong = Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))
    code, output = check_config(wrong.agent_yaml, tmp_path, capsys)
    assert code == 2 and "alertmanager" in output


def test_agent_config_snippets_in_the_docs_are_accepted_by_the_agent(
    render: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snippets = []
    for block in re.findall(r"```yaml\n(.*?)```", DEPLOY_DOC, flags=re.S):
        try:
            loaded = yaml.safe_load(block)
        except yaml.YAMLError:
            continue  # a template, not values
        if isinstance(loaded, dict) and isinstance(loaded.get("agent"), dict) and "config" in loaded["agent"]:
            snippets.append(loaded["agent"]["config"])
    assert snippets, "docs/deploy.md shows no agent.config example"
    for config in snippets:
        code, output = check_config(render({"agent": {"config": config}}).agent_yaml, tmp_path, capsys)
        assert code == 0, f"docs/deploy.md agent.config {config}: {output}"


def test_registry_file_and_constraints_reach_the_agent(
    render: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_text = (REPO / "rules" / "registry.example.yaml").read_text()
    r = render(
        {
            "model": {"name": "credit-scorer"},
            "versions": [{"tag": "v1", "port": 8081, "memoryLimitMb": 1536}, {"tag": "v2", "port": 8082}],
            "registry": {"file": registry_text},
            "constraints": {"memoryMb": 2048, "cpu": 2, "runtimes": ["sklearn-1.4/python-3.11"]},
        }
    )
    config = r.agent_config
    assert config.registry_file is not None
    data = r.one("ConfigMap", f"{FULLNAME}-registry")["data"]["registry.yaml"]
    assert yaml.safe_load(data) == yaml.safe_load(registry_text)
    mount = r.mount("agent", "registry")
    item = r.volume("registry")["configMap"]["items"][0]
    assert f"{mount['mountPath']}/{item['path']}" == str(config.registry_file) and mount["readOnly"]
    copy = tmp_path / "registry.yaml"
    copy.write_text(data)
    assert load_registry(copy).model == config.model.name
    assert (config.constraints.memory_mb, config.constraints.cpu, config.constraints.runtimes) == (
        2048,
        2,
        ["sklearn-1.4/python-3.11"],
    )
    assert config.versions[0].memory_limit_mb == 1536 and config.versions[1].memory_limit_mb is None
    assert check_config(r.agent_yaml, tmp_path, capsys)[0] == 0

    existing = render({"registry": {"existingConfigMap": "credit-registry", "existingConfigMapKey": "reg.yaml"}})
    assert existing.volume("registry")["configMap"] == {
        "name": "credit-registry",
        "items": [{"key": "reg.yaml", "path": "registry.yaml"}],
    }
    assert f"{FULLNAME}-registry" not in {c["metadata"]["name"] for c in existing.all("ConfigMap")}
    assert render({}).agent_config.registry_file is None


def test_agent_extra_volume_mounts(render: Any, chart: Any, helm: ModuleType) -> None:
    r = render(
        {
            "agent": {
                "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/fleet", "readOnly": True}],
                "extraVolumes": [{"name": "ca", "configMap": {"name": "fleet-ca"}}],
            }
        }
    )
    assert r.mount("agent", "ca") == {"name": "ca", "mountPath": "/etc/ssl/fleet", "readOnly": True}
    assert r.volume("ca") == {"name": "ca", "configMap": {"name": "fleet-ca"}}
    assert r.mount("envoy", "ca") is None
    clash = {"agent": {"extraVolumes": [{"name": "state", "emptyDir": {}}]}}
    assert 'the volume name "state" is taken by the chart' in render_error(chart, helm, clash)


def test_monitoring_objects(render: Any) -> None:
    r = render({"podMonitor": {"enabled": True}, "fleetRules": {"enabled": True}, "dashboard": {"enabled": True}})
    monitor = r.one("PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == r.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert [(e["targetPort"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [
        (8081, "/metrics"),
        (8082, "/metrics"),
    ]
    # The fleet rules are the shipped ones, under one fixed name (a second release enabling them fails to install).
    fleet = r.one("PrometheusRule", "rollback-agent-fleet")
    shipped = yaml.safe_load((REPO / "rules" / "prometheus" / "model-rollback.rules.yml").read_text())
    assert fleet["spec"]["groups"] == shipped["groups"]
    dashboard = r.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads((CHART / "dashboards" / "rollback-agent.json").read_text())
    off = render()
    assert not ({"PodMonitor", "PrometheusRule"} & off.kinds)
    assert f"{FULLNAME}-dashboard" not in {c["metadata"]["name"] for c in off.all("ConfigMap")}


def test_chart_ships_the_current_fleet_rules() -> None:
    shipped = REPO / "rules" / "prometheus" / "model-rollback.rules.yml"
    assert (CHART / "files" / "model-rollback.rules.yml").read_text() == shipped.read_text(), (
        "cp rules/prometheus/model-rollback.rules.yml helm/rollback-agent/files/"
    )


def test_envoy_image_is_pinned(render: Any) -> None:
    image = render().container("envoy")["image"]
    repository, _, tag = image.rpartition(":")
    assert repository == "envoyproxy/envoy"
    assert tag.count(".") == 2 and "latest" not in tag, image


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_helm_lint(helm: ModuleType, path: Path) -> None:
    report = helm.lint(str(CHART), example_values(path), strict=True, namespace=NAMESPACE)
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report
