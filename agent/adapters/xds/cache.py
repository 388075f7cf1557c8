"""The snapshot cache: the one place that holds the current snapshot and every open ADS stream's state.

The gRPC servicer sees only this cache. Publishing a snapshot wakes every stream; waiting for a snapshot resolves
when every connected Envoy ACKed all of it, and fails at once when any of them rejects part of it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent.adapters.xds.snapshot import Snapshot
from agent.adapters.xds.stream_state import Request, RequestKind, RequestOutcome, Response, StreamState

log = logging.getLogger(__name__)


class XdsCallbacks(Protocol):
    def stream_opened(self, stream: StreamState) -> None: ...
    def stream_closed(self, stream: StreamState) -> None: ...
    def response_sent(self, stream: StreamState, response: Response) -> None: ...
    def request_handled(self, stream: StreamState, outcome: RequestOutcome, now: float) -> None: ...


class NoCallbacks:
    def stream_opened(self, stream: StreamState) -> None:
        pass

    def stream_closed(self, stream: StreamState) -> None:
        pass

    def response_sent(self, stream: StreamState, response: Response) -> None:
        pass

    def request_handled(self, stream: StreamState, outcome: RequestOutcome, now: float) -> None:
        pass


class ConfigRejectedError(Exception):
    """An Envoy rejected (NACKed) part of a snapshot. It keeps serving its last good config."""

    def __init__(self, nack: NackRecord) -> None:
        super().__init__(
            f"Envoy {nack.node_id or nack.stream_id} rejected {nack.type_url.rsplit('.', 1)[-1]} "
            f"version {nack.rejected_version} (keeps serving {nack.serving_version or 'nothing'}): {nack.error}"
        )
        self.nack = nack


class AckTimeoutError(Exception):
    """Not every connected Envoy ACKed a snapshot in time."""


class SupersededError(Exception):
    """Another snapshot was published before every Envoy ACKed this one."""


@dataclass(frozen=True, slots=True)
class NackRecord:
    stream_id: str
    node_id: str
    type_url: str
    rejected_version: str
    serving_version: str
    error: str
    at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class NodeAck:
    node_id: str
    route_version: str
    acked_at: float  # unix seconds


@dataclass(eq=False)
class StreamHandle:
    state: StreamState
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


@dataclass(eq=False)
class _Waiter:
    snapshot: Snapshot
    future: asyncio.Future[list[NodeAck]]


class SnapshotCache:
    def __init__(
        self,
        callbacks: XdsCallbacks | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        nack_history: int = 50,
    ) -> None:
        self._callbacks: XdsCallbacks = callbacks or NoCallbacks()
        self._clock = clock
        self._wall = wall_clock
        self._snapshot: Snapshot | None = None
        self._streams: dict[str, StreamHandle] = {}
        self._ids = itertools.count(1)
        self._waiters: list[_Waiter] = []
        self.nacks: deque[NackRecord] = deque(maxlen=nack_history)
        self.listeners: list[Callable[[], None]] = []  # told when sync state may have changed

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def streams(self) -> list[StreamState]:
        return [h.state for h in self._streams.values()]

    def to_wall(self, monotonic_s: float) -> float:
        return monotonic_s + (self._wall() - self._clock())

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        for handle in self._streams.values():
            handle.wakeup.set()
        self._settle()

    def open_stream(self) -> StreamHandle:
        state = StreamState(stream_id=f"s{next(self._ids)}", opened_at=self._wall())
        handle = StreamHandle(state)
        self._streams[state.stream_id] = handle
        self._callbacks.stream_opened(state)
        return handle

    def close_stream(self, handle: StreamHandle) -> None:
        handle.closed = True
        if self._streams.pop(handle.state.stream_id, None) is not None:
            self._callbacks.stream_closed(handle.state)
        self._settle()

    def handle_request(self, handle: StreamHandle, request: Request) -> RequestOutcome:
        now = self._clock()
        outcome = handle.state.handle(request, now)
        self._callbacks.request_handled(handle.state, outcome, now)
        if outcome.kind is RequestKind.NACK:
            record = NackRecord(
                stream_id=handle.state.stream_id,
                node_id=handle.state.node_id,
                type_url=outcome.type_url,
                rejected_version=outcome.version,
                serving_version=outcome.serving_version,
                error=outcome.error,
                at=self._wall(),
            )
            self.nacks.append(record)
            log.error("xds: %s", ConfigRejectedError(record))
        if outcome.kind in (RequestKind.ACK, RequestKind.NACK, RequestKind.RESUBSCRIBE):
            self._settle()
        return outcome

    def due_responses(self, handle: StreamHandle) -> list[Response]:
        handle.wakeup.clear()
        responses = handle.state.due(self._snapshot, self._clock())
        for response in responses:
            self._callbacks.response_sent(handle.state, response)
        return responses

    def in_sync(self) -> bool:
        """At least one Envoy is connected and every connected Envoy ACKed the whole current snapshot."""
        return bool(self._streams) and all(h.state.in_sync(self._snapshot) for h in self._streams.values())

    async def wait_in_sync(self, snapshot: Snapshot, timeout_s: float) -> list[NodeAck]:
        """Wait until every connected Envoy ACKed all of `snapshot` (at least one must be connected).

        Raises ConfigRejectedError as soon as one rejects any part of it, AckTimeoutError after `timeout_s`.
        """
        waiter = _Waiter(snapshot, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._settle()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout_s)
        except TimeoutError:
            raise AckTimeoutError(self._describe_lag(snapshot, timeout_s)) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _settle(self) -> None:
        for listener in self.listeners:
            listener()
        if not self._waiters:
            return
        for waiter in list(self._waiters):
            if waiter.future.done():
                continue
            outcome = self._evaluate(waiter.snapshot)
            if isinstance(outcome, BaseException):
                waiter.future.set_exception(outcome)
            elif outcome is not None:
                waiter.future.set_result(outcome)

    def _evaluate(self, snapshot: Snapshot) -> list[NodeAck] | BaseException | None:
        if snapshot is not self._snapshot:
            return SupersededError(f"route version {snapshot.route_version} was superseded before every ACK")
        for handle in self._streams.values():
            for type_url, ts in handle.state.rejected(snapshot):
                return ConfigRejectedError(
                    NackRecord(
                        handle.state.stream_id,
                        handle.state.node_id,
                        type_url,
                        ts.rejected_version,
                        ts.acked_version,
                        ts.last_error,
                        self._wall(),
                    )
                )
        if not self._streams or not all(h.state.in_sync(snapshot) for h in self._streams.values()):
            return None
        return [
            NodeAck(
                h.state.node_id or h.state.stream_id,
                snapshot.route_version,
                self.to_wall(max(ts.acked_at for ts in h.state.types.values())),
            )
            for h in self._streams.values()
        ]

    def _describe_lag(self, snapshot: Snapshot, timeout_s: float) -> str:
        if not self._streams:
            return f"no Envoy connected within {timeout_s:g}s; the change is stored and will be served on connect"
        lagging = [
            h.state.node_id or h.state.stream_id for h in self._streams.values() if not h.state.in_sync(snapshot)
        ]
        return f"Envoy(s) {', '.join(lagging)} did not ACK route version {snapshot.route_version} in {timeout_s:g}s"
