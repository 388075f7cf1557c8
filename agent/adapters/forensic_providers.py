"""What goes into a forensic bundle, each part read from where it lives (config, rules, registry, Envoy, memory)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from agent.adapters.archive.forensic_archive import Provider
from agent.config import AgentConfig
from agent.domain.signals import Signal, SignalHistory
from agent.log_buffer import RecentLogHandler
from agent.ports.rollback import ForensicInputs
from agent.registry import Registry
from agent.triggers.engine import RuleEngine, TickResult

WINDOWS_S = (30.0, 60.0, 300.0, 900.0)


def _dump(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def metric_windows(history: SignalHistory) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for window in WINDOWS_S:
        requests = history.delta(Signal.ENVOY_RQ_TOTAL, window)
        errors = history.delta(Signal.ENVOY_RQ_5XX, window)
        latency = history.histogram_delta(Signal.ENVOY_RQ_TIME_MS, window)
        confidence = history.histogram_delta(Signal.MODEL_CONFIDENCE, window)
        out[f"{window:.0f}s"] = {
            "coverage": history.coverage(window),
            "requests": requests,
            "errors_5xx": errors,
            "error_rate": (errors / requests) if requests and errors is not None else None,
            "latency_p50_ms": latency.quantile(0.5) if latency else None,
            "latency_p99_ms": latency.quantile(0.99) if latency else None,
            "confidence_mean": confidence.mean() if confidence else None,
            "model_requests": history.delta(Signal.MODEL_REQUESTS, window),
            "model_errors": history.delta(Signal.MODEL_ERRORS, window),
            "crashes": history.delta(Signal.HEALTH_CRASHES, window),
        }
    return out


def forensic_providers(
    config: AgentConfig,
    rules: RuleEngine,
    histories: Mapping[str, SignalHistory],
    session: aiohttp.ClientSession,
    admin_url: str,
    registry: Registry,
    log_tail: RecentLogHandler | None,
    last_tick: Callable[[], TickResult | None],
) -> dict[str, Provider]:
    async def config_in_force(inputs: ForensicInputs) -> Mapping[str, str]:
        return {"agent.json": config.model_dump_json(indent=2)}

    async def rules_in_force(inputs: ForensicInputs) -> Mapping[str, str]:
        files: dict[str, str] = {"resolved.json": _dump([r.model_dump(mode="json") for r in rules.rule_set.rules])}
        if config.rules.file is not None and config.rules.file.exists():
            files[config.rules.file.name] = config.rules.file.read_text()
        return files

    async def evaluations(inputs: ForensicInputs) -> Mapping[str, str]:
        tick = last_tick()
        statuses = [
            {
                "rule": s.rule,
                "kind": s.kind,
                "version": s.version,
                "state": s.state.value,
                "verdict": s.verdict.status.value,
                "value": s.verdict.value,
                "threshold": s.verdict.threshold,
                "window_s": s.verdict.window_s,
                "evidence": s.verdict.evidence,
                "evidence_unit": s.verdict.evidence_unit,
                "reason": s.verdict.reason,
            }
            for s in (tick.statuses if tick else ())
        ]
        return {"rule_evaluations.json": _dump(statuses)}

    async def metrics(inputs: ForensicInputs) -> Mapping[str, str]:
        return {f"{v}.json": _dump(metric_windows(h)) for v, h in histories.items()}

    async def registry_entries(inputs: ForensicInputs) -> Mapping[str, str]:
        versions = await registry.list_versions()
        return {"versions.json": _dump([v.model_dump(mode="json") for v in versions])}

    async def envoy_config(inputs: ForensicInputs) -> Mapping[str, str]:
        async with session.get(f"{admin_url}/config_dump", timeout=aiohttp.ClientTimeout(total=3)) as response:
            return {"config_dump.json": await response.text()}

    async def logs(inputs: ForensicInputs) -> Mapping[str, str]:
        return {"agent.log": log_tail.tail() if log_tail else "(log capture not enabled)\n"}

    return {
        "config": config_in_force,
        "rules": rules_in_force,
        "evaluations": evaluations,
        "metrics": metrics,
        "registry": registry_entries,
        "envoy": envoy_config,
        "logs": logs,
    }
