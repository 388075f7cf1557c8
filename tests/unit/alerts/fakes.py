"""Shared builders for the alert tests: payloads as Alertmanager sends them, and a recording DecisionHandler."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from agent.adapters.alertmanager_poller import decision_submitter
from agent.alerts.config import AlertsConfig
from agent.alerts.intake import AlertIntake
from agent.engine.decisions import Action, Decision, DecisionOutcome, TriggerEvent

MODEL = "fraud"
STARTS = "2026-11-22T03:46:39.07448123Z"  # the webhook sends up to nanoseconds
STARTS_MS = "2026-11-22T03:46:39.074Z"  # the API v2 sends milliseconds
UNSET = "0001-01-01T00:00:00Z"

ROUTES: list[dict[str, Any]] = [
    {"name": "errors", "match": {"alertname": "ModelErrorRateHigh"}, "action": "rollback"},
    {"name": "drift", "match": {"alertname": {"regex": "FeatureDrift.*"}, "severity": "warning"}, "action": "hold"},
    {"name": "by-label", "match": {"team": "ml"}, "action": "from_label"},
    {"name": "fleet", "match": {"alertname": "GpuNodeDown"}, "any_model": True, "action": "alert"},
]


def alerts_config(**overrides: Any) -> AlertsConfig:
    raw: dict[str, Any] = {"routes": ROUTES}
    raw.update(overrides)
    return AlertsConfig.model_validate(raw)


def wire_alert(
    alertname: str = "ModelErrorRateHigh",
    *,
    status: str = "firing",
    fingerprint: str = "8c525571fc3b84a1",
    starts_at: str = STARTS,
    ends_at: str = UNSET,
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": alertname, "model": MODEL, "version": "v2", **labels},
        "annotations": {"summary": f"{alertname} on v2"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    alerts = alerts or (wire_alert(),)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ModelErrorRateHigh"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rollback-agent",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [copy.deepcopy(a) for a in alerts],
    }


def api_alert(
    alertname: str = "ModelErrorRateHigh",
    *,
    fingerprint: str = "8c525571fc3b84a1",
    starts_at: str = STARTS_MS,
    state: str = "active",
    silenced_by: tuple[str, ...] = (),
    **labels: str,
) -> dict[str, Any]:
    return {
        "labels": {"alertname": alertname, "model": MODEL, "version": "v2", **labels},
        "annotations": {"summary": f"{alertname} on v2"},
        "startsAt": starts_at,
        "endsAt": "2026-11-22T03:51:39.075Z",
        "updatedAt": "2026-11-22T03:46:39.075Z",
        "generatorURL": "",
        "fingerprint": fingerprint,
        "status": {"state": state, "silencedBy": list(silenced_by), "inhibitedBy": []},
        "receivers": [{"name": "rollback-agent"}],
    }


class RecordingHandler:
    """A DecisionHandler that records every event; `fail` makes the next calls raise."""

    def __init__(self) -> None:
        self.events: list[TriggerEvent] = []
        self.fail: Exception | None = None
        self.arrived = asyncio.Event()  # set on every recorded event

    async def handle(self, event: TriggerEvent) -> Decision:
        if self.fail is not None:
            raise self.fail
        self.events.append(event)
        self.arrived.set()
        if event.resolved:
            return Decision(DecisionOutcome.HOLD_RELEASED, "released")
        outcome = {
            Action.ROLLBACK: DecisionOutcome.ROLLED_BACK,
            Action.HOLD: DecisionOutcome.HELD,
            Action.ALERT: DecisionOutcome.RECORDED,
        }[event.action]
        return Decision(outcome, f"{outcome.value}: {event.summary}", rollback_id="r1")


def make_intake(handler: RecordingHandler, config: AlertsConfig | None = None) -> AlertIntake:
    return AlertIntake.from_config(config or alerts_config(), MODEL, decision_submitter(handler))
