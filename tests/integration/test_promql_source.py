"""The PromQL signal source against a real Prometheus scraping a small exposition served here.

The exposition stands for a ground-truth labelling job: it exports each version's accuracy with the time of the
labels it was computed from (an explicit sample timestamp), so a job that stopped updating leaves a stale sample.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agent.adapters.signals.promql_source import PromqlSource
from agent.config import PromqlSection, PromqlSignal
from agent.domain.signals import HistoryLimits, Sample, SignalHistory
from agent.triggers.context import VersionContext
from agent.triggers.kinds.business_metric import BusinessMetricRule
from agent.triggers.verdict import VerdictStatus
from harness.ports import free_port
from harness.prometheus import PrometheusProcess
from harness.wait import async_wait_until
from tests.integration.agent_stack import MODEL, AgentStack

ACCURACY = "model.business.accuracy"


class Exposition:
    """`label_accuracy{version=...}` per version: value and the age of its sample (seconds), changeable live."""

    def __init__(self) -> None:
        self.series: dict[str, tuple[float, float]] = {}  # version -> (value, age_s)
        self.port = free_port()
        exposition = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                now_ms = int(time.time() * 1000)
                lines = ["# TYPE label_accuracy gauge"]
                for version, (value, age_s) in sorted(exposition.series.items()):
                    lines.append(f'label_accuracy{{version="{version}"}} {value} {now_ms - int(age_s * 1000)}')
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exposition() -> Iterator[Exposition]:
    served = Exposition()
    yield served
    served.close()


def settings(url: str, **signal: Any) -> PromqlSection:
    fields = {"signal": ACCURACY, "query": 'label_accuracy{version="{version}"}', "max_staleness_s": 20.0, **signal}
    return PromqlSection(url=url, interval_s=1, timeout_s=2, signals=[PromqlSignal(**fields)])


async def read(source: PromqlSource) -> dict[str, Sample]:
    await source.refresh()
    return source.current(time.monotonic())


async def test_fresh_stale_and_missing_data(
    prometheus_factory: Callable[..., PrometheusProcess], exposition: Exposition
) -> None:
    exposition.series = {"v1": (0.93, 0.0), "v2": (0.71, 60.0)}  # v2's labels are a minute old; v3 has none
    prometheus = prometheus_factory(scrape_targets={"labels": [f"127.0.0.1:{exposition.port}"]})
    prometheus.wait_for_series('label_accuracy{version="v2"}')
    async with aiohttp.ClientSession() as session:
        source = PromqlSource(session, settings(prometheus.url), ["v1", "v2", "v3"])
        samples = await read(source)
        assert samples["v1"].gauges == {ACCURACY: 0.93}
        assert samples["v2"].gauges == {} and samples["v3"].gauges == {}
        problems = source.problems
        assert problems[(ACCURACY, "v2")].startswith("stale: the latest sample is 6")  # 60 s and a scrape or so
        assert problems[(ACCURACY, "v2")].endswith("s old > 20s")
        assert problems[(ACCURACY, "v3")] == "no data: the query returned an empty vector"
        assert samples["v3"].unavailable == {
            ACCURACY: f"{ACCURACY} from Prometheus: no data: the query returned an empty vector"
        }
        assert (ACCURACY, "v1") not in problems

        # The labelling job catches up: v2 becomes evidence again at the next scrape.
        exposition.series["v2"] = (0.70, 0.0)
        deadline = time.monotonic() + 15
        while (ACCURACY, "v2") in source.problems and time.monotonic() < deadline:
            samples = await read(source)
        assert samples["v2"].gauges == {ACCURACY: 0.70}

        prometheus.stop()
        assert all(sample.gauges == {} for sample in (await read(source)).values())
        assert all("unreachable" in source.problems[(ACCURACY, v)] for v in ("v1", "v2", "v3"))


async def test_one_query_labelled_by_version(
    prometheus_factory: Callable[..., PrometheusProcess], exposition: Exposition
) -> None:
    exposition.series = {"v1": (0.9, 0.0), "v2": (0.6, 0.0)}
    prometheus = prometheus_factory(scrape_targets={"labels": [f"127.0.0.1:{exposition.port}"]})
    prometheus.wait_for_series("label_accuracy")
    async with aiohttp.ClientSession() as session:
        source = PromqlSource(
            session, settings(prometheus.url, query="label_accuracy", version_label="version"), ["v1", "v2"]
        )
        samples = await read(source)
        assert {v: s.gauges[ACCURACY] for v, s in samples.items()} == {"v1": 0.9, "v2": 0.6}
        # A query with a syntax error is Prometheus' error, named, and no evidence.
        broken = PromqlSource(
            session, settings(prometheus.url, query="label_accuracy{", version_label="version"), ["v1"]
        )
        assert (await read(broken))["v1"].gauges == {}
        assert "HTTP 400" in broken.problems[(ACCURACY, "v1")]


async def test_a_rule_on_a_stale_signal_is_insufficient_evidence_never_a_breach(
    prometheus_factory: Callable[..., PrometheusProcess], exposition: Exposition
) -> None:
    """A business_metric rule reads the query's value: 0.50 < 0.80 is a breach while fresh, and no evidence once the
    labels stop coming, although the last value read is still below the bound."""
    exposition.series = {"v2": (0.5, 0.0)}
    prometheus = prometheus_factory(scrape_targets={"labels": [f"127.0.0.1:{exposition.port}"]})
    prometheus.wait_for_series('label_accuracy{version="v2"}')
    rule = BusinessMetricRule(name="accuracy-floor", kind="business_metric", metric="accuracy", below=0.8, window=4)
    wall = [time.time()]
    async with aiohttp.ClientSession() as session:
        source = PromqlSource(
            session, settings(prometheus.url, max_staleness_s=10.0), ["v2"], wall_clock=lambda: wall[0]
        )
        await source.refresh()
        history = SignalHistory(HistoryLimits())

        def verdict_after(seconds: int, start: float) -> VerdictStatus:
            for t in range(seconds + 1):
                sample = source.current(start + t).get("v2", Sample(ts=start + t))
                history.append(sample)
            return rule.evaluate(VersionContext("v2", history, start + seconds), None, False).status

        assert verdict_after(4, 0.0) is VerdictStatus.BREACH
        wall[0] += 30  # the labelling job stopped 30 s ago: the value read is now older than 10 s
        assert verdict_after(4, 5.0) is VerdictStatus.INSUFFICIENT_EVIDENCE


async def test_the_running_agent_judges_and_rolls_back_on_a_promql_signal(
    tmp_path: Path,
    prometheus_factory: Callable[..., PrometheusProcess],
    exposition: Exposition,
    agent_factory: Any,
    envoy_factory: Any,
    refserver_factory: Any,
) -> None:
    """The real agent with `signals.promql`: while v2's labelled accuracy is stale the rule is inconclusive and
    nothing moves; once fresh labels show 0.5 < 0.8 it rolls v2 back, with the query's value in the verdict."""
    exposition.series = {"v1": (0.95, 0.0), "v2": (0.5, 120.0)}  # v2's labels are two minutes old
    prometheus = prometheus_factory(scrape_targets={"labels": [f"127.0.0.1:{exposition.port}"]})
    prometheus.wait_for_series('label_accuracy{version="v2"}')
    rules = tmp_path / "accuracy_rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "model": MODEL,
                "tier": "critical",
                "rules": [
                    {
                        "name": "labelled-accuracy",
                        "kind": "business_metric",
                        "metric": "accuracy",
                        "below": 0.8,
                        "window": "3s",
                        "for": "0s",
                        "min_evidence": {"coverage": 0.5},
                    }
                ],
            }
        )
    )
    promql = {
        "url": prometheus.url,
        "interval_s": 1,
        "signals": [
            {"signal": ACCURACY, "query": 'label_accuracy{version="{version}"}', "max_staleness_s": 30},
        ],
    }
    extra = {
        "rules": {"file": str(rules)},
        "rollback": {"verify_window_s": 1, "cooldown_s": 0},
        "signals": {"promql": promql},
    }
    stack = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, extra_config=extra)
    stack.start_upstreams()
    stack.start_agent()
    stack.start_envoy()
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)

    async def rule(version: str) -> dict[str, Any]:
        _, body = await stack.control("GET", "/v1/status")
        found = [r for r in body["rules"] if r["rule"] == "labelled-accuracy" and r["version"] == version]
        return found[0] if found else {}

    async def inconclusive_for_a_while() -> bool:
        state = await rule("v2")
        return state.get("state") == "insufficient_evidence" and state.get("for_s", 0) >= 3

    await async_wait_until(inconclusive_for_a_while, 20, what="v2 inconclusive on its stale accuracy")
    reason = (await rule("v2"))["reason"]
    assert reason.startswith(f"insufficient evidence: {ACCURACY} from Prometheus: stale: the latest sample is "), reason
    _, status = await stack.control("GET", "/v1/status")
    assert {v["version"]: v["served_weight"] for v in status["versions"]} == {"v1": 50, "v2": 50}

    exposition.series["v2"] = (0.5, 0.0)  # fresh labels arrive

    async def rolled_back() -> bool:
        _, body = await stack.control("GET", "/v1/status")
        return {v["version"]: v["served_weight"] for v in body["versions"]} == {"v1": 100, "v2": 0}

    await async_wait_until(rolled_back, 30, interval_s=0.1, what="v2 rolled back on its labelled accuracy")
    _, status = await stack.control("GET", "/v1/status")
    assert status["desired"]["actor"] == "rule:labelled-accuracy"
    assert "accuracy (mean) 0.5 < 0.8" in status["desired"]["reason"]
