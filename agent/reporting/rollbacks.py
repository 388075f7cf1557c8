"""Rollbacks (and the version status changes and automation toggles around them) read back from the audit trail,
with their frequency and root causes. Pure.

A rollback record with outcome "suppressed" is a trigger that did not act (paused, cooldown, rate cap): it is
listed, but not counted in the frequency nor in the root causes, which count rollbacks the agent attempted.

A rollback that moved traffic has two records with its id: "switched" (written before the caller heard of it) and
the final one (verification's result); the final one, which holds every phase, is the row. With only the first,
the row says "switched" (verification pending), or "interrupted" when the next start recorded that the agent
stopped during the procedure (RollbackInterrupted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agent.pb.rollback_agent.v1 import audit_pb2
from agent.reporting.timeline import Weights, weights_of
from agent.reporting.triggers import describe_trigger, root_cause, trigger_kind
from agent.reporting.when import from_pb, require_aware

SUPPRESSED = "suppressed"
SWITCHED = "switched"


@dataclass(frozen=True, slots=True)
class PhaseRow:
    name: str
    started_at: datetime | None
    duration_ms: float
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True)
class RollbackRow:
    seq: int
    at: datetime
    rollback_id: str
    actor: str
    from_version: str
    to_version: str
    outcome: str
    detail: str
    trigger_kind: str  # "rule", "alert", "operator", "unknown"
    cause: str  # root-cause key: "rule:<rule>", "alert:<alertname>", "operator:<identity>"
    trigger_summary: str
    trigger: audit_pb2.Trigger
    phases: tuple[PhaseRow, ...]
    skipped: tuple[tuple[str, str], ...]  # (version, reason)
    from_weights: Weights
    to_weights: Weights
    archive_path: str
    archive_sha256: str
    drill_id: str = ""  # set when a rollback drill caused it (docs/drills.md)

    @property
    def attempted(self) -> bool:
        return self.outcome != SUPPRESSED

    @property
    def total_ms(self) -> float:
        return sum((p.duration_ms for p in self.phases), 0.0)


@dataclass(frozen=True, slots=True)
class StatusChangeRow:
    seq: int
    at: datetime
    version: str
    from_status: str
    to_status: str
    reason: str
    actor: str


@dataclass(frozen=True, slots=True)
class AutomationRow:
    seq: int
    at: datetime
    paused: bool
    reason: str
    actor: str


def _selected(
    records: Iterable[audit_pb2.AuditRecord], event: str, since: datetime | None, model: str | None
) -> list[audit_pb2.AuditRecord]:
    if since is not None:
        require_aware(since, "since")
    return [
        r
        for r in records
        if r.WhichOneof("event") == event
        and (model is None or r.model == model)
        and (since is None or from_pb(r.at) >= since)
    ]


def rollbacks(
    records: Iterable[audit_pb2.AuditRecord], since: datetime | None = None, *, model: str | None = None
) -> list[RollbackRow]:
    records = list(records)
    interrupted = {
        r.rollback_interrupted.rollback_id: r.rollback_interrupted
        for r in records
        if r.WhichOneof("event") == "rollback_interrupted" and (model is None or r.model == model)
    }
    selected = _selected(records, "rollback", since, model)
    final = {r.rollback.rollback_id for r in selected if r.rollback.outcome != SWITCHED}
    rows = []
    for record in selected:
        r = record.rollback
        if r.outcome == SWITCHED and r.rollback_id in final:
            continue  # the final record of this rollback is its row
        outcome, detail = r.outcome, r.detail
        if r.outcome == SWITCHED and r.rollback_id in interrupted:
            stop = interrupted[r.rollback_id]
            outcome, detail = "interrupted", f"{r.detail}; {stop.detail}"
        rows.append(
            RollbackRow(
                seq=record.seq,
                at=from_pb(record.at),
                rollback_id=r.rollback_id,
                actor=record.actor,
                from_version=r.from_version,
                to_version=r.to_version,
                outcome=outcome,
                detail=detail,
                trigger_kind=trigger_kind(r.trigger),
                cause=root_cause(r.trigger),
                trigger_summary=describe_trigger(r.trigger),
                trigger=r.trigger,
                phases=tuple(
                    PhaseRow(
                        name=p.name,
                        started_at=from_pb(p.started_at) if p.HasField("started_at") else None,
                        duration_ms=p.duration_ms,
                        outcome=p.outcome,
                        detail=p.detail,
                    )
                    for p in r.phases
                ),
                skipped=tuple((s.version, s.reason) for s in r.skipped),
                from_weights=weights_of(r.from_policy),
                to_weights=weights_of(r.to_policy),
                archive_path=r.archive_path,
                archive_sha256=r.archive_sha256,
                drill_id=r.drill_id,
            )
        )
    # A rollback stopped between its switch intent and its first rollback record: the intent holds its trigger.
    listed = {r.rollback.rollback_id for r in selected}
    intents = {
        r.traffic_intent.rollback_id: r
        for r in records
        if r.WhichOneof("event") == "traffic_intent" and r.traffic_intent.rollback_id
    }
    for record in _selected(records, "rollback_interrupted", since, model):
        stop = record.rollback_interrupted
        intent = intents.get(stop.rollback_id)
        if stop.rollback_id in listed or intent is None:
            continue
        trigger = intent.traffic_intent.trigger
        rows.append(
            RollbackRow(
                seq=record.seq,
                at=from_pb(intent.at),
                rollback_id=stop.rollback_id,
                actor=intent.actor,
                from_version=stop.from_version,
                to_version=stop.to_version,
                outcome="interrupted",
                detail=stop.detail,
                trigger_kind=trigger_kind(trigger),
                cause=root_cause(trigger),
                trigger_summary=describe_trigger(trigger),
                trigger=trigger,
                phases=(),
                skipped=(),
                from_weights=weights_of(intent.traffic_intent.from_policy),
                to_weights=weights_of(intent.traffic_intent.to_policy),
                archive_path="",
                archive_sha256="",
            )
        )
    rows.sort(key=lambda row: row.seq)
    return rows


def status_changes(
    records: Iterable[audit_pb2.AuditRecord], since: datetime | None = None, *, model: str | None = None
) -> list[StatusChangeRow]:
    return [
        StatusChangeRow(
            seq=r.seq,
            at=from_pb(r.at),
            version=r.version_status_changed.version,
            from_status=r.version_status_changed.from_status,
            to_status=r.version_status_changed.to_status,
            reason=r.version_status_changed.reason,
            actor=r.actor,
        )
        for r in _selected(records, "version_status_changed", since, model)
    ]


def automation_toggles(
    records: Iterable[audit_pb2.AuditRecord], since: datetime | None = None, *, model: str | None = None
) -> list[AutomationRow]:
    return [
        AutomationRow(
            seq=r.seq,
            at=from_pb(r.at),
            paused=r.automation_toggled.paused,
            reason=r.automation_toggled.reason,
            actor=r.actor,
        )
        for r in _selected(records, "automation_toggled", since, model)
    ]


def per_day(rows: Iterable[RollbackRow]) -> list[tuple[str, int]]:
    """Attempted rollbacks per UTC day ("2024-08-12"), in date order; days without one are left out."""
    counts = Counter(row.at.date().isoformat() for row in rows if row.attempted)
    return sorted(counts.items())


def per_week(rows: Iterable[RollbackRow]) -> list[tuple[str, int]]:
    """Attempted rollbacks per ISO week ("2024-W33"), in week order; weeks without one are left out."""
    counts: Counter[str] = Counter()
    for row in rows:
        if row.attempted:
            year, week, _ = row.at.isocalendar()
            counts[f"{year}-W{week:02d}"] += 1
    return sorted(counts.items())


def root_causes(rows: Iterable[RollbackRow]) -> list[tuple[str, int]]:
    """Attempted rollbacks per root cause, most frequent first (ties by name)."""
    counts = Counter(row.cause for row in rows if row.attempted)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
