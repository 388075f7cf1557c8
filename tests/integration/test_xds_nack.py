"""A config the real Envoy rejects: the NACK is recorded, the last good config keeps serving, nothing is resent."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.type.matcher.v3 import regex_pb2

from agent.adapters.xds.cache import ConfigRejectedError, SnapshotCache
from agent.adapters.xds.resources import ROUTE_TYPE, ModelTopology, build_cluster, build_listener, build_route
from agent.adapters.xds.resources import VersionUpstream as Upstream
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from agent.adapters.xds.snapshot import assemble_snapshot
from harness.bootstraps import agent_bootstrap
from harness.load import TrafficGenerator
from harness.ports import free_port
from harness.upstream import VersionUpstream
from harness.wait import async_wait_until


def rejected_route_snapshot(topology):
    """Consistent by our checks, but Envoy refuses it: the header matcher's regex does not compile."""
    route = build_route(topology, (("v1", 0), ("v2", 100)))
    route.virtual_hosts[0].routes[0].match.headers.append(
        route_components_pb2.HeaderMatcher(
            name="x-tenant", string_match={"safe_regex": regex_pb2.RegexMatcher(regex="([unclosed")}
        )
    )
    return assemble_snapshot(
        listeners=[build_listener(topology)],
        clusters=[build_cluster(topology, u) for u in topology.upstreams],
        routes=[route],
        weights=(("v1", 0), ("v2", 100)),
    )


async def test_nack_keeps_last_good_config_and_is_never_resent(envoy_factory):
    async with VersionUpstream("v1") as v1, VersionUpstream("v2") as v2:
        listener_port = free_port()
        topology = ModelTopology(
            model="m",
            upstreams=(Upstream("v1", "127.0.0.1", v1.port), Upstream("v2", "127.0.0.1", v2.port)),
            listener_host="127.0.0.1",
            listener_port=listener_port,
        )
        cache = SnapshotCache()
        sink = XdsRouteSink(cache, topology)
        sink.publish_initial((("v1", 100), ("v2", 0)))
        server, xds_port = await start_xds_server(cache, "127.0.0.1", 0)
        try:
            envoy = envoy_factory(
                agent_bootstrap(xds_port=xds_port, node_id="nack-envoy", xds_host="127.0.0.1", admin_host="127.0.0.1")
            )
            await async_wait_until(cache.in_sync, 15, what="Envoy in sync")
            good_route = cache.snapshot.route_version

            bad = rejected_route_snapshot(topology)
            cache.set_snapshot(bad)
            with pytest.raises(ConfigRejectedError, match=r"rejected RouteConfiguration.*missing \]") as err:
                await cache.wait_in_sync(bad, timeout_s=5)
            nack = err.value.nack
            assert (nack.node_id, nack.rejected_version, nack.serving_version) == (
                "nack-envoy",
                bad.route_version,
                good_route,
            )
            assert list(cache.nacks) and cache.nacks[-1].error == nack.error

            rejected = f"http.m.rds.{topology.route_name}.update_rejected"

            async def rejected_once():
                return (await envoy.stats_async(rejected)).get(rejected) == 1

            await async_wait_until(rejected_once, 5, what="Envoy counted one rejection")
            # Still the last good route: all traffic on v1.
            results = await TrafficGenerator(f"http://127.0.0.1:{listener_port}/", concurrency=4).run(n=200)
            assert results.failed() == [] and results.counts_by_version() == {"v1": 200}

            # The rejected content is never sent again, not even when another stream event wakes the cache.
            stream = cache.streams[0]
            sent_before = stream.state(ROUTE_TYPE).sent_nonce
            cache.set_snapshot(bad)
            await async_wait_until(lambda: stream.state(ROUTE_TYPE).sent_nonce == sent_before, 1, what="no resend")
            assert (await envoy.stats_async(rejected)).get(rejected) == 1

            # A good change after the NACK goes through.
            applied = await sink.apply((("v1", 0), ("v2", 100)), timeout_s=5)
            assert applied.route_version != bad.route_version
            results = await TrafficGenerator(f"http://127.0.0.1:{listener_port}/", concurrency=4).run(n=200)
            assert results.counts_by_version() == {"v2": 200}
            # Responses on a stream are ordered: had the rejected route been resent, Envoy would have rejected it
            # again before ACKing the good one.
            assert (await envoy.stats_async(rejected)).get(rejected) == 1
        finally:
            await server.stop(None)
