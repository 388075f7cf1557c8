"""A rollback's progress from its audit records and the steps running now; the decision feed that keeps them."""

from __future__ import annotations

import asyncio

from agent.config import StatusPageSection
from agent.http.decision_feed import DecisionFeed
from agent.http.rollback_progress import StepWatch, rollback_progress
from agent.http.status_page import WatchViews
from agent.pb.rollback_agent.v1 import audit_pb2, control_pb2
from agent.ports.rollback import VerificationResult
from agent.ports.store import StoreUnavailableError

SWITCH_PHASES = ("detect", "select", "validate", "warm", "switch", "ack", "mark")


def _rollback(seq: int, outcome: str, phases: tuple[str, ...], detail: str = "") -> audit_pb2.AuditRecord:
    record = audit_pb2.AuditRecord(seq=seq, actor="rule:error-rate")
    record.at.FromSeconds(1_700_000_000 + seq)
    rb = record.rollback
    rb.rollback_id, rb.from_version, rb.to_version, rb.outcome, rb.detail = "rb1", "v2", "v1", outcome, detail
    rb.trigger.rule.rule, rb.trigger.rule.version, rb.trigger.rule.reason = "error-rate", "v2", "0.5 > 0.05"
    for name in phases:
        rb.phases.add(name=name, outcome="ok", duration_ms=1.5)
    return record


class _SlowVerifier:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def verify(self, version: str, window_s: float) -> VerificationResult:
        await self.release.wait()
        return VerificationResult(True, "ok")


async def test_the_verification_window_counts_down_while_it_runs():
    now = [100.0]
    watch = StepWatch(clock=lambda: now[0])
    inner = _SlowVerifier()
    verifier = watch.verifier(inner)
    task = asyncio.create_task(verifier.verify("v1", 60.0))
    await asyncio.sleep(0)
    switched = [_rollback(5, "switched", SWITCH_PHASES)]
    now[0] = 112.0
    progress = rollback_progress(switched, watch, now[0])
    assert progress is not None and not progress["done"]
    assert [p["name"] for p in progress["phases"]] == list(SWITCH_PHASES)
    assert progress["running"] == {"name": "verify", "elapsed_s": 12.0, "limit_s": 60.0, "remaining_s": 48.0}
    assert progress["pending"] == ["archive"], "confirm is over once verify runs"
    assert progress["trigger"] == "rule error-rate on v2: 0.5 > 0.05"
    inner.release.set()
    await task
    assert rollback_progress(switched, watch, now[0])["running"] is None  # type: ignore[index]


def test_the_final_record_gives_the_outcome():
    records = [
        _rollback(5, "switched", SWITCH_PHASES),
        _rollback(9, "verification_failed", (*SWITCH_PHASES, "confirm", "verify", "archive"), "p99 too high"),
    ]
    progress = rollback_progress(records, StepWatch(), 0.0)
    assert progress is not None
    assert (progress["done"], progress["outcome"], progress["detail"]) == (True, "verification_failed", "p99 too high")
    assert progress["pending"] == [] and len(progress["phases"]) == 10


def test_a_rollback_interrupted_by_a_restart_is_done():
    interrupted = audit_pb2.AuditRecord(seq=7)
    interrupted.rollback_interrupted.rollback_id = "rb1"
    interrupted.rollback_interrupted.detail = "the agent stopped during verification"
    progress = rollback_progress([_rollback(5, "switched", SWITCH_PHASES), interrupted], StepWatch(), 0.0)
    assert progress is not None and progress["done"] and progress["outcome"] == "interrupted"


class _Log:
    def __init__(self, records: list[audit_pb2.AuditRecord]) -> None:
        self.all = records
        self.reads = 0

    async def append(self, event: object, actor: str) -> audit_pb2.AuditRecord:
        raise NotImplementedError

    async def records(self, since_seq: int = 0, limit: int | None = None) -> list[audit_pb2.AuditRecord]:
        self.reads += 1
        return [r for r in self.all if r.seq > since_seq][:limit]

    async def head(self) -> tuple[int, bytes]:
        return (self.all[-1].seq if self.all else 0), b""


async def test_the_feed_reads_only_what_is_new():
    intent = audit_pb2.AuditRecord(seq=1, actor="operator:ana")
    intent.traffic_intent.reason = "canary 10 %"
    intent.traffic_intent.to_policy.weights.add(version="v2", weight=10)
    log = _Log([intent])
    head = [1]
    feed = DecisionFeed(log, lambda: head[0])
    await feed.refresh()
    await feed.refresh()
    assert log.reads == 1, "no query while nothing was written"
    assert feed.decisions(5)[0]["outcome"] == "requested"
    changed = audit_pb2.AuditRecord(seq=2)
    changed.traffic_changed.intent_seq, changed.traffic_changed.outcome = 1, "acked"
    log.all += [changed, _rollback(3, "switched", SWITCH_PHASES)]
    head[0] = 3
    await feed.refresh()
    decisions = feed.decisions(5)
    assert [d["kind"] for d in decisions] == ["rollback", "traffic"]
    assert decisions[1]["outcome"] == "acked" and decisions[1]["reason"] == "canary 10 %"
    assert feed.latest_rollback_id() == "rb1" and len(feed.rollback_records("rb1")) == 1


class _BrokenLog(_Log):
    async def records(self, since_seq: int = 0, limit: int | None = None) -> list[audit_pb2.AuditRecord]:
        raise StoreUnavailableError("disk I/O error")


class _Status:
    def status(self) -> control_pb2.Status:
        return control_pb2.Status(model="credit")

    def rollout(self) -> None:
        return None


async def test_an_unreadable_trail_is_named_and_the_status_still_shown():
    views = WatchViews(_Status(), DecisionFeed(_BrokenLog([]), lambda: 1), StepWatch(), StatusPageSection())  # type: ignore[arg-type]
    overview = await views.overview()
    assert overview["status"]["model"] == "credit"
    assert "audit trail is unreadable right now (disk I/O error)" in overview["trail_error"]
    assert overview["decisions"] == [] and overview["rollback"] is None
