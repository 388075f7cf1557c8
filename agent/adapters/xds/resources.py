"""Envoy resources for one model: a listener, one STATIC cluster per version, one weighted route.

Weights live in RDS (over ADS), never in an inline route_config: an RDS change does not drain connections, an LDS
change would. Clusters carry their endpoints inline (STATIC), so they never wait for EDS to finish warming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

# Make-before-break: clusters before the listener that routes to them, the listener before its routes.
PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)

VERSION_HEADER = "x-served-by-version"


@dataclass(frozen=True, slots=True)
class VersionUpstream:
    version: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class AccessLogSettings:
    """Stream every finished request to the agent (envoy.access_loggers.http_grpc) over `cluster`.

    Envoy sends a batch when `flush_interval_ms` has passed or `buffer_size_bytes` are buffered, whichever is first:
    small values mean the agent hears of a failed request sooner, at the cost of more, smaller gRPC messages.
    """

    cluster: str  # the bootstrap's static cluster of the agent's gRPC server
    flush_interval_ms: int = 50
    buffer_size_bytes: int = 4096
    request_headers: tuple[str, ...] = ("x-request-id",)
    response_headers: tuple[str, ...] = ()  # e.g. a header carrying the model's confidence
    log_name: str = "rollback-agent"


@dataclass(frozen=True, slots=True)
class ModelTopology:
    """What the agent routes: a model, its versions' upstreams, and where Envoy listens for model traffic."""

    model: str
    upstreams: tuple[VersionUpstream, ...]
    listener_host: str
    listener_port: int
    route_timeout_s: float = 15.0
    connect_timeout_s: float = 1.0
    access_log: AccessLogSettings | None = None

    @property
    def listener_name(self) -> str:
        return f"{self.model}-ingress"

    @property
    def route_name(self) -> str:
        return f"{self.model}-route"

    def cluster_name(self, version: str) -> str:
        return f"{self.model}__{version}"


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def build_cluster(topology: ModelTopology, upstream: VersionUpstream) -> cluster_pb2.Cluster:
    name = topology.cluster_name(upstream.version)
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_duration(topology.connect_timeout_s),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=address_pb2.Address(
                                    socket_address=address_pb2.SocketAddress(
                                        address=upstream.host, port_value=upstream.port
                                    )
                                )
                            )
                        )
                    ]
                )
            ],
        ),
    )


def build_listener(topology: ModelTopology) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=topology.model,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(
            route_config_name=topology.route_name,
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(),
                resource_api_version=config_source_pb2.V3,
            ),
        ),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router()))],
    )
    if topology.access_log is not None:
        manager.access_log.append(build_access_log(topology.access_log))
    return listener_pb2.Listener(
        name=topology.listener_name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=topology.listener_host, port_value=topology.listener_port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=_pack(manager)
                    )
                ]
            )
        ],
    )


def build_access_log(settings: AccessLogSettings) -> accesslog_pb2.AccessLog:
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=settings.log_name,
            grpc_service=grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=settings.cluster)
            ),
            transport_api_version=config_source_pb2.V3,
            buffer_flush_interval=_duration(settings.flush_interval_ms / 1000),
            buffer_size_bytes=wrappers_pb2.UInt32Value(value=settings.buffer_size_bytes),
        ),
        additional_request_headers_to_log=list(settings.request_headers),
        additional_response_headers_to_log=list(settings.response_headers),
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.http_grpc", typed_config=_pack(config))


def build_route(topology: ModelTopology, weights: Sequence[tuple[str, int]]) -> route_pb2.RouteConfiguration:
    """One catch-all route splitting by weight. Every version is listed, so weights are replaced, never appended.

    Each weighted cluster stamps the response with the version that served it (x-served-by-version), which is how
    clients, tests and forensic sampling see which version answered.
    """
    clusters = [
        route_components_pb2.WeightedCluster.ClusterWeight(
            name=topology.cluster_name(version),
            weight=wrappers_pb2.UInt32Value(value=weight),
            response_headers_to_add=[
                _header(VERSION_HEADER, version),
            ],
        )
        for version, weight in weights
    ]
    return route_pb2.RouteConfiguration(
        name=topology.route_name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=topology.model,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(
                            weighted_clusters=route_components_pb2.WeightedCluster(clusters=clusters),
                            timeout=_duration(topology.route_timeout_s),
                        ),
                    )
                ],
            )
        ],
    )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def referenced_clusters(route: route_pb2.RouteConfiguration) -> set[str]:
    names: set[str] = set()
    for vhost in route.virtual_hosts:
        for r in vhost.routes:
            action = r.route
            if action.cluster:
                names.add(action.cluster)
            names.update(c.name for c in action.weighted_clusters.clusters)
    return names


def referenced_route_configs(listener: listener_pb2.Listener) -> set[str]:
    names: set[str] = set()
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                manager = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(manager)
                if manager.HasField("rds"):
                    names.add(manager.rds.route_config_name)
    return names
