"""Rollouts read back from the audit trail: every stage change with the evidence that justified it. Pure.

A move that changes the data plane has two records (`intended`, written before it takes effect, then `applied` or
`failed`); the outcome is the row. An `intended` record with no outcome (the agent stopped in between and has not
started again since) is a row of its own, so the decision is never hidden. Moves without a data-plane change
(`paused`, `resumed`, `completed`), the promotion to stable (`stable_changed`) and the end of the previous stable's
standby (`standby_ended`) have one `recorded` record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agent.pb.rollback_agent.v1 import audit_pb2
from agent.reporting.when import from_pb, require_aware

INTENDED = "intended"


@dataclass(frozen=True, slots=True)
class GateRow:
    gate: str  # "rule:error-rate", "relative:error_rate", "judge:latency_ms", "trigger:<actor>"
    outcome: str  # pass | fail | insufficient_evidence
    value: float | None
    threshold: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class RolloutRow:
    seq: int
    at: datetime
    actor: str
    candidate: str
    stable: str
    move: str  # started | advanced | went_back | promoted | completed | rolled_back | aborted | paused | resumed
    phase: str  # applied | failed | recorded | intended (no outcome recorded)
    from_stage: str  # "" before the first stage
    to_stage: str  # "stable" once the rollout ended on stable
    candidate_weight: int
    mirror: float
    reason: str
    error: str
    evidence: tuple[GateRow, ...]
    plan_digest: str

    @property
    def stage_change(self) -> str:
        if self.move == "stable_changed":
            return f"stable: {self.stable}"
        if self.move == "standby_ended":
            return "standby ended"
        if self.from_stage == self.to_stage or not self.from_stage:
            return self.to_stage or "-"
        return f"{self.from_stage} -> {self.to_stage}"


def _gate(item: audit_pb2.GateEvidence) -> GateRow:
    return GateRow(
        item.gate,
        item.outcome,
        item.value if item.HasField("value") else None,
        item.threshold if item.HasField("threshold") else None,
        item.reason,
    )


def rollouts(
    records: Iterable[audit_pb2.AuditRecord], since: datetime | None = None, *, model: str | None = None
) -> list[RolloutRow]:
    """Every rollout move recorded at or after `since`, oldest first (one row per move; see the module docstring)."""
    if since is not None:
        require_aware(since, "since")
    selected = [
        r for r in records if r.WhichOneof("event") == "rollout_changed" and (model is None or r.model == model)
    ]
    closed = {r.rollout_changed.intended_seq for r in selected if r.rollout_changed.intended_seq}
    rows = []
    for record in selected:
        change = record.rollout_changed
        at = from_pb(record.at)
        if (since is not None and at < since) or (change.phase == INTENDED and record.seq in closed):
            continue
        rows.append(
            RolloutRow(
                seq=record.seq,
                at=at,
                actor=record.actor,
                candidate=change.candidate,
                stable=change.stable,
                move=change.move,
                phase=change.phase,
                from_stage=change.from_stage_name,
                to_stage=change.to_stage_name,
                candidate_weight=change.candidate_weight,
                mirror=change.mirror,
                reason=change.reason,
                error=change.error,
                evidence=tuple(_gate(g) for g in change.evidence),  # an outcome repeats its intent's
                plan_digest=change.plan_digest,
            )
        )
    return rows


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def gate_text(gate: GateRow) -> str:
    """`rule:error-rate pass (0.01 vs 0.05)`: a gate's verdict in one phrase."""
    figures = ""
    if gate.value is not None or gate.threshold is not None:
        figures = f" ({_number(gate.value)} vs {_number(gate.threshold)})"
    return f"{gate.gate} {gate.outcome}{figures}"


def evidence_text(row: RolloutRow) -> str:
    return "; ".join(gate_text(g) for g in row.evidence) or "-"


def split_text(row: RolloutRow) -> str:
    if row.move in ("stable_changed", "standby_ended"):
        return "-"
    share = f"{row.candidate}={row.candidate_weight} %"
    return share + (f", mirror {row.mirror:.0%}" if row.mirror else "")
