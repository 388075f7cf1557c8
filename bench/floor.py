"""bench/floor: the floor of a traffic switch, a bare grpc.aio ADS server with no agent logic.

It serves Envoy the resources the agent served (the Envoy's own config dump: clusters, listener, route) on the
agent's xDS port and, on each command, pushes the same route change the agent would (every weighted cluster 0
except the target's 100) and waits for Envoy's ACK. No snapshot cache, policy, audit, persistence or metrics:
what is left is gRPC, protobuf and Envoy, so `agent figure / floor figure` is the agent's own overhead.

bench/failover.py runs it as a child process against the same Envoy, right after the agent's phase (same Envoy
process, model servers, load and machine): the agent stops, this takes over its xDS port, Envoy reconnects.
Access-log streams Envoy opens to the port are accepted and drained, so Envoy does the same work as with the agent.

Protocol (one line each way, stdout is JSON lines):
  stdin  `switch VERSION`  -> {"target": VERSION, "decision_to_ack_ms": ...}  (from reading the line to the ACK)
  stdout {"event": "listening", "port": P} once bound; {"event": "synced"} at the first route ACK on a stream;
         {"event": "nack", ...} on a NACK.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

# Imported for their message types: json_format resolves the config dump's typed_config Any's through them.
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.service.accesslog.v3 import als_pb2 as als_service_pb2
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
DUMP_SECTIONS = {  # config_dump ?resource= section -> (the resource's key in each entry, nested under)
    "dynamic_active_clusters": ("cluster", None),
    "dynamic_listeners": ("listener", "active_state"),
    "dynamic_route_configs": ("route_config", None),
}


def resources_from_dump(dumps: dict[str, Any]) -> dict[str, list[any_pb2.Any]]:
    """type_url -> resources, from Envoy's config dump sections (each `{"configs": [...]}`)."""
    out: dict[str, list[any_pb2.Any]] = {}
    for section, (key, nested) in DUMP_SECTIONS.items():
        for entry in dumps[section].get("configs", []):
            body = entry.get(nested, {}) if nested else entry
            if key not in body:
                continue
            resource = json_format.ParseDict(body[key], any_pb2.Any(), ignore_unknown_fields=True)
            out.setdefault(resource.type_url, []).append(resource)
    return out


def route_to(route: any_pb2.Any, version: str) -> any_pb2.Any:
    """The same route with all traffic on `version` (weighted clusters are named MODEL__VERSION)."""
    config = route_pb2.RouteConfiguration()
    route.Unpack(config)
    for vhost in config.virtual_hosts:
        for r in vhost.routes:
            for cluster in r.route.weighted_clusters.clusters:
                cluster.weight.value = 100 if cluster.name.endswith(f"__{version}") else 0
    packed = any_pb2.Any()
    packed.Pack(config)
    return packed


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class FloorAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """State-of-the-world ADS for one Envoy: answer each subscription once, push route changes, match ACKs."""

    def __init__(self, resources: dict[str, list[any_pb2.Any]]) -> None:
        self.resources = resources
        self.versions = dict.fromkeys(resources, "floor-0")
        self.nonces = (str(n) for n in itertools.count(1))
        self.sent: dict[str, str] = {}  # nonce -> type_url, every nonce this server issued
        self.pending: dict[str, asyncio.Future[None]] = {}  # nonce -> resolved by its ACK
        self.outbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] | None = None
        self.synced = False

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        outbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = asyncio.Queue()
        self.outbox, self.synced = outbox, False
        reader = asyncio.create_task(self._read(request_iterator, outbox))
        try:
            while (message := await outbox.get()) is not None:
                yield message
        finally:
            reader.cancel()

    async def _read(
        self,
        requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
        outbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | None],
    ) -> None:
        try:
            async for request in requests:
                self._on_request(request, outbox)
        except grpc.aio.AioRpcError:
            pass
        finally:
            outbox.put_nowait(None)

    def _on_request(
        self, request: discovery_pb2.DiscoveryRequest, outbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | None]
    ) -> None:
        nonce = request.response_nonce
        if nonce not in self.sent:  # a new subscription (or one from the agent's stream): answer it
            self._send(request.type_url, outbox)
            return
        waiter = self.pending.pop(nonce, None)
        if request.HasField("error_detail"):
            emit({"event": "nack", "type_url": request.type_url, "error": request.error_detail.message})
            if waiter is not None and not waiter.done():
                waiter.set_exception(RuntimeError(f"NACK: {request.error_detail.message}"))
            return
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if request.type_url == ROUTE_TYPE and not self.synced:
            self.synced = True
            emit({"event": "synced"})

    def _send(self, type_url: str, outbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | None]) -> str:
        nonce = next(self.nonces)
        self.sent[nonce] = type_url
        outbox.put_nowait(
            discovery_pb2.DiscoveryResponse(
                version_info=self.versions.get(type_url, "floor-0"),
                resources=self.resources.get(type_url, []),
                type_url=type_url,
                nonce=nonce,
            )
        )
        return nonce

    async def switch(self, version: str, n: int) -> None:
        """Push the route with all traffic on `version`; return at Envoy's ACK."""
        if self.outbox is None:
            raise RuntimeError("no Envoy stream")
        self.resources[ROUTE_TYPE] = [route_to(r, version) for r in self.resources[ROUTE_TYPE]]
        self.versions[ROUTE_TYPE] = f"floor-{n}"
        acked = asyncio.get_running_loop().create_future()
        self.pending[self._send(ROUTE_TYPE, self.outbox)] = acked
        await acked


class DrainAccessLogs(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Accept Envoy's access-log stream and drop every message (the agent would ingest them)."""

    async def StreamAccessLogs(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        async for _ in request_iterator:
            pass
        return als_service_pb2.StreamAccessLogsResponse()


async def serve(port: int, resources: dict[str, list[any_pb2.Any]]) -> None:
    ads = FloorAds(resources)
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(DrainAccessLogs(), server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"floor: cannot bind 127.0.0.1:{port}")
    await server.start()
    emit({"event": "listening", "port": port})
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    n = 0
    while line := await stdin.readline():
        command, _, version = line.decode().strip().partition(" ")
        if command != "switch" or not version:
            emit({"event": "error", "error": f"unknown command {line!r}"})
            continue
        decided = time.monotonic()
        n += 1
        await ads.switch(version, n)
        emit({"target": version, "decision_to_ack_ms": round((time.monotonic() - decided) * 1000.0, 3)})
    await server.stop(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="the xDS port Envoy dials (the agent's)")
    parser.add_argument("--dump", type=Path, required=True, help="JSON: config_dump sections, see DUMP_SECTIONS")
    args = parser.parse_args()
    resources = resources_from_dump(json.loads(args.dump.read_text()))
    missing = {CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE} - set(resources)
    if missing:  # serving an empty list of a wildcard type would remove what the Envoy serves
        raise SystemExit(f"floor: {args.dump} has no {sorted(missing)}")
    asyncio.run(serve(args.port, resources))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
