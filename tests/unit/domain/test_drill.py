"""When a drill must not run, from plain data; and what its report says."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agent.domain.drill import DrillPhase, DrillReport, DrillSituation, drilled_version, refusals

HEALTHY = DrillSituation(
    stable="v1",
    desired={"v1": 90, "v2": 10},
    served={"v1": 90, "v2": 10},
    statuses={"v1": "verified", "v2": "candidate"},
)


def situation(**changes: object) -> DrillSituation:
    return dataclasses.replace(HEALTHY, **changes)  # type: ignore[arg-type]


def test_a_healthy_canary_split_may_be_drilled():
    assert drilled_version(HEALTHY) == "v2"
    assert refusals(HEALTHY, "v2") == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"holds": {"v2": "investigating"}}, "held: v2 (investigating)"),
        ({"pins": {"v2": "batch scoring"}}, "pinned: v2 (batch scoring)"),
        ({"paused": True, "pause_reason": "release freeze"}, "paused (release freeze)"),
        ({"rules_in_breach": ["error-rate on v2: firing"]}, "real incident: rule error-rate on v2: firing"),
        ({"open_rollback": "verification running (verify-abc)"}, "a rollback is in progress"),
        ({"rollout": "v2 at stage 2 of 4"}, "a rollout is in progress (v2 at stage 2 of 4)"),
        ({"cooldown_left_s": 120.4}, "cooldown after the last rollback (120s left)"),
        ({"active_drill": "drill-1"}, "drill drill-1 is already running"),
        ({"served": {"v1": 100, "v2": 0}}, "the served split (v1=100) is not the desired one (v1=90 v2=10)"),
        ({"served": None}, "the served split (nothing)"),
        ({"ready": False}, "not every Envoy serves the current config"),
        ({"statuses": {"v1": "verified", "v2": "failed"}}, "v2 is failed"),
    ],
)
def test_each_precondition_refuses_with_its_reason(changes: dict[str, object], reason: str):
    reasons = refusals(situation(**changes), "v2")
    assert any(reason in r for r in reasons), reasons


def test_no_candidate_with_traffic_means_nothing_to_drill():
    s = situation(desired={"v1": 100, "v2": 0}, served={"v1": 100, "v2": 0})
    assert drilled_version(s) == ""
    assert refusals(s, "") == [
        "no version to drill: the split (v1=100) must send traffic to exactly one version besides the stable v1"
    ]


def test_drilling_the_stable_or_a_version_without_traffic_is_refused():
    assert any("is the stable version" in r for r in refusals(HEALTHY, "v1"))
    s = situation(desired={"v1": 90, "v2": 10, "v3": 0}, served={"v1": 90, "v2": 10})
    assert "v3 receives no traffic (split v1=90 v2=10)" in refusals(s, "v3")
    assert "unknown version 'v9'" in refusals(HEALTHY, "v9")


def test_all_reasons_are_given_at_once():
    reasons = refusals(situation(paused=True, holds={"v2": "x"}), "v2")
    assert len(reasons) == 2


def test_situation_from_the_status_json():
    status = {
        "stable": "v1",
        "ready": True,
        "paused": False,
        "versions": [
            {"version": "v1", "desired_weight": 90, "served_weight": 90, "registry_status": "verified"},
            {"version": "v2", "desired_weight": 10, "served_weight": 10, "registry_status": "candidate"},
        ],
        "rules": [
            {"rule": "error-rate", "version": "v2", "state": "ok"},
            {"rule": "p99", "version": "v1", "state": "pending"},
        ],
        "holds": {},
    }
    s = DrillSituation.from_status(status)
    assert s.desired == {"v1": 90, "v2": 10} and s.served == {"v1": 90, "v2": 10}
    assert s.rules_in_breach == ["p99 on v1: pending"]
    assert refusals(s, "v2") == ["a real incident: rule p99 on v1: pending"]


def test_report_in_json_and_text():
    report = DrillReport(
        drill_id="drill-1",
        model="credit",
        version="v2",
        fault="errors",
        actor="operator:ana",
        started_at=1_700_000_000.0,
        finished_at=1_700_000_030.0,
        outcome="passed",
        original_split={"v1": 90, "v2": 10},
        restored_split={"v1": 90, "v2": 10},
        rollback_id="abc",
        target="v1",
        rollback_outcome="recovered",
        phases=[DrillPhase("detection", 1.25, "ok", "rule error-rate"), DrillPhase("verification", None, "failed")],
    )
    data = json.loads(json.dumps(report.to_json()))
    assert data["started_at"] == "2023-11-14T22:13:20.000Z"
    assert data["phases"][0] == {"name": "detection", "seconds": 1.25, "outcome": "ok", "detail": "rule error-rate"}
    text = report.to_text()
    assert "drill drill-1 of credit: PASSED" in text
    assert "rollback abc: v2 -> v1: recovered" in text
    assert "detection        1.250s  ok" in text
    assert "verification          -  failed" in text
