"""The signal sources read what the real Envoy and the real reference model server export."""

from __future__ import annotations

import aiohttp

from agent.adapters.signals.envoy_stats import EnvoyStatsSource
from agent.adapters.signals.model_metrics_source import ModelMetricsSource
from agent.adapters.signals.oip_health import OipHealthSource, VersionProbe
from agent.domain.signals import Signal
from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import MODEL, AgentStack, body_factory


async def test_sources_read_real_envoy_and_model_server(tmp_path, agent_factory, envoy_factory, refserver_factory):
    stack = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory)
    stack.start_upstreams()
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=0, v2=100)
    await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})
    results = await TrafficGenerator(stack.traffic_url, body_factory, concurrency=4).run(n=400)
    failures = results.counts_by_status().get(500, 0)
    assert 100 < failures < 300
    async with aiohttp.ClientSession() as session:
        envoy = EnvoyStatsSource(
            session, f"http://127.0.0.1:{stack.ports['admin']}", {f"{MODEL}__v1": "v1", f"{MODEL}__v2": "v2"}
        )

        async def flushed():  # histograms reach the admin endpoint at the next stats flush (1 s)
            sample = (await envoy.sample(0.0))["v2"]
            return (
                sample
                if Signal.ENVOY_RQ_TIME_MS in sample.histograms
                and sample.histograms[Signal.ENVOY_RQ_TIME_MS].count >= 400
                else None
            )

        v2 = await async_wait_until(flushed, 5, what="Envoy latency histogram flushed")
        assert v2.counters[Signal.ENVOY_RQ_TOTAL] == 400
        assert v2.counters[Signal.ENVOY_RQ_5XX] == failures
        assert v2.counters[Signal.ENVOY_CX_CONNECT_FAIL] == 0
        assert v2.histograms[Signal.ENVOY_RQ_TIME_MS].quantile(0.99) is not None

        model = ModelMetricsSource(session, {v: f"{s.url}/metrics" for v, s in stack.upstreams.items()})
        samples = await model.sample(0.0)
        assert samples["v2"].counters[Signal.MODEL_REQUESTS] == 400
        assert samples["v2"].counters[Signal.MODEL_ERRORS] == failures
        assert samples["v2"].histograms[Signal.MODEL_CONFIDENCE].count == 400 - failures
        features = [n for n in samples["v2"].histograms if n.startswith(Signal.FEATURE_PREFIX)]
        assert len(features) >= 5
        assert samples["v1"].counters[Signal.MODEL_REQUESTS] == 0

        health = OipHealthSource(session, [VersionProbe(v, s.url, MODEL) for v, s in stack.upstreams.items()])
        samples = await health.sample(0.0)
        assert samples["v2"].gauges[Signal.HEALTH_READY] == 1.0
        await stack.upstreams["v2"].set_faults_async({"unready": True})
        samples = await health.sample(1.0)
        assert samples["v2"].gauges[Signal.HEALTH_READY] == 0.0
        stack.upstreams["v2"].kill()
        samples = await health.sample(2.0)
        assert samples["v2"].counters[Signal.HEALTH_CRASHES] == 1  # answered (even unready), then stopped: a crash
        checks = {c.name: c for c in await health.live_checks("v2", max_age_s=0)}
        assert not checks["ready"].passed and "unreachable" in checks["ready"].detail
        checks = {c.name: c for c in await health.live_checks("v1", max_age_s=0)}
        assert checks["ready"].passed
