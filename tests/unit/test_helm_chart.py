"""The Helm chart (helm/rollback-agent), rendered by the real Helm engine, and the Dockerfile, checked statically.

helm-python-sdk (the `helm` extra) embeds Helm's Go engine: no helm binary, no cluster. Without it the chart tests
fail in CI (CI set) and are skipped locally. The central check: the agent.yaml the chart renders is accepted by
`agent.config.parse_config`, for the default values and for every variation here, so the chart cannot ship a config
the agent rejects.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml

from agent.cli import main as cli_main
from agent.config import AgentConfig, parse_config
from agent.envoy_bootstrap import XDS_CLUSTER_NAME

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rollback-agent"
CI_VALUES = CHART / "ci" / "test-values.yaml"
RELEASE, NAMESPACE = "credit", "models"
FULLNAME = f"{RELEASE}-rollback-agent"
CONFIG_PATH = "/etc/rollback-agent/agent.yaml"
TOKEN = "0123456789abcdef0123456789abcdef"
AGENT_CONTAINERS = ("envoy-bootstrap", "envoy", "agent")


# --- rendering -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    try:
        import helm_python
    except ImportError as exc:
        if os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}:
            pytest.fail(f"helm-python-sdk is required in CI ({exc}): pip install -e '.[helm]'")
        pytest.skip("helm-python-sdk is not installed (pip install -e '.[helm]'): the chart is not rendered")
    helm_python.disable_logging()
    return helm_python


@pytest.fixture(scope="module")
def chart(helm: ModuleType) -> Iterator[Any]:
    loaded = helm.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge like a second `-f values.yaml`: maps merge, anything else replaces, None removes."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def ci_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(CI_VALUES.read_text())
    return values


class Rendered:
    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
        self.objects: list[dict[str, Any]] = [
            doc
            for path, text in manifests.items()
            if not path.endswith(".txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
        return found[0]

    @property
    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    def container(self, name: str) -> dict[str, Any]:
        for c in self.pod.get("initContainers", []) + self.pod["containers"]:
            if c["name"] == name:
                return dict(c)
        raise AssertionError(f"no container {name!r}")

    def volume(self, name: str) -> dict[str, Any]:
        return dict(next(v for v in self.pod["volumes"] if v["name"] == name))

    def mount(self, container: str, volume: str) -> dict[str, Any] | None:
        mounts = self.container(container).get("volumeMounts", [])
        return next((m for m in mounts if m["name"] == volume), None)

    @property
    def agent_yaml(self) -> str:
        text: str = self.one("ConfigMap", f"{FULLNAME}-agent")["data"]["agent.yaml"]
        return text

    @property
    def agent_config(self) -> AgentConfig:
        return parse_config(self.agent_yaml, "agent.yaml (rendered)")


@pytest.fixture(scope="module")
def render(chart: Any) -> Any:
    def _render(patch: dict[str, Any] | None = None) -> Rendered:
        return Rendered(chart.render(merged(ci_values(), patch or {}), name=RELEASE, namespace=NAMESPACE))

    return _render


def render_error(chart: Any, helm: ModuleType, patch: dict[str, Any]) -> str:
    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)) as info:
        chart.render(merged(ci_values(), patch), name=RELEASE, namespace=NAMESPACE)
    return str(info.value)


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or a Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == port))


# --- agent.yaml ------------------------------------------------------------------------------------------------

TWO_MODEL_SERVERS = [
    {"name": "model-v1", "image": "m:1", "ports": [{"containerPort": 7001}]},
    {"name": "model-v2", "image": "m:2", "ports": [{"containerPort": 7002}]},
]

VARIATIONS: dict[str, dict[str, Any]] = {
    "ci values": {},
    "one version, experimental tier": {
        "model": {"name": "fraud.v2_x", "tier": "experimental"},
        "versions": [{"tag": "2024-01.1", "port": 8081, "metricsPath": "/stats/prometheus"}],
        "stable": "2024-01.1",
        "candidate": "",
        "modelServers": TWO_MODEL_SERVERS[:1],
    },
    "initial weights and agent.config overrides": {
        "initialWeights": {"v1": 1_000_000, "v2": 0},
        "agent": {"config": {"ack_timeout_s": 2.5, "envoy": {"route_timeout_s": 30, "connect_timeout_s": 0.25}}},
    },
    "IPv6 and custom ports": {
        "versions": [{"tag": "v1", "port": 7001}, {"tag": "v2", "port": 7002}],
        "modelServers": TWO_MODEL_SERVERS,
        "envoy": {"listenAddress": "::", "port": 8443, "adminPort": 19901},
        "agent": {"httpAddress": "::", "ports": {"http": 19090, "xds": 19000, "control": 19091}},
    },
    "persistent state, existing token Secret, existing rules ConfigMap": {
        "state": {"persistence": {"enabled": True, "storageClassName": "fast"}},
        "controlToken": {"value": None, "existingSecret": "credit-token", "existingSecretKey": "api-token"},
        "rules": {"files": None, "existingConfigMap": "credit-rules"},
    },
    "paths moved through agent.config": {
        "agent": {"config": {"state_dir": "/data/agent", "control": {"token_file": "/run/token/control"}}},
    },
}


@pytest.mark.parametrize("patch", VARIATIONS.values(), ids=VARIATIONS.keys())
def test_rendered_agent_config_is_accepted_by_the_agent(render: Any, patch: dict[str, Any]) -> None:
    rendered = render(patch)
    config = rendered.agent_config  # raises ConfigError if the agent would refuse to start
    values = merged(ci_values(), patch)
    assert config.model.name == values["model"]["name"]
    assert config.tags == [v["tag"] for v in values["versions"]]
    assert [v.endpoint for v in config.versions] == [f"127.0.0.1:{v['port']}" for v in values["versions"]]
    assert config.stable == values["stable"]
    assert config.candidate == (values.get("candidate") or None)
    # Only what must be reached from outside the pod listens beyond loopback.
    assert config.xds.address == config.control.listen.address == config.envoy.admin.address == "127.0.0.1"
    assert (
        config.http.address == config.envoy.listener.address == values.get("envoy", {}).get("listenAddress", "0.0.0.0")
    )
    assert config.state_dir.is_absolute() and config.control.token_file is not None
    # The pod mounts the state volume and the token exactly where the config points.
    assert rendered.mount("agent", "state")["mountPath"] == str(config.state_dir)
    token_mount = rendered.mount("agent", "control-token")
    item = rendered.volume("control-token")["secret"]["items"][0]
    assert f"{token_mount['mountPath']}/{item['path']}" == str(config.control.token_file)


def test_weights_and_overrides_keep_their_types(render: Any) -> None:
    config = render(VARIATIONS["initial weights and agent.config overrides"]).agent_config
    assert config.starting_weights() == {"v1": 1_000_000, "v2": 0}
    assert config.ack_timeout_s == 2.5
    assert (config.envoy.route_timeout_s, config.envoy.connect_timeout_s) == (30, 0.25)
    assert config.envoy.listener.port == 10000  # maps merge: the rest of `envoy` is still the chart's


def test_extra_agent_config_keys_pass_through(render: Any) -> None:
    """Agent settings the chart has no values for (alerts, rollback...) pass through agent.config verbatim."""
    extra = {
        "alerts": {"alertmanager": {"urls": ["http://alertmanager.monitoring:9093"]}},
        "rollback": {"cooldown_s": 60},
    }
    rendered = render({"agent": {"config": extra}})
    raw = yaml.safe_load(rendered.agent_yaml)
    assert raw["alerts"] == extra["alerts"] and raw["rollback"] == extra["rollback"]
    config = rendered.agent_config
    assert [str(u) for u in config.alerts.alertmanager.urls] == ["http://alertmanager.monitoring:9093"]
    assert config.rollback.cooldown_s == 60


def test_rule_file_in_the_mounted_directory_is_the_agents_rule_file(render: Any) -> None:
    files = {"default.yaml": "rules: []\n", "tiers/critical.yaml": "tier: critical\n"}
    config = render({"rules": {"files": files, "ruleFile": "default.yaml", "customTiers": True}}).agent_config
    assert str(config.rules.file) == "/etc/rollback-agent/rules/default.yaml"
    assert str(config.rules.tiers_dir) == "/etc/rollback-agent/rules/tiers"
    assert render({}).agent_config.rules.file is None


def test_bootstrap_written_by_the_init_container_matches_the_envoy_probe(
    render: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = render(VARIATIONS["IPv6 and custom ports"])
    config_file = tmp_path / "agent.yaml"
    config_file.write_text(rendered.agent_yaml)
    assert cli_main(["check-config", str(config_file)]) == 0
    capsys.readouterr()
    assert cli_main(["bootstrap", "--config", str(config_file), "--node-id", "credit-7d9f-abcde"]) == 0
    bootstrap = yaml.safe_load(capsys.readouterr().out)
    assert bootstrap["node"] == {"id": "credit-7d9f-abcde", "cluster": "credit-scoring"}
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19901}
    script = rendered.container("envoy")["readinessProbe"]["exec"]["command"][-1]
    assert "/dev/tcp/127.0.0.1/19901" in script
    (xds,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == XDS_CLUSTER_NAME]
    (endpoint,) = [e["endpoint"] for group in xds["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19000}


# --- the pod ---------------------------------------------------------------------------------------------------


def test_deployment_runs_model_servers_envoy_and_agent_after_the_bootstrap_init(render: Any) -> None:
    r = render()
    assert [c["name"] for c in r.pod["containers"]] == ["model-v1", "model-v2", "envoy", "agent"]
    assert [c["name"] for c in r.pod["initContainers"]] == ["envoy-bootstrap"]
    init = r.container("envoy-bootstrap")
    assert init["image"] == r.container("agent")["image"] == "rollback-agent:0.1.0"
    assert init["env"] == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    # The image's entrypoint is rollback-agent; no shell: the CLI writes the file atomically itself.
    assert "command" not in init
    args = init["args"]
    assert args[:5] == ["bootstrap", "--config", CONFIG_PATH, "--node-id", "$(POD_NAME)"]
    bootstrap_path = PurePosixPath(args[args.index("--output") + 1])
    envoy = r.container("envoy")
    assert envoy["args"][envoy["args"].index("--config-path") + 1] == str(bootstrap_path)
    assert r.mount("envoy-bootstrap", "envoy-bootstrap")["mountPath"] == str(bootstrap_path.parent)
    assert r.mount("envoy", "envoy-bootstrap") == {
        "name": "envoy-bootstrap",
        "mountPath": str(bootstrap_path.parent),
        "readOnly": True,
    }
    assert "emptyDir" in r.volume("envoy-bootstrap")
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    # The init container and the agent read the same agent.yaml, from the chart's ConfigMap.
    for name in ("envoy-bootstrap", "agent"):
        assert r.mount(name, "agent-config") == {
            "name": "agent-config",
            "mountPath": CONFIG_PATH,
            "subPath": "agent.yaml",
            "readOnly": True,
        }
    assert r.volume("agent-config")["configMap"]["name"] == f"{FULLNAME}-agent"
    assert r.container("agent")["args"][:3] == ["run", "--config", CONFIG_PATH]
    assert f"exec deploy/{FULLNAME} -c agent -- rollback-agent status --config {CONFIG_PATH}" in r.notes
    assert (
        r.one("Deployment")["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        == "agent"
    )


@pytest.mark.parametrize("variation", ["ci values", "IPv6 and custom ports"])
def test_probes_and_service_point_at_the_configured_ports(render: Any, variation: str) -> None:
    r = render(VARIATIONS[variation])
    config = r.agent_config
    agent = r.container("agent")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = agent[probe]["httpGet"]
        assert get["path"] == path
        assert container_port(agent, get["port"]) == config.http.port
    envoy = r.container("envoy")
    assert "livenessProbe" not in envoy
    command = envoy["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["bash", "-c"]
    assert f"/dev/tcp/127.0.0.1/{config.envoy.admin.port}" in command[2]
    assert "GET /ready HTTP/1.1" in command[2]
    assert [p["containerPort"] for p in envoy["ports"]] == [config.envoy.listener.port]
    assert [p["containerPort"] for p in agent["ports"]] == [config.http.port]  # xds and control stay on loopback
    service = r.one("Service")
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert container_port(envoy, targets["traffic"]) == config.envoy.listener.port
    assert container_port(agent, targets["metrics"]) == config.http.port
    deployment = r.one("Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


class _AdminStub(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b"LIVE\n" if self.status == 200 else b"PRE_INITIALIZING\n"
        self.send_response(self.status if self.path == "/ready" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.skipif(shutil.which("bash") is None, reason="the Envoy probe is a bash script")
def test_envoy_readiness_script_reads_the_admin_ready_status(render: Any) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AdminStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        command = render({"envoy": {"adminPort": port}}).container("envoy")["readinessProbe"]["exec"]["command"]

        def probe() -> int:
            return subprocess.run(command, capture_output=True, timeout=5, check=False).returncode

        _AdminStub.status = 200
        assert probe() == 0
        _AdminStub.status = 503
        assert probe() != 0
    finally:
        server.shutdown()
        server.server_close()
        _AdminStub.status = 200
    assert probe() != 0  # nothing listening


def test_security_context(render: Any) -> None:
    r = render(
        {"modelServers": [*TWO_MODEL_SERVERS[:1], {**TWO_MODEL_SERVERS[1], "securityContext": {"runAsUser": 7}}]}
    )
    pod = r.pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for name in AGENT_CONTAINERS:
        sc = r.container(name)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, name
    # Model servers get the default unless they bring their own.
    assert r.container("model-v1")["securityContext"]["readOnlyRootFilesystem"] is True
    assert r.container("model-v2")["securityContext"] == {"runAsUser": 7}
    # Only the agent sees the token.
    for c in pod["containers"] + pod["initContainers"]:
        has_token = any(m["name"] == "control-token" for m in c.get("volumeMounts", []))
        assert has_token == (c["name"] == "agent"), c["name"]


# --- the token -------------------------------------------------------------------------------------------------


def test_token_value_goes_into_a_chart_secret_the_agent_mounts(render: Any) -> None:
    r = render()
    secret = r.one("Secret")
    assert secret["metadata"]["name"] == f"{FULLNAME}-control-token"
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    volume = r.volume("control-token")["secret"]
    assert volume["secretName"] == secret["metadata"]["name"]
    assert volume["items"] == [{"key": "token", "path": "token"}]
    assert r.agent_config.control.token_file == Path("/var/run/secrets/rollback-agent/token")
    assert r.mount("agent", "control-token") == {
        "name": "control-token",
        "mountPath": "/var/run/secrets/rollback-agent",
        "readOnly": True,
    }
    assert TOKEN not in r.agent_yaml and TOKEN not in json.dumps(r.one("Deployment"))


def test_existing_token_secret_is_used_as_is(render: Any) -> None:
    r = render({"controlToken": {"value": None, "existingSecret": "credit-token", "existingSecretKey": "api-token"}})
    assert "Secret" not in r.kinds
    volume = r.volume("control-token")["secret"]
    assert volume["secretName"] == "credit-token"
    assert volume["items"] == [{"key": "api-token", "path": "token"}]


def test_rendering_without_a_token_fails_with_a_clear_message(chart: Any, helm: ModuleType) -> None:
    message = render_error(chart, helm, {"controlToken": {"value": None}})
    assert "controlToken: the agent's control API needs a bearer token" in message
    assert "controlToken.existingSecret" in message and "controlToken.value" in message
    assert "would change on every helm upgrade" in message
    both = render_error(chart, helm, {"controlToken": {"existingSecret": "x"}})
    assert "set either controlToken.existingSecret or controlToken.value, not both" in both
    short = render_error(chart, helm, {"controlToken": {"value": "secret"}})
    assert "at least 16 characters" in short


TOKENS_SECRET = {"controlTokens": {"existingSecret": "credit-operators", "existingSecretKey": "operators.yaml"}}


def test_a_tokens_secret_is_mounted_and_named_in_agent_yaml(render: Any) -> None:
    r = render(TOKENS_SECRET)
    assert r.agent_config.control.tokens_file == Path("/var/run/secrets/rollback-agent-tokens/tokens.yaml")
    volume = r.volume("control-tokens")["secret"]
    assert (volume["secretName"], volume["items"]) == (
        "credit-operators",
        [{"key": "operators.yaml", "path": "tokens.yaml"}],
    )
    assert r.mount("agent", "control-tokens") == {
        "name": "control-tokens",
        "mountPath": "/var/run/secrets/rollback-agent-tokens",
        "readOnly": True,
    }
    # The single token stays alongside when it is set (the ci values set one): one admin identity more.
    assert r.agent_config.control.token_file == Path("/var/run/secrets/rollback-agent/token")
    assert r.mount("agent", "control-token") is not None


def test_with_named_identities_no_shared_token_is_needed_nor_mounted(render: Any) -> None:
    r = render({**TOKENS_SECRET, "controlToken": {"value": None}})
    assert r.agent_config.control.token_file is None
    assert r.agent_config.control.tokens_file is not None
    assert r.mount("agent", "control-token") is None
    assert "control-token" not in [v["name"] for v in r.pod["volumes"]]
    assert "Secret" not in r.kinds
    assert TOKEN not in json.dumps(r.objects)
    assert "--token-file /dev/stdin < my.token" in r.notes  # each operator sends their own token


def test_without_tokens_the_chart_is_as_before(render: Any) -> None:
    r = render()
    assert r.agent_config.control.tokens_file is None
    assert r.mount("agent", "control-tokens") is None


def test_tokens_file_sharing_the_token_directory_is_refused(chart: Any, helm: ModuleType) -> None:
    same_dir = {"tokens_file": "/var/run/secrets/rollback-agent/tokens"}
    message = render_error(chart, helm, {**TOKENS_SECRET, "agent": {"config": {"control": same_dir}}})
    assert "control.tokens_file: use a directory other than control.token_file's" in message
    relative_path = {"control": {"tokens_file": "t.yaml"}}
    relative = render_error(chart, helm, {**TOKENS_SECRET, "agent": {"config": relative_path}})
    assert 'control.tokens_file: must be an absolute path in the pod, got "t.yaml"' in relative


# --- optional objects, state, rules ----------------------------------------------------------------------------


def test_toggles_add_and_remove_servicemonitor_prometheusrule_and_pdb(render: Any) -> None:
    default = render()
    assert {"ServiceMonitor", "PrometheusRule", "PersistentVolumeClaim"}.isdisjoint(default.kinds)
    assert default.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "PodDisruptionBudget" not in render({"podDisruptionBudget": {"enabled": False}}).kinds
    assert render({"podDisruptionBudget": {"minAvailable": "50%"}}).one("PodDisruptionBudget")["spec"] == {
        "minAvailable": "50%",
        "selector": {"matchLabels": default.one("Deployment")["spec"]["selector"]["matchLabels"]},
    }

    r = render({"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    monitor = r.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in r.one("Service")["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= r.one("Service")["metadata"]["labels"].items()

    group = {"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "annotations": {"summary": "{{ $labels.x }}"}}]}
    rule_file = yaml.safe_dump({"groups": [{"name": "f", "rules": [{"record": "r", "expr": "sum(up)"}]}]})
    rule = render({"prometheusRule": {"enabled": True, "groups": [group], "ruleFiles": {"f": rule_file}}}).one(
        "PrometheusRule"
    )
    assert [g["name"] for g in rule["spec"]["groups"]] == ["g", "f"]
    assert rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"] == "{{ $labels.x }}"  # not templated


def test_the_repos_prometheus_rule_files_ship_through_the_chart(render: Any) -> None:
    files = sorted((REPO / "rules" / "prometheus").glob("*.rules.y*ml"))
    if not files:
        pytest.skip("no rules/prometheus/*.rules.yml in the repo yet")
    rule_files = {f.name.split(".")[0]: f.read_text() for f in files}
    rule = render({"prometheusRule": {"enabled": True, "ruleFiles": rule_files}}).one("PrometheusRule")
    expected = [g["name"] for text in rule_files.values() for g in yaml.safe_load(text)["groups"]]
    assert sorted(g["name"] for g in rule["spec"]["groups"]) == sorted(expected)


def test_state_volume_is_an_emptydir_or_a_claim(render: Any, chart: Any, helm: ModuleType) -> None:
    default = render()
    assert "emptyDir" in default.volume("state")
    assert default.one("Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"

    r = render({"state": {"persistence": {"enabled": True, "storageClassName": "fast"}}})
    claim = r.one("PersistentVolumeClaim")
    assert r.volume("state")["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert r.one("Deployment")["spec"]["strategy"] == {"type": "Recreate"}  # a ReadWriteOnce volume cannot surge

    existing = render({"state": {"persistence": {"enabled": True, "existingClaim": "credit-state"}}})
    assert "PersistentVolumeClaim" not in existing.kinds
    assert existing.volume("state")["persistentVolumeClaim"]["claimName"] == "credit-state"

    message = render_error(chart, helm, {"replicaCount": 2, "state": {"persistence": {"enabled": True}}})
    assert "replicaCount must be 1" in message


def test_rules_configmap_is_mounted_as_a_directory(render: Any) -> None:
    files = {"default.yaml": "rules: []\n", "tiers/critical.yaml": "tier: critical\n"}
    r = render({"rules": {"files": files}})
    data = r.one("ConfigMap", f"{FULLNAME}-rules")["data"]
    assert data == {"default.yaml": "rules: []\n", "tiers__critical.yaml": "tier: critical\n"}
    volume = r.volume("rules")["configMap"]
    assert volume["name"] == f"{FULLNAME}-rules"
    assert sorted((i["key"], i["path"]) for i in volume["items"]) == [
        ("default.yaml", "default.yaml"),
        ("tiers__critical.yaml", "tiers/critical.yaml"),
    ]
    # A directory mount (no subPath): kubelet swaps the files in place and the agent reloads them.
    assert r.mount("agent", "rules") == {"name": "rules", "mountPath": "/etc/rollback-agent/rules", "readOnly": True}

    flat = render()
    assert "items" not in flat.volume("rules")["configMap"]  # new flat files appear without a pod change

    existing = render({"rules": {"files": None, "existingConfigMap": "credit-rules"}})
    assert f"{FULLNAME}-rules" not in {o["metadata"]["name"] for o in existing.all("ConfigMap")}
    assert existing.volume("rules")["configMap"] == {"name": "credit-rules"}


def test_the_repos_rule_files_fit_the_chart(render: Any) -> None:
    paths = sorted([*(REPO / "rules").glob("*.yaml"), *(REPO / "rules" / "tiers").glob("*.yaml")])
    if not paths:
        pytest.skip("no rule files in rules/ yet")
    files = {p.relative_to(REPO / "rules").as_posix(): p.read_text() for p in paths}
    r = render({"rules": {"files": files}})
    items = r.volume("rules")["configMap"].get("items") or [{"key": k, "path": k} for k in files]
    data = r.one("ConfigMap", f"{FULLNAME}-rules")["data"]
    assert {i["path"]: data[i["key"]] for i in items} == files


def test_ci_values_rule_files_load(render: Any) -> None:
    load_rules = getattr(pytest.importorskip("agent.triggers.loader"), "load_rules", None)
    if load_rules is None:
        pytest.skip("agent.triggers.loader.load_rules is gone")
    for name, text in ci_values()["rules"]["files"].items():
        load_rules(text, name)


def test_rule_edits_do_not_restart_pods_but_config_changes_do(render: Any) -> None:
    def template(patch: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = render(patch).one("Deployment")["spec"]["template"]
        return spec

    base = template({})
    assert template({"rules": {"files": {"default.yaml": "rules: []\n"}}}) == base
    changed = template({"agent": {"config": {"ack_timeout_s": 9}}})
    key = "checksum/agent-config"
    assert changed["metadata"]["annotations"][key] != base["metadata"]["annotations"][key]


# --- values checks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        pytest.param({"model": {"name": ""}}, "model.name is required", id="no-model-name"),
        pytest.param({"versions": []}, "versions: list at least one model version", id="no-versions"),
        pytest.param(
            {"stable": "v9"}, 'stable: "v9" must be one of the versions\' tags ["v1","v2"]', id="stable-unknown"
        ),
        pytest.param({"candidate": "v9"}, 'candidate: "v9" must be one of', id="candidate-unknown"),
        pytest.param(
            {"modelServers": []}, "modelServers: add at least one model-server container", id="no-model-servers"
        ),
        pytest.param(
            {"agent": {"ports": {"http": 8081}}},
            "port 8081 is used by both the agent http (agent.ports.http) and",
            id="port-clash-version",
        ),
        pytest.param(
            {"envoy": {"adminPort": 10000}}, "port 10000 is used by both the envoy listener", id="port-clash-envoy"
        ),
        pytest.param(
            {"modelServers": [{"name": "agent", "image": "x"}]},
            'the container name "agent" is taken',
            id="container-name-taken",
        ),
        pytest.param(
            {"rules": {"files": {"../x.yaml": ""}}},
            'rules.files: "../x.yaml" is not a usable file name',
            id="bad-rule-file-name",
        ),
        pytest.param(
            {"agent": {"config": {"state_dir": "state"}}},
            "state_dir: must be an absolute path",
            id="relative-state-dir",
        ),
        pytest.param(
            {"prometheusRule": {"enabled": True}}, "prometheusRule.enabled: no rules to ship", id="prometheusrule-empty"
        ),
        pytest.param(
            {"prometheusRule": {"enabled": True, "ruleFiles": {"x": "rules: []"}}},
            "needs a top-level `groups:`",
            id="prometheus-file-without-groups",
        ),
        pytest.param({"modle": {"name": "x"}}, "additional properties 'modle' not allowed", id="schema-unknown-key"),
        pytest.param(
            {"model": {"tier": "important"}}, "value must be one of 'critical', 'experimental'", id="schema-bad-tier"
        ),
        pytest.param({"versions": [{"tag": "v1", "port": 70000}]}, "/versions/0/port", id="schema-bad-port"),
    ],
)
def test_bad_values_fail_at_render_time(chart: Any, helm: ModuleType, patch: dict[str, Any], expected: str) -> None:
    assert expected in render_error(chart, helm, patch)


def test_helm_lint_passes(helm: ModuleType) -> None:
    for values in (
        ci_values(),
        merged(ci_values(), VARIATIONS["persistent state, existing token Secret, existing rules ConfigMap"]),
    ):
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


# --- Dockerfile --------------------------------------------------------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"


def dockerfile_stages() -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """(global ARG defaults, stages as lists of (INSTRUCTION, arguments)), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "FROM":
            stages.append([])
        if not stages:
            assert instruction == "ARG", f"only ARG may come before the first FROM, got {instruction}"
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        stages[-1].append((instruction, rest))
    return args, stages


def test_dockerfile_builds_a_slim_non_root_image_of_the_agent() -> None:
    args, stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build, then a clean runtime stage"
    for stage in stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        assert image == "python:3.11-slim", stage[0]
    final = stages[-1]
    instructions = [i for i, _ in final]
    last = {i: rest for i, rest in final}
    assert re.fullmatch(r"10001(:\d+)?", last["USER"]), "runs as uid 10001, numerically (runAsNonRoot can check it)"
    assert instructions.index("USER") > max(n for n, i in enumerate(instructions) if i == "RUN")
    assert json.loads(last["ENTRYPOINT"]) == ["rollback-agent"]
    assert json.loads(last["CMD"]) == ["run", "--config", CONFIG_PATH]
    defaults = AgentConfig.model_validate(
        {"model": {"name": "m"}, "versions": [{"tag": "v", "endpoint": "127.0.0.1:1"}], "stable": "v"}
    )
    exposed = {int(p.split("/")[0]) for i, rest in final if i == "EXPOSE" for p in rest.split()}
    assert exposed == {defaults.xds.port, defaults.http.port, defaults.control.listen.port} == {18000, 9090, 9091}
    # The package is installed (no dev extras) in the build stage only; the runtime copies the result.
    build_runs = " ".join(rest for stage in stages[:-1] for i, rest in stage if i == "RUN")
    assert re.search(r"pip install [^;&]*'?\.(\[fleet\])?'?(\s|$)", build_runs) and "[dev" not in build_runs
    final_runs = " ".join(rest for i, rest in final if i == "RUN")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make|pip install)\b", final_runs)
    assert all("--from=" in rest for i, rest in final if i in {"COPY", "ADD"})


def test_dockerfile_copies_exist_and_cover_the_package() -> None:
    _, stages = dockerfile_stages()
    ignored = [
        p.strip().rstrip("/")
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    assert not any(p.startswith("!") for p in ignored), "the check below handles plain patterns only"
    for required in (".git", ".venv", "bench/results", ".pytest_cache", "**/__pycache__"):
        assert required in ignored
    sources = []
    for stage in stages:
        for instruction, rest in stage:
            if instruction in {"COPY", "ADD"} and "--from=" not in rest:
                parts = [p for p in rest.split() if not p.startswith("--")]
                sources += [s.removeprefix("./").rstrip("/") for s in parts[:-1]]
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repo"
        hits = [p for p in ignored if fnmatch(source, p) or source.startswith(p + "/")]
        assert not hits, f"COPY {source} is excluded by .dockerignore {hits}"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert "pyproject.toml" in sources
    assert packages <= set(sources), f"packages not copied into the image: {packages - set(sources)}"
