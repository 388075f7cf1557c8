"""Signal source fed by Envoy's gRPC access-log service (envoy.service.accesslog.v3): every finished request.

Envoy's `envoy.access_loggers.http_grpc` logger (configured on the model listener, see
`agent.adapters.xds.resources.AccessLogSettings`) streams batches of entries to the agent's gRPC server. Each entry
is folded into `StreamState`; `sample(now)` returns the same per-version signals as the Envoy stats source, plus the
counters only the stream has. Every batch sets `batches` (an asyncio.Event) so the monitor can evaluate the rules
without waiting for its next tick.

A malformed entry is counted in `rejected` and skipped; it never ends the stream.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import duration_pb2

from agent.domain.signals import Sample
from agent.domain.stream_state import Flag, LogEntry, StreamState

log = logging.getLogger(__name__)


def _ms(d: duration_pb2.Duration) -> float:
    return d.seconds * 1e3 + d.nanos / 1e6


def _flags(f: accesslog_pb2.ResponseFlags) -> int:
    bits = 0
    if f.upstream_request_timeout:
        bits |= Flag.TIMEOUT
    if f.upstream_connection_failure or f.upstream_retry_limit_exceeded:
        bits |= Flag.CONNECT_FAILURE
    if f.no_route_found or f.no_cluster_found:
        bits |= Flag.NO_ROUTE
    if f.no_healthy_upstream:
        bits |= Flag.NO_HEALTHY_UPSTREAM
    if f.local_reset or f.upstream_remote_reset or f.upstream_connection_termination:
        bits |= Flag.RESET
    return bits


def to_entry(message: accesslog_pb2.HTTPAccessLogEntry, confidence_header: str | None = None) -> LogEntry:
    """One access-log entry as the stream state counts it.

    Latency is Envoy's upstream request time: from the end of the downstream request to the last upstream byte
    (what `upstream_rq_time` measures), None when no upstream answered.
    """
    common = message.common_properties
    latency: float | None = None
    if common.HasField("time_to_last_upstream_rx_byte"):
        latency = _ms(common.time_to_last_upstream_rx_byte)
        if common.HasField("time_to_last_rx_byte"):
            latency = max(0.0, latency - _ms(common.time_to_last_rx_byte))
    confidence: float | None = None
    if confidence_header:
        raw = message.response.response_headers.get(confidence_header)
        if raw is not None:
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            confidence = value if math.isfinite(value) else None
    flags = _flags(common.response_flags) if common.HasField("response_flags") else 0
    status = message.response.response_code.value if message.response.HasField("response_code") else 0
    return LogEntry(common.upstream_cluster, status, latency, flags, confidence)


class AccessLogServicer(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, source: AccessLogStreamSource) -> None:
        self._source = source

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> als_pb2.StreamAccessLogsResponse:
        source = self._source
        if not source.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the agent is not accepting access-log streams")
        source.streams += 1
        log.info("access log: stream opened from %s", context.peer())
        try:
            async for message in request_iterator:
                source.ingest(message.http_logs.log_entry)
                if not source.accepting:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the agent stopped accepting access-log streams")
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            log.debug("access log: stream read ended: %s", exc)
        finally:
            source.streams -= 1
            log.info("access log: stream from %s closed", context.peer())
        return als_pb2.StreamAccessLogsResponse()


class AccessLogStreamSource:
    """The access-log stream as a signal source (name "stream")."""

    name = "stream"

    def __init__(
        self,
        clusters: Mapping[str, str],  # cluster name -> version
        latency_bounds_ms: Iterable[float],
        *,
        confidence_header: str | None = None,
        ring_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = StreamState(clusters, latency_bounds_ms, ring_size=ring_size)
        self._confidence_header = confidence_header.lower() if confidence_header else None
        self._clock = clock
        self.batches = asyncio.Event()
        self.streams = 0  # open access-log streams
        self.rejected = 0  # entries that could not be read
        self.accepting = True  # False: refuse streams (operators and tests; Envoy falls back to nothing, the agent
        # to Envoy's stats)

    @property
    def last_entry_at(self) -> float | None:
        return self.state.last_entry_at

    def ingest(self, entries: Iterable[accesslog_pb2.HTTPAccessLogEntry]) -> int:
        now = self._clock()
        added = 0
        for message in entries:
            try:
                entry = to_entry(message, self._confidence_header)
            except (ValueError, TypeError, AttributeError):
                self.rejected += 1
                continue
            self.state.add(entry, now)
            added += 1
        if added:
            self.batches.set()
        return added

    async def sample(self, now: float) -> Mapping[str, Sample]:
        return self.state.sample(now)

    def register(self, server: grpc.aio.Server) -> None:
        """Serve the AccessLogService on `server` (the agent's ADS server: Envoy reaches both over one cluster)."""
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogServicer(self), server)
