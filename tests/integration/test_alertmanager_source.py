"""A real Alertmanager 0.25 as a trigger source: webhook push (bearer auth) and API v2 pull, acting once.

The webhook receiver and the poller run in this process around one shared AlertIntake, with a decision handler
that records the TriggerEvents it receives. Alertmanager runs from the Debian package (skipped locally when it is
missing, a failure when CI is set).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.adapters.alertmanager_poller import AlertmanagerPoller, decision_submitter
from agent.alerts.auth import WebhookCredentials
from agent.alerts.config import AlertsConfig
from agent.alerts.intake import AlertIntake
from agent.alerts.metrics import AlertSourceMetrics
from agent.engine.decisions import Action, Cause
from agent.http.webhook import AlertWebhook, add_alert_webhook
from harness.alertmanager import AlertmanagerProcess, make_alert, webhook_config
from harness.ports import free_port
from harness.wait import NotYet, async_wait_until
from tests.unit.alerts.fakes import RecordingHandler

MODEL = "fraud"
TOKEN = "am-webhook-s3cret"
ROUTES = [
    {"match": {"alertname": "ModelErrorRateHigh"}, "action": "rollback"},
    {"match": {"alertname": "FeatureDriftHigh"}, "action": "hold"},
]

AlertmanagerFactory = Callable[..., AlertmanagerProcess]


class Source:
    """The agent's side: shared intake, recording handler, metrics, optionally a webhook server and a poller."""

    def __init__(self) -> None:
        self.config = AlertsConfig.model_validate({"routes": ROUTES})
        self.handler = RecordingHandler()
        self.registry = CollectorRegistry()
        self.metrics = AlertSourceMetrics(self.registry)
        self.intake = AlertIntake.from_config(self.config, MODEL, decision_submitter(self.handler))
        self.port = free_port()
        self.deliveries: list[str] = []  # "200 firing", "200 resolved", "401"...
        self._runner: web.AppRunner | None = None
        self._poll_task: asyncio.Task[None] | None = None

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/alerts"

    async def serve_webhook(self) -> None:
        @web.middleware
        async def record_deliveries(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.Response = await handler(request)
            statuses = [a["status"] for a in json.loads(response.body)["alerts"]] if response.status == 200 else []
            self.deliveries.append(" ".join([str(response.status), *statuses]))
            return response

        app = web.Application(middlewares=[record_deliveries])
        add_alert_webhook(app, AlertWebhook(self.intake, WebhookCredentials(bearer_tokens=(TOKEN,)), self.metrics))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start_polling(self, urls: list[str]) -> None:
        pull = {"urls": urls, "poll_interval_s": 0.1, "timeout_s": 0.5, "backoff_max_s": 0.4}
        config = AlertsConfig.model_validate({"routes": ROUTES, "alertmanager": pull})
        poller = AlertmanagerPoller.from_config(config, MODEL, self.intake, self.metrics)
        self._poll_task = asyncio.create_task(poller.run(), name="alertmanager-poller")

    async def close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self._poll_task
        if self._runner is not None:
            await self._runner.cleanup()

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def wait_events(self, n: int, timeout_s: float = 10.0) -> None:
        def enough() -> bool | NotYet:
            return len(self.handler.events) >= n or NotYet([e.summary for e in self.handler.events])

        await async_wait_until(enough, timeout_s, interval_s=0.02, what=f"{n} trigger event(s)")


@pytest.fixture
async def source_factory() -> AsyncIterator[Callable[..., Source]]:
    made: list[Source] = []

    def make() -> Source:
        made.append(Source())
        return made[-1]

    yield make
    for source in made:
        await source.close()


def _firing(alertname: str, **labels: str) -> dict[str, Any]:
    return make_alert(
        alertname,
        {"model": MODEL, "version": "v2", **labels},
        {"summary": f"{alertname} on v2"},
        starts_at=dt.datetime.now(dt.UTC),
    )


def _resolved(alert: dict[str, Any]) -> dict[str, Any]:
    return {**alert, "endsAt": dt.datetime.now(dt.UTC).isoformat()}


async def test_webhook_with_bearer_auth_acts_once_despite_resends_and_the_pull(
    alertmanager_factory: AlertmanagerFactory, source_factory: Callable[..., Source]
):
    source = source_factory()
    await source.serve_webhook()
    config = webhook_config(source.webhook_url, group_interval="1s", repeat_interval="1s")
    config["receivers"][0]["webhook_configs"][0]["http_config"] = {
        "authorization": {"type": "Bearer", "credentials": TOKEN}
    }
    am = await asyncio.to_thread(alertmanager_factory, config=config)
    alert = _firing("ModelErrorRateHigh")
    await asyncio.to_thread(am.post_alerts, [alert])

    await source.wait_events(1)
    # Alertmanager re-sends the group every repeat_interval (1 s): each re-send is a duplicate.
    await async_wait_until(
        lambda: source.deliveries.count("200 firing") >= 3, 10, interval_s=0.05, what="two webhook re-sends"
    )
    assert source.sample("rollback_agent_webhook_alerts_total", outcome="duplicate") >= 2
    # The same alert pulled from the API (milliseconds there, nanoseconds in the webhook) is a duplicate too.
    source.start_polling([am.url])
    await async_wait_until(
        lambda: source.sample("rollback_agent_alertmanager_pulled_alerts_total", outcome="duplicate") >= 1,
        5,
        what="the pull to see the alert",
    )
    [event] = source.handler.events
    assert (event.cause, event.action, event.version, event.resolved) == (Cause.ALERT, Action.ROLLBACK, "v2", False)
    record = event.record.alert
    assert (record.alertname, record.received_via, record.receiver) == ("ModelErrorRateHigh", "webhook", "default")
    assert record.labels["model"] == MODEL
    assert source.sample("rollback_agent_webhook_alerts_total", outcome="rejected") == 0

    # Resolving it: one resolved event, whichever of the webhook and the pull reports it first.
    await asyncio.to_thread(am.post_alerts, [_resolved(alert)])
    await source.wait_events(2)
    firing, resolved = source.handler.events
    assert resolved.resolved and resolved.version == "v2"
    assert resolved.record.alert.fingerprint == firing.record.alert.fingerprint
    await async_wait_until(
        lambda: (
            source.sample("rollback_agent_webhook_alerts_total", outcome="accepted")
            + source.sample("rollback_agent_webhook_alerts_total", outcome="duplicate")
            >= 4
        ),
        5,
        what="the resolved notification on the webhook",
    )
    assert len(source.handler.events) == 2


async def test_wrong_webhook_credentials_change_nothing(
    alertmanager_factory: AlertmanagerFactory, source_factory: Callable[..., Source]
):
    source = source_factory()
    await source.serve_webhook()
    config = webhook_config(source.webhook_url)
    config["receivers"][0]["webhook_configs"][0]["http_config"] = {
        "authorization": {"type": "Bearer", "credentials": "wrong"}
    }
    am = await asyncio.to_thread(alertmanager_factory, config=config)
    await asyncio.to_thread(am.post_alerts, [_firing("ModelErrorRateHigh")])
    await async_wait_until(lambda: "401" in source.deliveries, 5, what="a refused delivery")
    assert source.sample("rollback_agent_webhook_alerts_total", outcome="rejected") == 1
    assert source.handler.events == []


async def test_pull_acts_once_then_resolves_and_an_unreachable_alertmanager_takes_no_action(
    alertmanager_factory: AlertmanagerFactory, source_factory: Callable[..., Source]
):
    am = await asyncio.to_thread(alertmanager_factory)  # a receiver with no integrations: the pull is the only path
    source = source_factory()
    source.start_polling([am.url])
    drift = _firing("FeatureDriftHigh")
    other_model = _firing("ModelErrorRateHigh", model="credit")
    await asyncio.to_thread(am.post_alerts, [drift, other_model])

    await source.wait_events(1)
    [held] = source.handler.events
    assert (held.action, held.version, held.resolved) == (Action.HOLD, "v2", False)
    assert held.record.alert.received_via == "api"
    assert source.sample("rollback_agent_alertmanager_up", url=am.url) == 1

    await asyncio.to_thread(am.post_alerts, [_resolved(drift)])
    await source.wait_events(2)
    assert source.handler.events[1].resolved

    error_rate = _firing("ModelErrorRateHigh")
    await asyncio.to_thread(am.post_alerts, [error_rate])
    await source.wait_events(3)
    assert source.handler.events[2].action is Action.ROLLBACK

    await asyncio.to_thread(am.stop)
    await async_wait_until(
        lambda: source.sample("rollback_agent_alertmanager_poll_errors_total", url=am.url) >= 3,
        5,
        what="poll errors while Alertmanager is down",
    )
    assert source.sample("rollback_agent_alertmanager_up", url=am.url) == 0
    # The firing alert is no longer visible, but an unreachable Alertmanager is not a resolution.
    assert len(source.handler.events) == 3
    assert all(e.record.alert.labels["model"] == MODEL for e in source.handler.events)
