import html
import json
import re

import pytest

from agent.pb.rollback_agent.v1 import audit_pb2
from agent.reporting import compliance_report

from .conftest import HOSTILE
from .trail import Trail, at

NOW = at(9 * 24 * 60)


def report(trail: Trail, versions, fmt: str, since=None, records=None) -> str:
    return compliance_report(
        "credit-scorer", trail.records if records is None else records, versions, since, fmt, generated_at=NOW
    )


def as_json(trail: Trail, versions, **kwargs) -> dict:
    return json.loads(report(trail, versions, "json", **kwargs))


def test_json_has_the_documented_top_level_structure(trail: Trail, versions):
    data = as_json(trail, versions)
    assert list(data) == [
        "schema",
        "model",
        "generated_at",
        "period",
        "audit_chain",
        "versions",
        "rollbacks",
        "rollback_frequency",
        "root_causes",
        "traffic_changes",
        "status_changes",
        "automation",
        "rollouts",
        "mirrors",
        "document_id",
        "identities",
    ]
    assert data["schema"] == "rollback-agent/compliance-report/v1"
    assert data["generated_at"] == "2024-08-21T09:00:00Z"
    assert data["period"] == {"since": None, "start": "2024-08-12T09:10:00Z", "until": "2024-08-21T09:00:00Z"}


def test_versions_carry_provenance_evidence_and_their_runtime_status(trail: Trail, versions):
    by_tag = {v["tag"]: v for v in as_json(trail, versions)["versions"]}
    assert list(by_tag) == ["v1", "v2", "v3"]
    assert by_tag["v2"]["provenance"]["training_data_hash"].startswith("sha256:9227bae5")
    assert [e["name"] for e in by_tag["v2"]["evidence"]] == [
        "holdout_accuracy",
        "disparate_impact_ratio",
        "canary_error_rate",
    ]
    assert by_tag["v2"]["evidence"][0]["approved_by"] == "model-risk@bank (A. Osei)"
    v3 = by_tag["v3"]
    assert (v3["status"], v3["declared_status"]) == ("failed", "candidate")
    assert v3["status_change"]["actor"] == "rule:latency-p99"


def test_every_rollback_with_trigger_phases_skipped_targets_and_outcome(trail: Trail, versions):
    rollbacks = {r["rollback_id"]: r for r in as_json(trail, versions)["rollbacks"]}
    assert list(rollbacks) == ["rb-0001", "rb-0002", "rb-0003", "rb-0004"]
    rule = rollbacks["rb-0001"]
    assert (rule["from_version"], rule["to_version"], rule["outcome"]) == ("v3", "v1", "recovered")
    assert rule["trigger"]["kind"] == "rule" and rule["trigger"]["rule"] == "latency-p99"
    assert (rule["trigger"]["value"], rule["trigger"]["threshold"]) == (212.0, 120.0)
    assert [(p["name"], p["duration_ms"], p["outcome"]) for p in rule["phases"]] == [
        ("detect", 3.0, "ok"),
        ("select", 0.4, "ok"),
        ("switch", 9.1, "ok"),
    ]
    assert rule["skipped"] == [
        {"version": "v2", "reason": "incompatible: needs 4096 MB of memory, the pod has 2048 MB"}
    ]
    assert rule["from_weights"] == {"v1": 0, "v2": 90, "v3": 10} and rule["to_weights"]["v1"] == 100
    alert = rollbacks["rb-0003"]
    assert alert["trigger"]["alertname"] == "CreditScorerErrorRate" and alert["trigger"]["labels"] == {
        "severity": "page"
    }
    assert alert["outcome"] == "no_eligible_target" and alert["to_version"] is None
    operator = rollbacks["rb-0004"]
    assert operator["trigger"]["identity"] == "ana" and operator["trigger"]["reason"] == HOSTILE


def test_frequency_and_root_causes_count_attempted_rollbacks_only(trail: Trail, versions):
    data = as_json(trail, versions)
    frequency = data["rollback_frequency"]
    assert (frequency["attempted"], frequency["suppressed"]) == (3, 1)
    assert frequency["per_day"] == [
        {"day": "2024-08-12", "count": 1},
        {"day": "2024-08-13", "count": 1},
        {"day": "2024-08-20", "count": 1},
    ]
    assert frequency["per_week"] == [{"week": "2024-W33", "count": 2}, {"week": "2024-W34", "count": 1}]
    assert frequency["average_per_day"] == pytest.approx(3 / (NOW - at(10)).total_seconds() * 86400)
    assert data["root_causes"] == [
        {"cause": "alert:CreditScorerErrorRate", "count": 1},
        {"cause": "operator:ana", "count": 1},
        {"cause": "rule:latency-p99", "count": 1},
    ]


def test_since_limits_the_period_but_the_chain_is_verified_over_the_whole_trail(trail: Trail, versions):
    data = as_json(trail, versions, since=at(24 * 60))
    assert [r["rollback_id"] for r in data["rollbacks"]] == ["rb-0002", "rb-0003", "rb-0004"]
    assert [c["seq"] for c in data["traffic_changes"]] == [9]
    assert data["status_changes"] == []
    assert data["audit_chain"]["intact"] and data["audit_chain"]["records"] == 10


def test_markdown_report_contents(trail: Trail, versions):
    text = report(trail, versions, "md")
    assert text.startswith("# Rollback compliance report: credit-scorer\n")
    assert "INTACT: all 10 audit records verified" in text
    assert "### Rollback rb-0001: v3 -&gt; v1 (recovered)" in text
    assert "rule latency-p99 (latency\\_p99) on v3: breach, value 212 vs threshold 120 over 60 s" in text
    assert "| switch | 2024-08-12T09:30:00Z | 9.1 | ok |" in text
    assert "| v2 | incompatible: needs 4096 MB of memory, the pod has 2048 MB |" in text
    assert "| 2024-W33 | 2 |" in text and "| rule:latency-p99 | 1 |" in text
    assert "sha256:cd3a1cd8d2547c07b731d760acb5a55079fe669ef98fcc91a8402e6eb7ac5122" in text
    assert "| holdout\\_accuracy | 0.889 | &gt;= 0.85 | yes |" in text


def test_html_is_one_self_contained_page(trail: Trail, versions):
    page = report(trail, versions, "html")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "src=" not in page and "href=" not in page and "@import" not in page
    assert "script-src 'none'" in page
    assert "<h3>Rollback rb-0001: v3 -&gt; v1 (recovered)</h3>" in page
    assert "<td>v2</td><td>incompatible: needs 4096 MB of memory, the pod has 2048 MB</td>" in page


def test_hostile_strings_from_the_records_are_escaped_in_every_format(trail: Trail, versions):
    page = report(trail, versions, "html")
    assert HOSTILE not in page and "<script>" not in page
    assert html.escape(HOSTILE, quote=True) in page
    markdown = report(trail, versions, "md")
    assert "<script>" not in markdown and "[link](http://evil)" not in markdown and "**bold**" not in markdown
    assert "&lt;script&gt;" in markdown and "\\[link\\]" in markdown
    # A hostile value cannot break the table it is in: every row of the traffic table keeps its 8 cells.
    rows = [line for line in markdown.splitlines() if line.startswith("| 9 |")]
    assert len(rows) == 1 and len(re.findall(r"(?<!\\)\|", rows[0])) == 9
    # JSON keeps the value verbatim, as data.
    assert as_json(trail, versions)["rollbacks"][-1]["detail"] == HOSTILE


def _tampered(trail: Trail) -> list[audit_pb2.AuditRecord]:
    records = [audit_pb2.AuditRecord.FromString(r.SerializeToString()) for r in trail.records]
    records[3].rollback.to_version = "v2"  # someone rewrites where the rollback went
    return records


@pytest.mark.parametrize("fmt", ["md", "html", "json"])
def test_a_tampered_trail_is_reported_as_broken(trail: Trail, versions, fmt: str):
    text = report(trail, versions, fmt, records=_tampered(trail))
    if fmt == "json":
        chain = json.loads(text)["audit_chain"]
        assert chain["intact"] is False
        assert chain["problems"] == [{"seq": 4, "problem": "content does not match its hash (edited)"}]
        return
    assert "BROKEN: 1 problem(s) in 10 audit records" in text
    assert "content does not match its hash (edited)" in text
    assert "INTACT" not in text


def test_a_removed_record_is_reported_too(trail: Trail, versions):
    records = trail.records[:4] + trail.records[5:]
    chain = json.loads(report(trail, versions, "json", records=records))["audit_chain"]
    assert not chain["intact"] and {p["seq"] for p in chain["problems"]} == {6}


def test_an_unknown_format_or_a_naive_time_is_refused(trail: Trail, versions):
    from datetime import datetime

    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        compliance_report("credit-scorer", trail.records, versions, fmt="pdf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no timezone"):
        compliance_report("credit-scorer", trail.records, versions, since=datetime(2024, 8, 1))


def test_an_empty_trail_still_makes_a_report(versions):
    data = json.loads(compliance_report("credit-scorer", [], versions, fmt="json", generated_at=NOW))
    signatures = data["audit_chain"].pop("signatures")
    assert data["audit_chain"] == {"intact": True, "records": 0, "last_seq": 0, "last_hash": "", "problems": []}
    assert signatures["status"] == "unsigned" and signatures["runs"] == []
    assert data["rollbacks"] == [] and data["rollback_frequency"]["average_per_day"] is None
    assert "No rollback in this period." in compliance_report("credit-scorer", [], versions, generated_at=NOW)
