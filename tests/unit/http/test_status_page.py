"""The status page's files and the read views behind it (/v1/overview, /v1/rollbacks/{id}) on the control app."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.config import ConfigError, StatusPageSection, parse_config
from agent.engine.admission import Admission
from agent.engine.traffic import TrafficController
from agent.http.control_app import make_control_app
from agent.http.decision_feed import DecisionFeed
from agent.http.identities import Identities, Identity, Role, token_sha256
from agent.http.rollback_progress import StepWatch
from agent.http.status_page import ASSETS_DIR, PAGE_PATHS, WatchViews, add_status_page, add_watch_views
from agent.http.status_view import StatusView
from agent.telemetry import AgentMetrics
from tests.unit.engine.test_traffic import ScriptedSink, established_store
from tests.unit.http.test_control_app import FakeProcedure
from tests.unit.test_config import GOOD

OPERATOR = {"Authorization": "Bearer op-token"}
READER = {"Authorization": "Bearer reader-token"}
MARKUP = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


async def _client(tmp_path: Path, *, page: bool = True) -> tuple[TestClient, object]:
    config = parse_config(GOOD, "a.yaml", tmp_path)
    store = await established_store(tmp_path / "s.db", config.starting_weights())
    controller = TrafficController(
        model="credit",
        versions=config.tags,
        stable="v1",
        store=store,
        sink=ScriptedSink(store),
        metrics=AgentMetrics("credit"),
        ack_timeout_s=1,
    )
    await controller.start()
    admission = Admission(traffic=controller, store=store, procedure=FakeProcedure(controller))
    status_view = StatusView(config, controller, None, admission=admission)
    identities = Identities(
        [
            Identity("ana", Role.OPERATOR, token_sha256("op-token")),
            Identity("dashboard", Role.READ_ONLY, token_sha256("reader-token")),
        ]
    )
    app = make_control_app(controller, status_view, identities, decisions=admission, admission=admission)
    feed = DecisionFeed(store, lambda: store.head_seq)
    add_watch_views(app, WatchViews(status_view, feed, StepWatch(), StatusPageSection()))
    if page:
        add_status_page(app)
    return TestClient(TestServer(app)), store


@pytest.fixture
async def client(tmp_path: Path):
    c, store = await _client(tmp_path)
    async with c:
        yield c
    await store.close()  # type: ignore[attr-defined]


async def test_page_files_need_no_token_and_forbid_foreign_code(client):
    for path in PAGE_PATHS:
        resp = await client.get(path)
        assert resp.status == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    html = await (await client.get("/status")).text()
    # Air-gapped: nothing is loaded from anywhere but the agent, and nothing runs inline.
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "no CDN, no external font"
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/status/status.js">']


def test_page_script_never_parses_data_as_markup():
    script = (ASSETS_DIR / "status.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "textContent" in script


async def test_overview_needs_a_token_and_read_only_suffices(client):
    assert (await client.get("/v1/overview")).status == 401
    assert (await client.get("/v1/overview", headers={"Authorization": "Bearer wrong"})).status == 401
    resp = await client.get("/v1/overview", headers=READER)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert [(v["version"], v["desired_weight"]) for v in body["status"]["versions"]] == [("v1", 100), ("v2", 0)]
    assert "rollback" not in body and body["refresh_s"] == 1.0  # a message field not set is left out


async def test_decisions_list_changes_with_their_reasons_and_outcomes(client):
    resp = await client.post(
        "/v1/traffic", json={"weights": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}],
                             "reason": MARKUP}, headers=OPERATOR)  # fmt: skip
    assert resp.status == 200, await resp.text()
    assert (await client.post("/v1/hold", json={"version": "v2", "reason": "risk review"}, headers=OPERATOR)).ok
    body = await (await client.get("/v1/overview", headers=READER)).json()
    hold, traffic = body["decisions"][:2]
    assert (hold["kind"], hold["summary"], hold["reason"]) == ("hold", "v2 held", "risk review")
    assert traffic["kind"] == "traffic" and traffic["summary"] == "traffic v1=100 v2=0 -> v1=50 v2=50"
    assert traffic["reason"] == MARKUP, "data is sent as it is; the page sets it as text"
    assert traffic["outcome"] == "acked" and traffic["actor"] == "operator:ana"
    assert body["status"]["holds"] == {"v2": "risk review"}


async def test_rollback_progress_of_an_unknown_id_is_404_naming_it(client):
    resp = await client.get("/v1/rollbacks/nope", headers=READER)
    assert resp.status == 404
    assert "nope" in (await resp.json())["message"]


async def test_status_page_off_serves_no_page_but_keeps_the_views(tmp_path: Path):
    c, store = await _client(tmp_path, page=False)
    async with c:
        assert (await c.get("/status")).status == 401
        assert (await c.get("/status", headers=READER)).status == 404
        assert (await c.get("/v1/overview", headers=READER)).status == 200
    await store.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("value", "enabled"), [("off", False), ("on", True), ("{enabled: false}", False)])
def test_status_page_setting(tmp_path: Path, value: str, enabled: bool):
    config = parse_config(GOOD + f"status_page: {value}\n", "a.yaml", tmp_path)
    assert config.status_page.enabled is enabled


def test_bad_status_page_setting_names_the_line_and_field(tmp_path: Path):
    with pytest.raises(ConfigError) as error:
        parse_config(GOOD + "status_page: {refresh_s: 0}\n", "a.yaml", tmp_path)
    assert "a.yaml:10: status_page.refresh_s" in str(error.value)


def test_the_page_files_ship_with_the_package():
    pyproject = tomllib.loads((ASSETS_DIR.parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["agent"]
    names = {name for name, _ in PAGE_PATHS.values()}
    assert names == {p.name for p in ASSETS_DIR.iterdir()}
    for name in names:
        relative = (ASSETS_DIR / name).relative_to(ASSETS_DIR.parents[1]).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


async def test_overview_shows_the_rollout_once_one_was_started(tmp_path: Path):
    from agent.engine.rollout import RolloutDriver
    from agent.http.control_app import ADMISSION, CONTROLLER
    from agent.http.rollout_api import add_rollout_routes, rollout_sample
    from tests.unit.engine.test_rollout import PLAN, Marks

    c, store = await _client(tmp_path)
    app = c.server.app
    driver = RolloutDriver(
        traffic=app[CONTROLLER],
        store=store,  # type: ignore[arg-type]
        marks=Marks(),
        holds=app[ADMISSION].blockers,
        measurements=lambda candidate, stable: None,
    )
    add_rollout_routes(app, driver, lambda: (PLAN, "plan.yaml"))
    async with c:
        assert "rollout" not in (await (await c.get("/v1/overview", headers=READER)).json())
        resp = await c.post("/v1/rollout/start", json={"version": "v2", "reason": "release 2"}, headers=OPERATOR)
        assert resp.status == 200, await resp.text()
        await driver.tick()
        rollout = (await (await c.get("/v1/overview", headers=READER)).json())["rollout"]
        assert (rollout["candidate"], rollout["status"], rollout["stage"]) == ("v2", "running", 0)
        assert rollout["stages"][0]["name"] == "canary-5" and rollout["stages"][0]["weight"] == 5
        assert [g["gate"] for g in rollout["gates"]] == ["rule:error-rate"]
        assert rollout["gates"][0]["outcome"] == "insufficient_evidence"
        sample = rollout_sample(driver)  # what /metrics shows
        assert sample is not None and (sample.stage, sample.candidate_weight) == ("canary-5", 5)
        assert sample.gates == (("rule:error-rate", "insufficient_evidence"),)
        resp = await c.post("/v1/rollout/abort", json={"reason": "bias"}, headers=OPERATOR)
        assert resp.status == 200, await resp.text()
        assert (await c.post("/v1/hold", json={"version": "v2", "reason": "review"}, headers=OPERATOR)).ok
        rollout = (await (await c.get("/v1/overview", headers=READER)).json())["rollout"]
        assert rollout["status"] == "aborted" and not rollout["held"], "an ended rollout is not held"
        sample = rollout_sample(driver)
        assert sample is not None and (sample.status, sample.candidate_weight, sample.gates) == ("aborted", 0, ())
    await store.close()  # type: ignore[attr-defined]
