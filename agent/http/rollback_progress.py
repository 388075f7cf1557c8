"""How far a rollback procedure has got: for `rollback --wait`, `status --watch` and the status page.

The audit trail holds the finished phases: the `switched` record (detect ... mark) is written once traffic moved,
the final record (confirm, verify, archive and the outcome) once the procedure ends. The two phases that run in
between (confirm, verify: the verification window) are seen by wrapping the ports they use (`StepWatch`), so a
watcher can count the window down without the procedure knowing it is watched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.rollback import TrafficConfirmer, VerificationResult, Verifier

# The phases in the order the procedure runs them; the last three come after the switch.
PHASE_ORDER = ("detect", "select", "validate", "warm", "switch", "ack", "mark", "confirm", "verify", "archive")
AFTER_SWITCH = ("confirm", "verify", "archive")
SUCCESS = "recovered"


@dataclass(frozen=True, slots=True)
class RunningStep:
    name: str  # "confirm" or "verify"
    version: str
    started_at: float  # wall clock
    limit_s: float  # the confirm timeout, or the verification window


class StepWatch:
    """The confirm and verify steps running now, one per target version."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._running: dict[str, RunningStep] = {}

    def running(self, version: str) -> RunningStep | None:
        return self._running.get(version)

    @contextlib.contextmanager
    def step(self, name: str, version: str, limit_s: float) -> Iterator[None]:
        step = RunningStep(name, version, self._clock(), limit_s)
        self._running[version] = step
        try:
            yield
        finally:
            if self._running.get(version) is step:
                del self._running[version]

    def confirmer(self, inner: TrafficConfirmer) -> TrafficConfirmer:
        return _WatchedConfirmer(inner, self)

    def verifier(self, inner: Verifier) -> Verifier:
        return _WatchedVerifier(inner, self)


class _WatchedConfirmer:
    def __init__(self, inner: TrafficConfirmer, watch: StepWatch) -> None:
        self._inner, self._watch = inner, watch

    async def confirm(self, version: str, timeout_s: float) -> tuple[bool, str]:
        with self._watch.step("confirm", version, timeout_s):
            return await self._inner.confirm(version, timeout_s)


class _WatchedVerifier:
    def __init__(self, inner: Verifier, watch: StepWatch) -> None:
        self._inner, self._watch = inner, watch

    async def verify(self, version: str, window_s: float) -> VerificationResult:
        with self._watch.step("verify", version, window_s):
            return await self._inner.verify(version, window_s)


def rfc3339(unix_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))


def trigger_summary(trigger: audit_pb2.Trigger) -> str:
    """One line saying what asked for a decision."""
    source = trigger.WhichOneof("source")
    if source == "rule":
        r = trigger.rule
        return f"rule {r.rule} on {r.version}: {r.reason}" if r.reason else f"rule {r.rule} on {r.version}"
    if source == "alert":
        a = trigger.alert
        return f"alert {a.alertname} (via {a.received_via})" if a.received_via else f"alert {a.alertname}"
    if source == "operator":
        o = trigger.operator
        return f"operator {o.identity}: {o.reason}"
    return ""


def _phase(phase: audit_pb2.Phase) -> dict[str, Any]:
    return {
        "name": phase.name,
        "outcome": phase.outcome,
        "duration_ms": round(phase.duration_ms, 3),
        "detail": phase.detail,
        "started_at": rfc3339(phase.started_at.seconds) if phase.started_at.seconds else "",
    }


def rollback_progress(
    records: Sequence[audit_pb2.AuditRecord], watch: StepWatch | None, now: float
) -> dict[str, Any] | None:
    """The progress of one rollback from its audit records (oldest first), or None without any."""
    rollbacks = [r for r in records if r.WhichOneof("event") == "rollback"]
    if not rollbacks:
        return None
    first, last = rollbacks[0], rollbacks[-1]
    rb = last.rollback
    interrupted = next(
        (r.rollback_interrupted for r in records if r.WhichOneof("event") == "rollback_interrupted"), None
    )
    done = rb.outcome != "switched" or interrupted is not None
    phases = [_phase(p) for p in rb.phases]
    progress: dict[str, Any] = {
        "rollback_id": rb.rollback_id,
        "from_version": rb.from_version,
        "to_version": rb.to_version,
        "trigger": trigger_summary(rb.trigger),
        "actor": first.actor,
        "started_at": rfc3339(first.at.seconds),
        "done": done,
        "outcome": "interrupted" if interrupted is not None and rb.outcome == "switched" else rb.outcome,
        "detail": interrupted.detail if interrupted is not None and rb.outcome == "switched" else rb.detail,
        "skipped": [{"version": s.version, "reason": s.reason} for s in rb.skipped],
        "phases": phases,
        "running": None,
        "pending": [],
    }
    if done:
        return progress
    # The phases after the switch are recorded together at the end: what runs now says which ones are over.
    step = watch.running(rb.to_version) if watch is not None else None
    pending = list(AFTER_SWITCH)
    if step is not None and step.name in AFTER_SWITCH:
        elapsed = max(0.0, now - step.started_at)
        progress["running"] = {
            "name": step.name,
            "elapsed_s": round(elapsed, 1),
            "limit_s": step.limit_s,
            "remaining_s": round(max(0.0, step.limit_s - elapsed), 1),
        }
        pending = pending[pending.index(step.name) + 1 :]
    progress["pending"] = pending
    return progress
