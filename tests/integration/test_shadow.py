"""Shadow traffic through a real Envoy to real reference model servers: every user answer comes from stable while the
candidate gets the mirrored copies, and the tap capture measures the agreement of a candidate that is wrong on a
known set of inputs exactly."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent.adapters.signals.shadow_tap import CaptureSettings, ShadowCapture
from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.resources import ModelTopology, ShadowSettings, VersionUpstream, shadow_tap_id
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from agent.domain.shadow import ShadowJoin, Side, mirror_selection
from harness.bootstraps import agent_bootstrap
from harness.ports import free_port
from harness.wait import async_wait_until
from refserver.client import sample_request
from refserver.faults import wrong_answer_for
from refserver.protocol import parse_infer_request

REQUESTS = 200
WRONG = 0.25


async def inference_count(session: aiohttp.ClientSession, port: int) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("model_inference_requests_total{")
    )


@dataclass
class ShadowStack:
    """Two reference servers (v1 stable, v2 the candidate), a real Envoy fed by the agent's xDS sink and cache."""

    sink: XdsRouteSink
    cache: SnapshotCache
    envoy: Any
    candidate: Any
    listener_port: int


@contextlib.asynccontextmanager
async def shadow_stack(envoy_factory: Any, refserver_factory: Any, node_id: str) -> AsyncIterator[ShadowStack]:
    stable = refserver_factory("cancer", "v1")
    candidate = refserver_factory("cancer", "v2")
    listener_port = free_port()
    topology = ModelTopology(
        model="cancer",
        upstreams=(
            VersionUpstream("v1", "127.0.0.1", stable.port),
            VersionUpstream("v2", "127.0.0.1", candidate.port),
        ),
        listener_host="127.0.0.1",
        listener_port=listener_port,
        shadow=ShadowSettings(port=free_port()),
    )
    cache = SnapshotCache()
    sink = XdsRouteSink(cache, topology)
    sink.publish_initial((("v1", 100), ("v2", 0)))
    server, xds_port = await start_xds_server(cache, "127.0.0.1", 0)
    try:
        envoy = envoy_factory(agent_bootstrap(xds_port=xds_port, node_id=node_id))
        await async_wait_until(cache.in_sync, 15, what="Envoy in sync")
        yield ShadowStack(sink, cache, envoy, candidate, listener_port)
    finally:
        await server.stop(None)


async def test_mirrored_requests_reach_the_candidate_and_agreement_is_measured(envoy_factory, refserver_factory):
    capture_task: asyncio.Task[None] | None = None
    async with shadow_stack(envoy_factory, refserver_factory, "shadow-envoy") as stack:
        sink, cache, envoy, candidate = stack.sink, stack.cache, stack.envoy, stack.candidate
        listener_port = stack.listener_port
        try:
            applied = await sink.apply_mirror("v2", 1.0, timeout_s=10)
            assert applied.changed and cache.snapshot.mirror is not None

            capture = ShadowCapture(
                admin_url=envoy.admin_url,
                config_id=shadow_tap_id("cancer"),
                join=ShadowJoin(),
                settings=CaptureSettings(sample_rate=0.05, redact_fields=frozenset({"input-0"})),
            )
            capture_task = asyncio.create_task(capture.run())
            await async_wait_until(lambda: capture.attached, 10, what="the capture attached to Envoy's tap")

            async with aiohttp.ClientSession() as session:
                await candidate_faults(session, candidate.port, {"wrong_answer_rate": WRONG})
                before = await inference_count(session, candidate.port)
                wrong = 0
                served_by: dict[str, int] = {}
                for i in range(REQUESTS):
                    body = sample_request(1, seed=i, request_id=uuid.uuid4().hex)
                    [row] = parse_infer_request(body).rows.tolist()
                    wrong += wrong_answer_for(row, WRONG)
                    url = f"http://127.0.0.1:{listener_port}/v2/models/cancer/infer"
                    async with session.post(url, json=body) as response:
                        assert response.status == 200
                        version = response.headers["x-model-version"]
                        served_by[version] = served_by.get(version, 0) + 1

                # Every user answer came from stable ...
                assert served_by == {"v1": REQUESTS}

                # ... while every request reached the candidate too (fraction 1.0).
                async def candidate_saw_all() -> bool:
                    return await inference_count(session, candidate.port) - before == REQUESTS

                await async_wait_until(candidate_saw_all, 10, what=f"{REQUESTS} mirrored requests on the candidate")

            await async_wait_until(lambda: len(capture.join.pairs()) == REQUESTS, 10, what="every request joined")
            stats = capture.join.stats()
            assert 0 < wrong < REQUESTS
            assert stats.rows == REQUESTS and stats.shadow_failures == 0
            assert stats.agreement_rate == (REQUESTS - wrong) / REQUESTS
            assert len(stats.live_confidences) == len(stats.shadow_confidences) == REQUESTS
            # Sampled pairs for the forensic bundle, with the named tensor redacted.
            assert capture.samples
            assert all('"data":"[redacted]"' in s["request"] for s in capture.samples)

            # Mirroring stops: the candidate gets nothing more.
            await sink.apply_mirror("v2", 0.0, timeout_s=10)
            async with aiohttp.ClientSession() as session:
                after = await inference_count(session, candidate.port)
                for i in range(20):
                    async with session.post(
                        f"http://127.0.0.1:{listener_port}/v2/models/cancer/infer", json=sample_request(1, seed=i)
                    ) as response:
                        assert response.status == 200
                assert await inference_count(session, candidate.port) == after
        finally:
            if capture_task is not None:
                capture_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await capture_task


async def candidate_faults(session: aiohttp.ClientSession, port: int, faults: dict[str, float]) -> None:
    async with session.post(f"http://127.0.0.1:{port}/faults", json=faults) as response:
        assert response.status == 200, await response.text()


async def test_a_partial_share_mirrors_and_captures_the_same_requests_and_nothing_else(
    envoy_factory, refserver_factory
):
    """At 25 % and then 50 % mirrored, the route (RE2 on x-request-id, in real Envoy) and the tap select the very
    same requests: every trace has its other half, none is left pending, and the candidate's request count is the
    number of pairs."""
    capture_task: asyncio.Task[None] | None = None
    async with shadow_stack(envoy_factory, refserver_factory, "shadow-share-envoy") as stack:
        sink, envoy, candidate = stack.sink, stack.envoy, stack.candidate
        listener_port = stack.listener_port
        try:
            capture = ShadowCapture(admin_url=envoy.admin_url, config_id=shadow_tap_id("cancer"), join=ShadowJoin())
            capture_task = asyncio.create_task(capture.run())
            url = f"http://127.0.0.1:{listener_port}/v2/models/cancer/infer"
            total_pairs = 0
            async with aiohttp.ClientSession() as session:
                for fraction, requests in ((0.25, 400), (0.5, 200)):
                    await sink.apply_mirror("v2", fraction, timeout_s=10)
                    capture.select(fraction)
                    selection = mirror_selection(fraction)
                    await async_wait_until(
                        lambda selection=selection: capture.attached and capture.attached_with == selection,
                        10,
                        what="the capture attached with the new share's selection",
                    )
                    before = await inference_count(session, candidate.port)
                    traces_before = capture.traces
                    for i in range(requests):
                        async with session.post(url, json=sample_request(1, seed=i)) as response:
                            assert response.status == 200 and response.headers["x-model-version"] == "v1"

                    seen: list[Any] = []

                    async def settled(
                        before: float = before, already: int = total_pairs, seen: list[Any] = seen
                    ) -> int | None:
                        mirrored = await inference_count(session, candidate.port) - before
                        pairs = len(capture.join.pairs()) - already
                        seen[:] = [(mirrored, pairs, capture.join.pending, capture.traces)]
                        ok = mirrored > 0 and mirrored == pairs and capture.join.pending == 0
                        return int(pairs) if ok else None

                    what = f"every request mirrored at {fraction:.0%} joined"
                    try:
                        pairs = await async_wait_until(settled, 15, what=what)
                    except Exception as exc:
                        raise AssertionError(f"{what}: (mirrored, pairs, pending, traces) = {seen}") from exc
                    # Only the mirrored requests were traced: two halves each, no live trace without its copy.
                    assert capture.traces - traces_before == 2 * pairs, (capture.traces, traces_before, pairs)
                    assert capture.join.unmatched == {Side.LIVE: 0, Side.SHADOW: 0}
                    share = pairs / requests
                    assert abs(share - fraction) < 0.12, (fraction, share)  # binomial spread of a few hundred draws
                    total_pairs += pairs
        finally:
            if capture_task is not None:
                capture_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await capture_task
