"""bench/webhook: the Alertmanager webhook as a rollback trigger, through the real agent and a real Envoy.

(a) Latency over >= 50 rollbacks under steady traffic (two reference model servers, 50/50 split). Each round
    re-arms (operator set-weights v1=50 v2=50 with `force` on the control API: v2 is `failed` after the previous
    round, and the override is recorded), then POSTs one firing ModelVersionHighErrorRate
    alert (action=rollback, version=v2; a new fingerprint each time) to POST /v1/alerts, and waits until the
    rollback's audit record is written (rounds do not overlap). Figures, from the client's send time (wall clock)
    and the Rollback audit records read from the state dir (full-precision timestamps):
    - `webhook_to_ack_ms`: the webhook sent -> the last Envoy ACKed the route (the end of the record's `ack`
      phase, which starts when the alert enters the decision handler): the target figure. It includes the loopback
      HTTP hop, authentication, parsing, routing and deduplication (`webhook_to_handler_ms`);
    - `handler_to_ack_ms`: the `ack` phase alone (what the agent measures itself);
    - `webhook_rtt_ms`: the webhook sent -> its 200, which comes after the decision handler returned, i.e. also
      after v2 was marked failed (the `mark` phase);
    - `webhook_to_all_traffic_ms`: send time -> the first request after which every request was answered by v1.
    The agent runs with `rollback: {cooldown_s: 0, max_per_hour: 100000}` so that no round is suppressed; the
    target (v1) stays verified, so target selection never blocks (v2 is re-marked failed each round).
(b) Throughput: many Alertmanager v4 payloads (100 alerts each, several concurrent senders) carrying 20,000 alerts,
    30 % of them duplicates (same fingerprint and startsAt as an earlier one, as Alertmanager's retries and
    re-notifications are); actions `alert` and `ignore` (no traffic moves) plus a known number of unique `hold`
    alerts. Checks: every alert is accounted for in `rollback_agent_webhook_alerts_total{outcome}` with exactly the
    expected accepted / duplicate / ignored split (none lost), exactly one `held` decision per unique hold alert
    and no traffic change (no duplicate action).

The last line printed is one JSON object; it is also written to bench/results/webhook.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import random
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.adapters.store.sqlite_store import read_audit_records  # noqa: E402
from agent.pb.rollback_agent.v1 import audit_pb2  # noqa: E402
from harness.agent import start_agent, wait_http_ready  # noqa: E402
from harness.bootstraps import agent_bootstrap  # noqa: E402
from harness.envoy import EnvoyProcess  # noqa: E402
from harness.load import TrafficGenerator  # noqa: E402
from harness.measure import percentile, rss_mb, write_result  # noqa: E402
from harness.refserver import RefServer  # noqa: E402
from harness.sidecar import PORT_NAMES, agent_config, sidecar_ports  # noqa: E402
from harness.wait import NotYet, async_wait_until  # noqa: E402
from refserver.client import sample_request  # noqa: E402

TOKEN = "bench-control-token"
WEBHOOK_TOKEN = "bench-webhook-token"
MODEL = "cancer"
ALERTNAME = "ModelVersionHighErrorRate"
WEBHOOK_OUTCOMES = ("accepted", "duplicate", "ignored", "rejected", "failed")


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def webhook_alert(labels: dict[str, str], fingerprint: str, starts_at: dt.datetime) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"{labels['alertname']} on {labels.get('version', '?')}"},
        "startsAt": rfc3339(starts_at),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.bench:9090/graph?g0.expr=bench",
        "fingerprint": fingerprint,
    }


def payload(alerts: list[dict[str, Any]]) -> bytes:
    """A webhook body, version 4, as Alertmanager sends it."""
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname=~"bench.*"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "rollback-agent",
            "groupLabels": {},
            "commonLabels": {"model": MODEL},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager.bench:9093",
            "alerts": alerts,
        }
    ).encode()


def labels(action: str, i: int) -> dict[str, str]:
    return {
        "alertname": ALERTNAME if action == "rollback" else f"ModelVersionBench{action.title()}{i % 7}",
        "model": MODEL,
        "version": "v2",
        "severity": "critical" if action == "rollback" else "warning",
        "action": action,
    }


async def webhook_counts(session: aiohttp.ClientSession, metrics_url: str) -> dict[str, float]:
    async with session.get(metrics_url) as response:
        text = await response.text()
    counts = dict.fromkeys(WEBHOOK_OUTCOMES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rollback_agent_webhook_alerts_total":
                counts[sample.labels["outcome"]] = sample.value
    return counts


class TimedSender:
    """POSTs webhook bodies from a dedicated thread over one keep-alive connection, taking the send time right
    before the request goes out: the bench's event loop also drives the model traffic, and a send queued behind
    it would be charged to the agent."""

    def __init__(self, port: int) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-sender")
        self._headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}

    def _post(self, body: bytes) -> tuple[float, float, int, bytes]:
        sent_wall, sent = time.time(), time.monotonic()
        self._conn.request("POST", "/v1/alerts", body=body, headers=self._headers)
        response = self._conn.getresponse()
        answer = response.read()
        return sent_wall, sent, response.status, answer

    async def post(self, body: bytes) -> tuple[float, float, float, dict[str, Any]]:
        """(send wall time, send monotonic time, round trip ms, the JSON answer)."""
        sent_wall, sent, status, answer = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._post, body
        )
        rtt_ms = (time.monotonic() - sent) * 1000.0
        result: dict[str, Any] = json.loads(answer)
        if status != 200:
            raise SystemExit(f"webhook answered {status}: {result}")
        return sent_wall, sent, rtt_ms, result

    def close(self) -> None:
        self._conn.close()
        self._executor.shutdown(wait=True)


class Agent:
    def __init__(self, session: aiohttp.ClientSession, http_port: int, control: int) -> None:
        self.session = session
        self.sender = TimedSender(http_port)
        self.webhook_url = f"http://127.0.0.1:{http_port}/v1/alerts"
        self.metrics_url = f"http://127.0.0.1:{http_port}/metrics"
        self.control_url = f"http://127.0.0.1:{control}"
        self.webhook_headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}
        self.control_headers = {"Authorization": f"Bearer {TOKEN}"}

    async def set_weights(self, **weights: int) -> None:
        body = {
            "weights": [{"version": v, "weight": w} for v, w in weights.items()],
            "reason": "bench re-arm",
            "force": True,  # v2 was rolled back (failed) last round: re-admitting it is an operator's recorded override
        }
        async with self.session.post(
            f"{self.control_url}/v1/traffic", json=body, headers=self.control_headers
        ) as response:
            if response.status != 200:
                raise SystemExit(f"re-arm failed: {response.status} {await response.text()}")

    async def status(self) -> dict[str, Any]:
        async with self.session.get(f"{self.control_url}/v1/status", headers=self.control_headers) as response:
            result: dict[str, Any] = await response.json()
            return result

    async def served(self) -> dict[str, int]:
        return {v["version"]: v["served_weight"] for v in (await self.status())["versions"]}

    async def rollbacks_recorded(self) -> float:
        async with self.session.get(self.metrics_url) as response:
            text = await response.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "rollback_agent_rollbacks_total" and sample.labels.get("cause") == "alert"
        )

    async def wait_rollbacks_recorded(self, n: int, timeout_s: float = 30.0) -> None:
        async def done() -> bool | NotYet:
            got = await self.rollbacks_recorded()
            return got >= n or NotYet(got)

        await async_wait_until(done, timeout_s, interval_s=0.05, what=f"{n} rollback(s) recorded")

    async def post(self, body: bytes) -> dict[str, Any]:
        async with self.session.post(self.webhook_url, data=body, headers=self.webhook_headers) as response:
            result: dict[str, Any] = await response.json()
            if response.status != 200:
                raise SystemExit(f"webhook answered {response.status}: {result}")
            return result


def rollback_records(state_db: Path) -> list[audit_pb2.Rollback]:
    """Every Rollback record of the audit trail, read from the state dir's SQLite file (read-only): the
    timestamps there have full precision (the report rounds them to milliseconds)."""
    records = read_audit_records(state_db)
    # A rollback that moved traffic has a "switched" record and a final one with every phase: the final one.
    return [r.rollback for r in records if r.WhichOneof("event") == "rollback" and r.rollback.outcome != "switched"]


def phase(record: audit_pb2.Rollback, name: str) -> audit_pb2.Phase | None:
    return next((p for p in record.phases if p.name == name), None)


async def latency_phase(
    agent: Agent, generator: TrafficGenerator, state_db: Path, rollbacks: int, settle_s: float
) -> dict[str, Any]:
    rtt: list[float] = []
    sent_wall: dict[str, float] = {}  # fingerprint -> wall time the webhook was sent
    sends: list[float] = []  # monotonic send time of each alert
    rearms: list[float] = []  # monotonic time of each re-arm (ends the previous round's window)
    start = dt.datetime.now(dt.UTC)
    prefix = secrets.token_hex(4)
    for i in range(rollbacks):
        rearms.append(time.monotonic())
        await agent.set_weights(v1=50, v2=50)
        await asyncio.sleep(settle_s)  # traffic reaches v2 again before the alert
        fingerprint = f"{prefix}a{i:07x}"
        body = payload([webhook_alert(labels("rollback", i), fingerprint, start + dt.timedelta(milliseconds=i))])
        sent_wall[fingerprint], sent, rtt_ms, result = await agent.sender.post(body)
        rtt.append(rtt_ms)
        [answer] = result["alerts"]
        if (answer["outcome"], answer["decision"]) != ("accepted", "rolled_back"):
            raise SystemExit(f"round {i}: the alert did not roll back: {answer}")
        sends.append(sent)
        # Rounds are independent: the rollback's background work (confirm, verify, archive, audit) ends first.
        await agent.wait_rollbacks_recorded(i + 1)
        await asyncio.sleep(settle_s)
    await generator.wait_for_responses(generator.sent, timeout_s=10)
    results = generator.snapshot()
    to_all: list[float] = []
    incomplete = 0
    for sent, until in zip(sends, [*rearms[1:], None], strict=True):
        first = results.first_time_all_from("v1", sent, until=until)
        if first is None:
            incomplete += 1
        else:
            to_all.append((first - sent) * 1000.0)

    to_handler: list[float] = []
    to_ack: list[float] = []
    handler_to_ack: list[float] = []
    phases: dict[str, list[float]] = {}
    records = [r for r in rollback_records(state_db) if r.trigger.alert.fingerprint in sent_wall]
    for record in records:
        detect, ack = phase(record, "detect"), phase(record, "ack")
        if detect is None or ack is None or record.outcome == "suppressed":
            raise SystemExit(f"rollback {record.rollback_id} did not switch: {record.outcome} {record.detail}")
        # `detect` starts when the alert enters the decision handler (its start is stamped exactly: the wall time
        # when the phase is added minus its duration); `ack` lasts from that moment to the last Envoy's ACK.
        entered = detect.started_at.ToNanoseconds() / 1e9
        sent_at = sent_wall[record.trigger.alert.fingerprint]
        to_handler.append((entered - sent_at) * 1000.0)
        to_ack.append((entered - sent_at) * 1000.0 + ack.duration_ms)
        handler_to_ack.append(ack.duration_ms)
        for p in record.phases:
            phases.setdefault(p.name, []).append(p.duration_ms)
    if len(records) != rollbacks:
        raise SystemExit(f"{len(records)} rollback records for {rollbacks} rollbacks")
    return {
        "rollbacks": rollbacks,
        "webhook_to_ack_ms_p50": round(percentile(to_ack, 0.5), 2),
        "webhook_to_ack_ms_p99": round(percentile(to_ack, 0.99), 2),
        "webhook_to_ack_ms_max": round(max(to_ack), 2),
        "webhook_to_handler_ms_p50": round(percentile(to_handler, 0.5), 2),
        "handler_to_ack_ms_p50": round(percentile(handler_to_ack, 0.5), 2),
        "handler_to_ack_ms_p99": round(percentile(handler_to_ack, 0.99), 2),
        "webhook_rtt_ms_p50": round(percentile(rtt, 0.5), 2),
        "webhook_rtt_ms_p99": round(percentile(rtt, 0.99), 2),
        "webhook_to_all_traffic_ms_p50": round(percentile(to_all, 0.5), 2),
        "webhook_to_all_traffic_ms_p99": round(percentile(to_all, 0.99), 2),
        "rounds_without_all_traffic_on_v1": incomplete,
        "phase_ms_p50": {name: round(percentile(values, 0.5), 2) for name, values in phases.items()},
        "failed_requests": len(results.failed()),
        "requests": len(results),
    }


def build_alerts(total: int, dup_fraction: float, holds: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`total` alerts in delivery order: unique ones (alert / ignore, plus `holds` hold alerts) and duplicates of
    earlier ones; returns them with the expected counts per webhook outcome."""
    rng = random.Random(seed)
    n_dup = round(total * dup_fraction)
    n_unique = total - n_dup
    start = dt.datetime.now(dt.UTC)
    prefix = secrets.token_hex(4)
    actions = ["hold"] * holds + [("alert" if i % 2 == 0 else "ignore") for i in range(n_unique - holds)]
    rng.shuffle(actions)
    unique = [
        (action, webhook_alert(labels(action, i), f"{prefix}b{i:07x}", start + dt.timedelta(microseconds=i)))
        for i, action in enumerate(actions)
    ]
    keyed: list[tuple[float, str, dict[str, Any]]] = [(float(i), a, alert) for i, (a, alert) in enumerate(unique)]
    for _ in range(n_dup):  # a duplicate comes after its original (a retry or a re-notification)
        j = rng.randrange(n_unique)
        action, alert = unique[j]
        keyed.append((rng.uniform(j + 0.5, n_unique), action, json.loads(json.dumps(alert))))
    keyed.sort(key=lambda item: item[0])
    expected = {"accepted": 0, "duplicate": 0, "ignored": 0, "held": holds}
    for key, action, _ in keyed:
        is_dup = not key.is_integer()
        if action == "ignore":
            expected["ignored"] += 1  # the routing table drops it before deduplication
        else:
            expected["duplicate" if is_dup else "accepted"] += 1
    return [alert for _, _, alert in keyed], expected


async def throughput_phase(
    agent: Agent, total: int, dup_fraction: float, holds: int, batch: int, senders: int, seed: int
) -> dict[str, Any]:
    await agent.set_weights(v1=50, v2=50)  # v2 serves, so a hold alert holds it
    served_before = await agent.served()
    rollbacks_before = (await agent.status()).get("desired", {}).get("revision")
    alerts, expected = build_alerts(total, dup_fraction, holds, seed)
    bodies = [payload(alerts[i : i + batch]) for i in range(0, len(alerts), batch)]
    before = await webhook_counts(agent.session, agent.metrics_url)
    decisions: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def sender() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            result = await agent.post(body)
            for answer in result["alerts"]:
                outcomes[answer["outcome"]] = outcomes.get(answer["outcome"], 0) + 1
                if answer["decision"]:
                    decisions[answer["decision"]] = decisions.get(answer["decision"], 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    elapsed = time.perf_counter() - started
    after = await webhook_counts(agent.session, agent.metrics_url)
    delta = {k: int(after[k] - before[k]) for k in WEBHOOK_OUTCOMES}
    status = await agent.status()
    served_after = await agent.served()
    accounted = delta["accepted"] + delta["duplicate"] + delta["ignored"]
    checks = {
        "metric_matches_expected": all(delta[k] == expected[k] for k in ("accepted", "duplicate", "ignored")),
        "none_lost": accounted == total and delta["rejected"] == 0 and delta["failed"] == 0,
        "one_hold_per_unique_hold_alert": decisions.get("held", 0) == holds,
        "no_traffic_change": served_after == served_before
        and status.get("desired", {}).get("revision") == rollbacks_before,
        "holds_in_status": sorted(status.get("holds", {})) == ["v2"],
    }
    return {
        "alerts": total,
        "payloads": len(bodies),
        "alerts_per_payload": batch,
        "senders": senders,
        "duplicate_fraction": dup_fraction,
        "unique_hold_alerts": holds,
        "seconds": round(elapsed, 3),
        "alerts_per_s": round(total / elapsed, 1),
        "expected": expected,
        "webhook_alerts_total_delta": delta,
        "response_outcomes": outcomes,
        "decisions": decisions,
        "checks": checks,
    }


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    bodies = [json.dumps(sample_request(1, seed=i)).encode() for i in range(64)]
    with ExitStack() as stack:
        logs = work / "logs"
        logs.mkdir()
        v1 = stack.enter_context(RefServer(MODEL, "v1", None, logs).start(30))
        v2 = stack.enter_context(RefServer(MODEL, "v2", None, logs).start(30))
        ports = sidecar_ports()
        listener, admin, xds, http_port, control = (ports[n] for n in PORT_NAMES)
        token_file = work / "webhook-token"
        token_file.write_text(WEBHOOK_TOKEN + "\n")
        config = agent_config(
            model=MODEL,
            upstreams={"v1": v1.port, "v2": v2.port},
            ports=ports,
            state_dir=work / "state",
            stable="v1",
            candidate="v2",
            rollback={"cooldown_s": 0, "max_per_hour": 100000, "verify_window_s": 0.5, "confirm_timeout_s": 2},
            alerts={
                "routes": [{"match": {"alertname": {"regex": "ModelVersion.*"}}, "action": "from_label"}],
                "webhook": {"enabled": True, "bearer_token_file": str(token_file)},
            },
        )
        config_path = work / "agent.yaml"
        config_path.write_text(yaml.safe_dump(config))
        agent_proc = stack.enter_context(start_agent(config_path, logs, {"ROLLBACK_AGENT_TOKEN": TOKEN}))
        wait_http_ready(f"http://127.0.0.1:{http_port}/healthz", 20, process=agent_proc)
        envoy = EnvoyProcess(
            agent_bootstrap(
                xds_port=xds, node_id="bench-envoy", xds_host="127.0.0.1", admin_port=admin, admin_host="127.0.0.1"
            ),
            work_dir=work / "envoy",
            log_dir=logs,
        )
        stack.enter_context(envoy.start(15))
        wait_http_ready(f"http://127.0.0.1:{http_port}/readyz", 20, process=agent_proc)

        connector = aiohttp.TCPConnector(limit=max(args.senders, 4) + 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            agent = Agent(session, http_port, control)
            generator = TrafficGenerator(
                f"http://127.0.0.1:{listener}/v2/models/{MODEL}/infer",
                lambda i: bodies[i % len(bodies)],
                rate_per_s=args.rate,
                concurrency=16,
            )
            stack.callback(agent.sender.close)
            async with generator:
                await generator.wait_for_responses(int(args.rate), timeout_s=20)
                latency = await latency_phase(
                    agent, generator, work / "state" / "state.db", args.rollbacks, args.settle_s
                )
            throughput = await throughput_phase(
                agent, args.alerts, args.duplicates, args.holds, args.batch, args.senders, args.seed
            )
        agent_rss = rss_mb(agent_proc.pid) if agent_proc.pid else float("nan")
    return {
        "bench": "webhook",
        "latency": latency,
        "throughput": throughput,
        "agent_rss_mb": round(agent_rss, 1),
        # This machine has 2 cores and is shared: the latency tail follows whatever else runs.
        "loadavg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "targets": {"webhook_to_ack_ms_p99": 20, "alerts_per_s": 2000, "lost_alerts": 0, "duplicate_actions": 0},
        "met": {
            "webhook_to_ack_ms_p99": latency["webhook_to_ack_ms_p99"] <= 20,
            "alerts_per_s": throughput["alerts_per_s"] >= 2000,
            "none_lost_no_duplicate_action": all(throughput["checks"].values()),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollbacks", type=int, default=60, help="latency rounds (>= 50)")
    parser.add_argument("--rate", type=float, default=200.0, help="model traffic through Envoy, requests/s")
    parser.add_argument("--settle-s", type=float, default=0.2, help="pause after each re-arm and each rollback")
    parser.add_argument("--alerts", type=int, default=20000, help="alerts in the throughput phase")
    parser.add_argument("--duplicates", type=float, default=0.3, help="fraction of duplicate alerts")
    parser.add_argument("--holds", type=int, default=200, help="unique hold alerts among them")
    parser.add_argument("--batch", type=int, default=100, help="alerts per webhook payload")
    parser.add_argument("--senders", type=int, default=4, help="concurrent webhook senders")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    write_result("webhook", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
