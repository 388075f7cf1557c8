"""The compliance report as JSON: a stable structure, documented in docs/registry.md ("Compliance report JSON").

Keys are never renamed or removed within a schema version (`schema`); new keys may be added. Times are RFC 3339
in UTC, durations in milliseconds, weights are {version: weight} objects in policy order; a non-finite number
(the +inf last edge of reference bins) is the string "+Inf", so the output is strict JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agent.domain.audit_verification import SignatureStatus
from agent.registry.model import Version, VersionSpec
from agent.reporting.mirrors import MirrorRow
from agent.reporting.report_data import REPORT_SCHEMA, ComplianceReport
from agent.reporting.rollbacks import RollbackRow
from agent.reporting.rollouts import RolloutRow
from agent.reporting.timeline import TrafficChange
from agent.reporting.triggers import trigger_data
from agent.reporting.when import format_time


def version_data(version: VersionSpec) -> dict[str, Any]:
    def dump(part: Any) -> Any:
        return part.model_dump(mode="json") if part is not None else None

    change = version.status_change if isinstance(version, Version) else None
    return {
        "tag": version.tag,
        "status": str(version.status),
        "declared_status": str(version.declared_status if isinstance(version, Version) else version.status),
        "status_change": None
        if change is None
        else {
            "status": str(change.status),
            "reason": change.reason,
            "actor": change.actor,
            "at": format_time(change.at),
            "before_quarantine": str(change.before_quarantine) if change.before_quarantine else None,
        },
        "created": format_time(version.created),
        "description": version.description,
        "provenance": dump(version.provenance),
        "requirements": dump(version.requirements),
        "baseline": dump(version.baseline),
        "evidence": [
            {
                "name": e.name,
                "value": e.value,
                "threshold": e.threshold,
                "comparison": e.comparison,
                "passed": e.passed,
                "at": format_time(e.at),
                "approved_by": e.approved_by,
                "detail": e.detail,
            }
            for e in version.evidence
        ],
    }


def rollback_data(row: RollbackRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": format_time(row.at),
        "rollback_id": row.rollback_id,
        "actor": row.actor,
        "from_version": row.from_version,
        "to_version": row.to_version or None,
        "outcome": row.outcome,
        "detail": row.detail,
        "trigger": trigger_data(row.trigger),
        "drill_id": row.drill_id or None,
        "phases": [
            {
                "name": p.name,
                "started_at": format_time(p.started_at) if p.started_at else None,
                "duration_ms": p.duration_ms,
                "outcome": p.outcome,
                "detail": p.detail,
            }
            for p in row.phases
        ],
        "total_ms": row.total_ms,
        "skipped": [{"version": v, "reason": reason} for v, reason in row.skipped],
        "from_weights": dict(row.from_weights),
        "to_weights": dict(row.to_weights),
        "archive": {"path": row.archive_path, "sha256": row.archive_sha256} if row.archive_path else None,
    }


def change_data(change: TrafficChange) -> dict[str, Any]:
    return {
        "seq": change.seq,
        "at": format_time(change.at),
        "from_weights": dict(change.from_weights),
        "to_weights": dict(change.to_weights),
        "from_revision": change.from_revision,
        "to_revision": change.to_revision,
        "actor": change.actor,
        "reason": change.reason,
        "outcome": change.outcome,
        "decision_to_ack_ms": change.decision_to_ack_ms,
        "route_version": change.route_version,
        "detail": change.detail,
        "rollback_id": change.rollback_id or None,
        "trigger": change.trigger or None,
    }


def mirror_data(row: MirrorRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": format_time(row.at),
        "actor": row.actor,
        "version": row.version,
        "from_fraction": row.from_fraction,
        "to_fraction": row.to_fraction,
        "outcome": row.outcome,
        "decision_to_ack_ms": row.decision_to_ack_ms,
        "reason": row.reason,
        "detail": row.detail or None,
    }


def rollout_data(row: RolloutRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": format_time(row.at),
        "actor": row.actor,
        "candidate": row.candidate,
        "stable": row.stable,
        "move": row.move,
        "phase": row.phase,
        "from_stage": row.from_stage or None,
        "to_stage": row.to_stage or None,
        "candidate_weight": row.candidate_weight,
        "mirror": row.mirror,
        "reason": row.reason,
        "error": row.error or None,
        "evidence": [
            {"gate": g.gate, "outcome": g.outcome, "value": g.value, "threshold": g.threshold, "reason": g.reason}
            for g in row.evidence
        ],
        "plan_digest": row.plan_digest,
    }


def signature_data(status: SignatureStatus) -> dict[str, Any]:
    return {
        "status": status.state,
        "signed_by": list(status.signed_by),
        "checked_with": list(status.keys_given),
        "runs": [
            {
                "first_seq": r.first_seq,
                "last_seq": r.last_seq,
                "key_id": r.key_id or None,
                "algorithm": r.algorithm or None,
            }
            for r in status.runs
        ],
        "problems": [{"seq": p.seq, "problem": p.problem} for p in status.problems],
    }


def report_data(report: ComplianceReport) -> dict[str, Any]:
    average = report.average_per_day()
    return {
        "schema": REPORT_SCHEMA,
        "model": report.model,
        "generated_at": format_time(report.generated_at),
        "period": {
            "since": format_time(report.since) if report.since else None,
            "start": format_time(report.period_start) if report.period_start else None,
            "until": format_time(report.generated_at),
        },
        "audit_chain": {
            "intact": report.chain.intact,
            "records": report.chain.records,
            "last_seq": report.chain.last_seq,
            "last_hash": report.chain.last_hash,
            "problems": [{"seq": p.seq, "problem": p.problem} for p in report.chain.problems],
            "signatures": signature_data(report.chain.signatures),
        },
        "versions": [version_data(v) for v in report.versions],
        "rollbacks": [rollback_data(r) for r in report.rollbacks],
        "rollback_frequency": {
            "attempted": report.attempted,
            "suppressed": report.suppressed,
            "average_per_day": average,
            "average_per_week": average * 7 if average is not None else None,
            "per_day": [{"day": day, "count": n} for day, n in report.per_day],
            "per_week": [{"week": week, "count": n} for week, n in report.per_week],
        },
        "root_causes": [{"cause": cause, "count": n} for cause, n in report.root_causes],
        "traffic_changes": [change_data(c) for c in report.traffic_changes],
        "status_changes": [
            {
                "seq": s.seq,
                "at": format_time(s.at),
                "version": s.version,
                "from_status": s.from_status,
                "to_status": s.to_status,
                "reason": s.reason,
                "actor": s.actor,
            }
            for s in report.status_changes
        ],
        "automation": [
            {"seq": a.seq, "at": format_time(a.at), "paused": a.paused, "reason": a.reason, "actor": a.actor}
            for a in report.automation
        ],
        "rollouts": [rollout_data(r) for r in report.rollouts],
        "mirrors": [mirror_data(r) for r in report.mirrors],
        "document_id": report.document_id,
        "identities": [
            {
                "actor": r.actor,
                "kind": r.kind,
                "records": r.records,
                "first": format_time(r.first),
                "last": format_time(r.last),
                "events": {kind: n for kind, n in r.events},
            }
            for r in report.identities
        ],
    }


def _finite(value: Any) -> Any:
    """JSON has no infinity: a non-finite number (a histogram's last edge) becomes "+Inf", "-Inf" or "NaN"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def render_json(report: ComplianceReport) -> str:
    return json.dumps(_finite(report_data(report)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
