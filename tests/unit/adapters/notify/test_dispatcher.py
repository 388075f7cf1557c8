"""Notifications against a real HTTP receiver on 127.0.0.1: what is delivered, retries, slow and full receivers."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.adapters.notify.dispatcher import NotificationDispatcher, NotifyConfigError, RetryPolicy, read_headers
from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.config import NotificationReceiver
from agent.pb.rollback_agent.v1 import audit_pb2
from harness.wait import NotYet, async_wait_until

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """An aiohttp webhook receiver on 127.0.0.1 that records every body and header set it was sent."""

    def __init__(self, port: int, delay_s: float = 0.0, status: int = 200) -> None:
        self.port = port
        self.delay_s = delay_s
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.gate: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    s = await SqliteStateStore.open(tmp_path / "state.db", model="credit-scorer")
    yield s
    await s.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    await r.start()
    yield r
    await r.stop()


def dispatcher(
    url: str, *, headers: dict[str, str] | None = None, events: list[Any] | None = None, **kw: Any
) -> NotificationDispatcher:
    cfg = NotificationReceiver(name="ops", url=url, events=events or ["hold", "rollback_failed", "escalation"])
    kw.setdefault("retry", RetryPolicy(max_attempts=40, initial_s=0.02, max_s=0.1))
    return NotificationDispatcher([(cfg, headers or {})], CollectorRegistry(), store_id="store-1", **kw)


def count(d: NotificationDispatcher, outcome: str) -> float:
    return d.metrics.notifications.labels("ops", outcome)._value.get()


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    await async_wait_until(lambda: predicate() or NotYet(False), timeout_s, interval_s=0.01)


async def running(d: NotificationDispatcher) -> asyncio.Task[None]:
    return asyncio.create_task(d.run(), name="notifications")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_hold_on_record_is_delivered_with_slack_text_and_facts(
    store: SqliteStateStore, receiver: Receiver
) -> None:
    d = dispatcher(receiver.url, headers={"Authorization": "Bearer s3cret"})
    store.sealed_observers.append(d.observe)
    task = await running(d)
    sealed = await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason="INC-42 p99"), "operator:ana")
    await until(lambda: len(receiver.bodies) == 1)
    await stop(task)
    body = receiver.bodies[0]
    assert body["text"] == ":pause_button: credit-scorer: version v2 held (no weight increase): INC-42 p99"
    assert body["event"] == "hold" and body["kinds"] == ["hold"]
    assert body["model"] == "credit-scorer" and body["version"] == "v2" and body["held"] is True
    assert body["seq"] == sealed.seq and body["record_hash"] == sealed.hash.hex() and body["actor"] == "operator:ana"
    assert body["id"] == f"store-1:{sealed.seq}"
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
    assert receiver.headers[0]["Idempotency-Key"] == f"store-1:{sealed.seq}"
    assert count(d, "delivered") == 1


async def test_records_that_are_not_subscribed_decisions_are_not_told(
    store: SqliteStateStore, receiver: Receiver
) -> None:
    d = dispatcher(receiver.url, events=["escalation"])
    store.sealed_observers.append(d.observe)
    task = await running(d)
    await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason="not subscribed"), "operator:ana")
    await store.append(audit_pb2.RulesReloaded(files=["r.yaml"], rules=3), "rules-watcher")
    await store.append(
        audit_pb2.Rollback(rollback_id="r1", from_version="v2", outcome="no_eligible_target", detail="none verified"),
        "rule:error_rate",
    )
    await until(lambda: len(receiver.bodies) == 1)
    await stop(task)
    assert [b["event"] for b in receiver.bodies] == ["rollback_failed"]
    assert receiver.bodies[0]["kinds"] == ["rollback_failed", "escalation"]
    assert "no_eligible_target: none verified" in receiver.bodies[0]["text"]


async def test_a_receiver_down_then_up_gets_the_notification_once(store: SqliteStateStore) -> None:
    down = Receiver(free_port())
    d = dispatcher(down.url)
    store.sealed_observers.append(d.observe)
    task = await running(d)
    await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason="while down"), "operator:ana")
    await until(lambda: d.metrics.retries.labels("ops")._value.get() >= 2)
    assert count(d, "delivered") == 0
    await down.start()
    try:
        await until(lambda: count(d, "delivered") == 1)
        await d._idle.wait()
        await stop(task)
    finally:
        await down.stop()
    assert [b["reason"] for b in down.bodies] == ["while down"]
    assert count(d, "failed") == 0


async def test_a_slow_receiver_does_not_slow_the_decision_path(store: SqliteStateStore) -> None:
    slow = Receiver(free_port(), delay_s=2.0)
    await slow.start()
    d = dispatcher(slow.url)
    store.sealed_observers.append(d.observe)
    task = await running(d)
    try:
        took = []
        for i in range(20):
            started = time.perf_counter()
            await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason=f"r{i}"), "operator:ana")
            took.append(time.perf_counter() - started)
        # Each append is a SQLite commit (fsync) and nothing more: far below one 2 s delivery.
        assert max(took) < 0.5, took
        assert sum(took) < 2.0, took
        assert len(slow.bodies) == 0
        await stop(task)
    finally:
        await slow.stop()


async def test_a_full_queue_drops_the_oldest_and_counts_it(store: SqliteStateStore, receiver: Receiver) -> None:
    d = dispatcher(receiver.url, queue_size=3)
    store.sealed_observers.append(d.observe)
    for i in range(10):  # no worker yet: the queue takes 3, the 7 oldest are dropped
        await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason=f"r{i}"), "operator:ana")
    assert count(d, "dropped") == 7
    task = await running(d)
    await until(lambda: count(d, "delivered") == 3)
    await stop(task)
    assert [b["reason"] for b in receiver.bodies] == ["r7", "r8", "r9"]


async def test_a_refusal_is_not_retried(store: SqliteStateStore) -> None:
    refusing = Receiver(free_port(), status=400)
    await refusing.start()
    d = dispatcher(refusing.url)
    store.sealed_observers.append(d.observe)
    task = await running(d)
    try:
        await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason="x"), "operator:ana")
        await until(lambda: count(d, "failed") == 1)
        await stop(task)
    finally:
        await refusing.stop()
    assert len(refusing.bodies) == 1
    assert d.metrics.retries.labels("ops")._value.get() == 0


async def test_shutdown_drains_within_the_deadline_then_drops(store: SqliteStateStore) -> None:
    gated = Receiver(free_port())
    gated.gate = asyncio.Event()
    await gated.start()
    d = dispatcher(gated.url, drain_timeout_s=0.3)
    store.sealed_observers.append(d.observe)
    task = await running(d)
    try:
        for i in range(3):
            await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason=f"r{i}"), "operator:ana")
        started = time.monotonic()
        await stop(task)  # the receiver never answers: the drain gives up at its deadline
        assert time.monotonic() - started < 3.0
    finally:
        gated.gate.set()
        await gated.stop()
    assert count(d, "dropped") == 3  # the one in flight, cut off at the deadline, and the two queued behind it
    assert count(d, "delivered") == 0


async def test_shutdown_delivers_what_is_queued_when_the_receiver_answers(
    store: SqliteStateStore, receiver: Receiver
) -> None:
    d = dispatcher(receiver.url, drain_timeout_s=5.0)
    store.sealed_observers.append(d.observe)
    task = await running(d)
    for i in range(5):
        await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason=f"r{i}"), "operator:ana")
    await stop(task)
    assert [b["reason"] for b in receiver.bodies] == [f"r{i}" for i in range(5)]


def test_headers_come_from_a_secret_file_or_env_and_errors_never_show_a_value(tmp_path: Path) -> None:
    good = tmp_path / "headers.yaml"
    good.write_text("Authorization: Bearer abc\n")
    cfg = NotificationReceiver(name="ops", url="http://127.0.0.1:1/x", headers_file=good)
    assert read_headers(cfg) == {"Authorization": "Bearer abc"}
    env_cfg = NotificationReceiver(name="ops", url="http://127.0.0.1:1/x", headers_env="HOOK_HEADERS")
    assert read_headers(env_cfg, {"HOOK_HEADERS": '{"X-Token": "t0ken-value"}'}) == {"X-Token": "t0ken-value"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("Authorization: Bearer abc\n  - broken: [\n")
    with pytest.raises(NotifyConfigError, match=r"receivers ops: headers_file .*bad.yaml:\d+: not YAML") as exc:
        read_headers(NotificationReceiver(name="ops", url="http://127.0.0.1:1/x", headers_file=bad))
    assert "abc" not in str(exc.value)
    with pytest.raises(NotifyConfigError, match="must be a mapping") as exc:
        read_headers(env_cfg, {"HOOK_HEADERS": '{"X-Token": 12345678}'})
    assert "12345678" not in str(exc.value)
    with pytest.raises(NotifyConfigError, match="HOOK_HEADERS is not set"):
        read_headers(env_cfg, {})
    with pytest.raises(NotifyConfigError, match="invalid header"):
        read_headers(env_cfg, {"HOOK_HEADERS": json.dumps({"X-A": "v\r\nInjected: 1"})})


async def test_what_was_not_told_before_a_stop_is_told_after_the_restart_and_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = await SqliteStateStore.open(path, model="credit-scorer")
    await first.append(audit_pb2.HoldChanged(version="v1", held=True, reason="before any receiver"), "operator:ana")
    gated = Receiver(free_port())
    gated.gate = asyncio.Event()
    await gated.start()
    d = dispatcher(gated.url, drain_timeout_s=0.2)
    assert await d.resume(first) == 0  # a receiver's first start begins at the head: no history replayed
    first.sealed_observers.append(d.observe)
    task = await running(d)
    try:
        for i in range(3):
            await first.append(audit_pb2.HoldChanged(version="v2", held=True, reason=f"r{i}"), "operator:ana")
        await stop(task)  # the receiver never answered: all three dropped at shutdown
    finally:
        gated.gate.set()
        await gated.stop()
    await first.close()
    assert count(d, "dropped") == 3 and gated.bodies == []

    again = await SqliteStateStore.open(path, model="credit-scorer")
    receiver = Receiver(free_port())
    await receiver.start()
    try:
        d2 = dispatcher(receiver.url)
        assert await d2.resume(again) == 3
        again.sealed_observers.append(d2.observe)
        task = await running(d2)
        await again.append(audit_pb2.HoldChanged(version="v2", held=False, reason="after"), "operator:ana")
        await until(lambda: len(receiver.bodies) == 4)
        await stop(task)
        # A third start has nothing left to tell.
        d3 = dispatcher(receiver.url)
        assert await d3.resume(again) == 0
    finally:
        await receiver.stop()
        await again.close()
    assert [b["reason"] for b in receiver.bodies] == ["r0", "r1", "r2", "after"]
    assert len({b["id"] for b in receiver.bodies}) == 4


async def test_a_kill_after_a_delivery_repeats_at_most_that_one_with_its_idempotency_key(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await SqliteStateStore.open(path, model="credit-scorer")
    receiver = Receiver(free_port())
    await receiver.start()
    try:
        d = dispatcher(receiver.url)
        await d.resume(store)
        store.sealed_observers.append(d.observe)
        task = await running(d)
        for i in range(2):
            await store.append(audit_pb2.HoldChanged(version="v2", held=True, reason=f"r{i}"), "operator:ana")
        await until(lambda: len(receiver.bodies) == 2)
        await until(lambda: d._receivers[0].saved_seq == 2)
        # What a start after a kill at this instant reads (no shutdown ran): the cursor saved with each delivery.
        d2 = dispatcher(receiver.url)
        assert await d2.resume(store) == 0
        await stop(task)
    finally:
        await receiver.stop()
        await store.close()
