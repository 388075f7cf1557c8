"""`status` shows each version's health (readiness, last golden result, age) as the agent's probes see it, for
versions sharing one server (probed on their versioned OIP paths) and says why such a version cannot be warmed."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agent.adapters.signals.oip_health import GoldenCheck, OipHealthSource, VersionProbe
from agent.cli import format_status
from agent.config import parse_config
from agent.domain.signals import Signal
from agent.engine.traffic import TrafficController
from agent.http.control_app import make_control_app
from agent.http.status_view import StatusView
from agent.ports.rollback import WarmUpError
from agent.telemetry import AgentMetrics
from tests.unit.engine.test_traffic import ScriptedSink, established_store

CONFIG = """
model: {name: iris}
versions:
  - {tag: v1, endpoint: "127.0.0.1:18080", oip_version: "1"}
  - {tag: v2, endpoint: "127.0.0.1:18080", oip_version: "2"}
stable: v1
candidate: v2
"""


class SharedServer:
    """One OIP server holding versions 1 (ready, right answer) and 2 (not ready); the bare path answers too, so a
    probe that forgot the version would look healthy."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app)

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        answers = {
            "/v2/models/iris/ready": web.json_response({}),
            "/v2/models/iris/infer": web.json_response({"outputs": [{"name": "predict", "data": [0]}]}),
            "/v2/models/iris/versions/1/ready": web.json_response({}),
            "/v2/models/iris/versions/1/infer": web.json_response({"outputs": [{"name": "predict", "data": [0]}]}),
            "/v2/models/iris/versions/2/ready": web.json_response({"error": "not ready"}, status=400),
            "/v2/models/iris/versions/2/infer": web.json_response({"error": "not ready"}, status=400),
        }
        return answers.get(request.path, web.json_response({"error": "not found"}, status=404))


@pytest.fixture
async def probed(tmp_path: Path):
    server = SharedServer()
    await server.server.start_server()
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{server.server.port}"
        health = OipHealthSource(
            session,
            [VersionProbe("v1", base, "iris", "1"), VersionProbe("v2", base, "iris", "2")],
            golden=GoldenCheck(request={"inputs": []}, output="predict", expect=[0], tolerance=0.0),
        )
        yield server, health
    await server.server.close()


async def test_probes_use_each_versions_path_and_never_the_bare_one(probed):
    server, health = probed
    samples = await health.sample(0.0)
    assert set(server.paths) == {
        "/v2/models/iris/versions/1/ready",
        "/v2/models/iris/versions/1/infer",
        "/v2/models/iris/versions/2/ready",
        "/v2/models/iris/versions/2/infer",
    }
    judged = {v: (s.gauges[Signal.HEALTH_READY], s.gauges[Signal.HEALTH_GOLDEN_OK]) for v, s in samples.items()}
    assert judged == {"v1": (1.0, 1.0), "v2": (0.0, 0.0)}
    assert await health.is_loaded("v1") and not await health.is_loaded("v2")


async def test_a_version_sharing_its_server_is_not_warmed_and_the_reason_says_why(probed):
    server, health = probed
    with pytest.raises(WarmUpError, match="loads model iris by name, not version 2 alone"):
        await health.warm("v2", timeout_s=1.0)
    assert not any("/repository/" in p for p in server.paths)  # nothing was loaded or unloaded


async def test_status_shows_readiness_golden_result_and_age_per_version(probed, tmp_path: Path):
    _, health = probed
    await health.sample(0.0)
    config = parse_config(CONFIG, "a.yaml", tmp_path)
    store = await established_store(tmp_path / "s.db", config.starting_weights(), model="iris")
    controller = TrafficController(
        model="iris",
        versions=config.tags,
        stable="v1",
        store=store,
        sink=ScriptedSink(store),
        metrics=AgentMetrics("iris"),
        ack_timeout_s=1,
    )
    await controller.start()
    view = StatusView(config, controller, None, health_report=health.health_report)
    app = make_control_app(controller, view, "s3cret", identity="ana")
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/status", headers={"Authorization": "Bearer s3cret"})
        assert response.status == 200
        payload = await response.json()
    await store.close()

    by_version = {v["version"]: v for v in payload["versions"]}
    v1 = {h["name"]: h for h in by_version["v1"]["health"]}
    v2 = {h["name"]: h for h in by_version["v2"]["health"]}
    assert [h["name"] for h in by_version["v1"]["health"]] == ["ready", "golden_inference"]
    assert v1["ready"]["ok"] and v1["golden_inference"]["ok"] and 0 <= v1["ready"]["age_s"] < 5
    assert not v2["ready"]["ok"] and "HTTP 400" in v2["ready"]["detail"]
    assert not v2["golden_inference"]["ok"] and "HTTP 400" in v2["golden_inference"]["detail"]
    assert "by name" in by_version["v2"]["warm_up_unavailable"]

    text = format_status(payload)
    lines = text.splitlines()
    v2_row = next(i for i, line in enumerate(lines) if line.startswith("v2 "))
    assert "ready FAILED (not ready (HTTP 400))" in lines[v2_row + 1]
    assert "golden FAILED (infer answered HTTP 400)" in lines[v2_row + 1]
    assert "s ago" in lines[v2_row + 1]
    assert lines[v2_row + 2].strip().startswith("no warm-up: the OIP repository API loads model iris by name")
    v1_row = next(i for i, line in enumerate(lines) if line.startswith("v1 "))
    assert "ready ok" in lines[v1_row + 1] and "golden ok" in lines[v1_row + 1]
