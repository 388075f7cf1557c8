"""Rollback drills as plain data: the faults a drill can inject, when a drill must not run, and its report.

A drill proves the whole path on a running setup: a fault in the version under test, the agent detecting it,
deciding, switching, verifying, then the original split restored. docs/drills.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# The reference server's fault switches (POST /faults) for each drill fault kind: each one is detected by the
# shipped rules well within a drill's deadline.
REFSERVER_FAULTS: Mapping[str, Mapping[str, Any]] = {
    "errors": {"error_rate": 0.5},
    "latency": {"latency_ms": 1500.0},
    "confidence": {"confidence_shift": 0.4},
    "accuracy": {"accuracy_drop": 0.5},
    "drift": {"drift": 4.0},
}
FAULT_KINDS = tuple(REFSERVER_FAULTS)
HOOK_FAULT = "hook"  # a user's command injects and clears the fault (any model server)

# Rule states that mean an incident is under way (or about to be).
INCIDENT_RULE_STATES = frozenset({"firing", "pending"})


@dataclass(frozen=True, slots=True)
class DrillSituation:
    """What the agent knows when a drill is asked for; every field plain data (from the status, or the engine)."""

    stable: str
    desired: Mapping[str, int]
    served: Mapping[str, int] | None  # None: no Envoy has ACKed the route
    statuses: Mapping[str, str] = field(default_factory=dict)  # registry status per version
    ready: bool = True
    paused: bool = False
    pause_reason: str = ""
    holds: Mapping[str, str] = field(default_factory=dict)
    pins: Mapping[str, str] = field(default_factory=dict)  # automation moves no traffic away from a pinned version
    rules_in_breach: Sequence[str] = ()  # "rule on version: state"
    rollout: str = ""  # an active rollout, once rollouts exist
    open_rollback: str = ""  # a rollback procedure still running (switching or verifying)
    cooldown_left_s: float = 0.0
    active_drill: str = ""

    @classmethod
    def from_status(cls, status: Mapping[str, Any], **engine: Any) -> DrillSituation:
        """From the control API's status (the proto JSON mapping of `Status`) plus what only the engine knows."""
        versions = status.get("versions", []) or []
        desired = {v.get("version", ""): int(v.get("desired_weight", 0) or 0) for v in versions}
        served = {v.get("version", ""): int(v.get("served_weight", 0) or 0) for v in versions}
        breaches = [
            f"{r.get('rule', '?')} on {r.get('version', '?')}: {r.get('state')}"
            for r in status.get("rules", []) or []
            if r.get("state") in INCIDENT_RULE_STATES
        ]
        rollout = status.get("rollout") or ""
        return cls(
            stable=str(status.get("stable", "")),
            desired=desired,
            served=served if any(served.values()) else None,
            statuses={v.get("version", ""): v.get("registry_status", "") for v in versions},
            ready=bool(status.get("ready", False)),
            paused=bool(status.get("paused", False)),
            pause_reason=str(status.get("pause_reason", "")),
            holds=dict(status.get("holds", {}) or {}),
            pins=dict(status.get("pins", {}) or {}),
            rules_in_breach=breaches,
            rollout=rollout if isinstance(rollout, str) else json.dumps(rollout, sort_keys=True),
            **engine,
        )


def drilled_version(situation: DrillSituation, requested: str = "") -> str:
    """The version a drill puts the fault into: the one asked for, else the one non-stable version with traffic."""
    if requested:
        return requested
    serving = sorted(v for v, w in situation.desired.items() if w > 0 and v != situation.stable)
    return serving[0] if len(serving) == 1 else ""


def refusals(situation: DrillSituation, version: str) -> list[str]:
    """Every reason this drill must not run now; empty when it may."""
    reasons = []
    if situation.active_drill:
        reasons.append(f"drill {situation.active_drill} is already running")
    if situation.rollout:
        reasons.append(f"a rollout is in progress ({situation.rollout})")
    if situation.open_rollback:
        reasons.append(f"a rollback is in progress ({situation.open_rollback})")
    if situation.rules_in_breach:
        reasons.append("a real incident: rule " + "; ".join(situation.rules_in_breach))
    if situation.paused:
        reasons.append(f"automatic rollback is paused ({situation.pause_reason or 'no reason given'})")
    if situation.holds:
        reasons.append("held: " + "; ".join(f"{v} ({why})" for v, why in sorted(situation.holds.items())))
    if situation.pins:
        reasons.append("pinned: " + "; ".join(f"{v} ({why})" for v, why in sorted(situation.pins.items())))
    if situation.cooldown_left_s > 0:
        reasons.append(f"cooldown after the last rollback ({situation.cooldown_left_s:.0f}s left)")
    reasons.extend(_split_refusals(situation, version))
    return reasons


def _split_refusals(situation: DrillSituation, version: str) -> list[str]:
    desired = {v: w for v, w in situation.desired.items() if w > 0}
    split = " ".join(f"{v}={w}" for v, w in sorted(desired.items())) or "nothing"
    if not version:
        return [
            f"no version to drill: the split ({split}) must send traffic to exactly one version besides "
            f"the stable {situation.stable}"
        ]
    reasons = []
    if version == situation.stable:
        reasons.append(f"{version} is the stable version: a drill puts the fault into the candidate")
    if version not in situation.desired:
        reasons.append(f"unknown version {version!r}")
        return reasons
    if desired.get(version, 0) == 0:
        reasons.append(f"{version} receives no traffic (split {split})")
    if desired.get(situation.stable, 0) == 0:
        reasons.append(f"the stable version {situation.stable} receives no traffic (split {split})")
    status = situation.statuses.get(version, "")
    if status in ("failed", "quarantined"):
        reasons.append(f"{version} is {status}")
    if not situation.ready:
        reasons.append("not every Envoy serves the current config (/readyz is not ready)")
    served = {v: w for v, w in (situation.served or {}).items() if w > 0}
    if served != desired:
        shown = " ".join(f"{v}={w}" for v, w in sorted(served.items())) or "nothing"
        reasons.append(f"the served split ({shown}) is not the desired one ({split})")
    return reasons


@dataclass(frozen=True, slots=True)
class DrillPhase:
    """One measured step: detection, decision, switch, verification, restore."""

    name: str
    seconds: float | None  # None: not reached
    outcome: str  # ok, failed, skipped
    detail: str = ""


@dataclass
class DrillReport:
    drill_id: str
    model: str
    version: str
    fault: str
    actor: str
    started_at: float  # wall clock
    finished_at: float = 0.0
    outcome: str = "failed"  # passed, failed, refused
    reason: str = ""
    original_split: dict[str, int] = field(default_factory=dict)
    restored_split: dict[str, int] = field(default_factory=dict)
    rollback_id: str = ""
    target: str = ""
    rollback_outcome: str = ""
    version_status_before: str = ""
    version_status_after: str = ""
    phases: list[DrillPhase] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)

    def phase(self, name: str) -> DrillPhase | None:
        return next((p for p in self.phases if p.name == name), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = _iso(self.started_at)
        data["finished_at"] = _iso(self.finished_at) if self.finished_at else ""
        return data

    def to_text(self) -> str:
        lines = [
            f"drill {self.drill_id or '-'} of {self.model}: {self.outcome.upper()}"
            + (f" ({self.reason})" if self.reason else ""),
            f"  version {self.version or '-'}, fault {self.fault}, by {self.actor or '-'}",
            f"  started {_iso(self.started_at)}" + (f", finished {_iso(self.finished_at)}" if self.finished_at else ""),
            f"  split before {_split(self.original_split)}; after {_split(self.restored_split)}",
        ]
        if self.rollback_id:
            lines.append(f"  rollback {self.rollback_id}: {self.version} -> {self.target}: {self.rollback_outcome}")
        if self.version_status_before or self.version_status_after:
            lines.append(
                f"  {self.version} registry status {self.version_status_before or '?'} -> "
                f"{self.version_status_after or '?'}"
            )
        for p in self.phases:
            took = "-" if p.seconds is None else f"{p.seconds:.3f}s"
            lines.append(f"  {p.name:<13}{took:>10}  {p.outcome:<8}{p.detail}")
        return "\n".join(lines)


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _split(weights: Mapping[str, int]) -> str:
    return " ".join(f"{v}={w}" for v, w in sorted(weights.items()) if w > 0) or "-"
