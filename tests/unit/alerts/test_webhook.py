import base64
import gzip
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.alerts.auth import WebhookCredentials
from agent.alerts.metrics import AlertSourceMetrics
from agent.engine.decisions import Action, Cause
from agent.http.webhook import AlertWebhook, add_alert_webhook
from agent.ports.store import StoreUnavailableError
from tests.unit.alerts.fakes import RecordingHandler, make_intake, payload, wire_alert

BEARER = {"Authorization": "Bearer s3cret"}
BASIC = {"Authorization": "Basic " + base64.b64encode(b"alertmanager:pa55").decode()}
JSON = {**BEARER, "Content-Type": "application/json"}


class Hook:
    def __init__(self, client: TestClient, handler: RecordingHandler, registry: CollectorRegistry) -> None:
        self.client = client
        self.handler = handler
        self.registry = registry

    async def post(self, body: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        resp = await self.client.post("/v1/alerts", json=body, headers=BEARER if headers is None else headers)
        return resp.status, await resp.json()

    async def post_raw(self, raw: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        resp = await self.client.post("/v1/alerts", data=raw, headers=JSON if headers is None else headers)
        return resp.status, await resp.json()

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value("rollback_agent_webhook_alerts_total", {"outcome": outcome})
        return value or 0.0


async def _hook(max_body_bytes: int = 1024 * 1024, app: web.Application | None = None) -> AsyncIterator[Hook]:
    handler = RecordingHandler()
    registry = CollectorRegistry()
    app = app or web.Application()
    add_alert_webhook(
        app,
        AlertWebhook(
            intake=make_intake(handler),
            credentials=WebhookCredentials(bearer_tokens=("s3cret",), basic_auth=("alertmanager", "pa55")),
            metrics=AlertSourceMetrics(registry),
            max_body_bytes=max_body_bytes,
        ),
    )
    async with TestClient(TestServer(app)) as client:
        yield Hook(client, handler, registry)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    async for h in _hook(max_body_bytes=4096):
        yield h


async def test_firing_alert_becomes_one_trigger_event_and_a_summary(hook: Hook):
    status, body = await hook.post(payload(wire_alert()))
    assert status == 200, body
    assert body["alerts"] == [
        {
            "fingerprint": "8c525571fc3b84a1",
            "alertname": "ModelErrorRateHigh",
            "status": "firing",
            "outcome": "accepted",
            "action": "rollback",
            "version": "v2",
            "route": "errors",
            "decision": "rolled_back",
            "detail": body["alerts"][0]["detail"],
        }
    ]
    [event] = hook.handler.events
    assert (event.cause, event.action, event.version, event.resolved) == (Cause.ALERT, Action.ROLLBACK, "v2", False)
    assert event.dedupe_key and "ModelErrorRateHigh firing for fraud version v2" in event.summary
    record = event.record.alert
    assert (record.fingerprint, record.received_via, record.receiver) == (
        "8c525571fc3b84a1",
        "webhook",
        "rollback-agent",
    )
    assert hook.count("accepted") == 1


async def test_retries_and_renotifications_act_once(hook: Hook):
    for _ in range(3):
        status, body = await hook.post(payload(wire_alert()))
        assert status == 200
    assert body["alerts"][0]["outcome"] == "duplicate"
    assert len(hook.handler.events) == 1
    assert (hook.count("accepted"), hook.count("duplicate")) == (1, 2)


async def test_resolved_alert_gives_a_resolved_event_once(hook: Hook):
    await hook.post(payload(wire_alert("FeatureDriftHigh", severity="warning")))
    resolved = wire_alert("FeatureDriftHigh", status="resolved", ends_at="2026-11-22T04:00:00Z", severity="warning")
    for _ in range(2):
        status, body = await hook.post(payload(resolved, status="resolved"))
        assert status == 200
    held, released = hook.handler.events
    assert (held.action, held.resolved, released.resolved) == (Action.HOLD, False, True)
    assert released.dedupe_key != held.dedupe_key
    assert body["alerts"][0]["outcome"] == "duplicate"


async def test_each_alert_of_a_group_is_handled(hook: Hook):
    group = payload(
        wire_alert(fingerprint="01"),
        wire_alert("Unrouted", fingerprint="02"),
        wire_alert(fingerprint="03", model="credit"),
        wire_alert("FeatureDriftX", fingerprint="04", severity="warning"),
    )
    status, body = await hook.post(group)
    assert status == 200
    assert [(a["fingerprint"], a["outcome"], a["decision"]) for a in body["alerts"]] == [
        ("01", "accepted", "rolled_back"),
        ("02", "ignored", ""),
        ("03", "ignored", ""),
        ("04", "accepted", "held"),
    ]
    assert [e.action for e in hook.handler.events] == [Action.ROLLBACK, Action.HOLD]
    assert hook.count("ignored") == 2


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic " + base64.b64encode(b"alertmanager:wrong").decode()},
        {"Authorization": "s3cret"},
    ],
)
async def test_missing_or_wrong_credentials_are_refused_and_change_nothing(hook: Hook, headers):
    resp = await hook.client.post("/v1/alerts", json=payload(), headers=headers)
    assert resp.status == 401
    assert (await resp.json())["code"] == "unauthenticated"
    assert resp.headers.getall("WWW-Authenticate") == ['Bearer realm="rollback-agent"', 'Basic realm="rollback-agent"']
    assert hook.handler.events == []
    assert hook.count("rejected") == 1


async def test_basic_auth_is_accepted(hook: Hook):
    status, _ = await hook.post(payload(), headers=BASIC)
    assert status == 200 and len(hook.handler.events) == 1


async def test_too_large_body_is_refused_with_or_without_content_length(hook: Hook):
    big = payload(wire_alert(**{"padding": "x" * 5000}))
    status, body = await hook.post(big)
    assert (status, body["code"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        raw = json.dumps(big).encode()
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    resp = await hook.client.post("/v1/alerts", data=chunks(), headers=JSON)
    assert resp.status == 413
    assert hook.handler.events == [] and hook.count("rejected") == 2


async def test_limit_is_the_webhooks_own_not_the_apps_client_max_size():
    async for hook in _hook(max_body_bytes=3 * 1024 * 1024, app=web.Application(client_max_size=1024)):
        big = {**payload(), "padding": "x" * (2 * 1024 * 1024)}  # an unknown field: read, then ignored
        status, _ = await hook.post(big)
        assert status == 200 and len(hook.handler.events) == 1


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b["alerts"][1].update(startsAt="yesterday"), "alerts.1.startsAt: not an RFC 3339 timestamp"),
        (lambda b: b["alerts"][1].pop("fingerprint"), "alerts.1.fingerprint: Field required"),
        (lambda b: b.update(version="3"), "version: unsupported webhook payload version '3'"),
    ],
)
async def test_a_malformed_payload_is_refused_whole_and_changes_nothing(hook: Hook, mutate, expected):
    body = payload(wire_alert(fingerprint="01"), wire_alert(fingerprint="02"))
    mutate(body)
    status, answer = await hook.post(body)
    assert (status, answer["code"]) == (400, "invalid_payload")
    assert expected in answer["message"]
    assert hook.handler.events == []  # the valid first alert was not acted on either
    status, _ = await hook.post(payload(wire_alert(fingerprint="01")))
    assert status == 200 and len(hook.handler.events) == 1  # and is not remembered as a duplicate


async def test_not_json_is_a_400(hook: Hook):
    status, body = await hook.post_raw(b"{nope")
    assert status == 400
    assert "body is not valid JSON" in body["message"]


def _with_label(value: str) -> bytes:
    return json.dumps(payload(wire_alert(team=value))).encode()


# Each of these answered a bare 500 (or a 500 "decision_failed") before: Alertmanager would retry it forever.
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "body is nested too deeply"),
        (b'{"x":' * 5_000 + b"1" + b"}" * 5_000, "body is nested too deeply"),
        (_with_label("\ud800"), "alerts.0.labels.team: string is not valid Unicode text (lone surrogate U+D800"),
        (
            json.dumps(payload()).replace('"summary": "', '"summary": "\\udfff').encode(),
            "alerts.0.annotations.summary: string is not valid Unicode text",
        ),
        (
            json.dumps(payload(wire_alert(starts_at="9999-12-31T23:59:59-01:00"))).encode(),
            "alerts.0.startsAt: timestamp out of range in UTC",
        ),
        (
            json.dumps(payload()).replace('"truncatedAlerts": 0', '"truncatedAlerts": ' + "9" * 5000).encode(),
            "an integer with 5000 digits is too long",
        ),
    ],
)
async def test_input_that_crashed_the_handler_is_a_400_naming_the_field_and_changes_nothing(hook: Hook, raw, expected):
    async for big in _hook(max_body_bytes=4 * 1024 * 1024):
        status, body = await big.post_raw(raw)
        assert (status, body["code"]) == (400, "invalid_payload"), body
        assert expected in body["message"]
        assert big.handler.events == [] and big.count("rejected") == 1 and big.count("failed") == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "body is empty"),
        (b"   ", "body is empty"),
        (b"42", "body: expected a JSON object, got int"),
        (b'"4"', "body: expected a JSON object, got str"),
        (b"null", "body: expected a JSON object, got NoneType"),
        (b"\xff\xfe{}", "body is not UTF-8: byte 0xff at line 1 column 1"),
        (b'{"version": "4", "x": NaN}', "NaN is not a JSON number"),
    ],
)
async def test_empty_scalar_or_undecodable_bodies_are_a_400(hook: Hook, raw, expected):
    status, body = await hook.post_raw(raw)
    assert (status, body["code"]) == (400, "invalid_payload")
    assert expected in body["message"]
    assert hook.handler.events == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_a_body_that_is_not_declared_json_is_a_415(hook: Hook, content_type):
    status, body = await hook.post_raw(json.dumps(payload()).encode(), {**BEARER, "Content-Type": content_type})
    assert (status, body["code"]) == (415, "unsupported_media_type")
    assert content_type in body["message"]
    assert hook.handler.events == [] and hook.count("rejected") == 1


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.alert+json"])
async def test_json_content_types_are_taken(hook: Hook, content_type):
    status, _ = await hook.post_raw(json.dumps(payload()).encode(), {**BEARER, "Content-Type": content_type})
    assert status == 200 and len(hook.handler.events) == 1


async def test_odd_chunking_and_encodings_get_a_4xx(hook: Hook):
    raw = json.dumps(payload()).encode()

    async def one_byte_chunks() -> AsyncIterator[bytes]:
        for i in range(len(raw)):
            yield raw[i : i + 1]

    status, body = await hook.post_raw(b"\x1f\x8bnot gzip at all", {**JSON, "Content-Encoding": "gzip"})
    assert (status, body["code"]) == (400, "invalid_body")
    assert "could not be read" in body["message"]
    status, body = await hook.post_raw(b"not deflate", {**JSON, "Content-Encoding": "deflate"})
    assert (status, body["code"]) == (400, "invalid_body")
    bomb = gzip.compress(b" " * (8 * 1024 * 1024))  # 8 KiB on the wire, 8 MiB inflated
    status, body = await hook.post_raw(bomb, {**JSON, "Content-Encoding": "gzip"})
    assert (status, body["code"]) == (413, "payload_too_large")
    assert hook.handler.events == [] and hook.count("rejected") == 3

    status, _ = await hook.post_raw(gzip.compress(raw), {**JSON, "Content-Encoding": "gzip"})
    assert status == 200
    resp = await hook.client.post("/v1/alerts", data=one_byte_chunks(), headers=JSON)
    assert resp.status == 200  # the same alert, chunked a byte at a time: a duplicate, not an error
    assert (await resp.json())["alerts"][0]["outcome"] == "duplicate"


async def test_an_unavailable_store_answers_503_with_retry_after_and_the_retry_acts(hook: Hook):
    hook.handler.fail = StoreUnavailableError("state store read-only: disk full")
    resp = await hook.client.post("/v1/alerts", json=payload(), headers=BEARER)
    body = await resp.json()
    assert (resp.status, body["code"]) == (503, "unavailable")
    assert resp.headers["Retry-After"] == "5"
    assert "state store read-only: disk full" in body["message"] and "Traceback" not in body["message"]
    assert hook.count("failed") == 1

    hook.handler.fail = None
    status, body = await hook.post(payload())  # Alertmanager's retry: not a duplicate, it acts
    assert status == 200 and body["alerts"][0]["outcome"] == "accepted"
    assert len(hook.handler.events) == 1


async def test_a_failing_decision_answers_500_and_the_retry_acts_only_on_the_rest(hook: Hook):
    group = payload(wire_alert(fingerprint="01"), wire_alert(fingerprint="02"))
    real_handle = hook.handler.handle
    calls = 0

    async def fail_second(event):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("store unavailable")
        return await real_handle(event)

    hook.handler.handle = fail_second  # type: ignore[method-assign]
    status, body = await hook.post(group)
    assert (status, body["code"]) == (500, "decision_failed")
    assert [a["outcome"] for a in body["alerts"]] == ["accepted"]
    assert hook.count("failed") == 1

    status, body = await hook.post(group)  # Alertmanager retries the whole group
    assert status == 200
    assert [a["outcome"] for a in body["alerts"]] == ["duplicate", "accepted"]
    assert [e.record.alert.fingerprint for e in hook.handler.events] == ["01", "02"]
