"""Property: POST /v1/alerts answers 200 or a 4xx for any input while the decision handler works (never a 5xx,
which Alertmanager would retry forever), never calls the handler for a refused payload, and answers 503 only when
the handler raises StoreUnavailableError. Drives the real aiohttp app with the real AlertIntake.

FUZZ_EXAMPLES sets the number of examples per property (default 200; e.g. 10000 for a long run).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agent.alerts.auth import WebhookCredentials
from agent.alerts.metrics import AlertSourceMetrics
from agent.engine.decisions import Decision, TriggerEvent
from agent.http.webhook import AlertWebhook, add_alert_webhook
from agent.ports.store import StoreUnavailableError
from tests.unit.alerts.fakes import RecordingHandler, make_intake, payload, wire_alert

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HEADERS = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
MAX_BODY = 1024 * 1024


class CountingHandler(RecordingHandler):
    """Records every call, including those that raise (`fail`)."""

    def __init__(self, fail: Exception | None = None) -> None:
        super().__init__()
        self.fail = fail
        self.calls = 0

    async def handle(self, event: TriggerEvent) -> Decision:
        self.calls += 1
        return await super().handle(event)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    retry_after: str | None


@asynccontextmanager
async def webhook(handler: CountingHandler) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_alert_webhook(
        app,
        AlertWebhook(
            intake=make_intake(handler),
            credentials=WebhookCredentials(bearer_tokens=("s3cret",)),
            metrics=AlertSourceMetrics(CollectorRegistry()),
            max_body_bytes=MAX_BODY,
        ),
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def post(raw: bytes, handler: CountingHandler, headers: dict[str, str] = HEADERS) -> Answer:
    async with webhook(handler) as client:
        resp = await client.post("/v1/alerts", data=raw, headers=headers)
        text = await resp.text()
        body = json.loads(text)  # always a JSON answer, never aiohttp's plain-text 500 page
        return Answer(resp.status, body, resp.headers.get("Retry-After"))


def assert_taken_or_refused(answer: Answer, handler: CountingHandler) -> None:
    assert answer.status == 200 or 400 <= answer.status < 500, (answer.status, answer.body)
    if answer.status != 200:
        assert handler.calls == 0, "a refused payload reached the decision handler"
        assert answer.body["code"] and answer.body["message"]
        assert "Traceback" not in answer.body["message"]


# --- strategies ---------------------------------------------------------------------------------------------------

# Any code point, lone surrogates included (hypothesis leaves them out of text() unless asked).
ANY_CHAR = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from("\x00\u2028\ufeff\ufffe😀"))
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**4400, max_value=10**4500),  # too many digits for int()
    st.floats(allow_nan=True, allow_infinity=True),
    ANY_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(ANY_TEXT, children, max_size=5)),
    max_leaves=30,
)


def _deep(depth: int, kind: str) -> Any:
    """A value nested `depth` levels deep, built without recursion (json.dumps of it may fail: see _dumps)."""
    value: Any = "x"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


DEEP_RAW = st.builds(
    lambda depth, kind: (b"[" * depth + b"]" * depth) if kind == "list" else (b'{"k":' * depth + b"1" + b"}" * depth),
    st.integers(min_value=1, max_value=10_000),
    st.sampled_from(["list", "dict"]),
)
HUGE_TEXT = st.builds(lambda n, c: c * n, st.integers(min_value=0, max_value=2 * MAX_BODY), st.sampled_from("xé😀"))


def _dumps(value: Any, ascii_only: bool) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=ascii_only)
    except (RecursionError, ValueError):
        return b"null"
    # ensure_ascii=False leaves lone surrogates raw: encode them as the (invalid) UTF-8 a sloppy sender would.
    return text.encode("utf-8", "surrogatepass")


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    """A valid two-alert payload with a few of its values replaced, removed or added."""
    body: Any = payload(wire_alert(fingerprint="01"), wire_alert("FeatureDriftHigh", fingerprint="02", severity="w"))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(_paths(body)))
        replacement = draw(
            st.one_of(
                JSON_VALUES,
                HUGE_TEXT,
                st.builds(_deep, st.integers(min_value=1, max_value=60), st.sampled_from(["list", "dict"])),
            )
        )
        operation = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            body = replacement
            continue
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if operation == "replace":
            parent[path[-1]] = replacement
        elif operation == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(ANY_TEXT)] = replacement
        else:
            parent.append(copy.deepcopy(replacement))
    return _dumps(body, draw(st.booleans()))


@st.composite
def with_deep_value(draw: st.DrawFn) -> bytes:
    """A valid payload with a deeply nested raw value spliced in as a label, an annotation or an unknown field."""
    deep = draw(DEEP_RAW)
    template = payload()
    where = draw(st.sampled_from(["label", "annotation", "extra", "alert"]))
    marker = '"@@DEEP@@"'
    if where == "label":
        template["alerts"][0]["labels"]["team"] = "@@DEEP@@"
    elif where == "annotation":
        template["alerts"][0]["annotations"]["summary"] = "@@DEEP@@"
    elif where == "extra":
        template["extra"] = "@@DEEP@@"
    else:
        template["alerts"].append("@@DEEP@@")
    return json.dumps(template).replace(marker, deep.decode()).encode()


ANY_BODY = st.one_of(
    st.binary(max_size=2048),
    st.builds(_dumps, JSON_VALUES, st.booleans()),
    DEEP_RAW,
    with_deep_value(),
    mutated_payloads(),
)


# --- properties ---------------------------------------------------------------------------------------------------


@FUZZ
@given(raw=ANY_BODY)
async def test_any_body_is_taken_or_refused_with_a_4xx_never_a_5xx(raw: bytes):
    handler = CountingHandler()
    answer = await post(raw, handler)
    assert_taken_or_refused(answer, handler)
    if answer.status == 200:
        assert len(answer.body["alerts"]) >= 0
        assert handler.calls == len(handler.events)


@FUZZ
@given(raw=ANY_BODY, content_type=st.sampled_from(["text/plain", "application/octet-stream", "multipart/form-data"]))
async def test_any_body_with_a_wrong_content_type_is_a_415(raw: bytes, content_type: str):
    handler = CountingHandler()
    answer = await post(raw, handler, {**HEADERS, "Content-Type": content_type})
    assert (answer.status, handler.calls) == (415, 0)


@FUZZ
@given(
    raw=st.one_of(mutated_payloads(), st.just(json.dumps(payload()).encode())),
    failure=st.sampled_from(
        [None, StoreUnavailableError("state store read-only: disk full"), RuntimeError("bug"), OSError("io")]
    ),
)
async def test_a_503_only_when_the_handler_raises_store_unavailable(raw: bytes, failure: Exception | None):
    handler = CountingHandler(fail=failure)
    answer = await post(raw, handler)
    if failure is None or handler.calls == 0:
        assert_taken_or_refused(answer, handler)
    elif isinstance(failure, StoreUnavailableError):
        assert (answer.status, answer.body["code"], answer.retry_after) == (503, "unavailable", "5")
        assert "state store read-only: disk full" in answer.body["message"]
    else:
        assert (answer.status, answer.body["code"]) == (500, "decision_failed")
    if answer.status == 503:
        assert isinstance(failure, StoreUnavailableError) and handler.calls > 0
