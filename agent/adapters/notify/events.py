"""Which audit records are told, as which event kinds, with what text.

Notifications are derived from sealed audit records only: every decision on record can be told, and nothing is
told that is not on record. One record may match several kinds (a rollback whose switch failed is both
`rollback_failed` and `escalation`); a receiver gets it once if it subscribed to any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

from agent.config import NotificationKind
from agent.pb.rollback_agent.v1 import audit_pb2

EVENT_KINDS: tuple[str, ...] = get_args(NotificationKind)

# Rollback outcomes (audit.proto, Rollback.outcome) and the kinds they are told as.
_ROLLBACK_KINDS: dict[str, tuple[str, ...]] = {
    "switched": ("rollback_switched",),
    "recovered": ("rollback_completed",),
    "inconclusive": ("rollback_completed",),
    "verification_failed": ("verification_failed", "escalation"),
    "no_eligible_target": ("rollback_failed", "escalation"),
    "switch_failed": ("rollback_failed", "escalation"),
    "suppressed": ("rollback_suppressed",),
}


# Rollout moves worth telling (agent/rollout/machine.py); stage advances are the rollout going to plan.
_ROLLOUT_MOVES = frozenset({"promoted", "completed", "rolled_back", "aborted", "went_back", "standby_ended"})
# Lease actions worth telling (agent/engine/leases.py); a renewal is the batch job going to plan.
_LEASE_ACTIONS = frozenset({"acquired", "released", "expired", "revoked"})
# Mirror outcomes worth telling: a change that took effect, and one Envoy did not take (`unchanged` and a guard's
# `refused` moved nothing and were answered to whoever asked).
_MIRROR_OUTCOMES = frozenset({"acked", "rejected", "timeout"})


@dataclass(frozen=True)
class Notification:
    """One decision to tell: its kinds, a one-line text (Slack's `text`) and the record's facts."""

    kinds: tuple[str, ...]
    text: str
    fields: dict[str, Any] = field(default_factory=dict)

    def body(self, store_id: str) -> dict[str, Any]:
        """The JSON webhook body: Slack-compatible `text`, then the machine-readable facts."""
        seq = self.fields.get("seq", 0)
        return {"text": self.text, "event": self.kinds[0], "kinds": list(self.kinds), "id": f"{store_id}:{seq}"} | {
            "store_id": store_id,
            **self.fields,
        }


def _trigger_text(trigger: audit_pb2.Trigger) -> str:
    which = trigger.WhichOneof("source")
    if which == "rule":
        v = trigger.rule
        return f"rule {v.rule} ({v.kind}): {v.reason or f'{v.value:g} vs {v.threshold:g}'}"
    if which == "alert":
        return f"alert {trigger.alert.alertname} via {trigger.alert.received_via or 'alertmanager'}"
    if which == "operator":
        return f"operator {trigger.operator.identity}: {trigger.operator.reason}"
    return ""


def _common(record: audit_pb2.AuditRecord) -> dict[str, Any]:
    return {
        "model": record.model,
        "seq": record.seq,
        "at": record.at.ToJsonString() if record.HasField("at") else "",
        "actor": record.actor,
        "record_hash": record.hash.hex(),
    }


def notification_for(record: audit_pb2.AuditRecord) -> Notification | None:
    """The notification a sealed record makes, or None when it is not one of the told decisions."""
    which = record.WhichOneof("event")
    model = record.model
    base = _common(record)
    if which == "traffic_intent" and record.traffic_intent.rollback_id:
        intent = record.traffic_intent
        to = ", ".join(f"{w.version}={w.weight}" for w in intent.to_policy.weights if w.weight)
        return Notification(
            ("rollback_started",),
            f":rewind: {model}: rollback {intent.rollback_id} started: moving traffic to {to} ({intent.reason})",
            base
            | {"rollback_id": intent.rollback_id, "reason": intent.reason, "trigger": _trigger_text(intent.trigger)},
        )
    if which == "rollback":
        rb = record.rollback
        kinds = _ROLLBACK_KINDS.get(rb.outcome)
        if kinds is None:
            return None
        icon = {"rollback_switched": ":arrows_counterclockwise:", "rollback_completed": ":white_check_mark:"}.get(
            kinds[0], ":rotating_light:"
        )
        target = f" -> {rb.to_version}" if rb.to_version else ""
        drilled = f"[drill {rb.drill_id}] " if rb.drill_id else ""
        return Notification(
            kinds,
            f"{icon} {drilled}{model}: rollback {rb.rollback_id} {rb.from_version}{target}: {rb.outcome}: {rb.detail}",
            base
            | {
                "drill_id": rb.drill_id,
                "rollback_id": rb.rollback_id,
                "from_version": rb.from_version,
                "to_version": rb.to_version,
                "outcome": rb.outcome,
                "detail": rb.detail,
                "trigger": _trigger_text(rb.trigger),
            },
        )
    if which == "rollback_interrupted":
        ri = record.rollback_interrupted
        return Notification(
            ("rollback_failed",),
            f":rotating_light: {model}: rollback {ri.rollback_id} {ri.from_version} -> {ri.to_version} was "
            f"interrupted during {ri.stage}: {ri.detail}",
            base
            | {
                "rollback_id": ri.rollback_id,
                "from_version": ri.from_version,
                "to_version": ri.to_version,
                "outcome": "interrupted",
                "detail": ri.detail,
            },
        )
    if which == "version_status_changed":
        vs = record.version_status_changed
        if "quarantined" not in (vs.to_status, vs.from_status):
            return None
        verb = "quarantined" if vs.to_status == "quarantined" else f"released from quarantine ({vs.to_status})"
        return Notification(
            ("quarantine",),
            f":no_entry: {model}: version {vs.version} {verb}: {vs.reason}",
            base
            | {"version": vs.version, "from_status": vs.from_status, "to_status": vs.to_status, "reason": vs.reason},
        )
    if which == "hold_changed":
        hold = record.hold_changed
        verb = "held (no weight increase)" if hold.held else "released from its hold"
        return Notification(
            ("hold",),
            f":pause_button: {model}: version {hold.version} {verb}: {hold.reason}",
            base | {"version": hold.version, "held": hold.held, "reason": hold.reason},
        )
    if which == "drill_finished":
        finished = record.drill_finished
        return Notification(
            ("drill",),
            f":test_tube: {model}: rollback drill {finished.drill_id} on {finished.version}: {finished.outcome}: "
            f"{finished.detail}",
            base
            | {
                "drill_id": finished.drill_id,
                "version": finished.version,
                "outcome": finished.outcome,
                "detail": finished.detail,
                "rollback_id": finished.rollback_id,
            },
        )
    if which == "rollout_changed":
        move = record.rollout_changed
        if move.phase == "intended" or move.move not in _ROLLOUT_MOVES:
            return None
        failed = f" FAILED: {move.error}" if move.phase == "failed" else ""
        return Notification(
            ("rollout",),
            f":ship: {model}: rollout of {move.candidate}: {move.move} to {move.to_stage_name or 'stable only'} "
            f"({move.candidate_weight}% on the candidate){failed}: {move.reason}",
            base
            | {
                "version": move.candidate,
                "move": move.move,
                "phase": move.phase,
                "to_stage": move.to_stage_name,
                "candidate_weight": move.candidate_weight,
                "reason": move.reason,
                "error": move.error,
            },
        )
    if which == "mirror_changed":
        mirror = record.mirror_changed
        if mirror.outcome not in _MIRROR_OUTCOMES:
            return None
        failed = "" if mirror.outcome == "acked" else f" NOT APPLIED ({mirror.outcome}: {mirror.detail})"
        return Notification(
            ("shadow",),
            f":busts_in_silhouette: {model}: shadow traffic to {mirror.version}: {mirror.from_fraction:.0%} -> "
            f"{mirror.to_fraction:.0%} of live requests mirrored{failed}: {mirror.reason}",
            base
            | {
                "version": mirror.version,
                "from_fraction": mirror.from_fraction,
                "to_fraction": mirror.to_fraction,
                "outcome": mirror.outcome,
                "reason": mirror.reason,
                "forced": mirror.forced,
            },
        )
    if which == "lease_changed":
        lease = record.lease_changed
        if lease.action not in _LEASE_ACTIONS:
            return None
        forced = f" (forced over: {', '.join(lease.overridden)})" if lease.forced and lease.overridden else ""
        return Notification(
            ("lease",),
            f":lock: {model}: batch lease {lease.lease_id} on {lease.version} for {lease.holder}: {lease.action}"
            f"{forced}: {lease.reason}",
            base
            | {
                "lease_id": lease.lease_id,
                "version": lease.version,
                "holder": lease.holder,
                "action": lease.action,
                "expires_at": lease.expires_at,
                "reason": lease.reason,
                "forced": lease.forced,
            },
        )
    if which == "pin_changed":
        pin = record.pin_changed
        verb = "pinned (automation moves no traffic away from it)" if pin.pinned else "unpinned"
        return Notification(
            ("pin",),
            f":pushpin: {model}: version {pin.version} {verb} by {record.actor}: {pin.reason}",
            base | {"version": pin.version, "pinned": pin.pinned, "reason": pin.reason},
        )
    if which == "automation_toggled":
        toggled = record.automation_toggled
        verb = "paused" if toggled.paused else "resumed"
        return Notification(
            ("pause",),
            f":double_vertical_bar: {model}: automatic rollback {verb} by {record.actor}: {toggled.reason}",
            base | {"paused": toggled.paused, "reason": toggled.reason},
        )
    return None
