"""`rollback-agent drill`: a full rollback drill against the running agent, through its control API.

Progress goes to stderr as it happens (stdout with the report is then clean for `--json`); the report is written
as JSON and text to `drills.report_dir` (default: STATE_DIR/drills) and printed. Exit 0 the drill passed, 1 it
failed or was refused (the reason is printed), 2 bad usage, 3 the agent could not be reached before the drill
began. docs/drills.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.adapters.drill_faults import HookFaults, RefserverFaults
from agent.cli import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, ControlClient, _client_settings
from agent.config import AgentConfig, ConfigError, DrillsSection, load_config
from agent.domain.drill import DrillPhase
from agent.engine.drill_runner import DrillRefusal, DrillRunner, DrillStepError, FaultInjector
from agent.engine.drill_scheduler import drill_settings, write_report


class HttpDrillControl:
    """DrillControl over the control API (the CLI's token is the identity the records name)."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            status, payload = await asyncio.to_thread(self._client.call, method, path, body)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DrillStepError(
                f"cannot reach the agent at {self._client.base_url}: {getattr(exc, 'reason', exc)}"
            ) from None
        if status == 409 and path == "/v1/drill/start":
            raise DrillRefusal(str(payload.get("message", payload)))
        if status >= 400:
            raise DrillStepError(
                f"{method} {path}: {status} {payload.get('code', '')}: {payload.get('message', payload)}"
            )
        return payload

    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/status")

    async def start(self, *, version: str, fault: str, reason: str, ttl_s: float, schedule: str) -> tuple[str, str]:
        body = {"version": version, "fault": fault, "reason": reason, "ttl_s": ttl_s, "actor": _claimed_name()}
        state = await self._call("POST", "/v1/drill/start", body)
        return str(state.get("drill_id", "")), str(state.get("actor", ""))

    async def rollbacks(self) -> list[dict[str, Any]]:
        state = await self._call("GET", "/v1/drill")
        return list(state.get("rollbacks", []))

    async def finish(
        self, drill_id: str, *, outcome: str, detail: str, phases: Sequence[DrillPhase], rollback_id: str
    ) -> None:
        body = {
            "drill_id": drill_id,
            "outcome": outcome,
            "detail": detail,
            "rollback_id": rollback_id,
            "phases": [
                {"name": p.name, "duration_ms": (p.seconds or 0.0) * 1000.0, "outcome": p.outcome, "detail": p.detail}
                for p in phases
            ],
            "actor": _claimed_name(),
        }
        await self._call("POST", "/v1/drill/finish", body)

    async def set_weights(self, weights: Mapping[str, int], reason: str) -> None:
        body = {
            "weights": [{"version": v, "weight": w} for v, w in weights.items()],
            "reason": reason,
            "actor": _claimed_name(),
        }
        await self._call("POST", "/v1/traffic", body)


def _claimed_name() -> str:
    return os.environ.get("USER", "")


def _injector(args: argparse.Namespace, config: AgentConfig | None, fault: str) -> FaultInjector:
    endpoints = {v.tag: v.endpoint for v in config.versions} if config else {}
    hook = args.hook or (config.drills.hook if config else None)
    if fault == "hook" or args.hook:
        if not hook:
            raise ConfigError("--fault hook needs --hook CMD (or drills.hook in the config)")
        return HookFaults(hook, endpoints=endpoints, fault=fault)
    if config is None:
        raise ConfigError(f"--fault {fault} needs --config (the versions' endpoints), or --hook CMD")
    return RefserverFaults(endpoints, fault)


def run_drill(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    drills = config.drills if config else DrillsSection()
    fault = args.fault or ("hook" if args.hook else drills.fault)
    injector = _injector(args, config, fault)
    url, token = _client_settings(args)
    settings = drill_settings(drills, fault=fault)
    if args.detect_timeout is not None:
        settings = dataclasses.replace(settings, detect_timeout_s=args.detect_timeout)
    runner = DrillRunner(
        HttpDrillControl(ControlClient(url, token, args.timeout)),
        injector,
        settings,
        model=config.model.name if config else "",
        actor="",  # the agent names the authenticated identity when it registers the drill
        version=args.drill_version or drills.version or "",
        progress=lambda line: print(f"drill: {line}", file=sys.stderr, flush=True),
    )
    report = asyncio.run(runner.run())
    report_dir: Path | None = args.report_dir or drills.report_dir or (config.state_dir / "drills" if config else None)
    written = ""
    if report_dir is not None and report.outcome != "refused":
        try:
            json_path, text_path = write_report(report, report_dir)
            written = f"report: {json_path} and {text_path}"
        except OSError as exc:
            print(
                f"error: the drill report could not be written to {report_dir}: {exc.strerror or exc}", file=sys.stderr
            )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_text())
    if written:
        print(written, file=sys.stderr)
    if report.outcome == "passed":
        return EXIT_OK
    if report.outcome == "failed" and not report.drill_id and "cannot reach the agent" in report.reason:
        return EXIT_UNREACHABLE
    return EXIT_FAILED
