"""The recent decisions on record, for the status page and the watch commands.

Read incrementally from the audit trail: only records newer than the last one read, and only when this process
wrote something since (the store's head), so a page polling every second costs no query while nothing happens.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from agent.http.rollback_progress import rfc3339, trigger_summary
from agent.pb.rollback_agent.v1 import audit_pb2, traffic_pb2
from agent.ports.store import AuditLog

TAIL = 1000  # records read at the first refresh
KEPT_ROLLBACKS = 50


def weights_text(policy: traffic_pb2.TrafficPolicy) -> str:
    return " ".join(f"{w.version}={w.weight}" for w in policy.weights) or "-"


def decision_entry(record: audit_pb2.AuditRecord) -> dict[str, Any] | None:
    """A decision as the page lists it (kind, summary, reason, outcome), or None for records that are not one."""
    kind = record.WhichOneof("event")
    entry: dict[str, Any] = {"seq": record.seq, "at": rfc3339(record.at.seconds), "actor": record.actor}
    if kind == "rollback":
        rb = record.rollback
        target = rb.to_version or "-"
        reason = trigger_summary(rb.trigger)
        return entry | {
            "kind": "rollback",
            "summary": f"rollback {rb.rollback_id}: {rb.from_version} -> {target}",
            "reason": reason,
            "outcome": rb.outcome,
            "detail": rb.detail,
            "rollback_id": rb.rollback_id,
        }
    if kind == "traffic_intent":
        intent = record.traffic_intent
        if intent.rollback_id:  # the switch of a rollback: listed as the rollback
            return None
        forced = f" (forced over: {'; '.join(intent.overridden)})" if intent.forced else ""
        return entry | {
            "kind": "traffic",
            "summary": f"traffic {weights_text(intent.from_policy)} -> {weights_text(intent.to_policy)}{forced}",
            "reason": intent.reason,
            "outcome": "requested",
            "detail": "",
        }
    if kind == "automation_toggled":
        toggled = record.automation_toggled
        verb = "paused" if toggled.paused else "resumed"
        return entry | {
            "kind": "pause",
            "summary": f"automatic rollback {verb}",
            "reason": toggled.reason,
            "outcome": verb,
            "detail": "",
        }
    if kind == "hold_changed":
        hold = record.hold_changed
        verb = "held" if hold.held else "released"
        return entry | {
            "kind": "hold",
            "summary": f"{hold.version} {verb}",
            "reason": hold.reason,
            "outcome": verb,
            "detail": "",
        }
    if kind == "pin_changed":
        pin = record.pin_changed
        verb = "pinned" if pin.pinned else "unpinned"
        return entry | {
            "kind": "pin",
            "summary": f"{pin.version} {verb}",
            "reason": pin.reason,
            "outcome": verb,
            "detail": "",
        }
    if kind == "lease_changed":
        lease = record.lease_changed
        forced = f" (forced over: {'; '.join(lease.overridden)})" if lease.forced else ""
        return entry | {
            "kind": "lease",
            "summary": f"lease {lease.lease_id} of {lease.holder} on {lease.version} {lease.action}{forced}",
            "reason": lease.reason,
            "outcome": lease.action,
            "detail": "",
        }
    if kind == "version_status_changed":
        change = record.version_status_changed
        return entry | {
            "kind": "version_status",
            "summary": f"{change.version}: {change.from_status} -> {change.to_status}",
            "reason": change.reason,
            "outcome": change.to_status,
            "detail": "",
        }
    if kind == "rollback_interrupted":
        stopped = record.rollback_interrupted
        return entry | {
            "kind": "rollback",
            "summary": f"rollback {stopped.rollback_id} interrupted during {stopped.stage}",
            "reason": "",
            "outcome": "interrupted",
            "detail": stopped.detail,
            "rollback_id": stopped.rollback_id,
        }
    if kind == "config_rejected":
        nack = record.config_rejected
        return entry | {
            "kind": "nack",
            "summary": f"{nack.node_id} rejected {nack.type_url.rsplit('.', 1)[-1]} {nack.rejected_version}",
            "reason": nack.error,
            "outcome": "rejected",
            "detail": "",
        }
    if kind == "rules_reloaded" and record.rules_reloaded.error:
        return entry | {
            "kind": "rules",
            "summary": "rule file refused (previous rules stay)",
            "reason": record.rules_reloaded.error,
            "outcome": "refused",
            "detail": "",
        }
    return None


class DecisionFeed:
    def __init__(self, log: AuditLog, head_seq: Callable[[], int], *, keep: int = 200) -> None:
        self._log = log
        self._head_seq = head_seq
        self._seen = -1  # the newest seq read; -1: nothing read yet
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        self._by_intent: dict[int, dict[str, Any]] = {}
        self._rollbacks: OrderedDict[str, list[audit_pb2.AuditRecord]] = OrderedDict()
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if self._seen >= 0 and self._head_seq() <= self._seen:
                return
            if self._seen < 0:
                head, _ = await self._log.head()
                self._seen = max(0, head - TAIL)
            for record in await self._log.records(since_seq=self._seen):
                self._add(record)
                self._seen = record.seq

    def _add(self, record: audit_pb2.AuditRecord) -> None:
        kind = record.WhichOneof("event")
        if kind == "traffic_changed":
            entry = self._by_intent.pop(record.traffic_changed.intent_seq, None)
            if entry is not None:
                entry["outcome"] = record.traffic_changed.outcome
                entry["detail"] = record.traffic_changed.detail
            return
        rollback_id = (
            record.rollback.rollback_id
            if kind == "rollback"
            else record.rollback_interrupted.rollback_id
            if kind == "rollback_interrupted"
            else ""
        )
        if rollback_id:
            self._rollbacks.setdefault(rollback_id, []).append(record)
            self._rollbacks.move_to_end(rollback_id)
            while len(self._rollbacks) > KEPT_ROLLBACKS:
                self._rollbacks.popitem(last=False)
        entry = decision_entry(record)
        if entry is None:
            return
        if len(self._entries) == self._entries.maxlen:
            self._by_intent.pop(self._entries[0]["seq"], None)
        self._entries.append(entry)
        if kind == "traffic_intent":
            self._by_intent[record.seq] = entry

    def decisions(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` decisions, newest first."""
        return [dict(e) for e in list(self._entries)[::-1][:limit]]

    def rollback_records(self, rollback_id: str) -> list[audit_pb2.AuditRecord]:
        return list(self._rollbacks.get(rollback_id, ()))

    def latest_rollback_id(self) -> str:
        """The most recent rollback that moved traffic or tried to (suppressed ones are only decisions)."""
        for rollback_id, records in reversed(self._rollbacks.items()):
            if any(r.WhichOneof("event") != "rollback" or r.rollback.outcome != "suppressed" for r in records):
                return rollback_id
        return ""
