"""Issue 5 end to end: a shipped Prometheus alert, delivered by a real Alertmanager, rolls traffic back.

Real processes: two reference model servers, the agent, Envoy, Prometheus 2.42 with the SHIPPED rule file
rules/prometheus/model-rollback.rules.yml (no test rules: ModelVersionHighErrorRate's `for: 30s` is short enough),
and Alertmanager 0.25 with a config derived from rules/alertmanager/alertmanager.example.yml (the same routes and
the same `rollback-agent` receiver: bearer auth from `http_config.authorization.credentials_file`). The agent runs
without a rule file, so the alert is its only trigger. Also: a resolved alert never moves traffic, and a refused
webhook delivery (no or wrong credentials, a malformed body) changes nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.alertmanager import make_alert
from harness.load import TrafficGenerator
from harness.ports import free_ports
from harness.wait import NotYet, async_wait_until
from tests.integration.agent_stack import MODEL, ROOT, AgentStack, body_factory

SHIPPED_RULES = ROOT / "rules" / "prometheus" / "model-rollback.rules.yml"
EXAMPLE_ALERTMANAGER = ROOT / "rules" / "alertmanager" / "alertmanager.example.yml"
WEBHOOK_TOKEN = "am-to-agent-webhook-token"
ALERTNAME = "ModelVersionHighErrorRate"

# The agent side of docs/metrics.md: route the shipped alerts by their `action` label.
ALERTS_ROUTES = [
    {
        "name": "shipped-rules",
        "match": {"alertname": {"regex": "ModelVersion.*|ModelFleet.*|Rollback.*"}},
        "action": "from_label",
        "version_label": "version",
    }
]


def write_token(directory: Path, token: str = WEBHOOK_TOKEN) -> Path:
    path = directory / "webhook-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def alerts_config(token_file: Path | None, alertmanager_urls: list[str] | None = None, **pull: Any) -> dict[str, Any]:
    """The agent's `alerts:` section: the shipped-rules route, the webhook (when `token_file`), the pull."""
    section: dict[str, Any] = {"routes": ALERTS_ROUTES}
    if token_file is not None:
        section["webhook"] = {"enabled": True, "bearer_token_file": str(token_file)}
    if alertmanager_urls:
        section["alertmanager"] = {"urls": alertmanager_urls, **pull}
    return section


def alertmanager_config(webhook_url: str, token_file: Path, agent_group_interval: str | None = None) -> dict[str, Any]:
    """rules/alertmanager/alertmanager.example.yml with only the webhook URL and the token file replaced.

    `agent_group_interval` shortens the agent routes' group_interval (30s / 1m in the example), which is how
    soon Alertmanager sends a group's next notification (e.g. a resolution): only tests that wait for one use it.
    """
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_ALERTMANAGER.read_text())
    [receiver] = [r for r in config["receivers"] if r["name"] == "rollback-agent"]
    [webhook] = receiver["webhook_configs"]
    webhook["url"] = webhook_url
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    if agent_group_interval is not None:
        for route in config["route"]["routes"]:
            if route["receiver"] == "rollback-agent":
                route["group_interval"] = agent_group_interval
    return config


def webhook_payload(alerts: list[dict[str, Any]], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) around `alerts` (each: status, labels, annotations, startsAt,
    endsAt, generatorURL, fingerprint)."""
    return {
        "version": "4",
        "groupKey": '{}/{action="rollback"}:{alertname="ModelVersionHighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "rollback-agent",
        "groupLabels": {"alertname": ALERTNAME},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.test:9093",
        "alerts": alerts,
    }


def webhook_alert(
    labels: Mapping[str, str], *, fingerprint: str, starts_at: dt.datetime, status: str = "firing"
) -> dict[str, Any]:
    ends = starts_at + dt.timedelta(seconds=5) if status == "resolved" else None
    return {
        "status": status,
        "labels": dict(labels),
        "annotations": {"summary": "error ratio above 5%"},
        "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
        "endsAt": ends.isoformat().replace("+00:00", "Z") if ends else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.test:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


def rollback_labels(version: str = "v2") -> dict[str, str]:
    """The labels the shipped ModelVersionHighErrorRate alert carries for the critical tier."""
    return {
        "alertname": ALERTNAME,
        "model": MODEL,
        "version": version,
        "severity": "critical",
        "action": "rollback",
        "tier": "critical",
    }


async def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` at `url` (a /metrics page) whose labels include `labels`."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def agent_report(config_path: Path) -> dict[str, Any]:
    """`rollback-agent report --format json` (reads the agent's state dir, whether it runs or not)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "report",
        "--config",
        str(config_path),
        "--format",
        "json",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    assert report["audit_chain"]["intact"], report["audit_chain"]
    return report


async def audit_rollbacks(config_path: Path) -> list[dict[str, Any]]:
    """The Rollback records of the audit trail (suppressed ones included)."""
    rollbacks: list[dict[str, Any]] = (await agent_report(config_path))["rollbacks"]
    return rollbacks


async def wait_rollback_records(config_path: Path, n: int = 1, timeout_s: float = 20) -> list[dict[str, Any]]:
    """Wait for `n` rollback records that moved traffic (written once the post-switch verification ends)."""

    async def records() -> list[dict[str, Any]] | NotYet:
        moved = [r for r in await audit_rollbacks(config_path) if r["outcome"] != "suppressed"]
        return moved if len(moved) >= n else NotYet(moved)

    result: list[dict[str, Any]] = await async_wait_until(
        records, timeout_s, interval_s=0.25, what=f"{n} rollback record(s)"
    )
    return result


async def served(stack: AgentStack) -> dict[str, int]:
    _, body = await stack.control("GET", "/v1/status")
    return {v["version"]: v["served_weight"] for v in body["versions"]}


async def wait_served(stack: AgentStack, expected: dict[str, int], timeout_s: float) -> None:
    async def check() -> bool | NotYet:
        now = await served(stack)
        return now == expected or NotYet(now)

    await async_wait_until(check, timeout_s, interval_s=0.05, what=f"served weights {expected}")


@pytest.fixture
def webhook_token(tmp_path: Path) -> Path:
    return write_token(tmp_path)


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory, webhook_token):
    config = {
        "alerts": alerts_config(webhook_token),
        # Short verification so the audit record (written after it) comes quickly.
        "rollback": {"verify_window_s": 1, "confirm_timeout_s": 3},
    }
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, extra_config=config)
    s.start_upstreams()
    s.start_agent()
    s.start_envoy()
    return s


def webhook_url(stack: AgentStack) -> str:
    return f"{stack.http_url}/v1/alerts"


@pytest.fixture
def chain(tmp_path, agent_factory, envoy_factory, refserver_factory, prometheus_factory, alertmanager_factory):
    """The whole chain. Prometheus starts first: its first scrape comes 5-6 s after start, while the rest starts."""
    token_file = write_token(tmp_path)
    config = {"alerts": alerts_config(token_file), "rollback": {"verify_window_s": 1, "confirm_timeout_s": 3}}
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, extra_config=config)
    names = ("listener", "admin", "xds", "http", "control", "v1", "v2")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    s.ports = {k: ports[k] for k in names[:5]}
    am = alertmanager_factory(config=alertmanager_config(webhook_url(s), token_file))
    prom = prometheus_factory(
        scrape_targets={
            "model-servers": [f"127.0.0.1:{ports[v]}" for v in s.versions],
            "rollback-agent": [f"127.0.0.1:{s.ports['http']}"],
        },
        rule_files=[SHIPPED_RULES],
        alertmanager_urls=[am.url],
        scrape_interval="500ms",
        evaluation_interval="500ms",
    )
    for version in s.versions:
        s.upstreams[version] = refserver_factory(MODEL, version, port=ports[version])
    s.start_agent()
    s.start_envoy()
    return s, prom, am


async def test_shipped_prometheus_alert_rolls_back_through_alertmanager_and_envoy(chain):
    stack, prom, am = chain
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    v2 = f'model="{MODEL}",version="v2"'
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=100, concurrency=8) as generator:
        # The shipped alert's inputs for v2 are evaluated, healthy, and the agent reports its tier.
        healthy = (
            f"model_version:model_inference_errors:ratio_rate1m{{{v2}}} == 0"
            f" and on (model) model:rollback_agent_tier:info{{tier='critical'}}"
        )
        await asyncio.to_thread(prom.wait_for_series, healthy, 30)
        acting = [a for a in await asyncio.to_thread(prom.active_alerts) if a["labels"].get("action") != "alert"]
        assert acting == [], "no rollback or hold alert while v2 is healthy"
        assert await served(stack) == {"v1": 50, "v2": 50}

        injected = time.monotonic()
        await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})
        await async_wait_until(
            lambda: asyncio.to_thread(
                prom.query_vector, f'ALERTS{{alertname="{ALERTNAME}",alertstate="pending",{v2}}}'
            ),
            15,
            interval_s=0.25,
            what="the shipped alert pending in Prometheus",
        )
        # `for: 30s`, then Alertmanager (group_wait 0s) posts the webhook and the agent rolls back.
        await wait_served(stack, {"v1": 100, "v2": 0}, timeout_s=45)
        recovered_s = time.monotonic() - injected
        after = time.monotonic()
        await generator.wait_for_responses(generator.sent + 150, timeout_s=10)
        tail = generator.snapshot().counts_by_version(since=after)
    assert set(tail) == {"v1"}, f"requests through Envoy after the rollback: {tail}"
    assert 30 <= recovered_s < 45, recovered_s  # never before the alert's `for: 30s`

    [am_alert] = await asyncio.to_thread(am.alerts, {"alertname": ALERTNAME})
    assert am_alert["labels"] == {"alertname": ALERTNAME, **rollback_labels("v2")}, am_alert["labels"]
    _, status = await stack.control("GET", "/v1/status")
    assert status["desired"]["actor"] == f"alert:{ALERTNAME}", status["desired"]

    [record] = await wait_rollback_records(stack.config_path)
    assert (record["from_version"], record["to_version"], record["outcome"]) == ("v2", "v1", "recovered"), record
    trigger = record["trigger"]
    assert (trigger["kind"], trigger["alertname"]) == ("alert", ALERTNAME)
    assert trigger["labels"] == am_alert["labels"]
    assert (trigger["received_via"], trigger["receiver"]) == ("webhook", "rollback-agent")
    assert trigger["fingerprint"] == am_alert["fingerprint"]
    assert trigger["generator_url"] == am_alert["generatorURL"], trigger
    expr = parse_qs(urlsplit(trigger["generator_url"]).query)["g0.expr"][0]
    assert "model_version:model_inference_errors:ratio_rate1m > 0.05" in expr, expr
    assert await metric(f"{stack.http_url}/metrics", "rollback_agent_webhook_alerts_total", outcome="rejected") == 0


async def test_a_resolved_alert_never_moves_traffic(stack, webhook_token, alertmanager_factory):
    # The example's group_interval (30s) is how soon a group's resolution is sent: shortened to 1s here.
    am = await asyncio.to_thread(
        alertmanager_factory, config=alertmanager_config(webhook_url(stack), webhook_token, agent_group_interval="1s")
    )
    await stack.wait_ready_async()
    metrics_url = f"{stack.http_url}/metrics"

    async def webhook_accepted(n: int) -> None:
        async def check() -> bool | NotYet:
            got = await metric(metrics_url, "rollback_agent_webhook_alerts_total", outcome="accepted")
            return got >= n or NotYet(got)

        await async_wait_until(check, 10, interval_s=0.05, what=f"{n} alert(s) accepted on the webhook")

    # The alert fires while v2 takes no traffic (all on stable at start): recorded, nothing to roll back.
    starts = dt.datetime.now(dt.UTC)
    alert = make_alert(ALERTNAME, rollback_labels("v2"), {"summary": "v2 failing"}, starts_at=starts)
    await asyncio.to_thread(am.post_alerts, [alert])
    await webhook_accepted(1)
    # A new canary starts, then the (old) alert resolves: a resolved rollback alert arrives while v2 serves.
    await stack.set_weights(v1=50, v2=50)
    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=100, concurrency=4) as generator:
        await asyncio.to_thread(am.post_alerts, [{**alert, "endsAt": dt.datetime.now(dt.UTC).isoformat()}])
        await webhook_accepted(2)
        after = time.monotonic()
        await generator.wait_for_responses(generator.sent + 100, timeout_s=10)
        tail = generator.snapshot().counts_by_version(since=after)
        assert await served(stack) == {"v1": 50, "v2": 50}
        assert tail.get("v2", 0) > 0, f"v2 still serves after the resolved notification: {tail}"
        assert [r for r in await audit_rollbacks(stack.config_path) if r["outcome"] != "suppressed"] == []
        _, status = await stack.control("GET", "/v1/status")
        assert status["desired"]["actor"].startswith("operator"), status["desired"]

        # The same alert firing again (a new occurrence) does roll back: the path above was live.
        again = {**alert, "startsAt": dt.datetime.now(dt.UTC).isoformat()}
        await asyncio.to_thread(am.post_alerts, [again])
        await wait_served(stack, {"v1": 100, "v2": 0}, timeout_s=10)
    [record] = await wait_rollback_records(stack.config_path)
    assert record["trigger"]["received_via"] == "webhook"
    assert dt.datetime.fromisoformat(record["trigger"]["starts_at"]) > starts, "the new occurrence rolled back"


async def test_unauthenticated_or_malformed_webhook_changes_nothing(stack):
    await stack.wait_ready_async()
    await stack.set_weights(v1=50, v2=50)
    url, metrics_url = webhook_url(stack), f"{stack.http_url}/metrics"
    good = webhook_payload(
        [webhook_alert(rollback_labels("v2"), fingerprint="a1b2c3d4e5f60718", starts_at=dt.datetime.now(dt.UTC))]
    )
    raw = json.dumps(good).encode()
    bearer = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
    bad_alert = {**good["alerts"][0], "startsAt": "yesterday"}
    no_fingerprint = {k: v for k, v in good["alerts"][0].items() if k != "fingerprint"}
    refused: list[tuple[str, dict[str, str], bytes, int]] = [
        ("no credentials", {"Content-Type": "application/json"}, raw, 401),
        ("wrong bearer token", {"Authorization": "Bearer not-the-token"}, raw, 401),
        ("basic auth, not configured", {"Authorization": "Basic YWxlcnRtYW5hZ2VyOnB3"}, raw, 401),
        ("token as a query string", {}, raw, 401),
        ("not JSON", bearer, b'{"version": "4", "alerts": [', 400),
        ("payload version 3", bearer, json.dumps({**good, "version": "3"}).encode(), 400),
        ("bad timestamp", bearer, json.dumps({**good, "alerts": [bad_alert]}).encode(), 400),
        ("no fingerprint", bearer, json.dumps({**good, "alerts": [no_fingerprint]}).encode(), 400),
        ("a JSON array", bearer, json.dumps(good["alerts"]).encode(), 400),
        ("larger than max_body_bytes", bearer, raw + b" " * (1024 * 1024), 413),
    ]
    async with aiohttp.ClientSession() as session:
        for what, headers, body, expected in refused:
            target = url + (f"?token={WEBHOOK_TOKEN}" if what == "token as a query string" else "")
            async with session.post(target, data=body, headers=headers) as response:
                answer = await response.text()
                assert response.status == expected, (what, response.status, answer)
                if expected == 401:
                    assert 'Bearer realm="rollback-agent"' in response.headers.getall("WWW-Authenticate"), what
        assert await metric(metrics_url, "rollback_agent_webhook_alerts_total", outcome="rejected") == len(refused)
        for outcome in ("accepted", "duplicate", "ignored", "failed"):
            assert await metric(metrics_url, "rollback_agent_webhook_alerts_total", outcome=outcome) == 0, outcome
        assert await served(stack) == {"v1": 50, "v2": 50}
        _, status = await stack.control("GET", "/v1/status")
        assert status["desired"]["actor"].startswith("operator"), status["desired"]
        assert status.get("holds", {}) == {}
        assert await audit_rollbacks(stack.config_path) == []

        # The very same payload with the right token acts (so the refusals above were not vacuous).
        async with session.post(url, data=raw, headers=bearer) as response:
            body = await response.json()
            assert response.status == 200, body
        [result] = body["alerts"]
        assert (result["outcome"], result["decision"]) == ("accepted", "rolled_back"), result
    assert await served(stack) == {"v1": 100, "v2": 0}
