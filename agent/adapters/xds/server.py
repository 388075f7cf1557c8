"""The ADS gRPC servicer (state of the world). It sees only the snapshot cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from agent.adapters.xds.cache import SnapshotCache, StreamHandle
from agent.adapters.xds.stream_state import Request, Response

log = logging.getLogger(__name__)

CONTROL_PLANE_ID = "model-rollback-agent"
_CLOSED = object()


def to_request(message: discovery_pb2.DiscoveryRequest) -> Request:
    return Request(
        type_url=message.type_url,
        version_info=message.version_info,
        nonce=message.response_nonce,
        resource_names=tuple(message.resource_names),
        error=message.error_detail.message if message.HasField("error_detail") else "",
        node_id=message.node.id if message.HasField("node") else "",
        node_cluster=message.node.cluster if message.HasField("node") else "",
    )


class AggregatedDiscoveryServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, cache: SnapshotCache) -> None:
        self._cache = cache

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        handle = self._cache.open_stream()
        inbox: asyncio.Queue[object] = asyncio.Queue()
        reader = asyncio.create_task(self._read(request_iterator, inbox), name=f"xds-read-{handle.state.stream_id}")
        log.info("xds: stream %s opened from %s", handle.state.stream_id, context.peer())
        try:
            while True:
                item = await self._next(handle, inbox)
                if item is _CLOSED:
                    return
                if isinstance(item, discovery_pb2.DiscoveryRequest):
                    self._cache.handle_request(handle, to_request(item))
                for response in self._cache.due_responses(handle):
                    yield self._to_message(response)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._cache.close_stream(handle)
            log.info("xds: stream %s (%s) closed", handle.state.stream_id, handle.state.node_id or "unknown node")

    async def DeltaAggregatedResources(
        self,
        request_iterator: object,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this control plane serves state-of-the-world ADS only")

    @staticmethod
    async def _read(requests: AsyncIterator[discovery_pb2.DiscoveryRequest], inbox: asyncio.Queue[object]) -> None:
        try:
            async for request in requests:
                inbox.put_nowait(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            log.debug("xds: stream read ended: %s", exc)
        finally:
            inbox.put_nowait(_CLOSED)

    @staticmethod
    async def _next(handle: StreamHandle, inbox: asyncio.Queue[object]) -> object:
        """The next request, or None when the snapshot changed (wakeup), whichever comes first."""
        if not inbox.empty():
            return inbox.get_nowait()
        if handle.wakeup.is_set():
            return None
        get = asyncio.ensure_future(inbox.get())
        wake = asyncio.ensure_future(handle.wakeup.wait())
        try:
            await asyncio.wait((get, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            if not get.done():
                get.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        return None

    def _to_message(self, response: Response) -> discovery_pb2.DiscoveryResponse:
        snapshot = self._cache.snapshot
        assert snapshot is not None
        typed = snapshot.types.get(response.type_url)
        resources = typed.select(response.names) if typed else []
        return discovery_pb2.DiscoveryResponse(
            version_info=response.version,
            resources=resources,
            type_url=response.type_url,
            nonce=response.nonce,
            control_plane={"identifier": CONTROL_PLANE_ID},
        )


async def start_xds_server(
    cache: SnapshotCache, host: str, port: int, services: Sequence[Callable[[grpc.aio.Server], None]] = ()
) -> tuple[grpc.aio.Server, int]:
    """Serve ADS, and every extra service `services` registers (the access-log service), on one port."""
    server = grpc.aio.server(
        options=[
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
    )
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscoveryServicer(cache), server)
    for register in services:
        register(server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"xDS server could not bind {host}:{port}")
    await server.start()
    return server, bound
