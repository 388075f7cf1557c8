"""Envoy resources for one model: a listener, one cluster per version, one weighted route.

Weights live in RDS (over ADS), never in an inline route_config: an RDS change does not drain connections, an LDS
change would. Clusters carry their endpoints inline, so they never wait for EDS to finish warming: STATIC for an IP
literal, STRICT_DNS for a host name (a Kubernetes Service), which Envoy resolves and re-resolves itself.

Versions of one model served by one server (MLServer, Triton) differ only in the path: `/v2/models/{name}/...` must
become `/v2/models/{name}/versions/{v}/...` for the version the weighted split picked. Envoy has no path rewrite per
weighted cluster, so the listener gets a Lua filter without code of its own, and each weighted cluster that needs a
rewrite carries its script as per-route Lua config (`typed_per_filter_config`): the split is picked when the filter
asks for its per-route config, and the router then uses that same cached pick. Weights stay in the one weighted
route, so an ACK of the route still says exactly what is served.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.common.tap.v3 import common_pb2 as tap_common_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.tap.v3 import tap_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from agent.domain.lease import LEASE_HEADER
from agent.domain.shadow import REQUEST_ID_HEADER, mirror_selection
from agent.domain.shadow import SHADOW_HEADER as SHADOW_HEADER

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

# Make-before-break: clusters before the listener that routes to them, the listener before its routes.
PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)

VERSION_HEADER = "x-served-by-version"


LUA_FILTER = "envoy.filters.http.lua"

# Rewrites /v2/models/{model}[/...] to /v2/models/{model}/versions/{version}[/...]; other paths, and paths that
# already name a version, pass unchanged. Plain sub/compare only: the model name is data, never a Lua pattern.
_OIP_VERSION_LUA = """
local prefix = "/v2/models/" .. %(model)s
local version = %(version)s
function envoy_on_request(handle)
  local path = handle:headers():get(":path")
  if path == nil or path:sub(1, #prefix) ~= prefix then
    return
  end
  local rest = path:sub(#prefix + 1)
  local after = rest:sub(1, 1)
  if rest ~= "" and after ~= "/" and after ~= "?" then
    return
  end
  if rest:sub(1, 10) == "/versions/" then
    return
  end
  handle:headers():replace(":path", prefix .. "/versions/" .. version .. rest)
end
"""


def _lua_string(value: str) -> str:
    """A Lua string literal of `value` with every byte escaped: no input can end the literal."""
    return '"' + "".join(f"\\{byte}" for byte in value.encode()) + '"'


@dataclass(frozen=True, slots=True)
class OipVersionPath:
    """Requests for `model` go to `/v2/models/{model}/versions/{version}/...` on this upstream."""

    model: str
    version: str


@dataclass(frozen=True, slots=True)
class VersionUpstream:
    version: str
    host: str  # an IP literal (STATIC cluster) or a DNS name (STRICT_DNS cluster)
    port: int
    oip_path: OipVersionPath | None = None  # None: the client's path is forwarded unchanged

    @property
    def by_name(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return True
        return False


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
class ShadowSettings:
    """Mirrored requests pass through a listener of their own (host:port) on their way to the candidate, so a tap
    filter there sees the candidate's answers; with `capture`, the live listener gets a tap filter for the answers
    users got. A tap costs nothing until the agent attaches to it through Envoy's admin API (/tap)."""

    port: int
    host: str = "127.0.0.1"
    capture: bool = True


@dataclass(frozen=True, slots=True)
class MirrorShare:
    """A share of live requests copied to `cluster` (fire and forget: its answers never reach a user)."""

    version: str
    cluster: str  # the version's cluster, or the shadow listener's cluster that captures its answers
    fraction: float  # 0 < fraction <= 1


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
    shadow: ShadowSettings | None = None  # None: mirror straight to the candidate's cluster, no capture

    @property
    def listener_name(self) -> str:
        return f"{self.model}-ingress"

    @property
    def route_name(self) -> str:
        return f"{self.model}-route"

    def cluster_name(self, version: str) -> str:
        return f"{self.model}__{version}"

    @property
    def rewrites_paths(self) -> bool:
        return any(u.oip_path is not None for u in self.upstreams)

    def upstream(self, version: str) -> VersionUpstream | None:
        return next((u for u in self.upstreams if u.version == version), None)


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
    by_name = upstream.by_name
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STRICT_DNS if by_name else cluster_pb2.Cluster.STATIC,
        # A Service name usually resolves to IPv4; `localhost` resolves to both and the server may listen on one.
        dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED if by_name else cluster_pb2.Cluster.AUTO,
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
        http_filters=[
            *([build_oip_version_filter()] if topology.rewrites_paths else []),
            *([build_tap_filter(shadow_tap_id(topology.model))] if topology.shadow and topology.shadow.capture else []),
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())),
        ],
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


TAP_FILTER = "envoy.filters.http.tap"


def shadow_tap_id(model: str) -> str:
    """The tap config id of both listeners: Envoy's admin serves one /tap stream at a time, so one id carries the
    answers users got and the candidate's (told apart by SHADOW_HEADER, which only the shadow route adds)."""
    return f"{model}-shadow"


def build_tap_filter(config_id: str) -> hcm_pb2.HttpFilter:
    """A tap the agent attaches to through the admin API (/tap with this config id); idle until then."""
    config = tap_pb2.Tap(
        common_config=tap_common_pb2.CommonExtensionConfig(admin_config=tap_common_pb2.AdminConfig(config_id=config_id))
    )
    return hcm_pb2.HttpFilter(name=TAP_FILTER, typed_config=_pack(config))


def build_oip_version_filter() -> hcm_pb2.HttpFilter:
    """The Lua filter; it runs only on weighted clusters that carry a rewrite script of their own."""
    config = lua_pb2.Lua(
        # The rewrite must not re-route: the split already picked this version's cluster.
        clear_route_cache=wrappers_pb2.BoolValue(value=False),
    )
    return hcm_pb2.HttpFilter(name=LUA_FILTER, typed_config=_pack(config))


def oip_version_script(oip_path: OipVersionPath) -> str:
    return _OIP_VERSION_LUA % {"model": _lua_string(oip_path.model), "version": _lua_string(oip_path.version)}


def _oip_version_rewrite(oip_path: OipVersionPath) -> any_pb2.Any:
    return _pack(lua_pb2.LuaPerRoute(source_code=base_pb2.DataSource(inline_string=oip_version_script(oip_path))))


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


def build_route(
    topology: ModelTopology,
    weights: Sequence[tuple[str, int]],
    leases: Sequence[tuple[str, str]] = (),
    mirror: MirrorShare | None = None,
) -> route_pb2.RouteConfiguration:
    """One catch-all route splitting by weight. Every version is listed, so weights are replaced, never appended.

    Each weighted cluster stamps the response with the version that served it (x-served-by-version), which is how
    clients, tests and forensic sampling see which version answered.

    Batch-job leases, (lease id, version), come first: a request whose `x-rollback-lease` header names a live lease
    goes to the lease's version whatever the weights are; one naming no live lease (expired, released, revoked,
    mistyped) gets 410 rather than silently landing on another version in the middle of a batch.
    """
    clusters = []
    for version, weight in weights:
        cluster = route_components_pb2.WeightedCluster.ClusterWeight(
            name=topology.cluster_name(version),
            weight=wrappers_pb2.UInt32Value(value=weight),
            response_headers_to_add=[
                _header(VERSION_HEADER, version),
            ],
        )
        upstream = topology.upstream(version)
        if upstream is not None and upstream.oip_path is not None:
            cluster.typed_per_filter_config[LUA_FILTER].CopyFrom(_oip_version_rewrite(upstream.oip_path))
        clusters.append(cluster)

    def split(mirrored: MirrorShare | None, **match: object) -> route_components_pb2.Route:
        return route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/", **match),
            route=route_components_pb2.RouteAction(
                weighted_clusters=route_components_pb2.WeightedCluster(clusters=clusters),
                timeout=_duration(topology.route_timeout_s),
                # Shadow: Envoy copies the request and discards the answer (mirror.py).
                request_mirror_policies=(
                    [route_components_pb2.RouteAction.RequestMirrorPolicy(cluster=mirrored.cluster)] if mirrored else []
                ),
            ),
        )

    routes = [split(None)]
    if mirror is not None and mirror.fraction > 0:
        # The requests to mirror are chosen by their x-request-id (domain/shadow.py), the same way the shadow tap
        # chooses which answers to capture: a route of their own that mirrors every request it matches, before the
        # catch-all that mirrors none.
        selection = mirror_selection(mirror.fraction)
        if selection is None:
            routes = [split(mirror)]
        else:
            selected = route_components_pb2.HeaderMatcher(
                name=REQUEST_ID_HEADER,
                string_match=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=selection)),
            )
            routes = [split(mirror, headers=[selected]), split(None)]
    return route_pb2.RouteConfiguration(
        name=topology.route_name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=topology.model,
                domains=["*"],
                routes=[*build_lease_routes(topology, leases), *routes],
            )
        ],
    )


def build_lease_routes(topology: ModelTopology, leases: Sequence[tuple[str, str]]) -> list[route_components_pb2.Route]:
    routes = []
    for lease_id, version in leases:
        route = route_components_pb2.Route(
            name=f"lease-{lease_id}",
            match=route_components_pb2.RouteMatch(prefix="/", headers=[_lease_header(exact=lease_id)]),
            route=route_components_pb2.RouteAction(
                cluster=topology.cluster_name(version), timeout=_duration(topology.route_timeout_s)
            ),
            response_headers_to_add=[_header(VERSION_HEADER, version)],
        )
        upstream = topology.upstream(version)
        if upstream is not None and upstream.oip_path is not None:
            route.typed_per_filter_config[LUA_FILTER].CopyFrom(_oip_version_rewrite(upstream.oip_path))
        routes.append(route)
    routes.append(
        route_components_pb2.Route(
            name="lease-unknown",
            match=route_components_pb2.RouteMatch(prefix="/", headers=[_lease_header(exact=None)]),
            direct_response=route_components_pb2.DirectResponseAction(
                status=410,
                body=base_pb2.DataSource(
                    inline_string=f"{LEASE_HEADER} names no live lease (expired, released, revoked or unknown); "
                    "rollback-agent lease list shows what happened to it\n"
                ),
            ),
        )
    )
    return routes


def _lease_header(*, exact: str | None) -> route_components_pb2.HeaderMatcher:
    if exact is None:
        return route_components_pb2.HeaderMatcher(name=LEASE_HEADER, present_match=True)
    return route_components_pb2.HeaderMatcher(name=LEASE_HEADER, string_match=string_pb2.StringMatcher(exact=exact))


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
            names.update(m.cluster for m in action.request_mirror_policies)
    return names


def per_cluster_filters(route: route_pb2.RouteConfiguration) -> set[str]:
    """HTTP filters the route's weighted clusters configure per cluster (they must be in the listener's chain)."""
    names: set[str] = set()
    for vhost in route.virtual_hosts:
        for r in vhost.routes:
            names.update(r.typed_per_filter_config)
            for c in r.route.weighted_clusters.clusters:
                names.update(c.typed_per_filter_config)
    return names


def http_filters(listener: listener_pb2.Listener) -> set[str]:
    names: set[str] = set()
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                manager = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(manager)
                names.update(h.name for h in manager.http_filters)
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
