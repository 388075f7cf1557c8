from datetime import UTC, datetime

import pytest

from agent.ports.registry import VersionStatus
from agent.registry import Version, VersionSpec
from agent.reporting import (
    changes,
    format_changes,
    format_serving_state,
    format_version,
    format_versions,
    history_at,
    parse_when,
)
from agent.reporting.rollbacks import status_changes

from .trail import Trail, at


def test_versions_table_shows_status_weight_artifact_evidence_and_runtime_override(trail: Trail, versions):
    lines = format_versions(versions, {"v1": 0, "v2": 100, "v3": 0}).splitlines()
    assert lines[0].split() == [
        "TAG",
        "STATUS",
        "CREATED",
        "WEIGHT",
        "RUNTIME",
        "MEMORY",
        "ARTIFACT",
        "EVIDENCE",
        "NOTE",
    ]
    assert lines[2].split()[:7] == [
        "v2",
        "verified",
        "2024-05-20T14:30:00Z",
        "100",
        "sklearn-1.4/python-3.11",
        "1536",
        "MB",
    ]
    assert "sha256:6bc9124b5488" in lines[2] and "3/3 passed" in lines[2]
    assert "failed" in lines[3] and "declared candidate; by rule:latency-p99" in lines[3]


def test_versions_table_without_weights_and_for_the_config_fallback():
    bare = VersionSpec(tag="v1", status=VersionStatus.STABLE, created=datetime(1970, 1, 1, tzinfo=UTC))
    lines = format_versions([bare]).splitlines()
    assert "WEIGHT" not in lines[0]
    # The fallback has no creation times; it says so instead of printing the synthetic ordering stamp.
    assert lines[1].split() == ["v1", "stable", "unknown", "(config", "order)", "-", "-", "-", "none"]


def test_version_detail_shows_every_field_and_the_status_history(trail: Trail, versions):
    text = format_version(versions[2], status_changes(trail.records))
    for expected in (
        "v3: failed",
        "failed (set by rule:latency-p99 at 2024-08-12T09:30:00Z",
        "the registry declares candidate",
        "s3://ml-artifacts-prod/credit-scorer/v3/model.joblib",
        "sha256:cd3a1cd8d2547c07b731d760acb5a55079fe669ef98fcc91a8402e6eb7ac5122",
        "s3://ml-datasets-prod/credit/applications/snapshot=2024-07-31/",
        "sha256:b6c3b54afaca59b067607e8710783487c096ccf32abbe5aad400060949352d10",
        "a625406f6977d45c1391b078f4d3656e0b75bfcb",
        "base image digest:   sha256:7a26ab389f1e",
        '"n_estimators": 900',
        "python=3.11.9",
        "Memory:            2048 MB",
        "CPU:               2 cores",
        "bureau_score",
        "sha256:4485bff988fca40fe77fc06bd35986101ef121185f1abc8e46929704250ae739",
        "Latency p99:     52 ms",
        "accuracy 0.897",
        "holdout_accuracy  0.897  >= 0.85",
        "model-risk@bank (J. Marsh)",
        "5       2024-08-12T09:30:00Z  candidate  failed",
    ):
        assert expected.lower() in text.lower(), expected


def test_a_quarantined_version_says_it_is_held(versions):
    from agent.registry.model import StatusChange

    change = StatusChange(
        status=VersionStatus.QUARANTINED,
        reason="label leak?",
        actor="operator:ana",
        at=at(1),
        before_quarantine=VersionStatus.VERIFIED,
    )
    quarantined = Version.from_spec(versions[1], change)
    assert "held until an operator clears the quarantine, then verified" in format_version(quarantined)


def test_history_table_lists_changes_with_trigger_and_ack_time(trail: Trail):
    lines = format_changes(changes(trail.records)).splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "FROM", "TO", "ACTOR", "OUTCOME", "ACK_MS", "REASON"]
    assert len(lines) == 6
    assert lines[3].startswith("3    2024-08-12T09:30:00Z  v1=0, v2=90, v3=10  v1=100, v2=0, v3=0  rule:latency-p99")
    assert "[trigger: rule latency-p99" in lines[3] and "12.5" in lines[3]
    assert "rejected" in lines[2]
    assert format_changes([]).strip() == "(no traffic change recorded)"


def test_history_at_shows_the_split_and_the_provenance_of_what_served(trail: Trail, versions):
    text = format_serving_state(history_at(trail.records, at(10), registry_versions=versions))
    assert "Served at 2024-08-12T09:10:00Z" in text
    assert "Weights:  v1=0, v2=90, v3=10" in text
    assert "v3: weight 10 (10%)" in text
    assert "s3://ml-artifacts-prod/credit-scorer/v3/model.joblib" in text
    unknown = format_serving_state(history_at(trail.records, at(-1)))
    assert "Unknown: before the first recorded policy" in unknown


def test_control_characters_from_records_cannot_reach_the_terminal():
    t = Trail()
    t.traffic(at(1), {"v3": 100}, reason="ok\x1b[2J\x1b[31mred\x07")
    text = format_changes(changes(t.records))
    assert "\x1b" not in text and "\x07" not in text
    assert "ok\\x1b[2J\\x1b[31mred\\x07" in text


def test_parse_when_takes_rfc3339_or_an_age():
    now = datetime(2024, 8, 20, 12, 0, tzinfo=UTC)
    assert parse_when("2024-08-12T09:30:00Z", now) == datetime(2024, 8, 12, 9, 30, tzinfo=UTC)
    assert parse_when("2024-08-12T11:30:00+02:00", now) == datetime(2024, 8, 12, 9, 30, tzinfo=UTC)
    assert parse_when("7d", now) == datetime(2024, 8, 13, 12, 0, tzinfo=UTC)
    assert parse_when("90m", now) == datetime(2024, 8, 20, 10, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="no timezone"):
        parse_when("2024-08-12T09:30:00", now)
    with pytest.raises(ValueError, match="use RFC 3339"):
        parse_when("yesterday", now)
