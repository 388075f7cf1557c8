"""Lease routes in the snapshot: each live lease's header match comes before the weighted split and sends its
requests to the leased version's cluster whatever the weights are; a lease header naming no live lease gets 410;
every snapshot stays consistent (every routed cluster present, per-route filters in the listener)."""

import pytest
from envoy.config.route.v3 import route_pb2

from agent.adapters.xds.resources import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    LUA_FILTER,
    ROUTE_TYPE,
    ModelTopology,
    OipVersionPath,
    VersionUpstream,
)
from agent.adapters.xds.snapshot import InconsistentSnapshotError, build_snapshot
from tests.unit.xds.helpers import TOPOLOGY

LEASE = "l-00112233aabbccdd"


def route_of(snapshot) -> route_pb2.RouteConfiguration:
    route = route_pb2.RouteConfiguration()
    next(iter(snapshot.types[ROUTE_TYPE].resources.values())).Unpack(route)
    return route


def test_a_lease_route_sends_its_header_to_the_leased_version_before_the_split():
    snap = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)), ((LEASE, "v2"),))
    routes = route_of(snap).virtual_hosts[0].routes
    assert [r.name for r in routes] == [f"lease-{LEASE}", "lease-unknown", ""]
    lease = routes[0]
    assert lease.route.cluster == "credit__v2", "the lease holds whatever the weights are (v2 has weight 0 here)"
    [header] = lease.match.headers
    assert (header.name, header.string_match.exact) == ("x-rollback-lease", LEASE)
    assert [(h.header.key, h.header.value) for h in lease.response_headers_to_add] == [("x-served-by-version", "v2")]
    unknown = routes[1]
    assert unknown.match.headers[0].present_match and unknown.direct_response.status == 410
    assert [(c.name, c.weight.value) for c in routes[-1].route.weighted_clusters.clusters] == [
        ("credit__v1", 100),
        ("credit__v2", 0),
    ]
    assert snap.route_clusters == {"credit-route": frozenset({"credit__v1", "credit__v2"})}
    assert snap.leases == ((LEASE, "v2"),)


def test_a_lease_changes_only_the_route_and_a_rollback_keeps_it():
    before = build_snapshot(TOPOLOGY, (("v1", 0), ("v2", 100)))
    leased = build_snapshot(TOPOLOGY, (("v1", 0), ("v2", 100)), ((LEASE, "v2"),))
    rolled_back = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)), ((LEASE, "v2"),))
    assert leased.route_version != before.route_version
    for typ in (CLUSTER_TYPE, LISTENER_TYPE):
        assert before.version(typ) == leased.version(typ) == rolled_back.version(typ), "no cluster or listener churn"
    assert route_of(rolled_back).virtual_hosts[0].routes[0].route.cluster == "credit__v2"


def test_a_lease_on_an_unknown_version_is_an_inconsistent_snapshot():
    with pytest.raises(InconsistentSnapshotError, match=r"leases name version\(s\) \['v9'\]"):
        build_snapshot(TOPOLOGY, (("v1", 100),), ((LEASE, "v9"),))


def test_a_lease_on_a_shared_server_version_rewrites_its_path_and_the_listener_has_the_filter():
    shared = ModelTopology(
        model="iris",
        upstreams=(
            VersionUpstream("v1", "127.0.0.1", 8080, OipVersionPath("iris", "v1")),
            VersionUpstream("v2", "127.0.0.1", 8080, OipVersionPath("iris", "v2")),
        ),
        listener_host="127.0.0.1",
        listener_port=10000,
    )
    snap = build_snapshot(shared, (("v1", 100), ("v2", 0)), ((LEASE, "v2"),))
    lease = route_of(snap).virtual_hosts[0].routes[0]
    assert LUA_FILTER in lease.typed_per_filter_config
    script = lease.typed_per_filter_config[LUA_FILTER].value
    assert b"\\118\\50" in script, "the script names the leased version (v2), byte-escaped"
