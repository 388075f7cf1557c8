"""Reconciliation at start-up: decisions the previous run recorded (write-ahead) but never closed.

* A traffic intent without an outcome: the agent stopped between recording a change and recording what became of
  it. Its outcome is recorded now as "interrupted", with what the local Envoy serves (the intended split, the
  previous one, or neither) — the agent then serves the persisted (intended) policy, as every start does.
* A rollback whose switch was recorded but not its verification: recorded as interrupted at the verification
  stage (the switch stands; nobody verified the target).
* A rollback whose switch intent exists but no rollback record: interrupted at the switch; the failing version is
  marked failed now if the mark was lost with it, so it is never chosen again automatically.

Pure decision logic over records; writing goes through the AuditLog and the planner's mark.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from agent.pb.rollback_agent.v1 import audit_pb2, traffic_pb2
from agent.ports.store import AuditLog

log = logging.getLogger(__name__)

FINAL_ROLLBACK_OUTCOMES = frozenset(
    {"recovered", "inconclusive", "verification_failed", "no_eligible_target", "switch_failed", "suppressed"}
)


@dataclass(frozen=True, slots=True)
class Served:
    """What the data plane serves now, as far as the agent can tell."""

    weights: tuple[tuple[str, int], ...] | None  # None: unknown
    detail: str


def _weights(policy: traffic_pb2.TrafficPolicy) -> tuple[tuple[str, int], ...]:
    return tuple((w.version, w.weight) for w in policy.weights)


def _same_split(a: Sequence[tuple[str, int]], b: Sequence[tuple[str, int]]) -> bool:
    return {v: w for v, w in a if w} == {v: w for v, w in b if w}


def open_intents(records: Sequence[audit_pb2.AuditRecord]) -> list[audit_pb2.AuditRecord]:
    closed = {r.traffic_changed.intent_seq for r in records if r.WhichOneof("event") == "traffic_changed"}
    return [r for r in records if r.WhichOneof("event") == "traffic_intent" and r.seq not in closed]


def interrupted_outcome(intent: audit_pb2.AuditRecord, served: Served) -> audit_pb2.TrafficChanged:
    event = intent.traffic_intent
    wanted, before = _weights(event.to_policy), _weights(event.from_policy)
    if served.weights is None:
        finding = f"what Envoy served could not be read ({served.detail})"
    elif _same_split(served.weights, wanted):
        finding = f"Envoy serves the intended split: the change took effect before the agent stopped ({served.detail})"
    elif _same_split(served.weights, before):
        finding = f"Envoy still served the previous split: the change had not taken effect ({served.detail})"
    else:
        finding = f"Envoy served neither the previous nor the intended split ({served.detail})"
    return audit_pb2.TrafficChanged(
        from_policy=event.from_policy,
        to_policy=event.to_policy,
        outcome="interrupted",
        detail=f"the agent stopped before recording the outcome; at the next start {finding}; the agent serves the "
        f"persisted policy from now on",
        intent_seq=intent.seq,
        intent_id=event.intent_id,
    )


@dataclass(frozen=True, slots=True)
class OpenRollback:
    rollback_id: str
    from_version: str
    to_version: str
    stage: str  # "switch" or "verification"
    actor: str


def open_rollbacks(records: Sequence[audit_pb2.AuditRecord]) -> list[OpenRollback]:
    switched: dict[str, audit_pb2.AuditRecord] = {}
    closed: set[str] = set()
    intents: dict[str, audit_pb2.AuditRecord] = {}
    for r in records:
        which = r.WhichOneof("event")
        if which == "rollback":
            if r.rollback.outcome == "switched":
                switched[r.rollback.rollback_id] = r
            else:
                closed.add(r.rollback.rollback_id)
        elif which == "rollback_interrupted":
            closed.add(r.rollback_interrupted.rollback_id)
        elif which == "traffic_intent" and r.traffic_intent.rollback_id:
            intents.setdefault(r.traffic_intent.rollback_id, r)
    found: list[OpenRollback] = []
    for rollback_id, r in switched.items():
        if rollback_id not in closed:
            found.append(
                OpenRollback(rollback_id, r.rollback.from_version, r.rollback.to_version, "verification", r.actor)
            )
    for rollback_id, r in intents.items():
        if rollback_id in closed or rollback_id in switched:
            continue
        before, after = dict(_weights(r.traffic_intent.from_policy)), dict(_weights(r.traffic_intent.to_policy))
        failing = ", ".join(v for v, w in before.items() if w > 0 and after.get(v, 0) == 0)
        target = ", ".join(v for v, w in after.items() if w > 0)
        found.append(OpenRollback(rollback_id, failing, target, "switch", r.actor))
    return found


MarkFailed = Callable[[str, str, str], Awaitable[str]]


async def reconcile(
    audit: AuditLog, records: Sequence[audit_pb2.AuditRecord], served: Served, mark_failed: MarkFailed
) -> list[str]:
    """Close every open decision in `records` (the tail of the trail); returns what was done, for the log."""
    notes: list[str] = []
    for intent in open_intents(records):
        outcome = interrupted_outcome(intent, served)
        await audit.append(outcome, "agent:reconcile")
        notes.append(f"intent {intent.seq} ({intent.traffic_intent.intent_id}): {outcome.detail}")
    for rollback in open_rollbacks(records):
        if rollback.stage == "verification":
            detail = (
                f"the agent stopped during the verification of {rollback.to_version}: the switch stands, the target "
                f"was not verified"
            )
        else:
            detail = "the agent stopped during the switch; see the intent's interrupted outcome"
            for version in filter(None, (v.strip() for v in rollback.from_version.split(","))):
                why = f"rollback {rollback.rollback_id} (reconciled after a restart)"
                previous = await mark_failed(version, why, rollback.actor)
                if previous not in ("unknown", "failed"):
                    await audit.append(
                        audit_pb2.VersionStatusChanged(
                            version=version, from_status=previous, to_status="failed", reason=why
                        ),
                        "agent:reconcile",
                    )
        await audit.append(
            audit_pb2.RollbackInterrupted(
                rollback_id=rollback.rollback_id,
                from_version=rollback.from_version,
                to_version=rollback.to_version,
                stage=rollback.stage,
                detail=detail,
            ),
            "agent:reconcile",
        )
        notes.append(f"rollback {rollback.rollback_id}: {detail}")
    for note in notes:
        log.warning("reconciled: %s", note)
    return notes
