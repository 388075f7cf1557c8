"""What reports and `history` make of the write-ahead records: a forced change says so first; a rollback has one
row (its final record), or says it was interrupted; a rollback stopped at its switch still appears."""

from __future__ import annotations

from agent.domain.records import policy_to_pb
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.reporting import changes, format_changes
from agent.reporting.rollbacks import rollbacks
from tests.unit.reporting.trail import Trail, at, policy


def intent(trail: Trail, minutes: float, to: dict[str, int], **fields: object) -> audit_pb2.AuditRecord:
    before = policy(trail.weights, trail.revision, when=at(minutes))
    after = policy({v: to.get(v, 0) for v in trail.weights}, trail.revision + 1, when=at(minutes), reason="r")
    event = audit_pb2.TrafficIntent(
        intent_id="i1", from_policy=policy_to_pb(before), to_policy=policy_to_pb(after), **fields
    )
    return trail.add(at(minutes), "operator:control-token", audit_pb2.AuditRecord(traffic_intent=event))


def test_a_forced_change_says_so_first_in_history():
    trail = Trail()
    made = intent(trail, 1, {"v3": 100}, forced=True, overridden=["v3: its registry status is failed"])
    change = trail.traffic(at(1), {"v3": 100})
    change.traffic_changed.intent_seq = made.seq  # the outcome names its intent
    rows = changes(trail.records)
    assert rows[-1].detail.startswith("FORCED over: v3: its registry status is failed")
    assert "FORCED over" in format_changes(rows)


def rollback(trail: Trail, minutes: float, rollback_id: str, outcome: str) -> None:
    record = audit_pb2.Rollback(rollback_id=rollback_id, from_version="v2", to_version="v1", outcome=outcome)
    record.trigger.operator.identity = "control-token"
    trail.add(at(minutes), "operator:control-token", audit_pb2.AuditRecord(rollback=record))


def test_a_rollback_is_one_row_its_final_record():
    trail = Trail()
    rollback(trail, 1, "r1", "switched")
    rollback(trail, 2, "r1", "recovered")
    rows = rollbacks(trail.records)
    assert [(r.rollback_id, r.outcome) for r in rows] == [("r1", "recovered")]


def test_a_rollback_stopped_during_verification_reads_interrupted():
    trail = Trail()
    rollback(trail, 1, "r1", "switched")
    stop = audit_pb2.RollbackInterrupted(rollback_id="r1", stage="verification", detail="the agent stopped")
    trail.add(at(3), "agent:reconcile", audit_pb2.AuditRecord(rollback_interrupted=stop))
    rows = rollbacks(trail.records)
    assert [(r.rollback_id, r.outcome) for r in rows] == [("r1", "interrupted")]
    assert "the agent stopped" in rows[0].detail


def test_a_rollback_stopped_at_its_switch_is_listed_with_its_trigger():
    trail = Trail()
    trigger = audit_pb2.Trigger(rule=audit_pb2.RuleVerdict(rule="error-rate", version="v2"))
    intent(trail, 1, {"v1": 100}, rollback_id="r9", trigger=trigger)
    stop = audit_pb2.RollbackInterrupted(rollback_id="r9", from_version="v2", to_version="v1", stage="switch")
    trail.add(at(2), "agent:reconcile", audit_pb2.AuditRecord(rollback_interrupted=stop))
    rows = rollbacks(trail.records)
    assert [(r.rollback_id, r.outcome, r.cause) for r in rows] == [("r9", "interrupted", "rule:error-rate")]
