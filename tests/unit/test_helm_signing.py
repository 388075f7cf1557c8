"""The chart's audit signing: the key from a Secret you manage, mounted read-only into the agent container only, and
audit.signing in the rendered agent.yaml pointing at it. Rendered by the real Helm engine (see test_helm_chart.py)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.unit.test_helm_chart import CHART, NAMESPACE, chart, ci_values, helm, merged, render, render_error

__all__ = ["chart", "helm", "render"]  # the fixtures this module uses

KEY_DIR = "/var/run/secrets/rollback-agent-audit-key"
HMAC = {"audit": {"signing": {"mode": "hmac", "keyId": "credit-prod-2026", "existingSecret": "credit-audit-key"}}}


def test_a_signing_key_secret_is_mounted_read_only_and_named_in_agent_yaml(render: Any) -> None:
    r = render(HMAC)
    signing = r.agent_config.audit.signing
    assert (signing.mode, signing.key_id, signing.key_file) == (
        "hmac",
        "credit-prod-2026",
        Path(f"{KEY_DIR}/audit-key"),
    )
    volume = r.volume("audit-signing-key")["secret"]
    assert volume == {
        "secretName": "credit-audit-key",
        "defaultMode": 0o440,
        "items": [{"key": "audit-key", "path": "audit-key"}],
    }
    assert r.mount("agent", "audit-signing-key") == {
        "name": "audit-signing-key",
        "mountPath": KEY_DIR,
        "readOnly": True,
    }
    # Only the agent signs: the key is not mounted into Envoy, the bootstrap init or a model server.
    for container in r.pod["initContainers"] + r.pod["containers"]:
        if container["name"] != "agent":
            assert all(m["name"] != "audit-signing-key" for m in container.get("volumeMounts", [])), container["name"]
    assert "Secret" not in {o["kind"] for o in r.objects if o["metadata"]["name"] == "credit-audit-key"}


def test_ed25519_with_its_own_secret_key_and_the_default_key_id(render: Any) -> None:
    signing_values = {"mode": "ed25519", "existingSecret": "credit-ed25519", "existingSecretKey": "private.pem"}
    r = render({"audit": {"signing": signing_values}})
    signing = r.agent_config.audit.signing
    assert (signing.mode, signing.key_id) == ("ed25519", None)  # the agent derives the key's fingerprint id
    assert r.volume("audit-signing-key")["secret"]["items"] == [{"key": "private.pem", "path": "audit-key"}]
    assert f"{r.mount('agent', 'audit-signing-key')['mountPath']}/audit-key" == str(signing.key_file)


def test_signing_and_the_fleet_store_together(render: Any) -> None:
    r = render({**HMAC, "fleetAudit": {"enabled": True, "existingSecret": "fleet-db"}})
    audit = r.agent_config.audit
    assert audit.fleet is not None and audit.signing.mode == "hmac"
    assert {"fleet-dsn", "audit-signing-key"} <= {v["name"] for v in r.pod["volumes"]}


def test_without_signing_nothing_is_mounted_and_agent_yaml_has_no_audit_section(render: Any) -> None:
    r = render()
    assert r.agent_config.audit.signing.mode == "none"
    assert "audit" not in yaml.safe_load(r.agent_yaml)
    assert all(v["name"] != "audit-signing-key" for v in r.pod["volumes"])


def test_a_new_key_id_rolls_the_pods(render: Any) -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/agent-config"])

    rotated = merged(HMAC, {"audit": {"signing": {"keyId": "credit-prod-2027"}}})
    assert checksum(HMAC) != checksum(rotated)


@pytest.mark.parametrize(
    ("signing", "expected"),
    [
        pytest.param({"mode": "hmac"}, "audit.signing: mode hmac needs its key", id="mode-without-secret"),
        pytest.param({"existingSecret": "k"}, "existingSecret is set but mode is none", id="secret-without-mode"),
        pytest.param({"mode": "rsa", "existingSecret": "k"}, "/audit/signing/mode", id="schema-bad-mode"),
        pytest.param({"mode": "hmac", "existingSecret": "k", "keyId": "-bad id"}, "/audit/signing/keyId", id="key-id"),
        pytest.param({"keyFile": "/x"}, "additional properties 'keyFile' not allowed", id="schema-unknown-key"),
    ],
)
def test_bad_signing_values_fail_at_render_time(
    chart: Any, helm: ModuleType, signing: dict[str, Any], expected: str
) -> None:
    assert expected in render_error(chart, helm, {"audit": {"signing": signing}})


def test_helm_lint_passes_with_signing(helm: ModuleType) -> None:
    report = helm.lint(str(CHART), merged(ci_values(), HMAC), strict=True, namespace=NAMESPACE)
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report
