"""A versioned, consistency-checked set of xDS resources: what every connected Envoy should hold.

Built apart from the gRPC servicer (as go-control-plane does): the servicer only ever sees finished snapshots.
Versions are content hashes of a deterministic serialization, so equal content always gives an equal version and
a change of any resource of a type changes that type's version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from agent.adapters.xds.mirror import (
    Mirror,
    MirrorError,
    build_shadow_cluster,
    build_shadow_listener,
    build_shadow_route,
    check_mirror,
    mirror_share,
)
from agent.adapters.xds.resources import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ModelTopology,
    build_cluster,
    build_listener,
    build_route,
    http_filters,
    per_cluster_filters,
    referenced_clusters,
    referenced_route_configs,
)


class InconsistentSnapshotError(ValueError):
    """The snapshot references a resource it does not contain; it is never published."""


@dataclass(frozen=True, slots=True)
class TypedResources:
    version: str
    resources: Mapping[str, any_pb2.Any]  # name -> packed resource, sorted by name

    def select(self, names: frozenset[str]) -> list[any_pb2.Any]:
        return [r for n, r in self.resources.items() if n in names]


@dataclass(frozen=True, slots=True)
class Snapshot:
    types: Mapping[str, TypedResources]
    # The weights the route carries, kept beside the resources so an ACK of the route version says what is served.
    weights: tuple[tuple[str, int], ...] = ()
    # Clusters each route config sends traffic to, for make-before-break ordering per stream.
    route_clusters: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # The live batch-job leases the route carries: (lease id, version).
    leases: tuple[tuple[str, str], ...] = ()
    # The share of live requests the route mirrors to a version (shadow), or None.
    mirror: Mirror | None = None

    def version(self, type_url: str) -> str:
        typed = self.types.get(type_url)
        return typed.version if typed else ""

    @property
    def route_version(self) -> str:
        return self.version(ROUTE_TYPE)

    @property
    def cluster_names(self) -> frozenset[str]:
        typed = self.types.get(CLUSTER_TYPE)
        return frozenset(typed.resources) if typed else frozenset()


def _typed(messages: Sequence[Message]) -> TypedResources:
    ordered = sorted(messages, key=lambda m: str(getattr(m, "name", "")))
    digest = hashlib.sha256()
    packed: dict[str, any_pb2.Any] = {}
    for message in ordered:
        name = str(getattr(message, "name", ""))
        blob = message.SerializeToString(deterministic=True)
        digest.update(len(name).to_bytes(4, "big") + name.encode() + len(blob).to_bytes(4, "big") + blob)
        item = any_pb2.Any()
        item.Pack(message, deterministic=True)
        packed[name] = item
    return TypedResources(version=digest.hexdigest()[:16], resources=packed)


def assemble_snapshot(
    *,
    listeners: Sequence[listener_pb2.Listener],
    clusters: Sequence[Message],
    routes: Sequence[route_pb2.RouteConfiguration],
    weights: tuple[tuple[str, int], ...] = (),
    leases: tuple[tuple[str, str], ...] = (),
    mirror: Mirror | None = None,
) -> Snapshot:
    """Check consistency and version the resources. Raises InconsistentSnapshotError naming what is missing."""
    cluster_names = {str(getattr(c, "name", "")) for c in clusters}
    route_names = {r.name for r in routes}
    route_clusters: dict[str, frozenset[str]] = {}
    for route in routes:
        targets = referenced_clusters(route)
        missing = sorted(targets - cluster_names)
        if missing:
            raise InconsistentSnapshotError(
                f"route {route.name!r} references cluster(s) {missing} that the snapshot does not contain"
            )
        route_clusters[route.name] = frozenset(targets)
    routes_by_name = {r.name: r for r in routes}
    for listener in listeners:
        referenced = referenced_route_configs(listener)
        missing = sorted(referenced - route_names)
        if missing:
            raise InconsistentSnapshotError(
                f"listener {listener.name!r} references route config(s) {missing} that the snapshot does not contain"
            )
        # A per-cluster config for a filter the listener lacks would be ignored: e.g. no path rewrite per version.
        chain = http_filters(listener)
        for name in sorted(referenced):
            absent = sorted(per_cluster_filters(routes_by_name[name]) - chain)
            if absent:
                raise InconsistentSnapshotError(
                    f"route {name!r} configures filter(s) {absent} per cluster that listener {listener.name!r} lacks"
                )
    return Snapshot(
        types={
            CLUSTER_TYPE: _typed(clusters),
            LISTENER_TYPE: _typed(listeners),
            ROUTE_TYPE: _typed(routes),
        },
        weights=weights,
        route_clusters=route_clusters,
        leases=leases,
        mirror=mirror,
    )


def build_snapshot(
    topology: ModelTopology,
    weights: tuple[tuple[str, int], ...],
    leases: tuple[tuple[str, str], ...] = (),
    mirror: Mirror | None = None,
) -> Snapshot:
    """The snapshot for a model's topology and a traffic split (and the live batch-job leases: lease id, version;
    and the share mirrored to a version, see mirror.py); all must name only known versions."""
    known = {u.version for u in topology.upstreams}
    unknown = sorted({v for v, _ in weights} - known)
    if unknown:
        raise InconsistentSnapshotError(f"weights name version(s) {unknown} that have no upstream")
    unknown = sorted({v for _, v in leases} - known)
    if unknown:
        raise InconsistentSnapshotError(f"leases name version(s) {unknown} that have no upstream")
    if sum(w for _, w in weights) <= 0:
        raise InconsistentSnapshotError("the route's weights must sum to more than 0")
    if mirror is not None:
        try:
            check_mirror(topology, mirror)
        except MirrorError as exc:
            raise InconsistentSnapshotError(str(exc)) from None
    listeners = [build_listener(topology)]
    clusters = [build_cluster(topology, u) for u in topology.upstreams]
    routes = [build_route(topology, weights, leases, mirror_share(topology, mirror))]
    if topology.shadow is not None:
        listeners.append(build_shadow_listener(topology, topology.shadow))
        clusters.append(build_shadow_cluster(topology, topology.shadow))
        routes.append(build_shadow_route(topology, mirror))
    return assemble_snapshot(
        listeners=listeners,
        clusters=clusters,
        routes=routes,
        weights=weights,
        leases=leases,
        mirror=mirror if mirror is not None and mirror.fraction > 0 else None,
    )
