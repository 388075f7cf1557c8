"""The audit record of an alert-triggered decision names the credential the alert came with."""

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.adapters.alertmanager_poller import AlertmanagerPoller
from agent.alerts.auth import WebhookCredentials, load_webhook_credentials
from agent.alerts.config import AlertmanagerSection, WebhookSection
from agent.alerts.metrics import AlertSourceMetrics
from agent.http.webhook import AlertWebhook, add_alert_webhook
from harness.ports import free_port
from tests.unit.alerts.fakes import MODEL, RecordingHandler, api_alert, make_intake, payload, wire_alert
from tests.unit.alerts.test_poller import FakeAlertmanager


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def credentials(tmp_path: Path) -> WebhookCredentials:
    (tmp_path / "token").write_text("file-token\n")
    (tmp_path / "pw").write_text("pa55")
    section = WebhookSection.model_validate(
        {
            "enabled": True,
            "bearer_token_file": tmp_path / "token",
            "bearer_token_env": "HOOK_TOKEN",
            "basic_auth": {"username": "alertmanager", "password_file": tmp_path / "pw"},
        }
    )
    return load_webhook_credentials(section, {"HOOK_TOKEN": "env-token"})


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Bearer file-token", "webhook-bearer:file"),
        ("bearer  env-token ", "webhook-bearer:env:HOOK_TOKEN"),
        (_basic("alertmanager", "pa55"), "webhook-basic:alertmanager"),
        ("Bearer wrong", None),
        (_basic("alertmanager", "file-token"), None),
        ("", None),
    ],
)
def test_each_credential_has_its_name(credentials: WebhookCredentials, header, name):
    assert credentials.credential(header) == name
    assert credentials.authorized(header) is (name is not None)


def test_an_unnamed_bearer_token_is_webhook_bearer():
    assert WebhookCredentials(bearer_tokens=("t",)).credential("Bearer t") == "webhook-bearer"


@pytest.fixture
async def hook(credentials: WebhookCredentials) -> AsyncIterator[tuple[TestClient, RecordingHandler]]:
    handler = RecordingHandler()
    app = web.Application()
    add_alert_webhook(app, AlertWebhook(make_intake(handler), credentials, AlertSourceMetrics(CollectorRegistry())))
    async with TestClient(TestServer(app)) as client:
        yield client, handler


async def test_the_webhook_records_the_credential_that_matched(hook):
    client, handler = hook
    headers = ["Bearer file-token", "Bearer env-token", _basic("alertmanager", "pa55")]
    for index, header in enumerate(headers):
        body = payload(wire_alert(fingerprint=f"{index:016x}"))
        resp = await client.post("/v1/alerts", json=body, headers={"Authorization": header})
        assert resp.status == 200, await resp.text()
    assert [e.record.alert.credential for e in handler.events] == [
        "webhook-bearer:file",
        "webhook-bearer:env:HOOK_TOKEN",
        "webhook-basic:alertmanager",
    ]
    assert all(e.record.alert.received_via == "webhook" for e in handler.events)


async def test_a_pull_records_the_alertmanager_that_answered_without_its_password():
    am = FakeAlertmanager()
    await am.server.start_server()
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the next member answers
    url = am.url
    answering = url.replace("http://", "http://puller:hunter2@")
    handler = RecordingHandler()
    section = AlertmanagerSection(urls=[down, answering], poll_interval_s=2, timeout_s=1, backoff_max_s=30)
    poller = AlertmanagerPoller(section, make_intake(handler), AlertSourceMetrics(CollectorRegistry()))
    try:
        am.alerts = [api_alert("FeatureDriftHigh", severity="warning")]
        await poller.poll_once()
        am.alerts = []  # it resolves: the resolution names the same source
        await poller.poll_once()
    finally:
        await poller.close()
        await am.server.close()
    held, released = handler.events
    assert held.record.alert.labels["model"] == MODEL and released.resolved
    assert {e.record.alert.credential for e in handler.events} == {f"alertmanager-api:{url}"}
    assert "hunter2" not in str([e.record for e in handler.events])
