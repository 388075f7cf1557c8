"""Shadow traffic: the live route mirrors a share of requests to the candidate, whose answers never reach a user.

Envoy's request mirror policy (RouteAction.request_mirror_policies) sends a copy of the request, with the same
x-request-id, and discards the answer; the user's request does not wait for it. Which requests are copied is decided
by the x-request-id's leading hex digits (agent/domain/shadow.py mirror_selection, in steps of 1/4096): a route
that matches them mirrors, the catch-all after it does not, and the shadow tap selects the same requests.

With shadow settings, the copy goes to a listener of its own (`{model}-shadow`, on 127.0.0.1) whose route forwards
it to the candidate's cluster: a tap filter there sees the candidate's answer, as the live listener's tap sees the
answer the user got, and the agent joins the two by x-request-id (agent/adapters/signals/shadow_tap.py). Without
shadow settings, the copy goes straight to the candidate's cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from agent.adapters.xds.resources import (
    SHADOW_HEADER,
    VERSION_HEADER,
    MirrorShare,
    ModelTopology,
    ShadowSettings,
    VersionUpstream,
    _duration,
    _header,
    _pack,
    build_cluster,
    build_tap_filter,
    shadow_tap_id,
)


class MirrorError(ValueError):
    """A mirror share the route cannot carry; the message names why."""


@dataclass(frozen=True, slots=True)
class Mirror:
    """What the route mirrors: a share of live requests copied to `version`."""

    version: str
    fraction: float


def shadow_cluster_name(model: str) -> str:
    # Not `{model}__...`: that prefix belongs to version clusters, and a version may be called "shadow".
    return f"shadow.{model}"


def shadow_listener_name(model: str) -> str:
    return f"{model}-shadow"


def shadow_route_name(model: str) -> str:
    return f"{model}-shadow-route"


def check_mirror(topology: ModelTopology, mirror: Mirror) -> None:
    """Raises MirrorError when the route cannot mirror this share."""
    if not 0.0 <= mirror.fraction <= 1.0:
        raise MirrorError(f"mirror fraction must be within [0, 1], got {mirror.fraction!r}")
    upstream = topology.upstream(mirror.version)
    if upstream is None:
        known = ", ".join(u.version for u in topology.upstreams)
        raise MirrorError(f"mirror names version {mirror.version!r} that has no upstream; this model has {known}")
    if upstream.oip_path is not None:
        # The live route rewrote the path for the version it picked; the copy would reach that version, not this one.
        raise MirrorError(
            f"version {mirror.version!r} is told apart from others on its server by path only; mirroring needs a "
            "server (or port) of its own"
        )


def mirror_share(topology: ModelTopology, mirror: Mirror | None) -> MirrorShare | None:
    if mirror is None or mirror.fraction <= 0:
        return None
    cluster = (
        shadow_cluster_name(topology.model) if topology.shadow is not None else topology.cluster_name(mirror.version)
    )
    return MirrorShare(version=mirror.version, cluster=cluster, fraction=mirror.fraction)


def build_shadow_listener(topology: ModelTopology, shadow: ShadowSettings) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"{topology.model}_shadow",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        # The copy carries the live request's id: it is the join key.
        preserve_external_request_id=True,
        rds=hcm_pb2.Rds(
            route_config_name=shadow_route_name(topology.model),
            config_source=config_source_pb2.ConfigSource(
                ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
            ),
        ),
        http_filters=[
            *([build_tap_filter(shadow_tap_id(topology.model))] if shadow.capture else []),
            hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())),
        ],
    )
    return listener_pb2.Listener(
        name=shadow_listener_name(topology.model),
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=shadow.host, port_value=shadow.port)
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


def build_shadow_cluster(topology: ModelTopology, shadow: ShadowSettings) -> cluster_pb2.Cluster:
    cluster = build_cluster(topology, VersionUpstream(version="shadow", host=shadow.host, port=shadow.port))
    cluster.name = shadow_cluster_name(topology.model)
    cluster.load_assignment.cluster_name = cluster.name
    return cluster


def build_shadow_route(topology: ModelTopology, mirror: Mirror | None) -> route_pb2.RouteConfiguration:
    """The shadow listener's route: to the mirrored version's cluster, or 503 while nothing is mirrored."""
    if mirror is None or mirror.fraction <= 0:
        route = route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            direct_response=route_components_pb2.DirectResponseAction(
                status=503, body=base_pb2.DataSource(inline_string="no version is mirrored\n")
            ),
        )
    else:
        route = route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(
                cluster=topology.cluster_name(mirror.version), timeout=_duration(topology.route_timeout_s)
            ),
            # The tap tells the candidate's answers from the users' by this header.
            response_headers_to_add=[_header(VERSION_HEADER, mirror.version), _header(SHADOW_HEADER, mirror.version)],
        )
    return route_pb2.RouteConfiguration(
        name=shadow_route_name(topology.model),
        virtual_hosts=[
            route_components_pb2.VirtualHost(name=f"{topology.model}-shadow", domains=["*"], routes=[route])
        ],
    )
