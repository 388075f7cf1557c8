"""The content of a compliance report, independent of its format. Pure.

Everything is read from the audit trail and the registry. The audit chain is verified over the whole trail (all
models, all time): a period or model filter must not hide a broken link.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.domain.audit_chain import ChainProblem
from agent.domain.audit_signing import SignatureKey
from agent.domain.audit_verification import SignatureStatus, verify_trail
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.registry.model import VersionSpec
from agent.reporting.mirrors import MirrorRow, mirror_changes
from agent.reporting.rollbacks import (
    AutomationRow,
    RollbackRow,
    StatusChangeRow,
    automation_toggles,
    per_day,
    per_week,
    rollbacks,
    root_causes,
    status_changes,
)
from agent.reporting.rollouts import RolloutRow, rollouts
from agent.reporting.timeline import TrafficChange, changes
from agent.reporting.when import from_pb, require_aware

REPORT_SCHEMA = "rollback-agent/compliance-report/v1"


@dataclass(frozen=True, slots=True)
class ChainStatus:
    intact: bool
    records: int  # every record verified (the whole trail)
    last_seq: int
    last_hash: str  # hex of the last record's hash: quote it to pin the trail as of this report
    problems: tuple[ChainProblem, ...]  # with keys given, signature problems too
    signatures: SignatureStatus


@dataclass(frozen=True, slots=True)
class IdentityRow:
    """Who acted in the period, as the records name them: the authenticated identity (operator:<name>), a rule,
    an alert, or the agent itself."""

    actor: str
    kind: str  # operator | rule | alert | agent | other
    records: int
    first: datetime
    last: datetime
    events: tuple[tuple[str, int], ...]  # record kind -> count, most frequent first


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    model: str
    generated_at: datetime
    since: datetime | None
    period_start: datetime | None  # since, else the first record of the model; None without records
    versions: tuple[VersionSpec, ...]
    rollbacks: tuple[RollbackRow, ...]  # including suppressed triggers
    traffic_changes: tuple[TrafficChange, ...]
    status_changes: tuple[StatusChangeRow, ...]
    automation: tuple[AutomationRow, ...]
    rollouts: tuple[RolloutRow, ...]  # every stage change of a rollout, with its evidence
    mirrors: tuple[MirrorRow, ...]  # every change of the share of live requests mirrored to a version
    per_day: tuple[tuple[str, int], ...]
    per_week: tuple[tuple[str, int], ...]
    root_causes: tuple[tuple[str, int], ...]
    chain: ChainStatus
    identities: tuple[IdentityRow, ...] = ()

    @property
    def document_id(self) -> str:
        """Names this report: the model, the period and the trail's head it was made from (the same inputs give the
        same id; a report of a longer or altered trail gets another)."""
        basis = "|".join(
            (
                self.model,
                self.since.isoformat() if self.since else "",
                self.generated_at.isoformat(),
                str(self.chain.last_seq),
                self.chain.last_hash,
            )
        )
        digest = hashlib.sha256(basis.encode()).hexdigest()[:12].upper()
        return f"RBA-{self.generated_at:%Y%m%d}-{digest[:4]}-{digest[4:8]}-{digest[8:]}"

    @property
    def attempted(self) -> int:
        return sum(1 for r in self.rollbacks if r.attempted)

    @property
    def suppressed(self) -> int:
        return sum(1 for r in self.rollbacks if not r.attempted)

    @property
    def period_days(self) -> float:
        if self.period_start is None:
            return 0.0
        return max(0.0, (self.generated_at - self.period_start).total_seconds() / 86400.0)

    def average_per_day(self) -> float | None:
        """Attempted rollbacks per day over the period; None when the period is shorter than an hour."""
        days = self.period_days
        return self.attempted / days if days >= 1 / 24 else None

    def status_history(self, tag: str) -> list[StatusChangeRow]:
        return [row for row in self.status_changes if row.version == tag]


def check_chain(
    records: Sequence[audit_pb2.AuditRecord], keys: Mapping[str, SignatureKey] | None = None
) -> ChainStatus:
    verdict = verify_trail(records, keys)
    return ChainStatus(
        intact=verdict.intact,
        records=verdict.records,
        last_seq=verdict.head_seq,
        last_hash=verdict.head_hash,
        problems=verdict.chain_problems,
        signatures=verdict.signatures,
    )


def build_report(
    model: str,
    records: Iterable[audit_pb2.AuditRecord],
    registry_versions: Iterable[VersionSpec],
    since: datetime | None = None,
    *,
    generated_at: datetime | None = None,
    keys: Mapping[str, SignatureKey] | None = None,
) -> ComplianceReport:
    """`records`: the whole audit trail in seq order (as the store returns it); `registry_versions`: the
    registry's versions (`Version`s show their runtime status too); `keys`: the keys to check the records'
    signatures with (none: who signed is reported, not verified)."""
    trail = list(records)
    if since is not None:
        require_aware(since, "since")
    now = require_aware(generated_at, "generated_at") if generated_at is not None else datetime.now(UTC)
    own = [r for r in trail if r.model == model]
    rows = rollbacks(own, since)
    first = from_pb(own[0].at) if own else None
    return ComplianceReport(
        model=model,
        generated_at=now,
        since=since,
        period_start=since if since is not None else first,
        versions=tuple(registry_versions),
        rollbacks=tuple(rows),
        traffic_changes=tuple(changes(own, since)),
        status_changes=tuple(status_changes(own, since)),
        automation=tuple(automation_toggles(own, since)),
        rollouts=tuple(rollouts(own, since)),
        mirrors=tuple(mirror_changes(own, since)),
        per_day=tuple(per_day(rows)),
        per_week=tuple(per_week(rows)),
        root_causes=tuple(root_causes(rows)),
        chain=check_chain(trail, keys),
        identities=tuple(identities(own, since)),
    )


def _actor_kind(actor: str) -> str:
    prefix = actor.split(":", 1)[0]
    if prefix in ("operator", "rule", "alert"):
        return prefix
    if prefix in ("agent", "rollout", "rules-watcher", "drill", "admission", "fleet") or not actor:
        return "agent"
    return "other"


def identities(records: Iterable[audit_pb2.AuditRecord], since: datetime | None = None) -> list[IdentityRow]:
    """Every actor on record in the period, operators first, then by how much they did."""
    seen: dict[str, tuple[int, datetime, datetime, Counter[str]]] = {}
    for record in records:
        at = from_pb(record.at)
        if since is not None and at < since:
            continue
        actor = record.actor or "(none)"
        count, first, last, events = seen.get(actor, (0, at, at, Counter()))
        events[record.WhichOneof("event") or "unknown"] += 1
        seen[actor] = (count + 1, min(first, at), max(last, at), events)
    rows = [
        IdentityRow(actor, _actor_kind(actor), count, first, last, tuple(events.most_common()))
        for actor, (count, first, last, events) in seen.items()
    ]
    order = {"operator": 0, "alert": 1, "rule": 2, "other": 3, "agent": 4}
    return sorted(rows, key=lambda r: (order[r.kind], -r.records, r.actor))
