"""The ADS servicer over a real gRPC channel, with a scripted client standing in for Envoy."""

import asyncio

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.resources import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from agent.ports.route_sink import RouteRejectedError, RouteTimeoutError
from harness.wait import async_wait_until
from tests.unit.xds.helpers import TOPOLOGY


class FakeEnvoy:
    """Speaks SotW ADS like Envoy: subscribes CDS+LDS, then RDS; ACKs or NACKs what it receives."""

    def __init__(self, channel, node_id, reject=lambda r: None):
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.node_id = node_id
        self.reject = reject
        self.requests: asyncio.Queue = asyncio.Queue()
        self.received: list[discovery_pb2.DiscoveryResponse] = []
        self.accepted: dict[str, str] = {}
        self.call = None

    async def run(self):
        node = base_pb2.Node(id=self.node_id, cluster="credit")
        self.requests.put_nowait(discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE, node=node))
        self.requests.put_nowait(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE))

        async def gen():
            while True:
                item = await self.requests.get()
                if item is None:
                    return
                yield item

        self.call = self.stub.StreamAggregatedResources(gen())
        async for resp in self.call:
            self.received.append(resp)
            names = ("credit-route",) if resp.type_url == ROUTE_TYPE else ()
            error = self.reject(resp)
            if error:
                self.requests.put_nowait(
                    discovery_pb2.DiscoveryRequest(
                        type_url=resp.type_url,
                        version_info=self.accepted.get(resp.type_url, ""),
                        response_nonce=resp.nonce,
                        resource_names=names,
                        error_detail=status_pb2.Status(code=3, message=error),
                    )
                )
                continue
            self.accepted[resp.type_url] = resp.version_info
            self.requests.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=resp.type_url,
                    version_info=resp.version_info,
                    response_nonce=resp.nonce,
                    resource_names=names,
                )
            )
            if resp.type_url == LISTENER_TYPE and ROUTE_TYPE not in self.accepted:
                self.requests.put_nowait(discovery_pb2.DiscoveryRequest(type_url=ROUTE_TYPE, resource_names=names))

    def sent_versions(self, type_url):
        return [r.version_info for r in self.received if r.type_url == type_url]


@pytest.fixture
async def plane():
    cache = SnapshotCache()
    sink = XdsRouteSink(cache, TOPOLOGY)
    sink.publish_initial((("v1", 100), ("v2", 0)))
    server, port = await start_xds_server(cache, "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    tasks = []

    def envoy(node_id, **kw):
        e = FakeEnvoy(channel, node_id, **kw)
        tasks.append(asyncio.create_task(e.run()))
        return e

    yield cache, sink, envoy
    for t in tasks:
        t.cancel()
    await channel.close()
    await server.stop(None)


async def wait_for(predicate):
    await async_wait_until(predicate, 3.0, interval_s=0.005, what="xDS state")


async def test_apply_returns_after_every_envoy_acked(plane):
    cache, sink, envoy = plane
    a, b = envoy("envoy-a"), envoy("envoy-b")
    await wait_for(lambda: cache.in_sync() and len(cache.streams) == 2)
    applied = await sink.apply((("v1", 0), ("v2", 100)), timeout_s=3)
    assert {c.node for c in applied.confirmations} == {"envoy-a", "envoy-b"}
    assert a.accepted[ROUTE_TYPE] == b.accepted[ROUTE_TYPE] == applied.route_version
    assert sink.served() == (("v1", 0), ("v2", 100))


async def test_nack_fails_the_change_reverts_and_is_not_resent(plane):
    cache, sink, envoy = plane
    bad_version = {}
    e = envoy("envoy-a", reject=lambda r: "weights rejected" if r.version_info == bad_version.get("v") else None)
    await wait_for(cache.in_sync)
    good_route = e.accepted[ROUTE_TYPE]
    from agent.adapters.xds.snapshot import build_snapshot

    bad_version["v"] = build_snapshot(TOPOLOGY, (("v1", 0), ("v2", 100))).route_version
    with pytest.raises(RouteRejectedError, match="weights rejected"):
        await sink.apply((("v1", 0), ("v2", 100)), timeout_s=3)
    assert cache.snapshot.route_version == good_route  # reverted: reconnects get the last good config
    assert sink.served() == (("v1", 100), ("v2", 0))
    assert len(cache.nacks) == 1 and cache.nacks[0].serving_version == good_route
    # A different split still goes through.
    applied = await sink.apply((("v1", 50), ("v2", 50)), timeout_s=3)
    assert e.accepted[ROUTE_TYPE] == applied.route_version
    # The stream is ordered, so everything sent before the new split has been seen by now: the rejected content
    # went out exactly once, and the revert sent nothing (the new split came right after the rejected one).
    sent = e.sent_versions(ROUTE_TYPE)
    assert sent.count(bad_version["v"]) == 1
    assert sent[-2:] == [bad_version["v"], applied.route_version]


async def test_no_envoy_times_out_but_keeps_the_change_for_connect(plane):
    cache, sink, envoy = plane
    with pytest.raises(RouteTimeoutError, match="no Envoy connected"):
        await sink.apply((("v1", 0), ("v2", 100)), timeout_s=0.2)
    e = envoy("late")
    await wait_for(cache.in_sync)
    assert e.accepted[ROUTE_TYPE] == cache.snapshot.route_version
    assert sink.served() == (("v1", 0), ("v2", 100))


async def test_reconnect_gets_current_state(plane):
    cache, sink, envoy = plane
    first = envoy("envoy-a")
    await wait_for(cache.in_sync)
    await sink.apply((("v1", 20), ("v2", 80)), timeout_s=3)
    first.call.cancel()
    await wait_for(lambda: not cache.streams)
    second = envoy("envoy-a")
    await wait_for(cache.in_sync)
    assert second.accepted[ROUTE_TYPE] == cache.snapshot.route_version


async def test_unchanged_split_is_not_pushed_again(plane):
    cache, sink, envoy = plane
    e = envoy("envoy-a")
    await wait_for(cache.in_sync)
    before = len(e.received)
    applied = await sink.apply((("v1", 100), ("v2", 0)), timeout_s=3)
    assert not applied.changed and len(e.received) == before
