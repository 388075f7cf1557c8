"""Builds audit trails the way the agent writes them: real protobuf messages, sealed into a hash chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.domain.audit_chain import GENESIS_HASH, seal
from agent.domain.records import policy_to_pb, timestamp
from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2

T0 = datetime(2024, 8, 12, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def policy(
    weights: dict[str, int], revision: int, *, when: datetime, reason: str = "", actor: str = ""
) -> TrafficPolicy:
    return TrafficPolicy(tuple(weights.items()), revision, reason, actor, when.timestamp())


class Trail:
    def __init__(self, model: str = "credit-scorer") -> None:
        self.model = model
        self.records: list[audit_pb2.AuditRecord] = []
        self.revision = 1
        self.weights = {"v1": 0, "v2": 100, "v3": 0}
        self.changed_at = T0

    def add(self, when: datetime, actor: str, record: audit_pb2.AuditRecord) -> audit_pb2.AuditRecord:
        record.model = record.model or self.model
        record.actor = actor
        record.at.CopyFrom(timestamp(when.timestamp()))
        prev = self.records[-1].hash if self.records else GENESIS_HASH
        sealed = seal(record, len(self.records) + 1, prev)
        self.records.append(sealed)
        return sealed

    def traffic(
        self,
        when: datetime,
        to: dict[str, int],
        *,
        actor: str = "operator:ana",
        reason: str = "set by operator",
        outcome: str = "acked",
        ack_ms: float = 12.5,
        detail: str = "",
    ) -> audit_pb2.AuditRecord:
        before = policy(self.weights, self.revision, when=self.changed_at)
        after_weights = {v: to.get(v, 0) for v in self.weights}
        after = policy(after_weights, self.revision + 1, when=when, reason=reason, actor=actor)
        record = audit_pb2.AuditRecord(
            traffic_changed=audit_pb2.TrafficChanged(
                from_policy=policy_to_pb(before),
                to_policy=policy_to_pb(after),
                route_version=f"r{self.revision + 1}" if outcome == "acked" else "",
                outcome=outcome,
                decision_to_ack_ms=ack_ms,
                detail=detail,
            )
        )
        if outcome == "acked" or outcome == "timeout":
            self.revision += 1
            self.weights = after_weights
            self.changed_at = when
        return self.add(when, actor, record)

    def rollback(
        self,
        when: datetime,
        *,
        rollback_id: str,
        trigger: audit_pb2.Trigger,
        frm: str,
        to: str,
        outcome: str = "recovered",
        skipped: tuple[tuple[str, str], ...] = (),
        detail: str = "",
        actor: str = "rule:latency-p99",
        phases: tuple[tuple[str, float, str], ...] = (
            ("detect", 3.0, "ok"),
            ("select", 0.4, "ok"),
            ("switch", 9.1, "ok"),
        ),
    ) -> audit_pb2.AuditRecord:
        before = policy(self.weights, self.revision, when=self.changed_at)
        message = audit_pb2.Rollback(
            rollback_id=rollback_id,
            from_version=frm,
            to_version=to,
            trigger=trigger,
            outcome=outcome,
            detail=detail,
            from_policy=policy_to_pb(before),
            skipped=[audit_pb2.SkippedTarget(version=v, reason=r) for v, r in skipped],
            phases=[
                audit_pb2.Phase(name=name, started_at=timestamp(when.timestamp()), duration_ms=d, outcome=o)
                for name, d, o in phases
            ],
        )
        if to and outcome != "suppressed":
            self.traffic(when, {to: 100}, actor=actor, reason=f"rollback {rollback_id}: {detail or 'breach'}")
            message.to_policy.CopyFrom(policy_to_pb(policy(self.weights, self.revision, when=when)))
        return self.add(when, actor, audit_pb2.AuditRecord(rollback=message))

    def status(self, when: datetime, version: str, frm: str, to: str, reason: str, actor: str) -> None:
        self.add(
            when,
            actor,
            audit_pb2.AuditRecord(
                version_status_changed=audit_pb2.VersionStatusChanged(
                    version=version, from_status=frm, to_status=to, reason=reason
                )
            ),
        )


def rule_trigger(rule: str = "latency-p99", value: float = 212.0, threshold: float = 120.0) -> audit_pb2.Trigger:
    return audit_pb2.Trigger(
        rule=audit_pb2.RuleVerdict(
            rule=rule,
            kind="latency_p99",
            version="v3",
            verdict="breach",
            value=value,
            threshold=threshold,
            window_s=60,
            samples=4210,
            reason=f"p99 {value:g} ms > {threshold:g} ms",
        )
    )


def alert_trigger(name: str = "CreditScorerErrorRate", **labels: str) -> audit_pb2.Trigger:
    return audit_pb2.Trigger(
        alert=audit_pb2.AlertTrigger(alertname=name, labels=labels or {"severity": "page"}, received_via="webhook")
    )


def operator_trigger(identity: str = "ana", reason: str = "customer complaints") -> audit_pb2.Trigger:
    return audit_pb2.Trigger(operator=audit_pb2.OperatorTrigger(identity=identity, reason=reason))
