"""Shadow traffic read back from the audit trail: every change of the share of live requests mirrored to a version
(`MirrorChanged`), whether a rollout stage or an operator made it. Pure.

Mirrored requests never reach a user, so they are not part of what was *served* (timeline.py); they are listed
beside it because the candidate's answers to them are evidence a rollout was judged on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agent.pb.rollback_agent.v1 import audit_pb2
from agent.reporting.when import from_pb, require_aware


@dataclass(frozen=True, slots=True)
class MirrorRow:
    seq: int
    at: datetime
    actor: str
    version: str
    from_fraction: float
    to_fraction: float
    outcome: str  # acked | unchanged | rejected | timeout | refused
    decision_to_ack_ms: float
    reason: str
    detail: str  # what went wrong, or the guards an operator overrode


def mirror_changes(
    records: Iterable[audit_pb2.AuditRecord], since: datetime | None = None, *, model: str | None = None
) -> list[MirrorRow]:
    """Every mirror change recorded at or after `since`, oldest first."""
    if since is not None:
        require_aware(since, "since")
    rows = []
    for record in records:
        if record.WhichOneof("event") != "mirror_changed" or (model is not None and record.model != model):
            continue
        at = from_pb(record.at)
        if since is not None and at < since:
            continue
        change = record.mirror_changed
        forced = f"FORCED over: {'; '.join(change.overridden)}. " if change.forced else ""
        rows.append(
            MirrorRow(
                seq=record.seq,
                at=at,
                actor=record.actor,
                version=change.version,
                from_fraction=change.from_fraction,
                to_fraction=change.to_fraction,
                outcome=change.outcome,
                decision_to_ack_ms=change.decision_to_ack_ms,
                reason=change.reason,
                detail=forced + change.detail,
            )
        )
    return rows
