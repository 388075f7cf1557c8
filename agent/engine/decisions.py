"""What every trigger (a rule verdict, an Alertmanager alert, an operator) hands to the engine.

Triggers never move traffic themselves: they describe what they saw and which action they ask for, and the
decision handler (the rollback orchestrator) decides, acts, and records the trigger in the audit trail.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from agent.domain.actions import Action
from agent.pb.rollback_agent.v1 import audit_pb2


class Cause(enum.StrEnum):
    RULE = "rule"
    ALERT = "alert"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    cause: Cause
    action: Action
    # The version the trigger blames; None means "whichever non-stable version is receiving traffic".
    version: str | None
    summary: str
    record: audit_pb2.Trigger
    # Two events with the same key are the same occurrence (e.g. an alert's fingerprint + startsAt).
    dedupe_key: str = ""
    # A resolved alert ends the hold it started; it never moves traffic by itself.
    resolved: bool = False
    # An operator may name the rollback target; automatic triggers never do.
    target: str | None = None
    # An admin's rollback to a failed or quarantined target (recorded as overridden guards).
    force: bool = False


class DecisionOutcome(enum.StrEnum):
    ROLLED_BACK = "rolled_back"
    HELD = "held"
    HOLD_RELEASED = "hold_released"
    RECORDED = "recorded"  # alert-only, or nothing to do (already on stable)
    SUPPRESSED = "suppressed"  # paused, cooldown, rate cap
    DUPLICATE = "duplicate"  # this occurrence was already handled
    FAILED = "failed"  # no eligible target, switch failed: escalated


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: DecisionOutcome
    detail: str
    rollback_id: str = ""
    target: str = ""  # where a rollback moved the traffic


__all__ = ["Action", "Cause", "Decision", "DecisionHandler", "DecisionOutcome", "TriggerEvent", "actor_of"]


class DecisionHandler(Protocol):
    async def handle(self, event: TriggerEvent) -> Decision: ...


def actor_of(event: TriggerEvent) -> str:
    """Who a trigger acts as in the audit trail: the rule, the alert, or the authenticated operator."""
    which = event.record.WhichOneof("source")
    if which == "rule":
        return f"rule:{event.record.rule.rule}"
    if which == "alert":
        return f"alert:{event.record.alert.alertname}"
    if which == "operator":
        return f"operator:{event.record.operator.identity}"
    return event.cause.value
