import pytest
from envoy.config.route.v3 import route_pb2

from agent.adapters.xds.resources import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, build_cluster, build_listener
from agent.adapters.xds.snapshot import InconsistentSnapshotError, assemble_snapshot, build_snapshot
from tests.unit.xds.helpers import TOPOLOGY


def route_weights(snapshot):
    route = route_pb2.RouteConfiguration()
    next(iter(snapshot.types[ROUTE_TYPE].resources.values())).Unpack(route)
    clusters = route.virtual_hosts[0].routes[-1].route.weighted_clusters.clusters
    return [(c.name, c.weight.value) for c in clusters]


def test_snapshot_has_listener_cluster_per_version_and_weighted_route():
    snap = build_snapshot(TOPOLOGY, (("v1", 90), ("v2", 10)))
    assert set(snap.types[CLUSTER_TYPE].resources) == {"credit__v1", "credit__v2"}
    assert set(snap.types[LISTENER_TYPE].resources) == {"credit-ingress"}
    assert route_weights(snap) == [("credit__v1", 90), ("credit__v2", 10)]
    assert snap.route_clusters == {"credit-route": frozenset({"credit__v1", "credit__v2"})}


def test_versions_are_deterministic_and_change_only_with_content():
    a = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)))
    b = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)))
    c = build_snapshot(TOPOLOGY, (("v1", 0), ("v2", 100)))
    assert {t: a.version(t) for t in a.types} == {t: b.version(t) for t in b.types}
    assert a.route_version != c.route_version
    # Only the route changed: clusters and listener keep their versions (no drain, no cluster re-warm).
    assert a.version(CLUSTER_TYPE) == c.version(CLUSTER_TYPE)
    assert a.version(LISTENER_TYPE) == c.version(LISTENER_TYPE)


def test_weights_are_replaced_not_appended():
    snap = build_snapshot(TOPOLOGY, (("v1", 0), ("v2", 100)))
    assert len(route_weights(snap)) == 2


@pytest.mark.parametrize(
    ("weights", "message"),
    [((("v1", 50), ("v9", 50)), "v9"), ((("v1", 0), ("v2", 0)), "more than 0")],
)
def test_inconsistent_or_empty_weights_are_refused(weights, message):
    with pytest.raises(InconsistentSnapshotError, match=message):
        build_snapshot(TOPOLOGY, weights)


def test_route_referencing_a_missing_cluster_is_refused():
    from agent.adapters.xds.resources import build_route

    with pytest.raises(InconsistentSnapshotError, match="credit__v2"):
        assemble_snapshot(
            listeners=[build_listener(TOPOLOGY)],
            clusters=[build_cluster(TOPOLOGY, TOPOLOGY.upstreams[0])],
            routes=[build_route(TOPOLOGY, (("v1", 50), ("v2", 50)))],
        )


def test_listener_referencing_a_missing_route_config_is_refused():
    with pytest.raises(InconsistentSnapshotError, match="credit-route"):
        assemble_snapshot(
            listeners=[build_listener(TOPOLOGY)],
            clusters=[build_cluster(TOPOLOGY, u) for u in TOPOLOGY.upstreams],
            routes=[],
        )
