from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.config import parse_config
from agent.engine.traffic import TrafficController
from agent.http.control_app import make_control_app
from agent.http.status_view import StatusView
from agent.telemetry import AgentMetrics
from tests.unit.engine.test_traffic import ScriptedSink
from tests.unit.test_config import GOOD


@pytest.fixture
async def client(tmp_path: Path):
    config = parse_config(GOOD, "a.yaml", tmp_path)
    store = await SqliteStateStore.open(tmp_path / "s.db")
    sink = ScriptedSink(store)
    controller = TrafficController(
        model="credit",
        versions=config.tags,
        stable="v1",
        store=store,
        sink=sink,
        metrics=AgentMetrics("credit"),
        ack_timeout_s=1,
    )
    await controller.start(config.starting_weights())
    app = make_control_app(controller, StatusView(config, controller, None), "s3cret")
    async with TestClient(TestServer(app)) as c:
        yield c, sink
    await store.close()


AUTH = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}])
async def test_without_valid_token_refused_and_nothing_changes(client, headers):
    c, sink = client
    for method, path in (("GET", "/v1/status"), ("POST", "/v1/traffic"), ("POST", "/v1/rollback")):
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
    ],
)
async def test_bad_requests_get_400_naming_the_problem(client, path, body, message):
    c, sink = client
    resp = await c.post(path, data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert message in (await resp.json())["message"]
    assert sink.applied == []
