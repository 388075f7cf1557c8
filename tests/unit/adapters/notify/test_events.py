"""Which audit records are told, as which kinds: every decision on record, nothing that is not."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.adapters.notify.events import EVENT_KINDS, notification_for
from agent.domain.audit_events import wrap
from agent.pb.rollback_agent.v1 import audit_pb2, traffic_pb2


def sealed(event: object, seq: int = 7) -> audit_pb2.AuditRecord:
    record = wrap(event)  # type: ignore[arg-type]
    record.seq, record.model, record.actor, record.hash = seq, "credit-scorer", "rule:error_rate", b"\x01" * 32
    return record


@pytest.mark.parametrize(
    ("outcome", "kinds"),
    [
        ("switched", ("rollback_switched",)),
        ("recovered", ("rollback_completed",)),
        ("inconclusive", ("rollback_completed",)),
        ("verification_failed", ("verification_failed", "escalation")),
        ("no_eligible_target", ("rollback_failed", "escalation")),
        ("switch_failed", ("rollback_failed", "escalation")),
        ("suppressed", ("rollback_suppressed",)),
    ],
)
def test_every_rollback_outcome_is_told(outcome: str, kinds: tuple[str, ...]) -> None:
    note = notification_for(
        sealed(audit_pb2.Rollback(rollback_id="ab12", from_version="v2", to_version="v1", outcome=outcome, detail="d"))
    )
    assert note is not None and note.kinds == kinds
    assert note.text.endswith(f"credit-scorer: rollback ab12 v2 -> v1: {outcome}: d")
    assert note.fields["rollback_id"] == "ab12"


def test_a_rollback_starts_with_its_switch_intent_and_a_plain_set_weights_is_not_told() -> None:
    to = traffic_pb2.TrafficPolicy(weights=[traffic_pb2.VersionWeight(version="v1", weight=100)])
    note = notification_for(sealed(audit_pb2.TrafficIntent(rollback_id="ab12", to_policy=to, reason="rollback ab12")))
    assert note is not None and note.kinds == ("rollback_started",)
    assert "rollback ab12 started: moving traffic to v1=100" in note.text
    assert notification_for(sealed(audit_pb2.TrafficIntent(to_policy=to, reason="operator split"))) is None


def test_quarantine_hold_and_pause_are_told_and_a_plain_status_change_is_not() -> None:
    q = notification_for(
        sealed(audit_pb2.VersionStatusChanged(version="v2", from_status="verified", to_status="quarantined"))
    )
    assert q is not None and q.kinds == ("quarantine",)
    cleared = audit_pb2.VersionStatusChanged(version="v2", from_status="quarantined", to_status="failed")
    assert notification_for(sealed(cleared)) is not None
    marked = audit_pb2.VersionStatusChanged(version="v2", from_status="verified", to_status="failed")
    assert notification_for(sealed(marked)) is None
    released = notification_for(sealed(audit_pb2.HoldChanged(version="v2", held=False)))
    assert released is not None and "released" in released.text
    paused = notification_for(sealed(audit_pb2.AutomationToggled(paused=True, reason="maintenance")))
    assert paused is not None and paused.kinds == ("pause",)


def test_drills_are_marked_and_rollout_moves_told_once_applied() -> None:
    rb = notification_for(
        sealed(audit_pb2.Rollback(rollback_id="ab12", from_version="v2", outcome="switched", drill_id="d1"))
    )
    assert rb is not None and "[drill d1] credit-scorer" in rb.text and rb.fields["drill_id"] == "d1"
    done = notification_for(sealed(audit_pb2.DrillFinished(drill_id="d1", version="v2", outcome="passed")))
    assert done is not None and done.kinds == ("drill",)
    intended = audit_pb2.RolloutChanged(candidate="v2", move="rolled_back", phase="intended")
    assert notification_for(sealed(intended)) is None  # told when it took effect, not when it was intended
    intended.phase = "applied"
    applied = notification_for(sealed(intended))
    assert applied is not None and applied.kinds == ("rollout",) and "rollout of v2: rolled_back" in applied.text
    advanced = audit_pb2.RolloutChanged(candidate="v2", move="advanced", phase="applied")
    assert notification_for(sealed(advanced)) is None


def test_shadow_lease_and_pin_changes_are_told_and_routine_ones_are_not() -> None:
    mirrored = notification_for(
        sealed(audit_pb2.MirrorChanged(version="v2", from_fraction=0, to_fraction=0.1, outcome="acked", reason="r"))
    )
    assert mirrored is not None and mirrored.kinds == ("shadow",) and "0% -> 10%" in mirrored.text
    rejected = notification_for(sealed(audit_pb2.MirrorChanged(version="v2", to_fraction=0.5, outcome="rejected")))
    assert rejected is not None and "NOT APPLIED (rejected" in rejected.text
    for quiet in ("unchanged", "refused"):
        assert notification_for(sealed(audit_pb2.MirrorChanged(version="v2", outcome=quiet))) is None
    expired = audit_pb2.LeaseChanged(lease_id="L1", version="v1", holder="nightly-batch", action="expired")
    told = notification_for(sealed(expired))
    assert told is not None and told.kinds == ("lease",) and "L1 on v1 for nightly-batch: expired" in told.text
    forced = audit_pb2.LeaseChanged(lease_id="L2", version="v3", action="acquired", forced=True, overridden=["failed"])
    told = notification_for(sealed(forced))
    assert told is not None and "forced over: failed" in told.text
    assert notification_for(sealed(audit_pb2.LeaseChanged(lease_id="L1", action="renewed"))) is None
    pinned = notification_for(sealed(audit_pb2.PinChanged(version="v1", pinned=True, reason="quarter close")))
    assert pinned is not None and pinned.kinds == ("pin",) and "by rule:error_rate: quarter close" in pinned.text


def test_every_kind_a_record_can_make_is_a_configurable_kind() -> None:
    made = set()
    for field in audit_pb2.AuditRecord.DESCRIPTOR.oneofs_by_name["event"].fields:
        record = audit_pb2.AuditRecord(seq=1)
        getattr(record, field.name).SetInParent()
        for outcome in ("switched", "recovered", "switch_failed", "suppressed", "verification_failed"):
            if field.name == "rollback":
                record.rollback.outcome = outcome
            if field.name == "traffic_intent":
                record.traffic_intent.rollback_id = "x"
            if field.name == "rollout_changed":
                record.rollout_changed.move, record.rollout_changed.phase = "rolled_back", "applied"
            if field.name == "mirror_changed":
                record.mirror_changed.outcome = "acked"
            if field.name == "lease_changed":
                record.lease_changed.action = "expired"
            note = notification_for(record)
            if note is not None:
                made.update(note.kinds)
                json.dumps(note.body("s"))
    assert made == set(EVENT_KINDS) - {"quarantine"}  # a quarantine needs a status; tested above


_text = st.text(max_size=40)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(
    outcome=_text,
    reason=_text,
    version=_text,
    seq=st.integers(min_value=0, max_value=2**63),
    which=st.sampled_from(["rollback", "hold_changed", "version_status_changed", "rollback_interrupted"]),
)
def test_any_record_makes_a_json_body_or_nothing(outcome: str, reason: str, version: str, seq: int, which: str) -> None:
    record = audit_pb2.AuditRecord(seq=seq, model="m")
    if which == "rollback":
        record.rollback.CopyFrom(audit_pb2.Rollback(outcome=outcome, detail=reason, from_version=version))
    elif which == "hold_changed":
        record.hold_changed.CopyFrom(audit_pb2.HoldChanged(version=version, reason=reason, held=True))
    elif which == "version_status_changed":
        record.version_status_changed.CopyFrom(audit_pb2.VersionStatusChanged(version=version, to_status=outcome))
    else:
        record.rollback_interrupted.CopyFrom(audit_pb2.RollbackInterrupted(stage=outcome, detail=reason))
    note = notification_for(record)
    if note is not None:
        body = json.loads(json.dumps(note.body("store")))
        assert body["text"] and body["event"] in EVENT_KINDS and body["seq"] == seq
