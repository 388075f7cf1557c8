"""One rollback drill from start to end, against a running agent: the procedure `rollback-agent drill` and the
scheduled drills share.

check the preconditions -> register the drill with the agent (on record) -> inject the fault -> wait for the
rollback it causes (detection, decision, switch from its audit record; the switch also from the served weights) ->
wait for its verification -> clear the fault -> wait until the drilled version's rules are quiet -> restore the
original split -> check the drilled version kept its status -> finish the drill with its result (on record,
metrics). Whatever happens after the fault went in, the fault is cleared, the split restored and the drill
finished; a step that fails names why in the report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from agent.domain.drill import (
    DrillPhase,
    DrillReport,
    DrillSituation,
    drilled_version,
)

T = TypeVar("T")


class DrillStepError(Exception):
    """A step of the drill could not be done (the agent refused it or could not be reached); the message says why."""


class DrillRefusal(DrillStepError):
    """The agent refused to register the drill (a precondition failed)."""


class DrillControl(Protocol):
    """The running agent, as the drill needs it (the control API, or the agent's own engine for scheduled drills)."""

    async def status(self) -> dict[str, Any]:
        """The status, as the proto JSON mapping of `Status` (field names as in the proto)."""
        ...

    async def start(self, *, version: str, fault: str, reason: str, ttl_s: float, schedule: str) -> tuple[str, str]:
        """Register the drill; its id and the identity the agent recorded. DrillRefusal when a precondition fails."""
        ...

    async def rollbacks(self) -> list[dict[str, Any]]:
        """The Rollback records of the registered drill so far (proto JSON mapping), oldest first."""
        ...

    async def finish(
        self, drill_id: str, *, outcome: str, detail: str, phases: Sequence[DrillPhase], rollback_id: str
    ) -> None: ...

    async def set_weights(self, weights: Mapping[str, int], reason: str) -> None: ...


class FaultInjector(Protocol):
    async def inject(self, version: str) -> str:
        """Put the fault into `version`; a line saying what was done. DrillStepError when it cannot."""
        ...

    async def clear(self, version: str) -> str: ...


@dataclass(frozen=True, slots=True)
class DrillSettings:
    fault: str = "errors"
    detect_timeout_s: float = 60.0  # fault -> the rollback switched
    verify_timeout_s: float = 300.0  # switched -> its verification finished
    settle_timeout_s: float = 300.0  # the switch -> the restore: the fault's requests out of every rule window
    watch_after_restore_s: float = 5.0  # the restored split must stand this long (no new rollback)
    ttl_s: float = 900.0
    poll_interval_s: float = 0.1
    reason: str = "rollback drill"
    schedule: str = ""


def _ms(phase: Mapping[str, Any] | None) -> float:
    return float(phase.get("duration_ms", 0.0)) if phase else 0.0


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class DrillRunner:
    def __init__(
        self,
        control: DrillControl,
        injector: FaultInjector,
        settings: DrillSettings,
        *,
        model: str,
        actor: str,
        version: str = "",
        progress: Callable[[str], None] = lambda _line: None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._control = control
        self._injector = injector
        self.settings = settings
        self._requested = version
        self._progress = progress
        self._wall = wall_clock
        self._mono = monotonic
        self._switched_at: float | None = None  # when the drilled version stopped receiving traffic
        self._longest_window_s = 0.0
        self.report = DrillReport(
            drill_id="", model=model, version=version, fault=settings.fault, actor=actor, started_at=wall_clock()
        )

    def _say(self, line: str) -> None:
        self.report.progress.append(line)
        self._progress(line)

    async def _poll(self, probe: Callable[[], Awaitable[T | None]], timeout_s: float) -> T | None:
        deadline = self._mono() + timeout_s
        while True:
            value = await probe()
            if value is not None or self._mono() >= deadline:
                return value
            await asyncio.sleep(self.settings.poll_interval_s)

    async def run(self) -> DrillReport:
        report = self.report
        try:
            status = await self._control.status()
        except DrillStepError as exc:
            return self._end("failed", str(exc))
        situation = DrillSituation.from_status(status)
        self._longest_window_s = _longest_window(status)  # rules of a version without traffic leave the status
        version = drilled_version(situation, self._requested)
        report.version = version
        report.original_split = {v: w for v, w in situation.desired.items() if w > 0}
        report.version_status_before = situation.statuses.get(version, "")
        s = self.settings  # the agent checks every precondition (and counts a refusal)
        try:
            report.drill_id, report.actor = await self._control.start(
                version=version, fault=s.fault, reason=s.reason, ttl_s=s.ttl_s, schedule=s.schedule
            )
        except DrillRefusal as exc:
            return self._end("refused", str(exc))
        except DrillStepError as exc:
            return self._end("failed", str(exc))
        self._say(f"drill {report.drill_id} registered: {version} gets fault {s.fault}; split {_split(situation)}")
        injected_at = self._wall()
        failure = ""
        try:
            self._say(await self._injector.inject(version))
            failure = await self._observe(version, injected_at)
        except DrillStepError as exc:
            failure = str(exc)
        failure = await self._restore(version, failure)
        report.phases.append(DrillPhase("total", self._wall() - report.started_at, "ok" if not failure else "failed"))
        outcome = "failed" if failure else "passed"
        try:
            await self._control.finish(
                report.drill_id,
                outcome=outcome,
                detail=failure or self._summary(),
                phases=report.phases,
                rollback_id=report.rollback_id,
            )
        except DrillStepError as exc:
            failure = failure or f"the result could not be recorded: {exc}"
            outcome = "failed"
        return self._end(outcome, failure)

    async def _observe(self, version: str, injected_at: float) -> str:
        """Wait for the rollback the fault causes and measure it; "" or why the drill failed."""
        s, report = self.settings, self.report

        async def switched() -> dict[str, Any] | None:
            return next(iter(await self._control.rollbacks()), None)

        first = await self._poll(switched, s.detect_timeout_s)
        if first is None:
            report.phases.append(DrillPhase("detection", None, "failed", f"no rollback within {s.detect_timeout_s}s"))
            return f"fault not detected: no rollback of {version} within {s.detect_timeout_s:g}s"
        report.rollback_id = str(first.get("rollback_id", ""))
        report.target = str(first.get("to_version", ""))
        phases = {p.get("name", ""): p for p in first.get("phases", [])}
        detect = phases.get("detect")
        trigger_at = _at(detect["started_at"]) if detect and detect.get("started_at") else injected_at
        trigger = _trigger_text(first.get("trigger", {}))
        report.phases.append(
            DrillPhase("detection", max(0.0, trigger_at - injected_at), "ok", f"fault -> trigger: {trigger}")
        )
        decision_ms = sum(_ms(phases.get(n)) for n in ("detect", "select", "validate", "warm"))
        report.phases.append(
            DrillPhase("decision", decision_ms / 1000.0, "ok", f"target {report.target or '-'} chosen")
        )
        switch = phases.get("switch")
        if not report.target or (switch or {}).get("outcome") == "failed":
            detail = first.get("detail", "") or (switch or {}).get("detail", "")
            report.phases.append(DrillPhase("switch", _ms(switch) / 1000.0, "failed", detail))
            report.rollback_outcome = str(first.get("outcome", ""))
            return f"the rollback did not move traffic ({first.get('outcome', '')}: {detail})"
        self._say(
            f"rollback {report.rollback_id}: {version} -> {report.target} ({trigger}); "
            f"switch ACKed in {_ms(switch):.1f} ms"
        )

        async def off_version() -> float | None:
            served = await self._served()
            return self._wall() if served.get(version, 0) == 0 and served.get(report.target, 0) > 0 else None

        served_at = await self._poll(off_version, 10.0)
        self._switched_at = served_at or self._wall()
        seen = f"; served by Envoy {served_at - injected_at:.2f}s after the fault" if served_at else ""
        report.phases.append(
            DrillPhase(
                "switch", _ms(switch) / 1000.0, "ok" if served_at else "failed", (switch or {}).get("detail", "") + seen
            )
        )
        if served_at is None:
            return f"Envoy does not serve the rollback: {version} still has traffic 10s after the switch"
        self._say(f"traffic on {report.target}; verifying (window of the agent's rollback.verify_window_s)")

        async def verified() -> dict[str, Any] | None:
            records = await self._control.rollbacks()
            done = [r for r in records if r.get("rollback_id") == report.rollback_id and r.get("outcome") != "switched"]
            return done[-1] if done else None

        final = await self._poll(verified, s.verify_timeout_s)
        if final is None:
            report.phases.append(DrillPhase("verification", None, "failed", "no result"))
            return f"the verification of {report.target} gave no result within {s.verify_timeout_s:.0f}s"
        report.rollback_outcome = str(final.get("outcome", ""))
        final_phases = {p.get("name", ""): p for p in final.get("phases", [])}
        verify_s = (_ms(final_phases.get("confirm")) + _ms(final_phases.get("verify"))) / 1000.0
        ok = report.rollback_outcome in ("recovered", "inconclusive")
        report.phases.append(
            DrillPhase(
                "verification",
                verify_s,
                "ok" if ok else "failed",
                f"{report.rollback_outcome}: {final.get('detail', '')}",
            )
        )
        self._say(f"verification of {report.target}: {report.rollback_outcome}")
        return "" if ok else f"the rollback ended {report.rollback_outcome}: {final.get('detail', '')}"

    async def _restore(self, version: str, failure: str) -> str:
        """Clear the fault, wait for the version's rules to be quiet, put the original split back, check it."""
        s, report = self.settings, self.report
        try:
            self._say(await self._injector.clear(version))
        except DrillStepError as exc:
            failure = failure or f"the fault could not be cleared: {exc}"
            self._say(f"fault NOT cleared: {exc}")

        started = self._wall()
        try:
            await self._settle(version)
            self._say(f"restoring the split {_split_of(report.original_split)}")
            await self._control.set_weights(
                report.original_split, f"drill {report.drill_id}: restore the original split"
            )
            rolled_back_again = await self._poll(self._another_rollback, s.watch_after_restore_s)
            served = await self._served()
            status = await self._control.status()
        except DrillStepError as exc:
            report.phases.append(DrillPhase("restore", None, "failed", str(exc)))
            return failure or f"the original split could not be restored: {exc}"
        report.restored_split = {v: w for v, w in served.items() if w > 0}
        report.version_status_after = next(
            (v.get("registry_status", "") for v in status.get("versions", []) if v.get("version") == version), ""
        )
        problems = []
        if rolled_back_again:
            problems.append(f"the restored split was rolled back again (rollback {rolled_back_again})")
        if report.restored_split != report.original_split:
            problems.append(f"Envoy serves {_split_of(report.restored_split)}, not {_split_of(report.original_split)}")
        if report.version_status_after != report.version_status_before:
            problems.append(
                f"{version} is {report.version_status_after} after the drill (was {report.version_status_before})"
            )
        firing = sorted(
            r.get("rule", "?")
            for r in status.get("rules", [])
            if r.get("version") == version and r.get("state") == "firing"
        )
        note = (
            f"; rules still firing on {version} until their clear_after of healthy traffic: {', '.join(firing)}"
            if firing
            else ""
        )
        report.phases.append(
            DrillPhase(
                "restore",
                self._wall() - started,
                "failed" if problems else "ok",
                ("; ".join(problems) or f"served {_split_of(report.restored_split)}") + note,
            )
        )
        self._say(f"split restored: {_split_of(report.restored_split)}{note}" if not problems else "; ".join(problems))
        return failure or "; ".join(problems)

    async def _settle(self, version: str) -> None:
        """Before the restore: the fault's requests must have left every rule window, or the restored traffic would
        be judged with them and rolled back again. The drilled version got no traffic since the switch, so that
        is the longest rule window after the switch (capped by settle_timeout_s); no rule may be pending either."""
        s = self.settings
        longest = max(self._longest_window_s, _longest_window(await self._control.status()))
        ready_at = (self._switched_at or 0.0) + longest + 1.0  # + one sampling interval
        wait_s = max(0.0, ready_at - self._wall())
        if wait_s > s.settle_timeout_s:
            self._say(f"the longest rule window ({longest:g}s) outlasts settle_timeout_s ({s.settle_timeout_s:g}s)")
        elif wait_s > 0:
            self._say(f"waiting {wait_s:.1f}s until the fault's requests leave the rule windows ({longest:g}s)")

        async def settled() -> bool | None:
            if self._wall() < ready_at:
                return None
            status = await self._control.status()
            pending = [
                r for r in status.get("rules", []) if r.get("version") == version and r.get("state") == "pending"
            ]
            return True if not pending else None

        if await self._poll(settled, s.settle_timeout_s) is None:
            self._say(f"not settled after {s.settle_timeout_s:g}s; restoring anyway")

    async def _another_rollback(self) -> str | None:
        """The id of a rollback of the drill other than the one it measured (the restore undone), or None."""
        ids = {str(r.get("rollback_id", "")) for r in await self._control.rollbacks()}
        others = sorted(ids - {self.report.rollback_id, ""})
        return others[0] if others else None

    async def _served(self) -> dict[str, int]:
        status = await self._control.status()
        return {v.get("version", ""): int(v.get("served_weight", 0) or 0) for v in status.get("versions", [])}

    def _summary(self) -> str:
        figures = ", ".join(f"{p.name} {p.seconds:.3f}s" for p in self.report.phases if p.seconds is not None)
        return f"rollback {self.report.rollback_id} {self.report.rollback_outcome}; {figures}"

    def _end(self, outcome: str, reason: str) -> DrillReport:
        self.report.outcome = outcome
        self.report.reason = reason
        self.report.finished_at = self._wall()
        self._say(f"drill {outcome}" + (f": {reason}" if reason else ""))
        return self.report


def _longest_window(status: Mapping[str, Any]) -> float:
    return max((float(r.get("window_s", 0.0) or 0.0) for r in status.get("rules", [])), default=0.0)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value or "?")


def _trigger_text(trigger: Mapping[str, Any]) -> str:
    if "rule" in trigger:
        rule = trigger["rule"]
        return f"rule {rule.get('rule', '?')} {_number(rule.get('value'))} vs {_number(rule.get('threshold'))}"
    if "alert" in trigger:
        return f"alert {trigger['alert'].get('alertname', '?')}"
    if "operator" in trigger:
        return f"operator {trigger['operator'].get('identity', '?')}"
    return "?"


def _split(situation: DrillSituation) -> str:
    return _split_of({v: w for v, w in situation.desired.items() if w > 0})


def _split_of(weights: Mapping[str, int]) -> str:
    return " ".join(f"{v}={w}" for v, w in sorted(weights.items())) or "nothing"
