"""Scheduled drills (`drills.schedule` in the config): the agent runs the drill itself at each scheduled minute.

The drill talks to the agent's own engine instead of the control API (same checks, same records, actor
`schedule:drills`). A scheduled drill whose preconditions fail is skipped: counted
(rollback_agent_drill_runs_total{outcome="skipped"}) and logged with every reason, never queued for later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from agent.config import DrillsSection
from agent.domain.drill import DrillPhase, DrillReport, DrillSituation, drilled_version
from agent.domain.drill_schedule import Schedule
from agent.engine.drill import DrillDesk, DrillRefusedError
from agent.engine.drill_runner import (
    DrillControl,
    DrillRefusal,
    DrillRunner,
    DrillSettings,
    DrillStepError,
    FaultInjector,
)
from agent.engine.traffic import TrafficChangeError, TrafficController

log = logging.getLogger(__name__)

SCHEDULE_ACTOR = "schedule:drills"


class InProcessDrillControl:
    """DrillControl on the agent's own engine (a scheduled drill)."""

    def __init__(self, desk: DrillDesk, traffic: TrafficController, status: Callable[[], dict[str, Any]]) -> None:
        self._desk = desk
        self._traffic = traffic
        self._status = status

    async def status(self) -> dict[str, Any]:
        return self._status()

    async def start(self, *, version: str, fault: str, reason: str, ttl_s: float, schedule: str) -> tuple[str, str]:
        situation = DrillSituation.from_status(self._status())
        try:
            drill = await self._desk.start(
                situation,
                version=version or drilled_version(situation),
                fault=fault,
                reason=reason,
                actor=SCHEDULE_ACTOR,
                ttl_s=ttl_s,
                schedule=schedule,
            )
        except DrillRefusedError as exc:
            raise DrillRefusal(str(exc)) from None
        return drill.drill_id, drill.actor

    async def rollbacks(self) -> list[dict[str, Any]]:
        drill = self._desk.current
        if drill is None:
            return []
        return [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in drill.rollbacks.values()]

    async def finish(
        self, drill_id: str, *, outcome: str, detail: str, phases: Sequence[DrillPhase], rollback_id: str
    ) -> None:
        try:
            await self._desk.finish(
                drill_id, outcome=outcome, detail=detail, phases=phases, rollback_id=rollback_id, actor=SCHEDULE_ACTOR
            )
        except LookupError as exc:
            raise DrillStepError(str(exc)) from None

    async def set_weights(self, weights: Mapping[str, int], reason: str) -> None:
        try:
            await self._traffic.set_weights(dict(weights), reason=reason, actor=SCHEDULE_ACTOR)
        except TrafficChangeError as exc:
            raise DrillStepError(str(exc)) from None


def drill_settings(drills: DrillsSection, *, fault: str | None = None, schedule: str = "") -> DrillSettings:
    return DrillSettings(
        fault=fault or drills.fault,
        detect_timeout_s=drills.detect_timeout_s,
        verify_timeout_s=drills.verify_timeout_s,
        settle_timeout_s=drills.settle_timeout_s,
        ttl_s=drills.ttl_s,
        reason=f"scheduled drill ({schedule})" if schedule else "rollback drill",
        schedule=schedule,
    )


def write_report(report: DrillReport, directory: Path) -> tuple[Path, Path]:
    """drill-<time>-<id>.json and .txt in `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(report.started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = directory / f"drill-{stamp}-{report.drill_id or report.outcome}"
    json_path, text_path = stem.with_suffix(".json"), stem.with_suffix(".txt")
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    text_path.write_text(report.to_text() + "\n")
    return json_path, text_path


class DrillScheduler:
    def __init__(
        self,
        *,
        schedule: Schedule,
        control: DrillControl,
        injector: FaultInjector,
        settings: DrillSettings,
        model: str,
        report_dir: Path,
        version: str = "",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.schedule = schedule
        self._control = control
        self._injector = injector
        self._settings = settings
        self._model = model
        self._report_dir = report_dir
        self._version = version
        self._wall = wall_clock

    async def run(self) -> None:
        """Run forever: sleep until the next scheduled minute, drill, repeat."""
        while True:
            now = datetime.fromtimestamp(self._wall(), UTC)
            due = self.schedule.next_after(now)
            if due is None:
                log.error("drill schedule %r names no time in the next five years", self.schedule.expression)
                return
            log.info("next scheduled drill at %s", due.isoformat())
            await asyncio.sleep(max(0.0, due.timestamp() - self._wall()))
            await self.drill_once()

    async def drill_once(self) -> DrillReport:
        runner = DrillRunner(
            self._control,
            self._injector,
            self._settings,
            model=self._model,
            actor=SCHEDULE_ACTOR,
            version=self._version,
            progress=lambda line: log.info("scheduled drill: %s", line),
        )
        report = await runner.run()
        if report.outcome == "refused":
            log.warning("scheduled drill skipped: %s", report.reason)
            return report
        try:
            paths = await asyncio.to_thread(write_report, report, self._report_dir)
            log.warning("scheduled drill %s: %s; report %s", report.drill_id, report.outcome, paths[0])
        except OSError as exc:
            log.error(
                "scheduled drill %s: %s; the report could not be written: %s", report.drill_id, report.outcome, exc
            )
        return report
