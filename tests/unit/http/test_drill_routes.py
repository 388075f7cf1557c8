"""The control API's drill endpoints: refusals name every reason and record nothing; a registered drill and its
result are on record under the authenticated identity; bad bodies are 400 naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.config import parse_config
from agent.engine.admission import Admission
from agent.engine.drill import DrillDesk, DrillMetrics
from agent.engine.traffic import TrafficController
from agent.http.control_app import make_control_app
from agent.http.drill_routes import add_drill_routes
from agent.http.status_view import StatusView
from agent.telemetry import AgentMetrics
from tests.unit.engine.test_traffic import ScriptedSink, established_store
from tests.unit.http.test_control_app import FakeProcedure
from tests.unit.test_config import GOOD

AUTH = {"Authorization": "Bearer s3cret"}


@pytest.fixture
async def api(tmp_path: Path):
    config = parse_config(GOOD, "a.yaml", tmp_path)
    store = await established_store(tmp_path / "s.db", config.starting_weights())
    metrics = AgentMetrics("credit")
    controller = TrafficController(
        model="credit",
        versions=config.tags,
        stable="v1",
        store=store,
        sink=ScriptedSink(store),
        metrics=metrics,
        ack_timeout_s=1,
    )
    await controller.start()
    admission = Admission(traffic=controller, store=store, procedure=FakeProcedure(controller))
    app = make_control_app(
        controller, StatusView(config, controller, None, admission=admission), "s3cret", identity="ana"
    )
    desk = DrillDesk(
        store=store, desired=lambda: controller.desired, metrics=DrillMetrics(metrics.registry, "credit"), cooldown_s=0
    )
    add_drill_routes(app, desk)
    client = TestClient(TestServer(app))
    async with client:
        yield client, store, controller
    await store.close()


async def kinds(store) -> list[str]:
    return [r.WhichOneof("event") for r in await store.records()]


async def test_refused_without_a_canary_split_and_nothing_recorded(api):
    client, store, _ = api
    response = await client.post("/v1/drill/start", json={"fault": "errors"}, headers=AUTH)
    body = await response.json()
    assert response.status == 409 and body["code"] == "refused"
    assert "no version to drill: the split (v1=100)" in body["message"]
    assert "drill_started" not in await kinds(store)


async def test_start_get_and_finish_on_record(api):
    client, store, controller = api
    await controller.set_weights({"v1": 90, "v2": 10}, reason="canary", actor="operator:ana")

    response = await client.post("/v1/drill/start", json={"fault": "errors", "actor": "ana-laptop"}, headers=AUTH)
    state = await response.json()
    assert response.status == 200, state
    assert (state["version"], state["active"], state["actor"]) == ("v2", True, "operator:ana")
    [started] = [r for r in await store.records() if r.WhichOneof("event") == "drill_started"]
    assert started.actor == "operator:ana" and "requested as 'ana-laptop', unverified" in started.drill_started.reason

    again = await client.post("/v1/drill/start", json={"fault": "errors"}, headers=AUTH)
    assert again.status == 409 and "is already running" in (await again.json())["message"]
    got = await (await client.get("/v1/drill", headers=AUTH)).json()
    assert got["drill_id"] == state["drill_id"] and got["rollbacks"] == []

    bad = await client.post("/v1/drill/finish", json={"drill_id": state["drill_id"], "outcome": "great"}, headers=AUTH)
    assert bad.status == 400 and "outcome: must be passed or failed" in (await bad.json())["message"]
    done = await client.post(
        "/v1/drill/finish",
        json={"drill_id": state["drill_id"], "outcome": "passed", "phases": [{"name": "switch", "duration_ms": 4.0}]},
        headers=AUTH,
    )
    assert done.status == 200 and (await done.json())["outcome"] == "passed"
    [finished] = [r for r in await store.records() if r.WhichOneof("event") == "drill_finished"]
    assert finished.drill_finished.outcome == "passed"
    assert [w.weight for w in finished.drill_finished.restored_policy.weights] == [90, 10]
    unknown = await client.post("/v1/drill/finish", json={"drill_id": "drill-x", "outcome": "passed"}, headers=AUTH)
    assert unknown.status == 409 and "no drill 'drill-x'" in (await unknown.json())["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "fault: a drill names its fault"),
        ({"fault": "errors", "ttl_s": -1}, "ttl_s: must be within"),
        ({"fault": "errors", "colour": "red"}, "body is not a valid DrillStartRequest"),
    ],
)
async def test_bad_start_bodies_are_400_naming_the_field(api, body, message):
    client, store, _ = api
    response = await client.post("/v1/drill/start", json=body, headers=AUTH)
    assert response.status == 400 and message in (await response.json())["message"]
    assert "drill_started" not in await kinds(store)


async def test_no_token_no_drill(api):
    client, store, _ = api
    response = await client.post("/v1/drill/start", json={"fault": "errors"})
    assert response.status == 401
    assert "drill_started" not in await kinds(store)
