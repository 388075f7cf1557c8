"""Real Envoy: versions sharing one server get their versioned OIP path; an endpoint given by name is resolved.

One in-process upstream stands in for a model server holding two versions: it echoes the path it was asked for,
and Envoy stamps which weighted cluster served (x-served-by-version). So each answer says both which version the
split picked and which path that version's server saw.
"""

from __future__ import annotations

import collections
import json

import aiohttp

from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.resources import VERSION_HEADER, ModelTopology, OipVersionPath
from agent.adapters.xds.resources import VersionUpstream as Upstream
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from harness.bootstraps import agent_bootstrap
from harness.ports import free_port
from harness.upstream import VersionUpstream
from harness.wait import async_wait_until


async def _answers(url: str, n: int) -> collections.Counter[tuple[str, str, int]]:
    """(served-by version, path the server saw, status) of n POSTs."""
    seen: collections.Counter[tuple[str, str, int]] = collections.Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.post(url, json={"inputs": []}) as response:
                body = json.loads(await response.text())
                seen[(response.headers.get(VERSION_HEADER, ""), body.get("path", ""), response.status)] += 1
    return seen


async def test_each_version_gets_its_versioned_path_and_weights_follow_the_acked_route(envoy_factory):
    async with VersionUpstream("server") as server:
        listener_port = free_port()
        topology = ModelTopology(
            model="credit",
            upstreams=(
                Upstream("v1", "127.0.0.1", server.port, OipVersionPath("iris", "1")),
                Upstream("v2", "127.0.0.1", server.port, OipVersionPath("iris", "2")),
            ),
            listener_host="127.0.0.1",
            listener_port=listener_port,
        )
        cache = SnapshotCache()
        sink = XdsRouteSink(cache, topology)
        sink.publish_initial((("v1", 50), ("v2", 50)))
        xds, xds_port = await start_xds_server(cache, "127.0.0.1", 0)
        try:
            envoy_factory(agent_bootstrap(xds_port=xds_port, node_id="shared-envoy"))
            await async_wait_until(cache.in_sync, 15, what="Envoy in sync")
            base = f"http://127.0.0.1:{listener_port}"

            seen = await _answers(f"{base}/v2/models/iris/infer", 200)
            assert set(seen) == {
                ("v1", "/v2/models/iris/versions/1/infer", 200),
                ("v2", "/v2/models/iris/versions/2/infer", 200),
            }
            # 50/50: each side well inside a binomial's 5 sigma (sd ~7 of 200).
            assert all(65 <= count <= 135 for count in seen.values()), seen

            # Paths of other models, and paths already naming a version, pass unchanged.
            other = await _answers(f"{base}/v2/models/iris-other/infer", 20)
            assert {path for _, path, _ in other} == {"/v2/models/iris-other/infer"}
            pinned = await _answers(f"{base}/v2/models/iris/versions/7/infer", 20)
            assert {path for _, path, _ in pinned} == {"/v2/models/iris/versions/7/infer"}
            ready = await _answers(f"{base}/v2/models/iris/ready?x=1", 20)
            assert {path for _, path, _ in ready} <= {
                "/v2/models/iris/versions/1/ready",
                "/v2/models/iris/versions/2/ready",
            }

            await sink.apply((("v1", 100), ("v2", 0)), timeout_s=5)
            after = await _answers(f"{base}/v2/models/iris/infer", 100)
            assert after == {("v1", "/v2/models/iris/versions/1/infer", 200): 100}
        finally:
            await xds.stop(None)


async def test_endpoint_given_by_name_is_served_through_a_strict_dns_cluster(envoy_factory):
    async with VersionUpstream("v1") as v1, VersionUpstream("v2") as v2:
        listener_port = free_port()
        topology = ModelTopology(
            model="credit",
            upstreams=(Upstream("v1", "127.0.0.1", v1.port), Upstream("v2", "localhost", v2.port)),
            listener_host="127.0.0.1",
            listener_port=listener_port,
        )
        cache = SnapshotCache()
        sink = XdsRouteSink(cache, topology)
        sink.publish_initial((("v1", 0), ("v2", 100)))
        xds, xds_port = await start_xds_server(cache, "127.0.0.1", 0)
        try:
            envoy = envoy_factory(agent_bootstrap(xds_port=xds_port, node_id="dns-envoy"))
            await async_wait_until(cache.in_sync, 15, what="Envoy in sync")
            dump = await envoy.config_dump_async("dynamic_active_clusters")
            types = {c["cluster"]["name"]: c["cluster"].get("type", "STATIC") for c in dump["configs"]}
            assert types == {"credit__v1": "STATIC", "credit__v2": "STRICT_DNS"}

            async def resolved() -> bool:
                stats = await envoy.stats_async("cluster.credit__v2.membership_healthy")
                return stats.get("cluster.credit__v2.membership_healthy", 0) >= 1

            await async_wait_until(resolved, 10, what="localhost resolved by Envoy")
            seen = await _answers(f"http://127.0.0.1:{listener_port}/v2/models/credit/infer", 50)
            assert seen == {("v2", "/v2/models/credit/infer", 200): 50}
            assert v2.requests == 50 and v1.requests == 0
        finally:
            await xds.stop(None)
