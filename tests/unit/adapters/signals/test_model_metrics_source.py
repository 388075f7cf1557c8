"""The model metrics source reads each server profile's exposition, and never turns a failed read or a missing
name into a quiet empty reading."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from agent.adapters.signals.model_metrics_source import MODEL_LOADED, MetricsTarget, ModelMetricsSource
from agent.domain.server_profiles import PROFILES, resolve_names
from agent.domain.signals import Signal
from agent.telemetry import AgentMetrics
from model_metrics import ModelMetrics

EXPOSITIONS = Path(__file__).parents[3] / "fixtures" / "expositions"
URL = "http://127.0.0.1:8082/metrics"


def exposition(name: str) -> str:
    return (EXPOSITIONS / name).read_text()


def source_for(profile: str, *, model: str | None = None, version_value: str | None = None, **names: object):
    target = MetricsTarget(URL, resolve_names(profile, names), profile, model, version_value)
    return ModelMetricsSource(None, {"v2": target}, metrics=AgentMetrics("credit"))  # type: ignore[arg-type]


def refserver_exposition() -> str:
    registry = CollectorRegistry()
    m = ModelMetrics("credit", "v2", registry=registry)
    m.set_loaded(True)
    for i in range(10):
        m.observe_request(latency_s=0.02, ok=i != 0)
        m.observe_prediction(confidence=0.9)
    ModelMetrics("credit", "v1", registry=registry).observe_request(latency_s=0.5, ok=False)
    return generate_latest(registry).decode()


class TestProfiles:
    def test_refserver_reads_the_model_metrics_contract_of_its_own_version(self) -> None:
        sample = source_for("refserver").parse("v2", refserver_exposition(), 1.0)
        assert sample.counters[Signal.MODEL_REQUESTS] == 10
        assert sample.counters[Signal.MODEL_ERRORS] == 1
        assert sample.histograms[Signal.MODEL_LATENCY_S].count == 10
        assert sample.histograms[Signal.MODEL_CONFIDENCE].count == 10
        assert sample.gauges[MODEL_LOADED] == 1
        assert sample.unavailable == {}

    def test_mlserver_recorded_after_three_answers_and_one_failure(self) -> None:
        sample = source_for("mlserver", model="iris").parse("v2", exposition("mlserver-1.7.1-after-requests.txt"), 1.0)
        assert sample.counters[Signal.MODEL_REQUESTS] == 4  # success + failure
        assert sample.counters[Signal.MODEL_ERRORS] == 1
        assert sample.gauges[Signal.MODEL_MEMORY_BYTES] > 0
        # Its latency is a summary: said so, rather than "not reported".
        assert Signal.MODEL_LATENCY_S not in sample.histograms
        assert "model_infer_request_duration is a summary" in sample.unavailable[Signal.MODEL_LATENCY_S]
        assert set(sample.unavailable) == {Signal.MODEL_LATENCY_S}

    def test_series_only_of_another_model_are_named_not_read(self) -> None:
        sample = source_for("mlserver", model="credit").parse(
            "v2", exposition("mlserver-1.7.1-after-requests.txt"), 1.0
        )
        assert Signal.MODEL_REQUESTS not in sample.counters
        assert sample.unavailable[Signal.MODEL_ERRORS] == (
            f'v2: model_infer_request_failure_total has no series for {{model="credit"}} at {URL}'
        )

    def test_mlserver_before_any_request_declares_its_counters_and_they_count_from_zero(self) -> None:
        source = source_for("mlserver", model="iris")
        sample = source.parse("v2", exposition("mlserver-1.7.1-fresh.txt"), 1.0)
        # Zero, not absent: otherwise the first scrape with series would be the baseline and its requests lost.
        assert sample.counters[Signal.MODEL_REQUESTS] == 0
        assert sample.counters[Signal.MODEL_ERRORS] == 0
        assert set(sample.unavailable) == {Signal.MODEL_LATENCY_S}

    def test_triton_counters_per_model_and_version_label(self) -> None:
        source = source_for("triton", model="credit", version_value="2")
        sample = source.parse("v2", exposition("triton-documented.txt"), 1.0)
        assert sample.counters[Signal.MODEL_REQUESTS] == 50  # 40 successes + 10 failures of every reason
        assert sample.counters[Signal.MODEL_ERRORS] == 10
        assert "nv_inference_request_duration_us is a counter" in sample.unavailable[Signal.MODEL_LATENCY_S]

    def test_triton_version_defaults_to_the_tag(self) -> None:
        sample = source_for("triton", model="credit").parse("v2", exposition("triton-documented.txt"), 1.0)
        assert Signal.MODEL_REQUESTS not in sample.counters  # Triton labels versions "1", "2": no "v2" series
        assert 'no series for {model="credit", version="v2"}' in sample.unavailable[Signal.MODEL_REQUESTS]

    def test_kserve_predict_latency_of_its_model_and_no_request_counter(self) -> None:
        sample = source_for("kserve", model="credit").parse("v2", exposition("kserve-python-documented.txt"), 1.0)
        latency = sample.histograms[Signal.MODEL_LATENCY_S]
        assert latency.count == 20
        assert latency.sum == pytest.approx(0.52)
        assert "kserve profile has no request counter" in sample.unavailable[Signal.MODEL_REQUESTS]

    def test_a_latency_in_microseconds_becomes_seconds(self) -> None:
        text = (
            "# TYPE lat_us histogram\n"
            'lat_us_bucket{le="1000.0"} 3\nlat_us_bucket{le="+Inf"} 4\nlat_us_count 4\nlat_us_sum 5000\n'
        )
        sample = source_for("custom", latency="lat_us", latency_unit_s=1e-6).parse("v2", text, 1.0)
        latency = sample.histograms[Signal.MODEL_LATENCY_S]
        assert latency.bounds[0] == pytest.approx(0.001)
        assert latency.sum == pytest.approx(0.005)

    def test_an_overridden_name_is_read_and_an_emptied_one_is_not_expected(self) -> None:
        text = "# TYPE my_failures_total counter\nmy_failures_total 3\n# TYPE ok_total counter\nok_total 7\n"
        source = source_for("mlserver", requests_success="ok_total", requests_failure="my_failures_total", latency="")
        sample = source.parse("v2", text, 1.0)
        assert sample.counters[Signal.MODEL_REQUESTS] == 10
        assert sample.counters[Signal.MODEL_ERRORS] == 3
        assert sample.unavailable == {}

    def test_every_profile_has_a_metrics_path(self) -> None:
        assert set(PROFILES) == {"refserver", "mlserver", "kserve", "triton", "custom"}
        assert PROFILES["mlserver"].metrics_port == 8082
        assert PROFILES["triton"].metrics_port == 8002


class TestMissingNames:
    def test_a_name_the_profile_expects_but_the_scrape_lacks_is_named_with_the_url(self) -> None:
        source = source_for("mlserver", model="iris")
        sample = source.parse("v2", refserver_exposition(), 1.0)  # the wrong server behind the URL
        assert sample.unavailable[Signal.MODEL_ERRORS] == f"v2: model_infer_request_failure_total not found at {URL}"
        assert sample.unavailable[Signal.MODEL_REQUESTS] == f"v2: model_infer_request_success_total not found at {URL}"

    def test_the_missing_gauge_is_set_while_absent_and_cleared_when_found(self, caplog) -> None:
        metrics = AgentMetrics("credit")
        target = MetricsTarget(URL, PROFILES["mlserver"].names, "mlserver", "iris")
        source = ModelMetricsSource(None, {"v2": target}, metrics=metrics)  # type: ignore[arg-type]

        def missing(name: str) -> float | None:
            return metrics.registry.get_sample_value(
                "rollback_agent_model_metric_missing", {"model": "credit", "version": "v2", "name": name}
            )

        with caplog.at_level(logging.INFO):
            source.parse("v2", refserver_exposition(), 1.0)
            source.parse("v2", refserver_exposition(), 2.0)
            assert missing("model_infer_request_failure_total") == 1
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 3, "one line per missing name, not one per scrape"
            source.parse("v2", exposition("mlserver-1.7.1-after-requests.txt"), 3.0)
        assert missing("model_infer_request_failure_total") == 0
        assert "found again" in caplog.text


class FakeMetricsServer:
    def __init__(self) -> None:
        self.status = 200
        self.hang_s = 0.0
        self.body = exposition("mlserver-1.7.1-after-requests.txt")
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def handle(_request: web.Request) -> web.Response:
            await asyncio.sleep(self.hang_s)  # a server that stops answering
            return web.Response(text=self.body, status=self.status)

        app = web.Application()
        app.router.add_get("/metrics", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/metrics"


@pytest.fixture
async def server() -> AsyncIterator[FakeMetricsServer]:
    fake = FakeMetricsServer()
    await fake.start()
    yield fake
    assert fake.runner is not None
    await fake.runner.cleanup()


class TestFailedReads:
    async def read(self, url: str, metrics: AgentMetrics, ticks: int = 1, timeout_s: float = 2.0) -> list[str]:
        target = MetricsTarget(url, PROFILES["mlserver"].names, "mlserver", "iris")
        async with aiohttp.ClientSession() as session:
            source = ModelMetricsSource(session, {"v2": target}, timeout_s, metrics=metrics)
            samples = [(await source.sample(float(t)))["v2"] for t in range(ticks)]
        for sample in samples:
            assert not any(s.startswith("model.") for s in sample.counters), "no model figure from a failed read"
        return [sample.unavailable["model."] for sample in samples]

    @staticmethod
    def errors(metrics: AgentMetrics, reason: str) -> float | None:
        return metrics.registry.get_sample_value(
            "rollback_agent_model_metrics_read_errors_total", {"model": "credit", "version": "v2", "reason": reason}
        )

    async def test_a_404_is_a_failed_read_counted_each_time_and_logged_once(self, server, caplog) -> None:
        server.status = 404
        metrics = AgentMetrics("credit")
        with caplog.at_level(logging.WARNING):
            reasons = await self.read(server.url, metrics, ticks=3)
        assert reasons == [f"metrics read failed: HTTP 404 from {server.url}"] * 3
        assert self.errors(metrics, "http_status") == 3
        assert sum("unreadable" in r.message for r in caplog.records) == 1

    async def test_a_refused_connection(self, server) -> None:
        url = server.url
        assert server.runner is not None
        await server.runner.cleanup()
        metrics = AgentMetrics("credit")
        [reason] = await self.read(url, metrics)
        assert reason.startswith(f"metrics read failed: cannot connect to {url}")
        assert self.errors(metrics, "connect") == 1

    async def test_a_server_that_does_not_answer_in_time(self, server) -> None:
        server.hang_s = 1.0
        metrics = AgentMetrics("credit")
        [reason] = await self.read(server.url, metrics, timeout_s=0.2)
        assert reason == f"metrics read failed: no answer from {server.url} within 0.2 s"
        assert self.errors(metrics, "timeout") == 1

    @pytest.mark.parametrize(
        "body", ["<html><body>Welcome</body></html>", 'model_infer_request_success_total{model="iris" 3\n', ""]
    )
    async def test_an_unparsable_or_empty_answer(self, server, body) -> None:
        server.body = body
        metrics = AgentMetrics("credit")
        [reason] = await self.read(server.url, metrics)
        assert reason.startswith(f"metrics read failed: unparsable exposition from {server.url}")
        assert self.errors(metrics, "unparsable") == 1

    async def test_readable_again_gives_figures_and_says_so(self, server, caplog) -> None:
        target = MetricsTarget(server.url, PROFILES["mlserver"].names, "mlserver", "iris")
        async with aiohttp.ClientSession() as session:
            source = ModelMetricsSource(session, {"v2": target}, 2.0)
            server.status = 503
            assert "model." in (await source.sample(1.0))["v2"].unavailable
            server.status = 200
            with caplog.at_level(logging.INFO):
                sample = (await source.sample(2.0))["v2"]
        assert sample.counters[Signal.MODEL_REQUESTS] == 4
        assert "model." not in sample.unavailable
        assert "readable again" in caplog.text


class _Answer:
    def __init__(self, body: str) -> None:
        self.status = 200
        self._body = body

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def text(self, errors: str = "strict") -> str:
        return self._body


class _Session:
    def __init__(self, body: str) -> None:
        self.body = body

    def get(self, url: str, timeout: object = None) -> _Answer:
        return _Answer(self.body)


_LINES = st.sampled_from(
    [
        "# TYPE model_infer_request_success_total counter",
        'model_infer_request_success_total{model="iris",version="None"} 3.0',
        "# TYPE model_infer_request_duration summary",
        'model_infer_request_duration_count{model="iris"} NaN',
        "# HELP x",
        "x{",
        'y{le="+Inf"} 1',
        "process_start_time_seconds 1e9",
        "process_resident_memory_bytes -1",
    ]
)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(
    body=st.one_of(st.text(max_size=300), st.lists(st.one_of(_LINES, st.text(max_size=40)), max_size=8).map("\n".join))
)
async def test_any_body_gives_figures_or_a_named_failure_never_an_exception(body: str) -> None:
    target = MetricsTarget(URL, PROFILES["mlserver"].names, "mlserver", "iris")
    source = ModelMetricsSource(_Session(body), {"v2": target})  # type: ignore[arg-type]
    sample = (await source.sample(1.0))["v2"]
    failed = sample.unavailable.get("model.")
    if failed is not None:
        assert failed.startswith(f"metrics read failed: unparsable exposition from {URL}: ")
        assert not any(name.startswith("model.") for name in sample.counters)
