import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from agent.adapters.alertmanager_poller import AlertmanagerPoller
from agent.alerts.config import AlertmanagerSection
from agent.alerts.metrics import AlertSourceMetrics
from agent.alerts.payload import parse_webhook_payload
from agent.engine.decisions import Action
from harness.ports import free_port
from tests.unit.alerts.fakes import (
    MODEL,
    ROUTES,
    RecordingHandler,
    alerts_config,
    api_alert,
    make_intake,
    payload,
    wire_alert,
)


class FakeAlertmanager:
    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.status = 200
        self.body: bytes | None = None
        self.queries: list[list[tuple[str, str]]] = []
        self.app = web.Application()
        self.app.router.add_get("/api/v2/alerts", self._get)
        self.server = TestServer(self.app, host="127.0.0.1")

    async def _get(self, request: web.Request) -> web.Response:
        self.queries.append(list(request.query.items()))
        if self.status != 200:
            return web.Response(status=self.status)
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        return web.json_response(self.alerts)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, urls: list[str]) -> None:
        self.handler = RecordingHandler()
        self.registry = CollectorRegistry()
        self.metrics = AlertSourceMetrics(self.registry)
        self.clock = Clock()
        self.intake = make_intake(self.handler)
        section = AlertmanagerSection(urls=urls, poll_interval_s=2, timeout_s=1, backoff_max_s=30)
        self.poller = AlertmanagerPoller(
            section, self.intake, self.metrics, matchers=(f'model="{MODEL}"',), clock=self.clock
        )

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
async def am() -> AsyncIterator[FakeAlertmanager]:
    fake = FakeAlertmanager()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


@pytest.fixture
async def rig(am: FakeAlertmanager) -> AsyncIterator[Rig]:
    r = Rig([am.url])
    yield r
    await r.poller.close()


async def test_a_new_active_alert_acts_once_across_polls(am: FakeAlertmanager, rig: Rig):
    am.alerts = [api_alert()]
    for _ in range(3):
        assert await rig.poller.poll_once() == 2
    [event] = rig.handler.events
    assert (event.action, event.version, event.resolved) == (Action.ROLLBACK, "v2", False)
    assert event.record.alert.received_via == "api"
    assert rig.sample("rollback_agent_alertmanager_up", url=am.url) == 1
    assert rig.sample("rollback_agent_alertmanager_pulled_alerts_total", outcome="accepted") == 1
    assert ("filter", 'model="fraud"') in am.queries[0] and ("active", "true") in am.queries[0]


async def test_an_alert_delivered_by_webhook_and_pulled_acts_once(am: FakeAlertmanager, rig: Rig):
    webhook_alert = parse_webhook_payload(json.dumps(payload(wire_alert())).encode()).alerts[0]
    result = await rig.intake.take(webhook_alert.to_alert(), received_via="webhook")
    assert result.outcome == "accepted"
    am.alerts = [api_alert()]  # the same alert, startsAt in milliseconds
    await rig.poller.poll_once()
    assert len(rig.handler.events) == 1
    assert rig.sample("rollback_agent_alertmanager_pulled_alerts_total", outcome="duplicate") == 1
    am.alerts = []  # it resolves: the pull still reports the resolution once
    await rig.poller.poll_once()
    await rig.poller.poll_once()
    assert [e.resolved for e in rig.handler.events] == [False, True]


async def test_an_alert_leaving_the_api_resolves_once(am: FakeAlertmanager, rig: Rig):
    am.alerts = [api_alert("FeatureDriftHigh", severity="warning")]
    await rig.poller.poll_once()
    am.alerts = []
    await rig.poller.poll_once()
    await rig.poller.poll_once()
    held, released = rig.handler.events
    assert (held.action, held.resolved) == (Action.HOLD, False)
    assert released.resolved and released.version == "v2"
    assert rig.poller.tracked == 0


async def test_a_refired_alert_is_resolved_before_the_new_occurrence_acts(am: FakeAlertmanager, rig: Rig):
    am.alerts = [api_alert("FeatureDriftHigh", severity="warning")]
    await rig.poller.poll_once()
    am.alerts = [api_alert("FeatureDriftHigh", starts_at="2026-11-22T04:10:00.000Z", severity="warning")]
    await rig.poller.poll_once()
    assert [(e.action, e.resolved) for e in rig.handler.events] == [
        (Action.HOLD, False),
        (Action.HOLD, True),  # the old occurrence ends its hold...
        (Action.HOLD, False),  # ...before the new one holds again
    ]


async def test_silenced_alerts_never_act_and_silencing_does_not_resolve(am: FakeAlertmanager, rig: Rig):
    am.alerts = [api_alert(fingerprint="0a", state="suppressed", silenced_by=("s1",))]
    await rig.poller.poll_once()
    assert rig.handler.events == []
    am.alerts = [api_alert(fingerprint="0b")]
    await rig.poller.poll_once()
    am.alerts = [api_alert(fingerprint="0b", state="suppressed", silenced_by=("s2",))]  # silenced while firing
    await rig.poller.poll_once()
    assert [e.resolved for e in rig.handler.events] == [False]


async def test_ignored_and_other_model_alerts_do_not_act(am: FakeAlertmanager, rig: Rig):
    am.alerts = [api_alert("Unrouted", fingerprint="01"), api_alert(fingerprint="02", model="credit")]
    await rig.poller.poll_once()
    await rig.poller.poll_once()
    assert rig.handler.events == []
    assert rig.sample("rollback_agent_alertmanager_pulled_alerts_total", outcome="ignored") == 2  # not per poll


async def test_while_unreachable_nothing_acts_and_it_is_logged_once_per_state_change(
    am: FakeAlertmanager, rig: Rig, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="agent.adapters.alertmanager_poller")
    am.alerts = [api_alert()]
    await rig.poller.poll_once()
    assert len(rig.handler.events) == 1
    am.status = 503  # down: the alert is "gone" from what we can see, but that is not a resolution
    delays = []
    for _ in range(7):
        delays.append(await rig.poller.poll_once())
        rig.clock.now += delays[-1]
    assert delays == [2, 4, 8, 16, 30, 30, 30]  # exponential backoff up to backoff_max_s
    assert len(rig.handler.events) == 1
    assert rig.sample("rollback_agent_alertmanager_up", url=am.url) == 0
    assert rig.sample("rollback_agent_alertmanager_poll_errors_total", url=am.url) == 7
    am.status = 200
    am.alerts = []
    await rig.poller.poll_once()  # back, and now the alert really is gone
    assert [e.resolved for e in rig.handler.events] == [False, True]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]  # member down + no member answers
    assert "HTTP 503" in warnings[0].getMessage()
    assert any("resumed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[{", "invalid answer: body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid answer: body is nested too deeply"),
        (json.dumps([api_alert(team="\ud800")]).encode(), "invalid answer: 0.labels.team: string is not valid Unicode"),
        (b'{"alerts": []}', "invalid answer: body: expected a JSON array of alerts, got dict"),
        (b"", "invalid answer: body is empty"),
        (b"\xff", "invalid answer: body is not UTF-8"),
        (b"[NaN]", "invalid answer: body is not valid JSON: NaN is not a JSON number"),
    ],
)
async def test_a_malformed_answer_is_a_failed_poll_that_changes_nothing(
    am: FakeAlertmanager, rig: Rig, caplog: pytest.LogCaptureFixture, body: bytes, reason: str
):
    caplog.set_level(logging.INFO, logger="agent.adapters.alertmanager_poller")
    am.alerts = [api_alert()]
    await rig.poller.poll_once()
    assert len(rig.handler.events) == 1 and rig.poller.tracked == 1
    am.body = body
    for _ in range(3):
        rig.clock.now += await rig.poller.poll_once()
    assert rig.sample("rollback_agent_alertmanager_up", url=am.url) == 0
    assert rig.sample("rollback_agent_alertmanager_poll_errors_total", url=am.url) == 3
    assert len(rig.handler.events) == 1 and rig.poller.tracked == 1  # the tracked alert was not "resolved"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and reason in warnings[0], warnings  # once for the member, once for "none answers"
    assert all(len(w) < 1000 for w in warnings)


async def test_an_oversized_answer_is_a_failed_poll(am: FakeAlertmanager, rig: Rig, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("agent.adapters.alertmanager_poller.MAX_RESPONSE_BYTES", 1000)
    am.alerts = [api_alert(fingerprint=f"{i:02x}") for i in range(10)]
    await rig.poller.poll_once()
    assert rig.sample("rollback_agent_alertmanager_poll_errors_total", url=am.url) == 1
    assert rig.handler.events == []


async def test_one_invalid_alert_is_skipped_the_rest_are_taken_and_nothing_resolves_meanwhile(
    am: FakeAlertmanager, rig: Rig, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="agent.adapters.alertmanager_poller")
    am.alerts = [api_alert("FeatureDriftHigh", fingerprint="01", severity="warning")]
    await rig.poller.poll_once()
    bad = {**api_alert(fingerprint="01"), "startsAt": "yesterday"}  # perhaps the tracked one, garbled
    am.alerts = [bad, api_alert(fingerprint="02"), {"labels": 7}]
    for _ in range(3):
        assert await rig.poller.poll_once() == 2  # a successful poll
    assert rig.sample("rollback_agent_alertmanager_up", url=am.url) == 1
    assert [(e.action, e.resolved) for e in rig.handler.events] == [(Action.HOLD, False), (Action.ROLLBACK, False)]
    skipped = [r.getMessage() for r in caplog.records if "skipped an invalid alert" in r.getMessage()]
    assert len(skipped) == 2, skipped  # once per invalid alert, not per poll
    assert "0.startsAt: not an RFC 3339 timestamp: 'yesterday'" in skipped[0]
    assert "2.labels: Input should be a valid dictionary" in skipped[1]

    am.alerts = [api_alert(fingerprint="02")]  # the garbled one is gone for good: now it counts as resolved
    await rig.poller.poll_once()
    assert [(e.action, e.resolved) for e in rig.handler.events][-1] == (Action.HOLD, True)
    assert any("no invalid alerts any more" in r.getMessage() for r in caplog.records)


async def test_the_poller_task_survives_a_failing_round(am: FakeAlertmanager, monkeypatch: pytest.MonkeyPatch):
    handler = RecordingHandler()
    config = alerts_config(routes=ROUTES[:3], alertmanager={"urls": [am.url], "poll_interval_s": 0.01})
    poller = AlertmanagerPoller.from_config(
        config, MODEL, make_intake(handler), AlertSourceMetrics(CollectorRegistry())
    )
    real_reconcile = poller._reconcile
    calls = 0

    async def fail_first(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        await real_reconcile(*args, **kwargs)

    monkeypatch.setattr(poller, "_reconcile", fail_first)
    am.alerts = [api_alert()]
    task = asyncio.create_task(poller.run(), name="alertmanager-poller")
    try:
        await asyncio.wait_for(handler.arrived.wait(), timeout=5)
        assert calls >= 2 and not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_first_healthy_member_wins_and_failed_members_back_off(am: FakeAlertmanager):
    dead = f"http://127.0.0.1:{free_port()}"
    rig = Rig([dead, am.url])
    try:
        am.alerts = [api_alert()]
        await rig.poller.poll_once()
        assert len(rig.handler.events) == 1
        assert rig.sample("rollback_agent_alertmanager_up", url=dead) == 0
        assert rig.sample("rollback_agent_alertmanager_up", url=am.url) == 1
        await rig.poller.poll_once()  # the dead member is in backoff: not tried again yet
        assert rig.sample("rollback_agent_alertmanager_poll_errors_total", url=dead) == 1
        assert len(am.queries) == 2
        rig.clock.now += 2
        await rig.poller.poll_once()
        assert rig.sample("rollback_agent_alertmanager_poll_errors_total", url=dead) == 2
        assert len(rig.handler.events) == 1
    finally:
        await rig.poller.close()


async def test_a_failing_decision_is_retried_next_round(am: FakeAlertmanager, rig: Rig):
    am.alerts = [api_alert()]
    rig.handler.fail = RuntimeError("store unavailable")
    await rig.poller.poll_once()
    assert rig.sample("rollback_agent_alertmanager_pulled_alerts_total", outcome="failed") == 1
    rig.handler.fail = None
    await rig.poller.poll_once()
    assert len(rig.handler.events) == 1


async def test_run_polls_until_cancelled(am: FakeAlertmanager):
    handler = RecordingHandler()
    config = alerts_config(routes=ROUTES[:3], alertmanager={"urls": [am.url], "poll_interval_s": 0.05})
    poller = AlertmanagerPoller.from_config(
        config, MODEL, make_intake(handler), AlertSourceMetrics(CollectorRegistry())
    )
    task = asyncio.create_task(poller.run(), name="alertmanager-poller")
    am.alerts = [api_alert()]
    await asyncio.wait_for(handler.arrived.wait(), timeout=5)
    assert len(handler.events) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ("filter", 'model="fraud"') in am.queries[0]  # only this model's alerts travel


async def test_a_route_for_any_model_drops_the_model_filter(am: FakeAlertmanager):
    config = alerts_config(alertmanager={"urls": [am.url]})  # includes the fleet-wide GpuNodeDown route
    handler = RecordingHandler()
    poller = AlertmanagerPoller.from_config(
        config, MODEL, make_intake(handler), AlertSourceMetrics(CollectorRegistry())
    )
    am.alerts = [{**api_alert("GpuNodeDown"), "labels": {"alertname": "GpuNodeDown", "node": "n1"}}]
    try:
        await poller.poll_once()
    finally:
        await poller.close()
    assert not any(k == "filter" for k, _ in am.queries[0])
    assert [e.action for e in handler.events] == [Action.ALERT]
