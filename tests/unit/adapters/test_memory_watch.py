"""Memory against the limit (model.memory_ratio) and an exit near the limit counted as an OOM (health.oom)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.adapters.signals.memory_watch import MB, MemoryWatch
from agent.adapters.signals.model_metrics_source import ModelMetricsSource
from agent.domain.signals import Signal

LIMIT_MB = 1000.0


def metrics(resident_mb: float, started: float = 1000.0) -> str:
    return (
        f"process_resident_memory_bytes {resident_mb * MB}\n"
        f"process_start_time_seconds {started}\n"
        'model_inference_requests_total{model="m",version="v2"} 5\n'
    )


class TestMemoryWatch:
    def test_ratio_is_resident_memory_over_the_limit(self) -> None:
        watch = MemoryWatch({"v2": LIMIT_MB})
        assert watch.reading("v2", 250 * MB) == pytest.approx(0.25)

    def test_no_limit_no_ratio_and_no_oom_count(self) -> None:
        watch = MemoryWatch({"v2": LIMIT_MB})
        assert watch.reading("v1", 250 * MB) is None
        assert watch.oom_count("v1") is None
        assert watch.oom_count("v2") == 0

    def test_an_exit_near_the_limit_is_an_oom_once(self) -> None:
        watch = MemoryWatch({"v2": LIMIT_MB}, oom_ratio=0.9)
        watch.reading("v2", 950 * MB)
        assert watch.exited("v2", "stopped answering")
        assert not watch.exited("v2", "restarted"), "the same exit noticed twice counts once"
        assert watch.oom_count("v2") == 1

    def test_an_exit_far_from_the_limit_is_no_oom(self) -> None:
        watch = MemoryWatch({"v2": LIMIT_MB}, oom_ratio=0.9)
        watch.reading("v2", 500 * MB)
        assert not watch.exited("v2", "stopped answering")
        assert watch.oom_count("v2") == 0

    def test_an_exit_without_any_reading_is_no_oom(self) -> None:
        watch = MemoryWatch({"v2": LIMIT_MB})
        assert not watch.exited("v2", "stopped answering")

    @pytest.mark.parametrize("reading", [float("nan"), float("inf"), -1.0, None])
    def test_a_broken_reading_is_ignored(self, reading: float | None) -> None:
        watch = MemoryWatch({"v2": LIMIT_MB})
        watch.reading("v2", 990 * MB)
        assert watch.reading("v2", reading) is None
        assert watch.exited("v2", "stopped answering"), "the last valid reading still counts"

    @pytest.mark.parametrize(("limits", "ratio"), [({"v2": 0.0}, 0.9), ({"v2": float("nan")}, 0.9), ({}, 1.5)])
    def test_bad_settings_are_refused(self, limits: dict[str, float], ratio: float) -> None:
        with pytest.raises(ValueError):
            MemoryWatch(limits, ratio)


# A reading in MB (None: a broken one) or an exit (the string).
_EVENTS = st.lists(
    st.one_of(
        st.floats(min_value=0, max_value=2 * LIMIT_MB),
        st.none(),
        st.sampled_from(["stopped answering", "restarted"]),
    ),
    max_size=40,
)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(events=_EVENTS, oom_ratio=st.floats(min_value=0.05, max_value=1.0))
def test_ooms_are_exactly_the_exits_whose_last_reading_or_trend_reached_the_limit(
    events: list[float | str | None], oom_ratio: float
) -> None:
    now = [0.0]
    watch = MemoryWatch({"v2": LIMIT_MB}, oom_ratio, clock=lambda: now[0])
    expected = 0
    readings: list[tuple[float, float]] = []  # the model: the last two (time, ratio) readings
    for event in events:
        now[0] += 1.0  # one sampling interval per event
        if isinstance(event, str):
            counted = watch.exited("v2", event)
            projected = readings[-1][1] if readings else 0.0
            if len(readings) == 2 and readings[1][1] > readings[0][1]:
                (t0, r0), (t1, r1) = readings
                projected = r1 + (r1 - r0) / (t1 - t0) * (now[0] - t1)
            assert counted == bool(readings and (readings[-1][1] >= oom_ratio or projected >= 1.0))
            expected += counted
            readings = []
        elif event is not None:
            ratio = watch.reading("v2", event * MB)
            assert ratio == pytest.approx(event / LIMIT_MB)
            readings = [*readings, (now[0], event * MB / (LIMIT_MB * MB))][-2:]
        else:
            assert watch.reading("v2", None) is None
    assert watch.oom_count("v2") == expected


def test_a_leak_that_reaches_the_limit_between_readings_is_an_oom() -> None:
    # A leaking server misses a scrape while it allocates: its last reading is below the ratio, but the trend
    # carried on to the moment its exit is noticed crosses the limit.
    now = [0.0]
    watch = MemoryWatch({"v2": 100.0}, 0.9, clock=lambda: now[0])
    watch.reading("v2", 60 * MB)
    now[0] = 1.0
    watch.reading("v2", 75 * MB)
    now[0] = 3.0  # a missed reading, then the exit
    assert watch.exited("v2", "stopped answering")
    assert watch.oom_count("v2") == 1


def test_a_crash_with_flat_memory_below_the_ratio_is_not_an_oom() -> None:
    now = [0.0]
    watch = MemoryWatch({"v2": 100.0}, 0.9, clock=lambda: now[0])
    watch.reading("v2", 60 * MB)
    now[0] = 1.0
    watch.reading("v2", 60 * MB)
    now[0] = 30.0
    assert not watch.exited("v2", "stopped answering")


@dataclass
class FakeModelServer:
    """A real HTTP server on 127.0.0.1 whose /metrics text the test sets; `stop()` makes it go away."""

    text: str
    status: int = 200
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self, port: int = 0) -> None:
        async def handle(_request: web.Request) -> web.Response:
            return web.Response(text=self.text, status=self.status)

        app = web.Application()
        app.router.add_get("/metrics", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        host, bound = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{bound}/metrics"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    fake = FakeModelServer(metrics(500))
    await fake.start()
    yield fake
    if fake.runner is not None:
        await fake.runner.cleanup()


async def test_the_source_reports_the_ratio_and_counts_an_oom_when_the_server_dies_near_the_limit(server):
    async with aiohttp.ClientSession() as session:
        source = ModelMetricsSource(session, {"v2": server.url}, memory_limits_mb={"v2": LIMIT_MB})
        first = (await source.sample(1.0))["v2"]
        assert first.gauges[Signal.MODEL_MEMORY_RATIO] == pytest.approx(0.5)
        assert first.counters[Signal.HEALTH_OOM] == 0
        server.text = metrics(960)
        assert (await source.sample(2.0))["v2"].gauges[Signal.MODEL_MEMORY_RATIO] == pytest.approx(0.96)
        await server.stop()
        gone = (await source.sample(3.0))["v2"]
        assert gone.counters[Signal.HEALTH_OOM] == 1
        assert Signal.MODEL_MEMORY_RATIO not in gone.gauges
        assert (await source.sample(4.0))["v2"].counters[Signal.HEALTH_OOM] == 1, "one exit, one OOM"


async def test_a_restart_seen_only_through_the_start_time_counts_too(server):
    async with aiohttp.ClientSession() as session:
        source = ModelMetricsSource(session, {"v2": server.url}, memory_limits_mb={"v2": LIMIT_MB})
        server.text = metrics(950, started=1000.0)
        await source.sample(1.0)
        server.text = metrics(200, started=2000.0)  # killed and restarted between two readings
        after = (await source.sample(2.0))["v2"]
        assert after.counters[Signal.HEALTH_RESTARTS] == 1
        assert after.counters[Signal.HEALTH_OOM] == 1
        assert after.gauges[Signal.MODEL_MEMORY_RATIO] == pytest.approx(0.2)


async def test_a_crash_far_from_the_limit_is_no_oom(server):
    async with aiohttp.ClientSession() as session:
        source = ModelMetricsSource(session, {"v2": server.url}, memory_limits_mb={"v2": LIMIT_MB})
        await source.sample(1.0)
        await server.stop()
        assert (await source.sample(2.0))["v2"].counters[Signal.HEALTH_OOM] == 0


async def test_without_a_limit_nothing_about_oom_is_reported(server):
    async with aiohttp.ClientSession() as session:
        source = ModelMetricsSource(session, {"v2": server.url})
        sample = (await source.sample(1.0))["v2"]
        assert sample.gauges[Signal.MODEL_MEMORY_BYTES] == 500 * MB
        assert Signal.MODEL_MEMORY_RATIO not in sample.gauges
        assert Signal.HEALTH_OOM not in sample.counters
        await server.stop()
        assert Signal.HEALTH_OOM not in (await source.sample(2.0))["v2"].counters


async def test_a_server_answering_an_error_has_not_exited(server):
    async with aiohttp.ClientSession() as session:
        source = ModelMetricsSource(session, {"v2": server.url}, memory_limits_mb={"v2": LIMIT_MB})
        server.text = metrics(990)
        await source.sample(1.0)
        server.status = 500
        failed = (await source.sample(2.0))["v2"]  # a failed read: unknown, not an exit
        assert failed.counters[Signal.HEALTH_OOM] == 0
        assert failed.unavailable["model."].startswith("metrics read failed: HTTP 500 from ")
        server.status = 200
        assert (await source.sample(3.0))["v2"].counters[Signal.HEALTH_OOM] == 0
