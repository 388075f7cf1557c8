"""Two versions of one model in one real MLServer, behind a real Envoy fed by the agent's xDS server.

Clients call the unversioned `/v2/models/cancer/infer`; each version's weighted cluster rewrites it to that version's
path, so the split is what the answers say: MLServer names the answering version in `model_version`. The agent's
own probes use the versioned paths too: a wrong-answer fault on version 2 fails only v2's golden check.
"""

from __future__ import annotations

import collections

import aiohttp
import pytest

from agent.adapters.signals.oip_health import GoldenCheck, OipHealthSource, VersionProbe
from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.resources import VERSION_HEADER, ModelTopology, OipVersionPath, VersionUpstream
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from agent.ports.rollback import WarmUpError
from harness.binaries import MissingBinaryError
from harness.bootstraps import agent_bootstrap
from harness.mlserver import MLServerModel, MLServerProcess, mlserver_binary
from harness.ports import free_port
from harness.wait import async_wait_until
from refserver.client import sample_request
from tests.integration.conftest import unavailable

MODEL = "cancer"


@pytest.fixture
def mlserver(tmp_path, tmp_logs):
    try:
        mlserver_binary()
    except MissingBinaryError as err:
        unavailable(str(err))
    server = MLServerProcess(
        [MLServerModel(MODEL, "1"), MLServerModel(MODEL, "2")], log_dir=tmp_logs, work_dir=tmp_path / "mlserver"
    )
    try:
        yield server.start()
    finally:
        server.stop()


async def _answered_by(url: str, n: int) -> collections.Counter[tuple[str, str]]:
    """(Envoy's served-by version, MLServer's model_version) of n inferences, all of which must succeed."""
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            async with session.post(url, json=sample_request(1, seed=i)) as response:
                assert response.status == 200, await response.text()
                body = await response.json()
                seen[(response.headers.get(VERSION_HEADER, ""), body.get("model_version", ""))] += 1
    return seen


async def test_two_versions_in_one_mlserver_split_as_configured_and_follow_a_weight_change(mlserver, envoy_factory):
    listener_port = free_port()
    topology = ModelTopology(
        model=MODEL,
        upstreams=(
            VersionUpstream("v1", "127.0.0.1", mlserver.port, OipVersionPath(MODEL, "1")),
            VersionUpstream("v2", "127.0.0.1", mlserver.port, OipVersionPath(MODEL, "2")),
        ),
        listener_host="127.0.0.1",
        listener_port=listener_port,
    )
    cache = SnapshotCache()
    sink = XdsRouteSink(cache, topology)
    sink.publish_initial((("v1", 50), ("v2", 50)))
    xds, xds_port = await start_xds_server(cache, "127.0.0.1", 0)
    try:
        envoy_factory(agent_bootstrap(xds_port=xds_port, node_id="mlserver-envoy"))
        await async_wait_until(cache.in_sync, 15, what="Envoy in sync")
        url = f"http://127.0.0.1:{listener_port}/v2/models/{MODEL}/infer"

        seen = await _answered_by(url, 200)
        # Each weighted cluster reaches its own version, and 50/50 is what is served (each side within ~4.2 sigma).
        assert set(seen) == {("v1", "1"), ("v2", "2")}, seen
        assert all(70 <= count <= 130 for count in seen.values()), seen

        applied = await sink.apply((("v1", 100), ("v2", 0)), timeout_s=5)
        assert applied.route_version == cache.snapshot.route_version
        assert await _answered_by(url, 100) == {("v1", "1"): 100}
    finally:
        await xds.stop(None)


async def test_probes_and_golden_checks_use_each_versions_path_and_warm_up_is_refused_with_the_reason(mlserver):
    request = sample_request(1, seed=7)
    expected = mlserver.infer(MODEL, request, version="1").json()
    predict = next(o["data"] for o in expected["outputs"] if o["name"] == "predict")
    await mlserver.set_faults_async(MODEL, "2", {"wrong": True})
    async with aiohttp.ClientSession() as session:
        health = OipHealthSource(
            session,
            [
                VersionProbe("v1", mlserver.url, MODEL, "1"),
                VersionProbe("v2", mlserver.url, MODEL, "2"),
            ],
            golden=GoldenCheck(request=request, output="predict", expect=predict, tolerance=0.0),
            timeout_s=5.0,
        )
        await health.sample(0.0)
        report = health.health_report()
        assert report["v1"]["ready"]["ok"] and report["v2"]["ready"]["ok"]
        assert report["v1"]["golden_inference"]["ok"]
        assert not report["v2"]["golden_inference"]["ok"], report["v2"]
        assert "expected" in report["v2"]["golden_inference"]["detail"]
        for version in ("v1", "v2"):
            assert "loads model cancer by name" in report[version]["warm_up"]["detail"]

        with pytest.raises(WarmUpError, match="not attempted: the OIP repository API loads model cancer by name"):
            await health.warm("v2", timeout_s=5.0)
        # Nothing was unloaded or reloaded: both versions still answer.
        assert mlserver.model_ready_status(MODEL, "1") == 200 and mlserver.model_ready_status(MODEL, "2") == 200
