"""The chart's fleet parts: the fleet audit store's DSN from a Secret (value or existing), and the StatefulSet option
that gives each replica a state PVC of its own. Rendered by the real Helm engine (see test_helm_chart.py)."""

from __future__ import annotations

import base64
from types import ModuleType
from typing import Any

from tests.unit.test_helm_chart import FULLNAME, chart, helm, render, render_error

__all__ = ["chart", "helm", "render"]  # the fixtures this module uses

DSN = "postgresql://agent:s3cret@fleet-db.audit:5432/audit?sslmode=verify-full"


def pod_of(r: Any, kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = r.one(kind)["spec"]["template"]["spec"]
    return spec


def agent_mounts(pod: dict[str, Any]) -> dict[str, str]:
    agent = next(c for c in pod["containers"] if c["name"] == "agent")
    return {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}


def test_fleet_dsn_value_goes_into_a_secret_the_agent_reads_as_a_file(render: Any) -> None:
    r = render({"fleetAudit": {"enabled": True, "dsn": DSN, "batch": 200, "intervalSeconds": 2}})
    fleet = r.agent_config.audit.fleet
    assert fleet is not None and (fleet.batch, fleet.interval_s, fleet.dsn_env) == (200, 2.0, None)
    secret = r.one("Secret", f"{FULLNAME}-fleet-dsn")
    assert base64.b64decode(secret["data"]["dsn"]).decode() == DSN
    volume = r.volume("fleet-dsn")["secret"]
    assert volume["secretName"] == f"{FULLNAME}-fleet-dsn"
    assert volume["items"] == [{"key": "dsn", "path": fleet.dsn_file.name}]
    assert r.mount("agent", "fleet-dsn")["mountPath"] == str(fleet.dsn_file.parent)
    assert "s3cret" not in r.agent_yaml


def test_existing_fleet_secret_is_used_as_is(render: Any) -> None:
    r = render({"fleetAudit": {"enabled": True, "existingSecret": "fleet-db", "existingSecretKey": "url"}})
    assert not [s for s in r.all("Secret") if s["metadata"]["name"].endswith("fleet-dsn")]
    volume = r.volume("fleet-dsn")["secret"]
    assert volume["secretName"] == "fleet-db" and volume["items"][0]["key"] == "url"


def test_without_the_fleet_store_nothing_is_mounted(render: Any) -> None:
    r = render()
    assert r.agent_config.audit.fleet is None
    assert all(v["name"] != "fleet-dsn" for v in r.pod["volumes"])


def test_fleet_store_without_or_with_two_dsn_sources_fails_clearly(chart: Any, helm: ModuleType) -> None:
    assert "needs its DSN" in render_error(chart, helm, {"fleetAudit": {"enabled": True}})
    both = {"fleetAudit": {"enabled": True, "dsn": DSN, "existingSecret": "fleet-db"}}
    assert "not both" in render_error(chart, helm, both)


def test_statefulset_gives_each_replica_its_own_state_claim(render: Any, chart: Any, helm: ModuleType) -> None:
    r = render(
        {
            "replicaCount": 3,
            "state": {"statefulSet": {"enabled": True}, "persistence": {"size": "2Gi", "storageClassName": "fast"}},
            "fleetAudit": {"enabled": True, "existingSecret": "fleet-db"},
        }
    )
    assert "Deployment" not in r.kinds and "PersistentVolumeClaim" not in r.kinds
    sts = r.one("StatefulSet")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["serviceName"] == FULLNAME
    assert "strategy" not in sts["spec"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    pod = pod_of(r, "StatefulSet")
    assert all(v["name"] != "state" for v in pod["volumes"])  # from the claim template, not a shared volume
    assert agent_mounts(pod)["state"] == str(r.agent_config.state_dir)
    assert "fleet-dsn" in agent_mounts(pod)

    shared = {"state": {"statefulSet": {"enabled": True}, "persistence": {"existingClaim": "one-claim"}}}
    assert "cannot be shared" in render_error(chart, helm, shared)
