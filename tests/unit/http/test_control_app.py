from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.config import parse_config
from agent.engine.admission import Admission
from agent.engine.decisions import Decision, DecisionOutcome, actor_of
from agent.engine.traffic import TrafficController
from agent.http.control_app import make_control_app
from agent.http.identities import Identities
from agent.http.status_view import StatusView
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StoreUnavailableError
from agent.telemetry import AgentMetrics
from tests.unit.engine.test_traffic import ScriptedSink, Unwritable, established_store
from tests.unit.test_config import GOOD


class FakeProcedure:
    """The rollback procedure behind admission: moves all traffic to the stable version (or raises `fail`)."""

    def __init__(self, controller: TrafficController) -> None:
        self.controller = controller
        self.fail: Exception | None = None

    async def run(self, event, failing, entered):
        if self.fail is not None:
            raise self.fail
        await self.controller.rollback(to=event.target, reason=event.summary, actor=actor_of(event))
        return Decision(DecisionOutcome.ROLLED_BACK, f"rolled back {failing}", "rb1", event.target or "v1")

    async def record_suppressed(self, event, failing, why):
        return None


class Rig:
    def __init__(self, client: TestClient, sink: ScriptedSink, store, procedure: FakeProcedure) -> None:
        self.client = client
        self.sink = sink
        self.store = store
        self.procedure = procedure

    async def records(self) -> list[audit_pb2.AuditRecord]:
        return await self.store.records()


async def make_client(tmp_path: Path, *, unwritable: bool = False, credentials: str | Identities = "s3cret"):
    config = parse_config(GOOD, "a.yaml", tmp_path)
    store = await established_store(tmp_path / "s.db", config.starting_weights())
    sink = ScriptedSink(store)
    controller = TrafficController(
        model="credit",
        versions=config.tags,
        stable="v1",
        store=Unwritable(store) if unwritable else store,
        sink=sink,
        metrics=AgentMetrics("credit"),
        ack_timeout_s=1,
    )
    await controller.start()
    procedure = FakeProcedure(controller)
    admission = Admission(
        traffic=controller,
        store=Unwritable(store) if unwritable else store,
        procedure=procedure,
    )
    app = make_control_app(
        controller,
        StatusView(config, controller, None, admission=admission),
        credentials,
        identity="ana",
        decisions=admission,
        admission=admission,
    )
    return TestClient(TestServer(app)), sink, store, procedure


@pytest.fixture
async def rig(tmp_path: Path):
    client, sink, store, procedure = await make_client(tmp_path)
    async with client:
        yield Rig(client, sink, store, procedure)
    await store.close()


@pytest.fixture
async def client(rig: Rig):
    return rig.client, rig.sink


AUTH = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}])
async def test_without_valid_token_refused_and_nothing_changes(client, headers):
    c, sink = client
    for method, path in (
        ("GET", "/v1/status"),
        ("POST", "/v1/traffic"),
        ("POST", "/v1/rollback"),
        ("POST", "/v1/hold"),
        ("POST", "/v1/release"),
    ):
        resp = await c.request(method, path, json={"weights": [{"version": "v2", "weight": 100}]}, headers=headers)
        assert resp.status == 401
        assert (await resp.json())["code"] == "unauthenticated"
    assert sink.applied == []


async def test_set_weights_and_status(client):
    c, _sink = client
    resp = await c.post(
        "/v1/traffic", json={"weights": [{"version": "v2", "weight": 100}], "reason": "t"}, headers=AUTH
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["changed"] and body["acks"][0]["node_id"] == "envoy-1"
    status = await (await c.get("/v1/status", headers=AUTH)).json()
    assert [(v["version"], v["desired_weight"], v["served_weight"]) for v in status["versions"]] == [
        ("v1", 0, 0),
        ("v2", 100, 100),
    ]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/traffic", b"{not json", "not a valid SetWeightsRequest"),
        ("/v1/traffic", b'{"weights": [{"version": "v9", "weight": 1}]}', "unknown version"),
        ("/v1/traffic", b'{"weights": [{"version": "v1", "weight": 1}, {"version": "v1", "weight": 2}]}', "twice"),
        ("/v1/traffic", b'{"wieghts": []}', "not a valid"),
        ("/v1/rollback", b'{"to_version": "v9", "reason": "x"}', "unknown version"),
        ("/v1/rollback", b"{}", "needs a reason"),
        ("/v1/hold", b'{"version": "v2"}', "needs a reason"),
        ("/v1/hold", b'{"reason": "x"}', "names a version"),
        ("/v1/hold", b'{"version": "v9", "reason": "x"}', "unknown version"),
        ("/v1/traffic", b'{"reason": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        ("/v1/pause", b'{"reason": ' + b'{"a": ' * 40 + b"1" + b"}" * 41, "nested deeper"),
    ],
)
async def test_bad_requests_get_400_naming_the_problem(rig: Rig, path, body, message):
    before = await rig.records()
    resp = await rig.client.post(path, data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert message in (await resp.json())["message"]
    assert rig.sink.applied == []
    assert await rig.records() == before, "a bad request records nothing"


async def test_the_recorded_actor_is_the_authenticated_identity_never_the_claimed_one(rig: Rig):
    resp = await rig.client.post(
        "/v1/traffic",
        json={"weights": [{"version": "v2", "weight": 100}], "reason": "canary", "actor": "rule:error-rate"},
        headers=AUTH,
    )
    assert resp.status == 200, await resp.text()
    resp = await rig.client.post("/v1/pause", json={"reason": "INC-9", "actor": "rule:error-rate"}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    records = await rig.records()
    intent = next(r for r in records if r.WhichOneof("event") == "traffic_intent")
    assert intent.actor == "operator:ana"
    operator = intent.traffic_intent.trigger.operator
    assert (operator.identity, operator.claimed_name) == ("ana", "rule:error-rate")
    pause = records[-1]
    assert pause.actor == "operator:ana"
    assert pause.automation_toggled.reason == "INC-9 (requested as 'rule:error-rate', unverified)"
    assert not [r for r in records if r.actor.startswith("rule:")]


async def test_hold_and_release(rig: Rig):
    resp = await rig.client.post("/v1/hold", json={"version": "v2", "reason": "INC-7"}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    record = (await rig.records())[-1]
    assert record.actor == "operator:ana"
    assert (record.hold_changed.version, record.hold_changed.held) == ("v2", True)
    assert await rig.store.get_setting("hold:v2") == "INC-7"
    resp = await rig.client.post("/v1/traffic", json={"weights": [{"version": "v2", "weight": 100}]}, headers=AUTH)
    body = await resp.json()
    assert resp.status == 409 and body["code"] == "refused" and "held: INC-7" in body["message"]
    assert rig.sink.applied == []
    resp = await rig.client.post(
        "/v1/traffic", json={"weights": [{"version": "v2", "weight": 100}], "force": True}, headers=AUTH
    )
    assert resp.status == 200, await resp.text()
    resp = await rig.client.post("/v1/release", json={"version": "v2", "reason": "fixed"}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await rig.records())[-1].hold_changed.held is False
    assert await rig.store.get_setting("hold:v2") is None
    resp = await rig.client.post(
        "/v1/traffic",
        json={"weights": [{"version": "v2", "weight": 50}, {"version": "v1", "weight": 50}]},
        headers=AUTH,
    )
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/traffic", {"weights": [{"version": "v2", "weight": 100}], "reason": "canary"}),
        ("/v1/pause", {"reason": "INC-9"}),
        ("/v1/hold", {"version": "v2", "reason": "INC-7"}),
    ],
)
async def test_a_store_that_cannot_write_answers_503_naming_the_cause(tmp_path: Path, path, body):
    client, sink, store, _procedure = await make_client(tmp_path, unwritable=True)
    async with client:
        resp = await client.post(path, json=body, headers=AUTH)
        answer = await resp.json()
        status = await (await client.get("/v1/status", headers=AUTH)).json()
    assert resp.status == 503, answer
    assert answer["code"] == "unavailable" and "disk full" in answer["message"]
    assert sink.applied == []
    assert [r.WhichOneof("event") for r in await store.records()] == ["state_established"]
    assert not status.get("automation_paused", False)
    await store.close()


async def test_a_rollback_the_store_cannot_record_answers_503(rig: Rig):
    resp = await rig.client.post("/v1/traffic", json={"weights": [{"version": "v2", "weight": 100}]}, headers=AUTH)
    assert resp.status == 200
    rig.procedure.fail = StoreUnavailableError("state store s.db: read-only (attempt to write a readonly database)")
    resp = await rig.client.post("/v1/rollback", json={"reason": "bad scores"}, headers=AUTH)
    answer = await resp.json()
    assert resp.status == 503, answer
    assert answer["code"] == "unavailable" and "read-only" in answer["message"]


async def test_a_lone_surrogate_in_the_reason_is_refused_and_records_nothing(rig: Rig):
    before = await rig.records()
    for path, body in (
        ("/v1/traffic", b'{"weights": [{"version": "v2", "weight": 100}], "reason": "bad \\ud800 text"}'),
        ("/v1/pause", b'{"reason": "\\udfff"}'),
        ("/v1/rollback", b'{"reason": "x\\ud83d"}'),
        ("/v1/hold", b'{"version": "v2", "reason": "\\ud800"}'),
    ):
        resp = await rig.client.post(path, data=body, headers={**AUTH, "Content-Type": "application/json"})
        answer = await resp.json()
        assert resp.status == 400, (path, answer)
        assert "lone surrogate" in answer["message"] and "reason" in answer["message"]
    assert rig.sink.applied == []
    assert await rig.records() == before


async def test_unknown_endpoints_and_methods_answer_the_apis_json_error(client):
    c, _ = client
    for method, path, status, code, says in (
        ("GET", "/v1/nope", 404, "not_found", "no such endpoint: GET /v1/nope"),
        ("POST", "/v1/leases/./renew", 404, "not_found", "no such endpoint"),  # the dot segment normalised away
        ("DELETE", "/v1/traffic", 405, "method_not_allowed", "DELETE is not allowed on /v1/traffic"),
    ):
        resp = await c.request(method, path, headers=AUTH)
        assert resp.status == status and resp.content_type == "application/json", (method, path)
        body = await resp.json()
        assert body["code"] == code and says in body["message"], body
    unauthenticated = await c.get("/v1/nope")
    assert unauthenticated.status == 401 and (await unauthenticated.json())["code"] == "unauthenticated"
