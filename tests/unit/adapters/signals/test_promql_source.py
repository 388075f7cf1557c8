"""Signals from Prometheus instant queries: every kind of missing data is no evidence, with the reason."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.adapters.signals.promql_source import (
    PromqlSignalCollector,
    PromqlSource,
    Reading,
    readings_from,
    split_sample_times,
    with_sample_times,
)
from agent.config import PromqlSection, PromqlSignal

NOW = 1_800_000_000.0
ACCURACY = PromqlSignal(signal="model.business.accuracy", query='label_accuracy{version="{version}"}')
LABELLED = PromqlSignal(signal="model.business.accuracy", query="label_accuracy", version_label="version")


def series(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": {"__name__": "label_accuracy", **labels}, "value": [NOW, value]}


def stamp(at: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [NOW, repr(at)]}


def test_a_fresh_value_per_templated_query() -> None:
    readings = readings_from(
        ACCURACY,
        ["v1", "v2"],
        {"v1": [series("0.91", version="v1")], "v2": [series("0.55", version="v2")]},
        {"v1": [stamp(NOW - 10, version="v1")], "v2": [stamp(NOW - 20, version="v2")]},
        NOW,
    )
    assert readings == {"v1": Reading(0.91, NOW - 10), "v2": Reading(0.55, NOW - 20)}


def test_one_labelled_query_serves_every_version() -> None:
    values = {"": [series("0.9", version="v1"), series("0.6", version="v2")]}
    stamps = {"": [stamp(NOW - 1, version="v1"), stamp(NOW - 2, version="v2")]}
    readings = readings_from(LABELLED, ["v1", "v2", "v3"], values, stamps, NOW)
    assert readings["v1"] == Reading(0.9, NOW - 1)
    assert readings["v2"] == Reading(0.6, NOW - 2)
    assert readings["v3"].value is None and readings["v3"].kind == "no_data"


@pytest.mark.parametrize(
    ("values", "stamps", "kind", "reason"),
    [
        ([], [], "no_data", "no data: the query returned an empty vector"),
        ([series("0.9", version="v1")], [stamp(NOW - 301, version="v1")], "stale", "stale: the latest sample is 301s"),
        ([series("NaN", version="v1")], [stamp(NOW, version="v1")], "unusable", "unusable value: the value is NaN"),
        ([series("0.9", version="v1")], [], "unusable", "no sample time"),
        (
            [series("0.9", version="v1", pod="a"), series("0.8", version="v1", pod="b")],
            [],
            "ambiguous",
            "ambiguous: the query returned 2 series",
        ),
    ],
)
def test_missing_stale_or_unusable_data_is_no_evidence(
    values: list[dict[str, Any]], stamps: list[dict[str, Any]], kind: str, reason: str
) -> None:
    reading = readings_from(ACCURACY, ["v1"], {"v1": values}, {"v1": stamps}, NOW)["v1"]
    assert reading.value is None
    assert reading.kind == kind
    assert reading.problem.startswith(reason)


def _settings(url: str, *signals: PromqlSignal) -> PromqlSection:
    return PromqlSection(url=url, signals=list(signals or (ACCURACY,)), interval_s=1, timeout_s=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_an_unreachable_prometheus_is_no_evidence_with_the_reason() -> None:
    async with aiohttp.ClientSession() as session:
        source = PromqlSource(session, _settings(f"http://127.0.0.1:{_free_port()}"), ["v1"], wall_clock=lambda: NOW)
        await source.refresh()
        sample = source.current(5.0)["v1"]
        assert sample.gauges == {} and sample.counters == {}
        problem = source.problems[("model.business.accuracy", "v1")]
        assert "unreachable" in problem
        assert sample.unavailable == {"model.business.accuracy": f"model.business.accuracy from Prometheus: {problem}"}
        assert source.readings[("model.business.accuracy", "v1")].kind == "unreachable"


@pytest.fixture
async def fake_prometheus() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A stand-in for Prometheus' query API: `answers[expr]` is the JSON body returned for the query."""
    answers: dict[str, Any] = {}

    async def query(request: web.Request) -> web.Response:
        expr = request.query["query"]
        if expr not in answers:
            return web.json_response({"status": "error", "error": f"no answer for {expr}"}, status=400)
        return web.json_response(answers[expr])

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", answers
    await runner.cleanup()


def vector(*items: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(items)}}


async def test_values_become_gauges_and_counters_and_go_stale_between_rounds(
    fake_prometheus: tuple[str, dict[str, Any]],
) -> None:
    url, answers = fake_prometheus
    correct = PromqlSignal(signal="promql.labels_correct", query='correct{version="{version}"}', type="counter")
    accuracy = ACCURACY.model_copy(update={"max_staleness_s": 60.0})
    answers[with_sample_times('label_accuracy{version="v1"}')] = vector(
        series("0.9", version="v1"), stamp(NOW - 30, version="v1", rollback_agent_sample_time="1")
    )
    answers[with_sample_times('correct{version="v1"}')] = vector(
        series("120", version="v1"), stamp(NOW - 5, version="v1", rollback_agent_sample_time="1")
    )
    wall = [NOW]
    async with aiohttp.ClientSession() as session:
        source = PromqlSource(session, _settings(url, accuracy, correct), ["v1", "v2"], wall_clock=lambda: wall[0])
        await source.refresh()
        samples = source.current(7.0)
        assert samples["v1"].ts == 7.0
        assert samples["v1"].gauges == {"model.business.accuracy": 0.9}
        assert samples["v1"].counters == {"promql.labels_correct": 120.0}
        assert samples["v1"].unavailable == {}
        assert "no answer" in source.problems[("model.business.accuracy", "v2")]  # Prometheus' own error text
        assert samples["v2"].gauges == {} and samples["v2"].counters == {}
        assert "no answer" in samples["v2"].unavailable["model.business.accuracy"]
        wall[0] = NOW + 31  # the accuracy sample is now 61 s old: out, until a fresher one is read
        later = source.current(8.0)["v1"]
        assert later.gauges == {}
        stale = "model.business.accuracy from Prometheus: stale: the latest sample is 61s old > 60s"
        assert later.unavailable == {"model.business.accuracy": stale}


async def test_a_non_vector_answer_is_no_evidence(fake_prometheus: tuple[str, dict[str, Any]]) -> None:
    url, answers = fake_prometheus
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    answers[with_sample_times('label_accuracy{version="v1"}')] = matrix
    async with aiohttp.ClientSession() as session:
        source = PromqlSource(session, _settings(url), ["v1"], wall_clock=lambda: NOW)
        await source.refresh()
        assert source.current(1.0)["v1"].gauges == {}
        assert "gave a matrix, not an instant vector" in source.problems[("model.business.accuracy", "v1")]


async def test_the_collector_exports_usability_with_the_problem_class() -> None:
    async with aiohttp.ClientSession() as session:
        source = PromqlSource(session, _settings(f"http://127.0.0.1:{_free_port()}"), ["v1"], wall_clock=lambda: NOW)
        await source.refresh()
    (family,) = PromqlSignalCollector("credit", source).collect()
    (sample,) = family.samples
    assert sample.labels == {"model": "credit", "signal": "model.business.accuracy", "version": "v1",
                             "problem": "unreachable"}  # fmt: skip
    assert sample.value == 0.0


def test_one_query_gives_values_and_their_sample_times() -> None:
    assert with_sample_times("up") == '(up) or label_replace(timestamp(up), "rollback_agent_sample_time", "1", "", "")'
    answer = [series("0.9", version="v1"), stamp(NOW - 3, version="v1", rollback_agent_sample_time="1")]
    values, times = split_sample_times(answer)
    assert values == [series("0.9", version="v1")]
    assert times == [stamp(NOW - 3, version="v1")]
