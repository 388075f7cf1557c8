"""Audit events: wrapping one event message into an AuditRecord, and what state a record carries.

The policy row of the state store is covered by the audit chain: every write of it is made in the transaction of
a record that carries the same policy (`policy_carried_by`), so an edited row no longer matches its record.
"""

from __future__ import annotations

from google.protobuf.message import Message

from agent.pb.rollback_agent.v1 import audit_pb2, traffic_pb2

_EVENT_FIELDS: dict[str, str] = {
    field.message_type.full_name: field.name
    for field in audit_pb2.AuditRecord.DESCRIPTOR.oneofs_by_name["event"].fields
    if field.message_type is not None
}


class UnknownEventError(TypeError):
    """The message is not one of the AuditRecord events."""


def wrap(event: Message) -> audit_pb2.AuditRecord:
    """An AuditRecord holding `event` in its oneof (unsealed, unstamped)."""
    name = event.DESCRIPTOR.full_name
    field = _EVENT_FIELDS.get(name)
    if field is None:
        raise UnknownEventError(f"{name} is not an audit event")
    record = audit_pb2.AuditRecord()
    getattr(record, field).CopyFrom(event)
    return record


def policy_carried_by(record: audit_pb2.AuditRecord) -> traffic_pb2.TrafficPolicy | None:
    """The traffic policy a record sets, if it sets one: an intent (its target policy), a rejected change (the
    restored policy), the establishment of the store (its starting policy)."""
    which = record.WhichOneof("event")
    if which == "traffic_intent":
        return record.traffic_intent.to_policy
    if which == "traffic_changed" and record.traffic_changed.outcome == "rejected":
        return record.traffic_changed.from_policy
    if which == "state_established":
        return record.state_established.policy
    return None
