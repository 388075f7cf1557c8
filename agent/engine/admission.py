"""Admission: the one component between triggers (rule verdicts, alerts, operators) and the rollback procedure.

It owns every reason not to act, in one place, all of it surviving a restart:

* one dedupe memory: an occurrence (an alert's fingerprint@startsAt/status) acts once; an attempt that raised is
  forgotten so the retry acts; an escalated one may act again after a hold-off. Rebuilt at start-up from the
  audit trail (every trigger that acted carries its key), so a crash-looping agent does not act twice;
* pause (the traffic controller's persisted automation flag);
* holds: no weight increase of a held version, enforced by the traffic controller's guards for every change;
  persisted as settings written with their HoldChanged records;
* cooldown (no ping-pong) and the hourly cap on automatic rollbacks, rebuilt from the trail's rollback records.

The rollback procedure itself is the orchestrator's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from agent.alerts.config import AlertsConfig
from agent.alerts.dedupe import Dedupe
from agent.config import RollbackSection
from agent.engine.decisions import Action, Cause, Decision, DecisionOutcome, TriggerEvent, actor_of
from agent.engine.traffic import TrafficChangeError, TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StateStore, StoreUnavailableError

log = logging.getLogger(__name__)

HOLD_PREFIX = "hold:"
PIN_PREFIX = "pin:"


class Procedure(Protocol):
    async def run(self, event: TriggerEvent, failing: str, entered: float) -> Decision:
        """Carry out a rollback of `failing` (the caller has admitted it)."""
        ...

    async def record_suppressed(self, event: TriggerEvent, failing: str, why: str) -> None: ...


class Admission:
    def __init__(
        self,
        *,
        traffic: TrafficController,
        store: StateStore,
        procedure: Procedure,
        rollback: RollbackSection | None = None,
        alerts: AlertsConfig | None = None,
        statuses: Callable[[], Mapping[str, str]] = dict,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._traffic = traffic
        self._store = store
        self._procedure = procedure
        # The config sections as they are: cooldown and cap from `rollback`, the dedupe memory from `alerts`.
        self.rollback = rollback or RollbackSection()
        self.alerts = alerts or AlertsConfig()
        self._statuses = statuses
        self._wall = wall_clock
        self._dedupe = Dedupe(
            ttl_s=self.alerts.dedupe_ttl_s, max_entries=self.alerts.dedupe_max_entries, clock=monotonic
        )
        self._lock = asyncio.Lock()
        self._recent: deque[float] = deque()  # wall times of automatic rollbacks, for the hourly cap
        self._last_rollback: tuple[float, str] | None = None  # (wall time, target)
        self.holds: dict[str, str] = {}
        # version -> why an operator pinned it: automation moves no traffic away from it (docs/leases.md).
        self.pins: dict[str, str] = {}
        # While a rollout of the failing version runs, an automatic rollback becomes the rollout's breach (back one
        # stage, or to stable): agent.engine.rollout.RolloutDriver.on_breach; None when it is not the rollout's.
        self.rollout_breach: Callable[[TriggerEvent, str], Awaitable[Decision | None]] | None = None
        traffic.guards = self.blockers

    # -- state ----------------------------------------------------------------------------------------------------

    async def restore(self, records: Sequence[audit_pb2.AuditRecord]) -> None:
        """Rebuild the memory from the persisted holds and the tail of the audit trail."""
        holds = await self._store.settings_with_prefix(HOLD_PREFIX)
        self.holds = {key.removeprefix(HOLD_PREFIX): why for key, why in holds.items()}
        pins = await self._store.settings_with_prefix(PIN_PREFIX)
        self.pins = {key.removeprefix(PIN_PREFIX): why for key, why in pins.items()}
        now = self._wall()
        escalated: set[str] = set()  # keys whose last attempt escalated: retried after the hold-off, as before
        for record in records:
            which = record.WhichOneof("event")
            trigger: audit_pb2.Trigger | None = None
            if which == "traffic_intent":
                trigger = record.traffic_intent.trigger
            elif which == "rollback":
                trigger = record.rollback.trigger
                if record.rollback.outcome == "switched":  # each rollback that moved traffic, once
                    at = record.at.ToNanoseconds() / 1e9
                    self._last_rollback = (at, record.rollback.to_version)
                    if trigger.WhichOneof("source") != "operator" and now - at < 3600:
                        self._recent.append(at)
            too_old = now - record.at.ToNanoseconds() / 1e9 > self.alerts.dedupe_ttl_s
            if trigger is not None and trigger.dedupe_key and not too_old:
                self._dedupe.claim(trigger.dedupe_key)
                if which == "rollback" and record.rollback.outcome in ("no_eligible_target", "switch_failed"):
                    escalated.add(trigger.dedupe_key)
                else:
                    escalated.discard(trigger.dedupe_key)
        for key in escalated:
            self._dedupe.retry_after(key, self.alerts.escalation_retry_s)
        if self.holds or self._recent or self._last_rollback:
            log.info(
                "admission restored: holds %s, %d automatic rollback(s) in the last hour, last rollback to %s",
                self.holds or "none",
                len(self._recent),
                self._last_rollback[1] if self._last_rollback else "-",
            )

    def blockers(self, version: str) -> Sequence[str]:
        """Why `version` must not receive more traffic (the traffic controller's guards)."""
        reasons = []
        status = self._statuses().get(version, "")
        if status in ("failed", "quarantined"):
            reasons.append(f"its registry status is {status} (rolled back or under investigation)")
        if version in self.holds:
            reasons.append(f"held: {self.holds[version]}")
        return reasons

    async def set_hold(self, version: str, held: bool, *, reason: str, actor: str) -> None:
        """Start or end a hold (operator or alert); persisted with its audit record."""
        if version not in self._traffic.versions:
            raise TrafficChangeError(
                "invalid_argument", f"unknown version {version!r}; this model has {', '.join(self._traffic.versions)}"
            )
        value = (reason or "held by operator") if held else ""
        event = audit_pb2.HoldChanged(version=version, held=held, reason=reason)
        try:
            await self._store.record_setting(HOLD_PREFIX + version, value, event, actor)
        except StoreUnavailableError as exc:
            raise TrafficChangeError("unavailable", f"{exc}; hold unchanged") from None
        if held:
            self.holds[version] = value
        else:
            self.holds.pop(version, None)
        log.warning("%s %s by %s: %s", "hold on" if held else "hold released on", version, actor, reason)

    async def set_pin(self, version: str, pinned: bool, *, reason: str, actor: str) -> None:
        """Pin a version (automatic rollbacks that would move traffic away from it are suppressed, with the pin's
        reason on record) or unpin it; persisted with its audit record."""
        if version not in self._traffic.versions:
            raise TrafficChangeError(
                "invalid_argument", f"unknown version {version!r}; this model has {', '.join(self._traffic.versions)}"
            )
        if pinned and self._traffic.desired.weight(version) <= 0:
            raise TrafficChangeError(
                "refused",
                f"{version} receives no traffic (serving {dict(self._traffic.desired.weights)}); pin a "
                "version that serves",
            )
        if not pinned and version not in self.pins:
            raise TrafficChangeError("invalid_argument", f"{version} is not pinned")
        value = (reason or "pinned by operator") if pinned else ""
        event = audit_pb2.PinChanged(version=version, pinned=pinned, reason=reason)
        try:
            await self._store.record_setting(PIN_PREFIX + version, value, event, actor)
        except StoreUnavailableError as exc:
            raise TrafficChangeError("unavailable", f"{exc}; pin unchanged") from None
        if pinned:
            self.pins[version] = value
        else:
            self.pins.pop(version, None)
        log.warning("%s %s by %s: %s", "pinned" if pinned else "unpinned", version, actor, reason)

    def pinned_against(self, failing: str) -> str:
        """Why moving traffic away from `failing` (to the stable version, or the registry's choice) is suppressed:
        `failing` is pinned, or another pinned version serves beside it and could lose its traffic; else ""."""
        if failing in self.pins:
            return f"{failing} is pinned by an operator ({self.pins[failing]})"
        policy = self._traffic.desired
        for version, why in self.pins.items():
            if version != self._traffic.stable and policy.weight(version) > 0:
                return f"{version} is pinned by an operator ({why}) and serves beside {failing}"
        return ""

    # -- deciding -------------------------------------------------------------------------------------------------

    async def handle(self, event: TriggerEvent) -> Decision:
        entered = time.perf_counter()
        key = event.dedupe_key
        if key and not event.record.dedupe_key:
            event.record.dedupe_key = key  # persisted with the trigger: the memory survives a restart
        if key and not self._dedupe.claim(key):
            return Decision(DecisionOutcome.DUPLICATE, f"duplicate of an event already handled ({key})")
        try:
            decision = await self._decide(event, entered)
        except BaseException:
            if key:
                self._dedupe.release(key)  # acting failed: the retry must act
            raise
        if key and decision.outcome is DecisionOutcome.FAILED:
            self._dedupe.retry_after(key, self.alerts.escalation_retry_s)
        return decision

    async def _decide(self, event: TriggerEvent, entered: float) -> Decision:
        if event.resolved:
            return await self._release_hold(event)
        failing = self._failing_version(event)
        if event.action is Action.HOLD:
            version = event.version or failing
            if version is None:
                return Decision(DecisionOutcome.RECORDED, self._nothing_to_do(event))
            await self.set_hold(version, True, reason=event.summary, actor=actor_of(event))
            return Decision(DecisionOutcome.HELD, f"weight increases of {version} held: {event.summary}")
        if failing is None:
            return Decision(DecisionOutcome.RECORDED, self._nothing_to_do(event))
        if event.action is Action.ALERT:
            log.warning("alert-only trigger for %s: %s", failing, event.summary)
            return Decision(DecisionOutcome.RECORDED, f"alert only: {event.summary}")
        async with self._lock:
            # The world may have changed while we waited (another rollback finished).
            failing = self._failing_version(event)
            if failing is None:
                return Decision(DecisionOutcome.RECORDED, self._nothing_to_do(event))
            if (
                self.rollout_breach is not None
                and event.cause is not Cause.OPERATOR
                and not self._traffic.automation.paused
                and not self.pinned_against(failing)
            ):
                handled = await self.rollout_breach(event, failing)
                if handled is not None:
                    return handled
            suppressed = self._suppression(event, failing)
            if suppressed:
                await self._procedure.record_suppressed(event, failing, suppressed)
                log.warning("rollback of %s suppressed: %s (%s)", failing, suppressed, event.summary)
                return Decision(DecisionOutcome.SUPPRESSED, suppressed)
            decision = await self._procedure.run(event, failing, entered)
            if decision.outcome is DecisionOutcome.ROLLED_BACK:
                at = self._wall()
                self._last_rollback = (at, decision.target)
                if event.cause is not Cause.OPERATOR:
                    self._recent.append(at)
            return decision

    def _failing_version(self, event: TriggerEvent) -> str | None:
        policy = self._traffic.desired
        if event.version is not None:
            return event.version if policy.weight(event.version) > 0 else None
        serving = [v for v in policy.serving() if v != self._traffic.stable]
        if event.cause is Cause.OPERATOR and event.target is not None:
            # An operator naming the target rolls back from whatever else serves, the stable version included.
            serving = [v for v in [*serving, *policy.serving()] if v != event.target]
        return serving[0] if serving else None

    def _nothing_to_do(self, event: TriggerEvent) -> str:
        policy = self._traffic.desired
        who = event.version or "a non-stable version"
        return f"{who} receives no traffic (serving {dict(policy.weights)}); nothing to roll back: {event.summary}"

    def _suppression(self, event: TriggerEvent, failing: str) -> str:
        if event.cause is Cause.OPERATOR:
            return ""
        if self._traffic.automation.paused:
            return f"automation paused by an operator ({self._traffic.automation.reason})"
        pinned = self.pinned_against(failing)
        if pinned:
            return pinned
        now = self._wall()
        # The cooldown stops ping-pong: right after a rollback moved traffic to a version, accusing that version
        # waits. A version that someone routed traffic to since (a new canary) is rolled back at once.
        if self._last_rollback is not None:
            at, target = self._last_rollback
            if failing == target and now - at < self.rollback.cooldown_s:
                left = self.rollback.cooldown_s - (now - at)
                return f"cooldown: the last rollback moved traffic to {failing} {now - at:.0f}s ago ({left:.0f}s left)"
        while self._recent and now - self._recent[0] > 3600:
            self._recent.popleft()
        if len(self._recent) >= self.rollback.max_per_hour:
            return (
                f"rate cap: {len(self._recent)} automatic rollbacks in the last hour (max {self.rollback.max_per_hour})"
            )
        return ""

    async def _release_hold(self, event: TriggerEvent) -> Decision:
        released = [v for v in list(self.holds) if event.version is None or v == event.version]
        for version in released:
            await self.set_hold(version, False, reason=event.summary, actor=actor_of(event))
        if released:
            return Decision(DecisionOutcome.HOLD_RELEASED, f"hold on {', '.join(released)} released: {event.summary}")
        return Decision(DecisionOutcome.RECORDED, f"resolved: {event.summary}; no traffic moves on a resolved alert")

    def forget_last_rollback(self) -> None:
        """A follow-up of the same incident (verification failed: next target) is not held by the cooldown."""
        self._last_rollback = None
