"""Delivery of notifications to webhook receivers, off the decision path.

`observe` is a sealed-record observer of the state store: it runs on the event loop right after a commit, so it
only derives the notification and puts it in each subscribed receiver's bounded queue (O(1), never awaits).
One worker per receiver posts in order, retrying transient failures (connection errors, timeouts, 408, 429,
5xx) with exponential backoff and full jitter; a slow or dead receiver delays only its own queue. A full queue
drops its oldest notification (counted). At shutdown the queues get `drain_timeout_s` to empty.

Nothing is lost with the process: each receiver's cursor (the seq of the last record it was told, or given up on)
is kept in the state store, and `resume` re-derives what came after it from the audit trail at the next start
(at least once: a kill between a delivery and its cursor repeats that one, with the same Idempotency-Key). A
receiver's first start begins at the trail's head: history is not replayed to a new receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.adapters.notify.events import Notification, notification_for
from agent.config import NotificationReceiver, NotificationsSection
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StateStore, StoreUnavailableError

log = logging.getLogger(__name__)

OUTCOMES = ("delivered", "failed", "dropped")
_TRANSIENT = {408, 425, 429}
CURSOR_PREFIX = "notify.cursor."  # + receiver name: the seq of the last record the receiver is done with


class NotifyConfigError(Exception):
    """A receiver's settings cannot be used (its headers secret); the message names the receiver and the source."""


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry, receivers: Sequence[str]) -> None:
        self.notifications = Counter(
            "rollback_agent_notifications_total",
            "Notifications by receiver and outcome: delivered, failed (gave up or refused), dropped (queue full or "
            "left at shutdown).",
            ["receiver", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "rollback_agent_notification_retries_total",
            "Delivery attempts that failed transiently and were retried.",
            ["receiver"],
            registry=registry,
        )
        self.queued = Gauge(
            "rollback_agent_notification_queue_depth",
            "Notifications waiting per receiver.",
            ["receiver"],
            registry=registry,
        )
        for name in receivers:  # known labels start at 0
            for outcome in OUTCOMES:
                self.notifications.labels(name, outcome)
            self.retries.labels(name)
            self.queued.labels(name).set(0)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**attempt)] (attempt counts from 0)."""
        return rng(0.0, min(self.max_s, self.initial_s * (2.0**attempt)))


def read_headers(receiver: NotificationReceiver, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The receiver's extra headers from its secret source; errors name the receiver and the source, never a value."""
    where = f"notifications.receivers {receiver.name}"
    if receiver.headers_file is not None:
        try:
            raw: Any = yaml.safe_load(receiver.headers_file.read_text())
        except OSError as exc:
            raise NotifyConfigError(
                f"{where}: headers_file {receiver.headers_file}: cannot read: {exc.strerror}"
            ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise NotifyConfigError(
                f"{where}: headers_file {receiver.headers_file}{line}: not YAML ({getattr(exc, 'problem', exc)})"
            ) from None
        source = f"headers_file {receiver.headers_file}"
    elif receiver.headers_env is not None:
        text = environ.get(receiver.headers_env)
        if text is None:
            raise NotifyConfigError(f"{where}: headers_env {receiver.headers_env} is not set")
        try:
            raw = json.loads(text)
        except ValueError:
            raise NotifyConfigError(f"{where}: headers_env {receiver.headers_env}: not a JSON object") from None
        source = f"headers_env {receiver.headers_env}"
    else:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise NotifyConfigError(f"{where}: {source}: must be a mapping of header name to string value")
    bad = [k for k, v in raw.items() if not k or any(c in k + v for c in "\r\n") or ":" in k]
    if bad:
        raise NotifyConfigError(f"{where}: {source}: invalid header(s) {sorted(bad)}")
    return dict(raw)


@dataclass
class _Receiver:
    name: str
    url: str
    kinds: frozenset[str]
    headers: dict[str, str]
    timeout_s: float
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False
    saved_seq: int = 0  # the cursor as last persisted
    cut: bool = False  # a delivery was cut off at shutdown: told again at the next start


class _Permanent(Exception):
    pass


class NotificationDispatcher:
    def __init__(
        self,
        receivers: Sequence[tuple[NotificationReceiver, dict[str, str]]],
        registry: CollectorRegistry,
        *,
        store_id: str = "",
        queue_size: int = 1000,
        retry: RetryPolicy = RetryPolicy(),
        drain_timeout_s: float = 5.0,
    ) -> None:
        self._receivers = [
            _Receiver(r.name, r.url, frozenset(r.events), headers, r.timeout_s) for r, headers in receivers
        ]
        self.metrics = NotifyMetrics(registry, [r.name for r in self._receivers])
        self.store_id = store_id
        self.queue_size = queue_size
        self.retry = retry
        self.drain_timeout_s = drain_timeout_s
        self.sleep: Callable[[float], Any] = asyncio.sleep
        self._idle = asyncio.Event()  # set while no receiver has anything queued or in flight
        self._idle.set()
        self._store: StateStore | None = None
        self._observed_seq = 0  # the newest sealed record seen

    @classmethod
    def from_config(
        cls,
        section: NotificationsSection,
        registry: CollectorRegistry,
        store_id: str,
        environ: Mapping[str, str] = os.environ,
    ) -> NotificationDispatcher:
        """NotifyConfigError when a receiver's headers cannot be read."""
        return cls(
            [(r, read_headers(r, environ)) for r in section.receivers],
            registry,
            store_id=store_id,
            queue_size=section.queue_size,
            retry=RetryPolicy(section.max_attempts, section.backoff_initial_s, section.backoff_max_s),
            drain_timeout_s=section.drain_timeout_s,
        )

    async def resume(self, store: StateStore) -> int:
        """Queue what each receiver was not yet told before the agent stopped (from its cursor to the trail's head)
        and keep the cursors in `store` from now on. Call before `observe` is attached: nothing may be sealed
        between the two. Returns how many notifications were queued again."""
        self._store = store
        head, _ = await store.head()
        replayed = 0
        for receiver in self._receivers:
            saved = await store.get_setting(CURSOR_PREFIX + receiver.name)
            if saved is None or not saved.isdigit() or int(saved) > head:
                if saved is not None:
                    log.error(
                        "notifications: cursor of %s is %r, not a seq of this trail: restarting at the head %d",
                        receiver.name,
                        saved,
                        head,
                    )
                await store.put_setting(CURSOR_PREFIX + receiver.name, str(head))
                receiver.saved_seq = head
                continue
            receiver.saved_seq = seq = int(saved)
            while seq < head:
                page = await store.records(since_seq=seq, limit=500)
                if not page:
                    break
                for record in page:
                    note = notification_for(record)
                    if note is not None and not receiver.kinds.isdisjoint(note.kinds):
                        self._put(receiver, note.body(self.store_id))
                        replayed += 1
                seq = page[-1].seq
            if receiver.queue:
                log.warning(
                    "notifications: %d not yet told to %s before the agent stopped are queued again",
                    len(receiver.queue),
                    receiver.name,
                )
        return replayed

    # -- the decision side: never blocks --------------------------------------------------------------------------

    def observe(self, record: audit_pb2.AuditRecord) -> None:
        self._observed_seq = max(self._observed_seq, record.seq)
        note = notification_for(record)
        if note is None:
            return
        self.enqueue(note)

    def enqueue(self, note: Notification) -> None:
        body: dict[str, Any] | None = None
        for receiver in self._receivers:
            if receiver.kinds.isdisjoint(note.kinds):
                continue
            body = body or note.body(self.store_id)
            self._put(receiver, body)

    def _put(self, receiver: _Receiver, body: dict[str, Any]) -> None:
        if len(receiver.queue) >= self.queue_size:
            dropped = receiver.queue.popleft()
            self.metrics.notifications.labels(receiver.name, "dropped").inc()
            log.warning("notification queue of %s full: dropped %s", receiver.name, dropped.get("id"))
        receiver.queue.append(body)
        self._idle.clear()
        self.metrics.queued.labels(receiver.name).set(len(receiver.queue))
        receiver.wake.set()

    # -- the delivery side ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled; on cancellation, drain for up to drain_timeout_s, then drop what is left."""
        if not self._receivers:
            await asyncio.Event().wait()
        async with aiohttp.ClientSession() as session:
            workers = [asyncio.create_task(self._work(session, r), name=f"notify-{r.name}") for r in self._receivers]
            try:
                # asyncio.wait, not gather: cancelling this task must leave the workers running for the drain.
                done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
                for worker in done:
                    worker.result()
            except asyncio.CancelledError:
                await self._drain()
                raise
            finally:
                for worker in workers:
                    worker.cancel()
                for worker in workers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await worker
                # A receiver with nothing left is done with every record seen: the next start need not re-read them.
                for receiver in self._receivers:
                    if not receiver.queue and not receiver.cut:
                        with contextlib.suppress(Exception):
                            await self._advance(receiver, self._observed_seq)
                self._drop_rest()

    def idle(self) -> bool:
        return all(not r.queue and not r.busy for r in self._receivers)

    async def _drain(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.drain_timeout_s)

    def _drop_rest(self) -> None:
        for receiver in self._receivers:
            if receiver.queue:
                log.warning("notifications: %d for %s left undelivered at shutdown", len(receiver.queue), receiver.name)
                self.metrics.notifications.labels(receiver.name, "dropped").inc(len(receiver.queue))
                receiver.queue.clear()
                self.metrics.queued.labels(receiver.name).set(0)
        self._idle.set()

    async def _work(self, session: aiohttp.ClientSession, receiver: _Receiver) -> None:
        while True:
            if not receiver.queue:
                receiver.wake.clear()
                await receiver.wake.wait()
                continue
            body = receiver.queue.popleft()
            self.metrics.queued.labels(receiver.name).set(len(receiver.queue))
            receiver.busy = True
            try:
                outcome = await self._deliver(session, receiver, body)
            except asyncio.CancelledError:  # cut off at the end of the drain
                self.metrics.notifications.labels(receiver.name, "dropped").inc()
                receiver.cut = True
                raise
            finally:
                receiver.busy = False
            self.metrics.notifications.labels(receiver.name, outcome).inc()
            await self._advance(receiver, int(body.get("seq", 0)))
            if self.idle():
                self._idle.set()

    async def _advance(self, receiver: _Receiver, seq: int) -> None:
        """The receiver is done with the records up to `seq` (told, or given up on)."""
        if self._store is None or seq <= receiver.saved_seq:
            return
        try:
            await self._store.put_setting(CURSOR_PREFIX + receiver.name, str(seq))
        except StoreUnavailableError as exc:  # told again after a restart, never lost
            log.warning("notifications: cursor of %s not saved (%s)", receiver.name, exc)
            return
        receiver.saved_seq = seq

    async def _deliver(self, session: aiohttp.ClientSession, receiver: _Receiver, body: dict[str, Any]) -> str:
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": str(body["id"]), **receiver.headers}
        timeout = aiohttp.ClientTimeout(total=receiver.timeout_s)
        for attempt in range(self.retry.max_attempts):
            try:
                async with session.post(receiver.url, data=data, headers=headers, timeout=timeout) as response:
                    if 200 <= response.status < 300:
                        return "delivered"
                    if response.status < 500 and response.status not in _TRANSIENT:
                        raise _Permanent(f"HTTP {response.status}")
                    problem = f"HTTP {response.status}"
            except _Permanent as exc:
                log.error("notification %s to %s refused (%s): not retried", body["id"], receiver.name, exc)
                return "failed"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
            if attempt + 1 < self.retry.max_attempts:
                self.metrics.retries.labels(receiver.name).inc()
                delay = self.retry.delay(attempt)
                log.info("notification %s to %s failed (%s); retry in %.2fs", body["id"], receiver.name, problem, delay)
                await self.sleep(delay)
            else:
                log.error(
                    "notification %s to %s failed after %d attempts: %s",
                    body["id"],
                    receiver.name,
                    self.retry.max_attempts,
                    problem,
                )
        return "failed"
