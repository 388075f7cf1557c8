"""What was served when: replaying the audit trail's traffic changes. Pure.

A change takes effect at its record's time (`at`, written once every connected Envoy ACKed), inclusive: asked
for exactly that instant, the new split is the answer. Only ACKed changes move the served split; a rejected (NACKed)
change leaves it as it was, and a change that timed out waiting for ACKs leaves it uncertain (some Envoys may serve
the new split) until the next ACKed change.

Before the first known policy the answer is *unknown*, never a guess: the first known policy is the initial policy
(the lowest revision of the policy history, from its `changed_at`) when the caller passes it, else the policy the
first recorded traffic change started from (from its own `changed_at`). Earlier, the agent was not yet deciding
this model's routing, or its state was reset.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import audit_pb2, traffic_pb2
from agent.registry.model import VersionSpec
from agent.reporting.triggers import describe_trigger
from agent.reporting.when import format_time, from_pb, from_unix, require_aware

Weights = tuple[tuple[str, int], ...]

ACKED = "acked"
TIMEOUT = "timeout"
INTERRUPTED = "interrupted"

_ROLLBACK_REASON = re.compile(r"^rollback ([0-9A-Za-z_-]+):")


@dataclass(frozen=True, slots=True)
class ServedVersion:
    tag: str
    weight: int
    share: float  # weight / total weight
    version: VersionSpec | None  # the registry entry (provenance), None when the registry has no such version


@dataclass(frozen=True, slots=True)
class ServingState:
    at: datetime
    known: bool
    weights: Weights  # every version of the policy, with its weight (empty when unknown)
    serving: tuple[ServedVersion, ...]  # the versions with weight > 0
    revision: int | None
    since: datetime | None  # when this split started being served
    source: str  # how it is known, or why it is not
    seq: int | None  # the audit record that put it in force (None: the initial policy, or unknown)
    actor: str
    reason: str
    uncertain: str  # non-empty when a later change timed out waiting for ACKs: what may be served instead


@dataclass(frozen=True, slots=True)
class TrafficChange:
    seq: int
    at: datetime
    from_weights: Weights
    to_weights: Weights
    from_revision: int
    to_revision: int
    actor: str
    reason: str
    outcome: str  # "acked", "rejected"/"nacked", "timeout"
    decision_to_ack_ms: float
    route_version: str
    detail: str
    rollback_id: str  # the rollback this change belongs to, "" for other changes
    trigger: str  # that rollback's trigger in words, "" when not part of a rollback


def weights_of(policy: traffic_pb2.TrafficPolicy) -> Weights:
    return tuple((w.version, w.weight) for w in policy.weights)


def format_weights(weights: Weights | Mapping[str, int]) -> str:
    items = weights.items() if isinstance(weights, Mapping) else weights
    return ", ".join(f"{v}={w}" for v, w in items) or "-"


def _in_model(record: audit_pb2.AuditRecord, model: str | None) -> bool:
    return model is None or record.model == model


def _state(
    at: datetime,
    weights: Weights,
    *,
    revision: int,
    since: datetime,
    source: str,
    seq: int | None,
    actor: str,
    reason: str,
    uncertain: str,
    registry: Mapping[str, VersionSpec],
) -> ServingState:
    total = sum(w for _, w in weights)
    serving = tuple(
        ServedVersion(tag, weight, weight / total if total else 0.0, registry.get(tag))
        for tag, weight in weights
        if weight > 0
    )
    return ServingState(at, True, weights, serving, revision, since, source, seq, actor, reason, uncertain)


def history_at(
    records: Iterable[audit_pb2.AuditRecord],
    at: datetime,
    *,
    registry_versions: Sequence[VersionSpec] = (),
    initial_policy: TrafficPolicy | None = None,
    model: str | None = None,
) -> ServingState:
    """The split served at `at` (timezone-aware), with the registry entries of the versions receiving traffic.

    `records` in seq order (as the store returns them); `initial_policy` is the lowest revision of the policy
    history when available. See the module docstring for what counts as served and what "unknown" means.
    """
    require_aware(at, "at")
    registry = {v.tag: v for v in registry_versions}
    changes = [r for r in records if r.WhichOneof("event") == "traffic_changed" and _in_model(r, model)]
    state: ServingState | None = None
    if initial_policy is not None:
        since = from_unix(initial_policy.changed_at)
        if since <= at:
            state = _state(
                at,
                initial_policy.weights,
                revision=initial_policy.revision,
                since=since,
                source=f"initial policy (revision {initial_policy.revision})",
                seq=None,
                actor=initial_policy.actor,
                reason=initial_policy.reason,
                uncertain="",
                registry=registry,
            )
    elif changes:
        first = changes[0].traffic_changed.from_policy
        since = from_pb(first.changed_at)
        if first.weights and since <= at:
            state = _state(
                at,
                weights_of(first),
                revision=first.revision,
                since=since,
                source=f"the policy in force before record {changes[0].seq} (revision {first.revision})",
                seq=None,
                actor=first.actor,
                reason=first.reason,
                uncertain="",
                registry=registry,
            )
    for record in changes:
        record_at = from_pb(record.at)
        if record_at > at:
            continue
        change = record.traffic_changed
        if change.outcome in (ACKED, INTERRUPTED):
            # An interrupted change: the agent stopped between the intent and its outcome; from its restart it
            # served the intended split.
            source = "traffic change" if change.outcome == ACKED else "reconciled at the agent's restart"
            state = _state(
                at,
                weights_of(change.to_policy),
                revision=change.to_policy.revision,
                since=record_at,
                source=f"{source}, record {record.seq}",
                seq=record.seq,
                actor=record.actor,
                reason=change.to_policy.reason,
                uncertain="",
                registry=registry,
            )
        elif change.outcome == TIMEOUT and state is not None:
            state = dataclasses.replace(
                state,
                uncertain=f"the change to {format_weights(weights_of(change.to_policy))} at {format_time(record_at)} "
                f"(record {record.seq}) timed out waiting for ACKs: some Envoys may serve that split instead",
            )
    if state is not None:
        return state
    return ServingState(
        at=at,
        known=False,
        weights=(),
        serving=(),
        revision=None,
        since=None,
        source="before the first recorded policy of this model",
        seq=None,
        actor="",
        reason="",
        uncertain="",
    )


def _rollback_links(records: Sequence[audit_pb2.AuditRecord]) -> tuple[dict[str, str], dict[int, str]]:
    """rollback_id -> trigger in words; to-policy revision of a completed rollback -> its rollback_id."""
    triggers: dict[str, str] = {}
    by_revision: dict[int, str] = {}
    for record in records:
        if record.WhichOneof("event") != "rollback":
            continue
        rollback = record.rollback
        triggers[rollback.rollback_id] = describe_trigger(rollback.trigger)
        if rollback.HasField("to_policy"):
            by_revision[rollback.to_policy.revision] = rollback.rollback_id
    return triggers, by_revision


def changes(
    records: Iterable[audit_pb2.AuditRecord], since: datetime | None = None, *, model: str | None = None
) -> list[TrafficChange]:
    """Every traffic change (ACKed or not) recorded at or after `since`, oldest first, each linked to the
    rollback it was part of (and that rollback's trigger)."""
    if since is not None:
        require_aware(since, "since")
    selected = [r for r in records if _in_model(r, model)]
    triggers, by_revision = _rollback_links(selected)
    intents = {r.seq: r.traffic_intent for r in selected if r.WhichOneof("event") == "traffic_intent"}
    result: list[TrafficChange] = []
    for record in selected:
        if record.WhichOneof("event") != "traffic_changed":
            continue
        record_at = from_pb(record.at)
        if since is not None and record_at < since:
            continue
        change = record.traffic_changed
        match = _ROLLBACK_REASON.match(change.to_policy.reason)
        rollback_id = match.group(1) if match else ""
        if not rollback_id and change.outcome == ACKED:
            rollback_id = by_revision.get(change.to_policy.revision, "")
        result.append(
            TrafficChange(
                seq=record.seq,
                at=record_at,
                from_weights=weights_of(change.from_policy),
                to_weights=weights_of(change.to_policy),
                from_revision=change.from_policy.revision,
                to_revision=change.to_policy.revision,
                actor=record.actor,
                reason=change.to_policy.reason,
                outcome=change.outcome,
                decision_to_ack_ms=change.decision_to_ack_ms,
                route_version=change.route_version,
                detail=_forced(intents.get(change.intent_seq)) + change.detail,
                rollback_id=rollback_id,
                trigger=triggers.get(rollback_id, ""),
            )
        )
    return result


def _forced(intent: audit_pb2.TrafficIntent | None) -> str:
    """An operator's override of a guard, said first: it is what a reviewer must see."""
    if intent is None or not intent.forced:
        return ""
    return "FORCED over: " + "; ".join(intent.overridden) + ". "
