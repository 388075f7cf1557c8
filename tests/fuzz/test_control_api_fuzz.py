"""Properties of the control API (agent.http.control_app) for any request, on the real aiohttp app wired as the agent
wires it: a real TrafficController on a real SQLite state store, Admission and the rollback procedure in front of a
recording route sink.

* any body, to any endpoint, with a valid token: 200 or a 4xx carrying a JSON ErrorResponse; never a 5xx or a
  traceback; a refused request records nothing, moves nothing and changes no setting;
* a missing or wrong token (any header bytes): 401, nothing changes;
* every record an accepted change writes is by `operator:<authenticated identity>`, whatever `actor` the body claims;
* a store that cannot write: each state-changing request answers 503 naming the cause, and nothing moved.

FUZZ_EXAMPLES sets the number of examples per property (default 200; e.g. 10000 for a long run).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.config import RollbackSection, parse_config
from agent.engine.admission import HOLD_PREFIX, Admission
from agent.engine.orchestrator import RollbackOrchestrator
from agent.engine.traffic import PAUSED_KEY, TrafficController
from agent.http.control_app import MAX_BODY_BYTES, make_control_app
from agent.http.status_view import StatusView
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.route_sink import RouteApplied
from agent.telemetry import AgentMetrics
from tests.fuzz.test_webhook_fuzz import ANY_TEXT, DEEP_RAW, JSON_VALUES, _deep, _dumps, _paths
from tests.unit.engine.test_orchestrator import (
    FakeArchiver,
    FakeConfirmer,
    FakeHealth,
    FakePlanner,
    FakeSink,
    FakeVerifier,
    FakeWarmer,
)
from tests.unit.engine.test_traffic import Unwritable, established_store
from tests.unit.test_config import GOOD

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VERSIONS = ["v1", "v2"]  # GOOD: v1 stable, v2 candidate
STATUS = ("GET", "/v1/status")
CHANGES = [
    ("POST", "/v1/traffic"),
    ("POST", "/v1/rollback"),
    ("POST", "/v1/pause"),
    ("POST", "/v1/resume"),
    ("POST", "/v1/hold"),
    ("POST", "/v1/release"),
]
ENDPOINTS = [STATUS, *CHANGES]
VALID: dict[str, dict[str, Any]] = {
    "/v1/status": {},
    "/v1/traffic": {"weights": [{"version": "v2", "weight": 100}, {"version": "v1", "weight": 0}], "reason": "canary"},
    "/v1/rollback": {"reason": "bad scores", "to_version": "v1", "actor": "rule:error-rate"},
    "/v1/pause": {"reason": "INC-9", "actor": "ana"},
    "/v1/resume": {"reason": "INC-9 over"},
    "/v1/hold": {"version": "v2", "reason": "INC-7", "actor": "alert:X"},
    "/v1/release": {"version": "v2", "reason": "fixed"},
}
# A fresh state store per example: on tmpfs its fsyncs cost microseconds, not the ~50 ms of a disk.
RAM_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
# What a client may get back while the store works; 401 is not among them: every request here has the token.
TAKEN_OR_REFUSED = {200, 400, 404, 409, 413, 415}


class Body(bytes):
    """Request bytes that print short in a failure report (a body may be 128 KiB)."""

    def __repr__(self) -> str:
        shown = bytes(self[:200])
        return f"Body({shown!r}{'...' if len(self) > 200 else ''}, {len(self)} bytes)"


class RecordingSink(FakeSink):
    """The route sink: every apply is ACKed at once; `calls` counts every apply, answered or not."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[str, int], ...]] = []

    async def apply(self, weights: tuple[tuple[str, int], ...], timeout_s: float) -> RouteApplied:
        self.calls.append(weights)
        return await super().apply(weights, timeout_s)


@dataclass
class Rig:
    client: TestClient[web.Request, web.Application]
    store: Any  # SqliteStateStore, or Unwritable around it
    controller: TrafficController
    admission: Admission
    planner: FakePlanner
    sink: RecordingSink

    async def state(self) -> tuple[Any, ...]:
        """Everything a request may change: the audit trail, the policy, pause, holds, registry statuses, pushes."""
        records = [r.SerializeToString(deterministic=True) for r in await self.store.records()]
        settings_ = await self.store.settings_with_prefix("")
        return (
            records,
            self.controller.desired,
            self.controller.automation,
            dict(self.admission.holds),
            dict(self.planner.status),
            settings_,
            len(self.sink.calls),
        )


@asynccontextmanager
async def control_api(
    weights: dict[str, int], *, prior: str = "", identity: str = "ana", unwritable: bool = False
) -> AsyncIterator[Rig]:
    """The control API as the agent wires it (runtime.py), on a fresh state store that starts with `weights` and
    `prior` (see PRIORS) already in force."""
    tmp = Path(tempfile.mkdtemp(prefix="control-fuzz-", dir=RAM_DIR))
    config = parse_config(GOOD, "a.yaml", tmp)
    real = await established_store(tmp / "s.db", weights)
    if prior == "v2 held":
        await real.record_setting(
            HOLD_PREFIX + "v2", "INC-1", audit_pb2.HoldChanged(version="v2", held=True, reason="INC-1"), "operator:bo"
        )
    elif prior == "paused":
        await real.record_setting(
            PAUSED_KEY, "INC-0", audit_pb2.AutomationToggled(paused=True, reason="INC-0"), "operator:bo"
        )
    store: Any = Unwritable(real) if unwritable else real
    sink = RecordingSink()
    metrics = AgentMetrics("credit")
    controller = TrafficController(
        model="credit", versions=VERSIONS, stable="v1", store=store, sink=sink, metrics=metrics, ack_timeout_s=1
    )
    await controller.start()
    planner = FakePlanner()
    planner.order = list(VERSIONS)
    planner.status = {"v1": "verified", "v2": prior.removeprefix("v2 ") if prior.startswith("v2 ") else "candidate"}
    health = FakeHealth()
    orchestrator = RollbackOrchestrator(
        traffic=controller,
        planner=planner,
        health=health,
        warmer=FakeWarmer(health, sink),
        confirmer=FakeConfirmer(),
        verifier=FakeVerifier(),
        archiver=FakeArchiver(),
        store=store,
        metrics=metrics,
        settings=RollbackSection(verify_window_s=0.0),
    )
    admission = Admission(
        traffic=controller,
        store=store,
        procedure=orchestrator,
        statuses=lambda: planner.status,
    )
    orchestrator.on_follow_up = admission.forget_last_rollback
    await admission.restore(await real.records())
    status_view = StatusView(config, controller, None, admission=admission, registry_statuses=lambda: planner.status)
    app = make_control_app(controller, status_view, TOKEN, identity=identity, decisions=admission, admission=admission)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield Rig(client, store, controller, admission, planner, sink)
    finally:
        await orchestrator.close()
        await real.close()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Answer:
    status: int
    text: str

    @property
    def body(self) -> dict[str, Any]:
        body = json.loads(self.text)  # always JSON, never aiohttp's plain-text error page
        assert isinstance(body, dict), self.text[:200]
        return body


async def _chunks(raw: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(raw), 16 * 1024):
        yield raw[start : start + 16 * 1024]


async def call(rig: Rig, endpoint: tuple[str, str], raw: bytes, *, chunked: bool = False) -> Answer:
    method, path = endpoint
    data: Any = _chunks(bytes(raw)) if chunked else bytes(raw)
    resp = await rig.client.request(method, path, data=data, headers={**AUTH, "Content-Type": "application/json"})
    return Answer(resp.status, await resp.text())


def assert_error_body(answer: Answer) -> None:
    body = answer.body
    assert "Traceback" not in answer.text
    assert body.get("code") and body.get("message"), answer.text[:500]
    assert set(body) <= {"code", "message"}, answer.text[:500]


def assert_taken_or_refused(endpoint: tuple[str, str], answer: Answer) -> None:
    assert answer.status in TAKEN_OR_REFUSED, (endpoint, answer.status, answer.text[:500])
    assert "Traceback" not in answer.text
    if answer.status == 200:
        answer.body  # noqa: B018 - the answer parses as JSON
    elif endpoint[1] == "/v1/rollback" and answer.status == 409 and "outcome" in answer.body:
        # A rollback that was admitted but escalated (no eligible target): the decision, with what happened.
        assert answer.body["outcome"] == "failed" and answer.body["detail"], answer.text[:500]
    else:
        assert_error_body(answer)


# --- strategies ---------------------------------------------------------------------------------------------------

START_WEIGHTS = st.sampled_from([{"v1": 100, "v2": 0}, {"v1": 50, "v2": 50}, {"v1": 0, "v2": 100}])
# What is in force before the request: nothing, a hold, paused automation, or v2's registry status (the guards).
PRIORS = st.sampled_from(["", "v2 held", "paused", "v2 failed", "v2 quarantined"])
VERSION_NAMES = st.one_of(st.sampled_from(VERSIONS), ANY_TEXT)
HUGE_TEXT = st.builds(
    lambda n, c: c * n,
    st.integers(min_value=MAX_BODY_BYTES - 64, max_value=2 * MAX_BODY_BYTES),
    st.sampled_from("xé😀"),
)
# What a caller may claim to be: automation's names, empty, unicode, long.
CLAIMED_ACTORS = st.one_of(
    st.sampled_from(["rule:error-rate", "alert:X", "alert:ModelErrorRateHigh", "", "operator:root", "config", "agent"]),
    st.text(max_size=60),
    st.builds(lambda s: "rule:" + s, st.text(max_size=20)),
)


def _mutate(draw: st.DrawFn, body: Any) -> Any:
    """Replace, remove or add values anywhere in `body`."""
    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(_paths(body)))
        replacement = draw(
            st.one_of(
                JSON_VALUES,
                VERSION_NAMES,
                st.integers(min_value=-(2**70), max_value=2**70),
                st.builds(_deep, st.integers(min_value=1, max_value=60), st.sampled_from(["list", "dict"])),
                st.just("@@HUGE@@"),
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
            parent[draw(st.one_of(st.sampled_from(["weights", "reason", "actor", "force", "version"]), ANY_TEXT))] = (
                replacement
            )
        else:
            parent.append(copy.deepcopy(replacement))
    return body


@st.composite
def mutated_bodies(draw: st.DrawFn, path: str) -> bytes:
    raw = _dumps(_mutate(draw, VALID[path]), draw(st.booleans()))
    if b'"@@HUGE@@"' in raw:  # one string near or beyond the body limit
        raw = raw.replace(b"@@HUGE@@", draw(HUGE_TEXT).encode(), 1)
    return raw


@st.composite
def with_deep_value(draw: st.DrawFn, path: str) -> bytes:
    """A valid body with up to 10,000 levels of arrays/objects spliced in as a field's value or an unknown field."""
    template = dict(VALID[path])
    template[draw(st.sampled_from([*template, "extra"]))] = "@@DEEP@@"
    return json.dumps(template).replace('"@@DEEP@@"', draw(DEEP_RAW).decode()).encode()


@st.composite
def with_bad_text(draw: st.DrawFn, path: str) -> bytes:
    """A valid body with a lone surrogate, NaN/Infinity or a 5,000-digit integer written into it by hand."""
    template = dict(VALID[path])
    template[draw(st.sampled_from([*template, "reason", "actor", "weights", "extra"]))] = "@@BAD@@"
    bad = draw(
        st.sampled_from(
            [
                '"\\ud800"',
                '"x\\udfff"',
                '"\\ud83d"',
                "NaN",
                "Infinity",
                "-Infinity",
                "1e400",
                "9" * 5000,
                '[{"version": "v2", "weight": NaN}]',
                '[{"version": "\\ud800", "weight": 1}]',
                '[{"version": "v2", "weight": ' + "9" * 5000 + "}]",
                '[{"version": "v2", "weight": 1e400}]',
                '[{"version": "v2", "weight": 4294967296}]',
                '[{"version": "v2", "weight": -1}]',
                '[{"version": "v2", "weight": 1.5}]',
                '[{"version": "v2", "weight": "100"}]',
                '{"\\ud800": 1}',
            ]
        )
    )
    return json.dumps(template).replace('"@@BAD@@"', bad).encode()


def any_body(path: str) -> st.SearchStrategy[Body]:
    return st.one_of(
        st.binary(max_size=2048),
        st.builds(_dumps, JSON_VALUES, st.booleans()),
        DEEP_RAW,
        HUGE_TEXT.map(lambda s: json.dumps({"reason": s}).encode()),
        with_deep_value(path),
        with_bad_text(path),
        mutated_bodies(path),
    ).map(Body)


@st.composite
def requests(draw: st.DrawFn, endpoints: list[tuple[str, str]] = ENDPOINTS) -> tuple[tuple[str, str], bytes]:
    endpoint = draw(st.sampled_from(endpoints))
    return endpoint, draw(any_body(endpoint[1]))


def _weights() -> st.SearchStrategy[dict[str, int]]:
    return st.dictionaries(
        st.sampled_from(VERSIONS), st.integers(min_value=0, max_value=1_000_000), min_size=1, max_size=2
    ).map(lambda w: w if sum(w.values()) else {**w, next(iter(w)): 1})


def valid_body(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """A well-formed request for `path` (which the API may still refuse for what it asks, e.g. a guard)."""
    reason = st.text(min_size=1, max_size=80)
    if path == "/v1/traffic":
        return st.fixed_dictionaries(
            {"weights": _weights().map(lambda w: [{"version": v, "weight": n} for v, n in w.items()])},
            optional={"reason": st.text(max_size=80), "actor": CLAIMED_ACTORS, "force": st.booleans()},
        )
    if path == "/v1/rollback":
        return st.fixed_dictionaries(
            {"reason": reason},
            optional={"to_version": st.sampled_from(["", *VERSIONS]), "actor": CLAIMED_ACTORS},
        )
    if path in ("/v1/pause", "/v1/resume"):
        return st.fixed_dictionaries({}, optional={"reason": st.text(max_size=80), "actor": CLAIMED_ACTORS})
    return st.fixed_dictionaries(
        {"version": st.sampled_from(VERSIONS), "reason": reason}, optional={"actor": CLAIMED_ACTORS}
    )


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[tuple[str, str], dict[str, Any]]:
    endpoint = draw(st.sampled_from(CHANGES))
    return endpoint, draw(valid_body(endpoint[1]))


# Header values as sent on the wire: any byte HTTP allows in a field value (VCHAR, SP, HTAB, obs-text), so that
# aiohttp's parser takes the request and the app has to judge it.
HEADER_BYTES = st.binary(max_size=80).map(
    lambda b: bytes(c for c in b if c in (0x09, 0x20) or 0x21 <= c <= 0x7E or c >= 0x80)
)
WRONG_AUTHORIZATION = st.one_of(
    st.none(),  # no header at all
    HEADER_BYTES.filter(lambda b: TOKEN.encode() not in b),
    st.builds(lambda t: b"Bearer " + t, HEADER_BYTES.filter(lambda b: b.strip() != TOKEN.encode())),
    st.sampled_from(
        [
            b"",
            b"Bearer",
            b"Bearer ",
            b"Basic " + TOKEN.encode(),
            b"Token " + TOKEN.encode(),
            b"Bearer" + TOKEN.encode(),
            b"Bearer " + TOKEN[:-1].encode(),
            b"Bearer " + TOKEN.encode() + b"2",
            b"Bearer " + TOKEN.upper().encode(),
            b"Bearer s3cr\xc3\xa9t",
            b"Bearer \xff\xfe",
            b"Bearer " + TOKEN.encode() + b"\xff",
            b"Bearer \xed\xa0\x80",  # a surrogate encoded as UTF-8 (invalid)
            TOKEN.encode(),
        ]
    ),
)


async def raw_request(rig: Rig, endpoint: tuple[str, str], authorization: bytes | None, body: bytes) -> Answer:
    """One HTTP/1.1 request written byte for byte (the client library would not send arbitrary header bytes)."""
    server = rig.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    method, path = endpoint
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    if authorization is not None:
        head.append(b"Authorization: " + authorization)
    head += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return Answer(int(status_line.split()[1]), payload.decode("utf-8", "replace"))


# --- properties ---------------------------------------------------------------------------------------------------


@FUZZ
@given(request=requests(), start=START_WEIGHTS, prior=PRIORS, chunked=st.booleans())
async def test_any_body_is_taken_or_refused_and_a_refusal_changes_nothing(
    request: tuple[tuple[str, str], bytes], start: dict[str, int], prior: str, chunked: bool
):
    endpoint, raw = request
    async with control_api(start, prior=prior) as rig:
        before = await rig.state()
        answer = await call(rig, endpoint, raw, chunked=chunked)
        event(f"{endpoint[1]} {answer.status}")
        assert_taken_or_refused(endpoint, answer)
        if answer.status != 200 and "outcome" not in answer.body:
            assert await rig.state() == before, f"a refused request changed something: {answer.text[:300]}"
            assert rig.sink.calls == []
        if endpoint == STATUS:
            assert answer.status == 200 and await rig.state() == before


@FUZZ
@given(
    request=valid_requests(),
    start=START_WEIGHTS,
    prior=PRIORS,
    identity=st.sampled_from(["ana", "ci-deployer", "jürgen"]),
)
async def test_every_record_of_an_accepted_change_is_by_the_authenticated_operator(
    request: tuple[tuple[str, str], dict[str, Any]], start: dict[str, int], prior: str, identity: str
):
    endpoint, body = request
    async with control_api(start, prior=prior, identity=identity) as rig:
        seen = len(await rig.store.records())
        answer = await call(rig, endpoint, json.dumps(body).encode())
        event(f"{endpoint[1]} {answer.status}")
        assert_taken_or_refused(endpoint, answer)
        new = (await rig.store.records())[seen:]
        if answer.status != 200:
            assert new == [] or "outcome" in answer.body
        assert {r.actor for r in new} <= {f"operator:{identity}"}, [(r.WhichOneof("event"), r.actor) for r in new]
        for record in new:
            trigger = _trigger(record)
            if trigger is not None:
                assert trigger.WhichOneof("source") == "operator", record
                assert trigger.operator.identity == identity
                assert trigger.operator.claimed_name == body.get("actor", "")
        if answer.status == 200 and endpoint[1] in ("/v1/pause", "/v1/resume", "/v1/hold", "/v1/release"):
            assert new, "an accepted pause or hold is on record"


def _trigger(record: audit_pb2.AuditRecord) -> audit_pb2.Trigger | None:
    which = record.WhichOneof("event")
    if which == "traffic_intent":
        return record.traffic_intent.trigger
    if which == "rollback":
        return record.rollback.trigger
    return None


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    authorization=WRONG_AUTHORIZATION,
    body=st.one_of(
        st.sampled_from(list(VALID.values())).map(lambda b: json.dumps(b).encode()), st.binary(max_size=200)
    ),
)
async def test_a_missing_or_wrong_token_is_a_401_and_changes_nothing(
    endpoint: tuple[str, str], authorization: bytes | None, body: bytes
):
    async with control_api({"v1": 50, "v2": 50}) as rig:
        before = await rig.state()
        answer = await raw_request(rig, endpoint, authorization, body)
        assert answer.status == 401, (authorization, answer.status, answer.text[:300])
        assert answer.body["code"] == "unauthenticated" and answer.body["message"]
        assert await rig.state() == before
        assert rig.sink.calls == []


def _changes_something(endpoint: tuple[str, str], body: dict[str, Any], start: dict[str, int]) -> bool:
    """Whether a well-formed request must write to the store (pause, resume, hold and release always do)."""
    if endpoint[1] == "/v1/traffic":
        asked = {item["version"]: item["weight"] for item in body["weights"]}
        return {v: asked.get(v, 0) for v in VERSIONS} != start
    if endpoint[1] == "/v1/rollback":
        target = body.get("to_version") or "v1"
        return any(w > 0 for v, w in start.items() if v != target)
    return True


@FUZZ
@given(request=valid_requests(), start=START_WEIGHTS)
async def test_a_store_that_cannot_write_answers_503_naming_the_cause_and_nothing_moves(
    request: tuple[tuple[str, str], dict[str, Any]], start: dict[str, int]
):
    endpoint, body = request
    async with control_api(start, unwritable=True) as rig:
        before = await rig.state()
        answer = await call(rig, endpoint, json.dumps(body).encode())
        event(f"{endpoint[1]} {answer.status}")
        if _changes_something(endpoint, body, start):
            assert answer.status == 503, (endpoint, body, answer.status, answer.text[:500])
            assert answer.body["code"] == "unavailable" and "disk full" in answer.body["message"]
        else:
            assert answer.status == 200, (endpoint, body, answer.status, answer.text[:500])
        assert await rig.state() == before or answer.status == 200
        assert rig.controller.desired == before[1]
        assert [w for w in rig.sink.calls if dict(w) != start] == [], "traffic moved although nothing was recorded"


@FUZZ
@given(request=requests(CHANGES), start=START_WEIGHTS)
async def test_any_body_on_a_store_that_cannot_write_is_refused_or_a_503_and_nothing_moves(
    request: tuple[tuple[str, str], bytes], start: dict[str, int]
):
    endpoint, raw = request
    async with control_api(start, unwritable=True) as rig:
        before = await rig.state()
        answer = await call(rig, endpoint, raw)
        event(f"{endpoint[1]} {answer.status}")
        assert answer.status in TAKEN_OR_REFUSED | {503}, (endpoint, answer.status, answer.text[:500])
        if answer.status != 200:
            assert_error_body(answer)
            assert await rig.state() == before
        if answer.status == 503:
            assert answer.body["code"] == "unavailable" and "disk full" in answer.body["message"]
        assert rig.controller.desired == before[1]
        assert [w for w in rig.sink.calls if dict(w) != start] == []
