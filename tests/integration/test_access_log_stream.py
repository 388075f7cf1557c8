"""Issue 12: a real Envoy streams every finished request to the agent's gRPC server (access-log service).

The stream's per-version counts match Envoy's own stats; a broken stream hands over to Envoy's stats and takes
over again when it recovers; a 50 % error fault in the candidate is rolled back on the stream's figures.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import aiohttp

from agent.adapters.signals.access_log import AccessLogStreamSource
from agent.adapters.signals.envoy_stats import EnvoyStatsSource
from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.resources import AccessLogSettings, ModelTopology
from agent.adapters.xds.resources import VersionUpstream as Upstream
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from agent.domain.signals import Signal
from agent.engine.source_switch import STATS, STREAM, SourceSwitch
from agent.envoy_bootstrap import DEFAULT_LATENCY_BUCKETS_MS, XDS_CLUSTER_NAME
from harness.bootstraps import agent_bootstrap
from harness.load import TrafficGenerator
from harness.ports import free_port
from harness.upstream import VersionUpstream
from harness.wait import async_wait_until
from tests.integration.agent_stack import ROOT, AgentStack, body_factory


@asynccontextmanager
async def streaming_envoy(envoy_factory):
    """v1 (200) and v2 (500) at 50/50 behind a real Envoy whose access log streams to an in-process servicer."""
    async with VersionUpstream("v1") as v1, VersionUpstream("v2", status=500) as v2:
        topology = ModelTopology(
            model="m",
            upstreams=(Upstream("v1", "127.0.0.1", v1.port), Upstream("v2", "127.0.0.1", v2.port)),
            listener_host="127.0.0.1",
            listener_port=free_port(),
            access_log=AccessLogSettings(cluster=XDS_CLUSTER_NAME),
        )
        clusters = {topology.cluster_name(v): v for v in ("v1", "v2")}
        stream = AccessLogStreamSource(clusters, DEFAULT_LATENCY_BUCKETS_MS)
        cache = SnapshotCache()
        XdsRouteSink(cache, topology).publish_initial((("v1", 50), ("v2", 50)))
        server, xds_port = await start_xds_server(cache, "127.0.0.1", 0, services=[stream.register])
        try:
            envoy = envoy_factory(
                agent_bootstrap(xds_port=xds_port, node_id="als-envoy", xds_host="127.0.0.1", admin_host="127.0.0.1")
            )
            await async_wait_until(cache.in_sync, 15, what="Envoy in sync (the listener with its access log ACKed)")
            assert not cache.nacks, cache.nacks
            async with aiohttp.ClientSession() as session:
                stats = EnvoyStatsSource(session, envoy.admin_url, clusters)
                yield topology, stream, stats
        finally:
            await server.stop(0)


def counts(samples, signal):
    return {v: s.counters.get(signal) for v, s in samples.items()}


async def test_stream_counts_match_envoys_own_stats(envoy_factory):
    async with streaming_envoy(envoy_factory) as (topology, stream, stats):
        results = await TrafficGenerator(f"http://127.0.0.1:{topology.listener_port}/", concurrency=4).run(n=400)
        assert len(results) == 400

        async def agree() -> bool:
            now = time.monotonic()
            ours, envoys = await stream.sample(now), await stats.sample(now)
            return (
                all(counts(ours, s) == counts(envoys, s) for s in (Signal.ENVOY_RQ_TOTAL, Signal.ENVOY_RQ_5XX))
                and sum(counts(ours, Signal.ENVOY_RQ_TOTAL).values()) == 400
            )

        await async_wait_until(agree, 5, what="the stream's counts equal Envoy's stats")
        ours = await stream.sample(time.monotonic())
        assert ours["v2"].counters[Signal.ENVOY_RQ_5XX] == ours["v2"].counters[Signal.ENVOY_RQ_TOTAL] > 100
        assert ours["v1"].counters[Signal.ENVOY_RQ_5XX] == 0
        latency = ours["v1"].histograms[Signal.ENVOY_RQ_TIME_MS]
        assert latency.count == ours["v1"].counters[Signal.ENVOY_RQ_TOTAL]
        assert stream.rejected == 0 and stream.state.unattributed == 0


async def test_a_broken_stream_falls_back_to_envoys_stats_and_recovers(envoy_factory):
    async with streaming_envoy(envoy_factory) as (topology, stream, stats):
        switch = SourceSwitch(silence_s=1.0)
        url = f"http://127.0.0.1:{topology.listener_port}/"
        async with TrafficGenerator(url, rate_per_s=200, concurrency=4) as generator:

            async def step() -> str:
                now = time.monotonic()
                readings = {STREAM: await stream.sample(now), STATS: await stats.sample(now)}
                live = switch.decide(now, readings[STREAM], stream.last_entry_at, readings[STATS])
                spliced[0] = switch.splice(now, readings)
                return live

            spliced = [{}]
            first_total = None

            async def live_is(source: str) -> bool:
                nonlocal first_total
                live = await step()
                if first_total is None:
                    first_total = (await stats.sample(time.monotonic()))["v1"].counters[Signal.ENVOY_RQ_TOTAL]
                return live == source

            await async_wait_until(lambda: live_is(STREAM), 10, interval_s=0.3, what="the stream live")
            stream.accepting = False  # the agent refuses the stream: Envoy's entries go nowhere
            await async_wait_until(lambda: live_is(STATS), 10, interval_s=0.3, what="fallback to Envoy's stats")
            stream.accepting = True
            await async_wait_until(lambda: live_is(STREAM), 15, interval_s=0.3, what="the stream live again")
            await generator.wait_for_responses(generator.sent + 100, timeout_s=10)
        # Drained: the spliced v1 total follows Envoy's own, through both switches, without double counting.
        envoy_v1 = (await stats.sample(time.monotonic()))["v1"].counters[Signal.ENVOY_RQ_TOTAL] - first_total

        async def settled() -> bool:
            await step()
            return abs(spliced[0]["v1"].counters[Signal.ENVOY_RQ_TOTAL] - envoy_v1) <= 0.05 * envoy_v1

        await async_wait_until(settled, 5, interval_s=0.2, what="spliced v1 requests close to Envoy's count")


async def test_fault_in_candidate_is_rolled_back_from_the_stream(
    tmp_path, agent_factory, envoy_factory, refserver_factory
):
    rules = {
        "rules": {"file": str(ROOT / "rules" / "default.yaml")},
        "rollback": {"verify_window_s": 2, "cooldown_s": 0},
    }
    stack = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, extra_config=rules)
    stack.start_upstreams()
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(400, timeout_s=10)

        async def stream_live_and_healthy() -> bool:
            _, body = await stack.control("GET", "/v1/status")
            states = {r["rule"]: r["state"] for r in body["rules"] if r["version"] == "v2"}
            return body.get("signal_source") == "stream" and states.get("error-rate") == "ok"

        await async_wait_until(stream_live_and_healthy, 20, what="stream live, v2 judged healthy")
        injected = time.monotonic()
        await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})

        async def back_on_stable() -> bool:
            _, body = await stack.control("GET", "/v1/status")
            return {v["version"]: v["served_weight"] for v in body["versions"]} == {"v1": 100, "v2": 0}

        await async_wait_until(back_on_stable, 20, interval_s=0.02, what="traffic back on v1")
        recovered = time.monotonic() - injected
    print(f"fault -> recovered from the stream: {recovered:.3f} s")
    assert recovered < 10, recovered
    async with stack.http_session() as session, session.get(f"{stack.http_url}/metrics") as response:
        text = await response.text()
    assert 'rollback_agent_signal_source_live{model="cancer",source="stream"} 1.0' in text
