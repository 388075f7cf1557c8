"""The Prometheus rules and the Alertmanager example users load: generated files fresh, accepted by the real
promtool / amtool, and every alert covered by promtool unit tests (firing and not firing).

A missing promtool / amtool skips these tests with the reason, except when the CI environment variable is set:
then it is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.binaries import APT_HINT, find_binary

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "rules" / "prometheus"
RULES_FILE = RULES_DIR / "model-rollback.rules.yml"
MANIFEST_FILE = RULES_DIR / "prometheusrule.yaml"
OVERRIDES_EXAMPLE = RULES_DIR / "slo-overrides.example.yml"
UNIT_TESTS = sorted((RULES_DIR / "tests").glob("*.yml"))
ALERTMANAGER_EXAMPLE = ROOT / "rules" / "alertmanager" / "alertmanager.example.yml"
GENERATOR = ROOT / "scripts" / "gen_prometheus_rules.py"

SEVERITIES = {"critical", "warning", "info"}
ACTIONS = {"rollback", "hold", "alert"}
TIMEOUT_S = 60


def _binary(name: str) -> str:
    path = find_binary(name)
    if path is None:
        reason = f"`{name}` not found on PATH; {APT_HINT}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: integration prerequisites must be installed)", pytrace=False)
        pytest.skip(reason)
    return path


def _run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _alert_rules(groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                yield rule


# ---- generated files -------------------------------------------------------------------------------------------


def test_generated_files_are_fresh() -> None:
    _ok(_run(sys.executable, GENERATOR, "--check"))


def test_prometheusrule_holds_the_same_groups() -> None:
    manifest = _load(MANIFEST_FILE)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["name"]
    assert manifest["spec"]["groups"] == _load(RULES_FILE)["groups"]


def test_every_alert_carries_the_contract_labels_and_annotations() -> None:
    alerts = list(_alert_rules(_load(RULES_FILE)["groups"]))
    assert alerts
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["labels"]["action"] in ACTIONS, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook_url"].endswith(f"#{name.lower()}"), name


# ---- promtool ----------------------------------------------------------------------------------------------------


def test_promtool_check_rules_plain_file() -> None:
    _ok(_run(_binary("promtool"), "check", "rules", RULES_FILE, OVERRIDES_EXAMPLE))


def test_promtool_check_rules_prometheusrule_groups(tmp_path: Path) -> None:
    extracted = tmp_path / "prometheusrule-groups.yml"
    extracted.write_text(yaml.safe_dump({"groups": _load(MANIFEST_FILE)["spec"]["groups"]}, sort_keys=False))
    _ok(_run(_binary("promtool"), "check", "rules", extracted))


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=[p.name for p in UNIT_TESTS])
def test_promtool_unit_tests(unit_test: Path) -> None:
    _ok(_run(_binary("promtool"), "test", "rules", unit_test.name, cwd=unit_test.parent))


def test_unit_tests_cover_every_alert_firing_and_not_firing() -> None:
    assert UNIT_TESTS, "no promtool unit tests under rules/prometheus/tests"
    fires: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for case in _load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                (fires if expected else silent).add(check["alertname"])
                for alert in expected:
                    labels = alert.get("exp_labels", {})
                    if check["alertname"].startswith("ModelVersion"):
                        assert {"model", "version"} <= set(labels), f"{path.name}: {check['alertname']} {labels}"
    names = {rule["alert"] for rule in _alert_rules(_load(RULES_FILE)["groups"])}
    assert names - fires == set(), "alerts with no test where they fire"
    assert names - silent == set(), "alerts with no test where they must not fire"
    assert (fires | silent) - names == set(), "tests of alerts that do not exist"


# ---- Alertmanager ------------------------------------------------------------------------------------------------


def test_amtool_accepts_the_alertmanager_example() -> None:
    _ok(_run(_binary("amtool"), "check-config", ALERTMANAGER_EXAMPLE))


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["action=rollback", "severity=critical"], "rollback-agent,oncall-pager"),
        (["action=hold", "severity=warning"], "rollback-agent,team-tickets"),
        (["action=alert", "severity=info"], "rollback-agent,team-tickets"),
    ],
)
def test_alertmanager_example_routes_every_action_to_the_agent(labels: list[str], receivers: str) -> None:
    _ok(
        _run(
            _binary("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_EXAMPLE}",
            f"--verify.receivers={receivers}",
            "alertname=ModelVersionHighErrorRate",
            "model=credit",
            "version=v2",
            *labels,
        )
    )


def test_alertmanager_example_webhook_settings() -> None:
    config = _load(ALERTMANAGER_EXAMPLE)
    route = config["route"]
    assert route["group_by"] == ["alertname", "model", "version"]
    rollback = next(r for r in route["routes"] if r.get("matchers") == ['action="rollback"'])
    assert rollback["receiver"] == "rollback-agent"
    assert rollback["group_wait"] in {"0s", "1s", "2s", "3s", "4s", "5s"}
    assert rollback.get("continue") is True
    agent = next(r for r in config["receivers"] if r["name"] == "rollback-agent")
    (webhook,) = agent["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:9090/v1/alerts"
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
