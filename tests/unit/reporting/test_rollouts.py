"""Rollouts in `history` and `report`: one row per move (an outcome stands for its intent), the gates' evidence in
every format, hostile reasons escaped."""

from __future__ import annotations

import html
import json

from agent.pb.rollback_agent.v1 import audit_pb2
from agent.reporting import compliance_report, format_mirrors, format_rollouts, mirror_changes, rollouts

from .conftest import HOSTILE
from .trail import Trail, at

NOW = at(9 * 24 * 60)


def gate(name: str, outcome: str, value: float | None, threshold: float | None, reason: str) -> audit_pb2.GateEvidence:
    item = audit_pb2.GateEvidence(gate=name, outcome=outcome, reason=reason)
    if value is not None:
        item.value = value
    if threshold is not None:
        item.threshold = threshold
    return item


def move(trail: Trail, minute: float, actor: str, **fields: object) -> audit_pb2.AuditRecord:
    fields.setdefault("candidate", "v3")
    fields.setdefault("stable", "v2")
    return trail.add(at(minute), actor, audit_pb2.AuditRecord(rollout_changed=audit_pb2.RolloutChanged(**fields)))


def rollout_trail() -> Trail:
    """Started (intent + outcome), advanced on evidence, went back on a breach, paused; then a move whose outcome
    was never written (the agent stopped in between)."""
    t = Trail()
    started = move(
        t,
        1,
        "operator:ana",
        move="started",
        phase="intended",
        from_stage=-1,
        to_stage=0,
        to_stage_name="canary-5",
        candidate_weight=5,
        reason="release 3",
    )
    move(
        t,
        1,
        "operator:ana",
        move="started",
        phase="applied",
        from_stage=-1,
        to_stage=0,
        to_stage_name="canary-5",
        candidate_weight=5,
        reason="release 3",
        intended_seq=started.seq,
    )
    evidence = [
        gate("rule:error-rate", "pass", 0.004, 0.05, "error rate 0.4% <= 5.0% over 30s"),
        gate("judge:latency_ms", "pass", 0.41, 0.02, "Mann-Whitney U 1234, p 0.41: not slower"),
    ]
    advanced = move(
        t,
        31,
        "rollout:v3",
        move="advanced",
        phase="intended",
        from_stage=0,
        to_stage=1,
        from_stage_name="canary-5",
        to_stage_name="canary-25",
        candidate_weight=25,
        reason="every gate of canary-5 passed; now canary-25",
        evidence=evidence,
    )
    move(
        t,
        31,
        "rollout:v3",
        move="advanced",
        phase="applied",
        from_stage=0,
        to_stage=1,
        from_stage_name="canary-5",
        to_stage_name="canary-25",
        candidate_weight=25,
        reason="every gate of canary-5 passed; now canary-25",
        evidence=evidence,
        intended_seq=advanced.seq,
    )
    breach = [gate("relative:error_rate", "fail", 0.2, 0.1, HOSTILE)]
    back = move(
        t,
        40,
        "rule:error-rate",
        move="went_back",
        phase="intended",
        from_stage=1,
        to_stage=0,
        from_stage_name="canary-25",
        to_stage_name="canary-5",
        candidate_weight=5,
        reason=f"breach in canary-25 ({HOSTILE})",
        evidence=breach,
    )
    move(
        t,
        40,
        "rule:error-rate",
        move="went_back",
        phase="applied",
        from_stage=1,
        to_stage=0,
        from_stage_name="canary-25",
        to_stage_name="canary-5",
        candidate_weight=5,
        reason=f"breach in canary-25 ({HOSTILE})",
        evidence=breach,
        intended_seq=back.seq,
    )
    move(
        t,
        45,
        "operator:ana",
        move="paused",
        phase="recorded",
        from_stage=0,
        to_stage=0,
        from_stage_name="canary-5",
        to_stage_name="canary-5",
        candidate_weight=5,
        reason="paused: looking",
    )
    move(
        t,
        50,
        "operator:ana",
        move="aborted",
        phase="intended",
        from_stage=0,
        to_stage=-1,
        from_stage_name="canary-5",
        to_stage_name="stable",
        reason="aborted by an operator: bias",
    )
    return t


def test_one_row_per_move_an_outcome_standing_for_its_intent() -> None:
    rows = rollouts(rollout_trail().records)
    assert [(r.move, r.phase, r.stage_change) for r in rows] == [
        ("started", "applied", "canary-5"),
        ("advanced", "applied", "canary-5 -> canary-25"),
        ("went_back", "applied", "canary-25 -> canary-5"),
        ("paused", "recorded", "canary-5"),
        ("aborted", "intended", "canary-5 -> stable"),  # no outcome recorded: the decision is still shown
    ]
    advanced = rows[1]
    assert [(g.gate, g.outcome, g.value, g.threshold) for g in advanced.evidence] == [
        ("rule:error-rate", "pass", 0.004, 0.05),
        ("judge:latency_ms", "pass", 0.41, 0.02),
    ]
    assert rollouts(rollout_trail().records, at(35)) == [r for r in rows if r.at >= at(35)]
    assert rollouts(rollout_trail().records, model="another-model") == []


def test_history_lists_the_moves_with_their_gates() -> None:
    text = format_rollouts(rollouts(rollout_trail().records))
    assert "canary-5 -> canary-25" in text and "rule:error-rate pass (0.004 vs 0.05)" in text
    assert "v3=25 %" in text and "rollout:v3" in text


def test_every_report_format_shows_the_moves_and_their_evidence(versions) -> None:
    records = rollout_trail().records
    data = json.loads(compliance_report("credit-scorer", records, versions, None, "json", generated_at=NOW))
    assert [r["move"] for r in data["rollouts"]] == ["started", "advanced", "went_back", "paused", "aborted"]
    assert data["rollouts"][1]["evidence"][1] == {
        "gate": "judge:latency_ms",
        "outcome": "pass",
        "value": 0.41,
        "threshold": 0.02,
        "reason": "Mann-Whitney U 1234, p 0.41: not slower",
    }
    assert data["rollouts"][2]["evidence"][0]["reason"] == HOSTILE  # JSON keeps it verbatim, as data
    markdown = compliance_report("credit-scorer", records, versions, None, "md", generated_at=NOW)
    assert "## Rollouts" in markdown and "Mann-Whitney U 1234" in markdown
    assert "<script>" not in markdown
    page = compliance_report("credit-scorer", records, versions, None, "html", generated_at=NOW)
    assert "<script>" not in page and html.escape(HOSTILE, quote=True) in page
    assert "Record 4: v3 advanced (canary-5 -&gt; canary-25)" in page


def test_shadow_traffic_is_listed_in_history_and_every_report_format(versions) -> None:
    t = Trail()
    t.add(
        at(1),
        "rollout:v3",
        audit_pb2.AuditRecord(
            mirror_changed=audit_pb2.MirrorChanged(
                version="v3", from_fraction=0, to_fraction=0.25, outcome="acked", reason="stage shadow"
            )
        ),
    )
    t.add(
        at(2),
        "operator:ana",
        audit_pb2.AuditRecord(
            mirror_changed=audit_pb2.MirrorChanged(
                version="v3",
                from_fraction=0.25,
                to_fraction=1.0,
                outcome="rejected",
                reason=HOSTILE,
                detail="NACK: bad cluster",
                forced=True,
                overridden=["v3 is held"],
            )
        ),
    )
    rows = mirror_changes(t.records)
    assert [(r.seq, r.to_fraction, r.outcome) for r in rows] == [(1, 0.25, "acked"), (2, 1.0, "rejected")]
    assert rows[1].detail == "FORCED over: v3 is held. NACK: bad cluster"
    assert mirror_changes(t.records, at(1.5))[0].seq == 2
    text = format_mirrors(rows)
    assert "0% -> 25%" in text and "stage shadow" in text and "FORCED over: v3 is held" in text
    data = json.loads(compliance_report("credit-scorer", t.records, versions, None, "json", generated_at=NOW))
    assert [m["to_fraction"] for m in data["mirrors"]] == [0.25, 1.0]
    assert data["mirrors"][1]["detail"] == "FORCED over: v3 is held. NACK: bad cluster"
    page = compliance_report("credit-scorer", t.records, versions, None, "html", generated_at=NOW)
    assert "Shadow traffic" in page and "25% -&gt; 100%" in page and HOSTILE not in page
    markdown = compliance_report("credit-scorer", t.records, versions, None, "md", generated_at=NOW)
    assert "Shadow traffic" in markdown and "stage shadow" in markdown
