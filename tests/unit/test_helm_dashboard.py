"""The Grafana dashboard shipped with the chart reads only metrics the agent exports and docs/metrics.md documents.

promtool parses every query (Grafana's variables substituted); the metric names each query reads are compared with
the names the agent's own registry exposes, built in-process from the same classes the runtime wires. The same
check against a running agent's /metrics is in tests/integration/test_dashboard_metrics.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from agent.adapters.fleet.shipper import FleetShipperMetrics
from agent.alerts.metrics import AlertSourceMetrics
from agent.telemetry import AgentMetrics, ServedVersionsCollector, VersionStatusCollector
from tests.unit.dashboard_queries import (
    REPO,
    base_name,
    dashboard,
    documented_names,
    exposed_names,
    metric_names,
    queries,
)


def agent_registry_names() -> set[str]:
    metrics = AgentMetrics("credit")
    metrics.registry.register(ServedVersionsCollector("credit", lambda: (("v1", 100),)))
    metrics.registry.register(VersionStatusCollector("credit", lambda: {"v1": "stable"}))
    AlertSourceMetrics(metrics.registry)
    FleetShipperMetrics(metrics.registry)
    return exposed_names(generate_latest(metrics.registry).decode())


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}:
            pytest.fail("promtool is required in CI (Debian package prometheus)")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    found = queries()
    assert len(found) >= 20
    rules = [{"record": f"dashboard:query_{n}:check", "expr": expr} for n, (_, expr) in enumerate(found)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_metric_the_dashboard_reads_is_exported_and_documented() -> None:
    exported = agent_registry_names()
    documented = documented_names((REPO / "docs" / "metrics.md").read_text())
    used: dict[str, set[str]] = {}
    for where, expr in queries():
        names = metric_names(expr)
        assert names, f"{where}: no metric name found in {expr!r}"
        for name in names:
            used.setdefault(name, set()).add(where)
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"the dashboard reads metrics the agent does not export: {missing}"
    undocumented = sorted(n for n in used if base_name(n) not in documented and n not in documented)
    assert not undocumented, f"not in docs/metrics.md: {undocumented}"
    # What the issue asks the dashboard to show.
    for needed in (
        "rollback_agent_route_weight",
        "rollback_agent_rule_value",
        "rollback_agent_rule_threshold",
        "rollback_agent_rule_state",
        "rollback_agent_rollbacks_total",
        "rollback_agent_rollback_phase_seconds_bucket",
        "rollback_agent_xds_nacks_total",
        "rollback_agent_decision_to_ack_seconds_bucket",
    ):
        assert needed in used, f"the dashboard does not show {needed}"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (model, version) (rate(a_total{job="x", le="0.5"}[5m]))', {"a_total"}),
        ("b / ignoring (version) group_left sum without (version) (c)", {"b", "c"}),
        ('histogram_quantile(0.99, sum by (le) (increase(d_bucket{phase="detect"}[1h])))', {"d_bucket"}),
        ("e * on (instance, job) group_left (model) f{model=~'.*'} > bool 0.5", {"e", "f"}),
        ("count(g offset 5m) or vector(0)", {"g"}),
        ('h{x="sum(i)"} unless j:rec:rate5m', {"h", "j:rec:rate5m"}),
    ],
)
def test_metric_names_are_taken_from_queries(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_dashboard_is_portable() -> None:
    board = dashboard()
    assert board["uid"] == "rollback-agent" and board["title"]
    # No datasource uid of someone's Grafana: every panel and query uses the dashboard's datasource variable.
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
