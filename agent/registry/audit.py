"""The audit record of a version status change (the engine appends it after a registry `set_status`)."""

from __future__ import annotations

from agent.domain.records import timestamp
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.registry import VersionStatus


def status_change_record(
    *, model: str, tag: str, from_status: VersionStatus, to_status: VersionStatus, reason: str, actor: str, at: float
) -> audit_pb2.AuditRecord:
    """An unsealed AuditRecord carrying VersionStatusChanged; `at` is unix seconds. The store seals it."""
    record = audit_pb2.AuditRecord(
        model=model,
        actor=actor,
        version_status_changed=audit_pb2.VersionStatusChanged(
            version=tag, from_status=str(from_status), to_status=str(to_status), reason=reason
        ),
    )
    record.at.CopyFrom(timestamp(at))
    return record
