"""golden: N consecutive failed golden checks of a ready version breach; the health source keeps the streak."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from triggers_testkit import Stream, judge, make_rule

from agent.adapters.signals.oip_health import GoldenCheck, OipHealthSource, VersionProbe
from agent.domain.signals import Signal
from agent.triggers import VerdictStatus

BREACH, OK, INSUFFICIENT = VerdictStatus.BREACH, VerdictStatus.OK, VerdictStatus.INSUFFICIENT_EVIDENCE


def golden_stream(results: list[bool], every_s: float = 5.0) -> Stream:
    """One golden check per `every_s` seconds, the health source's counters and streak gauge after each."""
    stream = Stream()
    streak = 0
    for passed in results:
        streak = 0 if passed else streak + 1
        stream.step(every_s, inc={Signal.HEALTH_GOLDEN_CHECKS: 1}, gauges={Signal.HEALTH_GOLDEN_FAILING: streak})
    return stream


class TestGoldenRule:
    def test_critical_rolls_back_after_three_failures_in_a_row(self) -> None:
        rule = make_rule("golden", "critical")
        assert judge(rule, golden_stream([True] * 5 + [False] * 2)).status is OK
        verdict = judge(rule, golden_stream([True] * 5 + [False] * 3))
        assert verdict.status is BREACH
        assert verdict.reason == "3 consecutive failed golden checks >= 3 (7 checks over 1m)"
        assert rule.action.value == "rollback"

    def test_scattered_failures_do_not_add_up(self) -> None:
        assert judge(make_rule("golden", "critical"), golden_stream([False, False, True] * 6)).status is OK

    def test_experimental_only_alerts_and_waits_for_five(self) -> None:
        rule = make_rule("golden", "experimental")
        assert rule.action.value == "alert"
        assert judge(rule, golden_stream([True] + [False] * 4)).status is OK
        assert judge(rule, golden_stream([True] + [False] * 5)).status is BREACH

    def test_no_golden_check_configured_says_so(self) -> None:
        stream = Stream()
        stream.run(60, gauges={Signal.HEALTH_READY: 1})
        verdict = judge(make_rule("golden", "critical"), stream)
        assert verdict.status is INSUFFICIENT
        assert "no golden check reported in the last 1m (is probes.golden configured?)" in verdict.reason

    def test_a_stale_streak_proves_nothing(self) -> None:
        stream = golden_stream([False] * 4)
        stream.history.append(type(stream.sample())(stream.ts + 120.0))  # probes stopped two minutes ago
        assert judge(make_rule("golden", "critical"), stream).status is INSUFFICIENT


class FlakyModel:
    """Ready or not, right (predict [1]) or wrong (predict [0]) answers, switched by the test."""

    def __init__(self) -> None:
        self.ready = True
        self.wrong = False
        app = web.Application()
        app.router.add_get("/v2/models/m/ready", self.ready_handler)
        app.router.add_post("/v2/models/m/infer", self.infer)
        self.server = TestServer(app, host="127.0.0.1")

    async def ready_handler(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=200 if self.ready else 400)

    async def infer(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"error": "not ready"}, status=400)
        return web.json_response({"outputs": [{"name": "predict", "data": [0 if self.wrong else 1]}]})


@pytest.fixture
async def model() -> AsyncIterator[tuple[FlakyModel, OipHealthSource]]:
    flaky = FlakyModel()
    await flaky.server.start_server()
    async with aiohttp.ClientSession() as session:
        source = OipHealthSource(
            session,
            [VersionProbe("v2", str(flaky.server.make_url("")).rstrip("/"), "m")],
            golden=GoldenCheck({"inputs": []}, "predict", [1.0], 0.0),
            golden_interval_s=0.0,
        )
        yield flaky, source
    await flaky.server.close()


async def streak(source: OipHealthSource) -> tuple[float, float]:
    sample = (await source.sample(time.monotonic()))["v2"]
    return sample.gauges[Signal.HEALTH_GOLDEN_FAILING], sample.counters[Signal.HEALTH_GOLDEN_CHECKS]


async def test_health_source_counts_consecutive_wrong_answers_of_a_ready_version(
    model: tuple[FlakyModel, OipHealthSource],
) -> None:
    flaky, source = model
    assert await streak(source) == (0, 1)
    flaky.wrong = True
    assert await streak(source) == (1, 2)
    assert await streak(source) == (2, 3)
    flaky.ready = False  # not loaded: readiness is another rule's business, the streak starts over
    assert await streak(source) == (0, 4)
    flaky.ready = True
    assert await streak(source) == (1, 5)
    flaky.wrong = False
    assert await streak(source) == (0, 6)
