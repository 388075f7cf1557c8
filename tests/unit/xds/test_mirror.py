"""The live route with a mirror share: Envoy copies a share of requests to the candidate; snapshots stay consistent."""

import dataclasses

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from agent.adapters.xds.mirror import Mirror, shadow_cluster_name
from agent.adapters.xds.resources import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    TAP_FILTER,
    MirrorShare,
    OipVersionPath,
    ShadowSettings,
    VersionUpstream,
    build_cluster,
    build_listener,
    build_route,
)
from agent.adapters.xds.snapshot import InconsistentSnapshotError, assemble_snapshot, build_snapshot
from agent.domain.shadow import mirror_selection
from tests.unit.xds.helpers import TOPOLOGY

SHADOWED = dataclasses.replace(TOPOLOGY, shadow=ShadowSettings(port=10001))


def routes(snapshot) -> dict[str, route_pb2.RouteConfiguration]:
    out = {}
    for name, packed in snapshot.types[ROUTE_TYPE].resources.items():
        route = route_pb2.RouteConfiguration()
        packed.Unpack(route)
        out[name] = route
    return out


def live_action(snapshot):
    """The action of the live route that mirrors, or of the catch-all when nothing is mirrored."""
    candidates = routes(snapshot)["credit-route"].virtual_hosts[0].routes
    mirroring = [r.route for r in candidates if r.route.request_mirror_policies]
    return mirroring[0] if mirroring else candidates[-1].route


def listener_filters(snapshot, name) -> list[str]:
    listener = listener_pb2.Listener()
    snapshot.types[LISTENER_TYPE].resources[name].Unpack(listener)
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return [f.name for f in manager.http_filters]


def test_mirror_share_is_a_route_of_selected_request_ids_that_mirrors_while_stable_answers():
    snap = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)), mirror=Mirror("v2", 0.25))
    selected, rest = routes(snap)["credit-route"].virtual_hosts[0].routes[-2:]
    [header] = selected.match.headers
    assert header.name == "x-request-id" and header.string_match.safe_regex.regex == mirror_selection(0.25)
    [policy] = selected.route.request_mirror_policies
    assert policy.cluster == "credit__v2" and not policy.HasField("runtime_fraction")  # every request it matches
    assert not rest.match.headers and not rest.route.request_mirror_policies  # the catch-all mirrors nothing
    # Users are still answered by the split alone, whichever route their request takes.
    for action in (selected.route, rest.route):
        assert [(c.name, c.weight.value) for c in action.weighted_clusters.clusters] == [
            ("credit__v1", 100),
            ("credit__v2", 0),
        ]
    assert snap.mirror == Mirror("v2", 0.25)
    everything = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)), mirror=Mirror("v2", 1.0))
    plain = routes(build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0))))["credit-route"].virtual_hosts[0].routes
    whole = routes(everything)["credit-route"].virtual_hosts[0].routes
    assert len(whole) == len(plain)  # one catch-all that mirrors every request
    assert not whole[-1].match.headers and [p.cluster for p in whole[-1].route.request_mirror_policies] == [
        "credit__v2"
    ]


def test_no_mirror_or_a_zero_share_leaves_the_route_as_before():
    plain = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)))
    zero = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)), mirror=Mirror("v2", 0.0))
    assert not live_action(plain).request_mirror_policies
    assert zero.route_version == plain.route_version
    assert zero.mirror is None


def test_changing_the_share_changes_only_the_route():
    a = build_snapshot(SHADOWED, (("v1", 100), ("v2", 0)), mirror=Mirror("v2", 0.1))
    b = build_snapshot(SHADOWED, (("v1", 100), ("v2", 0)), mirror=Mirror("v2", 0.5))
    off = build_snapshot(SHADOWED, (("v1", 100), ("v2", 0)))
    assert a.route_version != b.route_version != off.route_version
    # No listener drain, no cluster re-warm when a stage mirrors more, less or nothing.
    assert a.version(LISTENER_TYPE) == b.version(LISTENER_TYPE) == off.version(LISTENER_TYPE)
    assert a.version(CLUSTER_TYPE) == b.version(CLUSTER_TYPE) == off.version(CLUSTER_TYPE)


def test_with_shadow_settings_the_copy_passes_the_shadow_listener_to_the_candidate():
    snap = build_snapshot(SHADOWED, (("v1", 100), ("v2", 0)), mirror=Mirror("v2", 0.5))
    [policy] = live_action(snap).request_mirror_policies
    assert policy.cluster == shadow_cluster_name("credit")
    assert set(snap.types[LISTENER_TYPE].resources) == {"credit-ingress", "credit-shadow"}
    shadow_route = routes(snap)["credit-shadow-route"].virtual_hosts[0].routes[0]
    assert shadow_route.route.cluster == "credit__v2"
    assert snap.route_clusters["credit-route"] == {"credit__v1", "credit__v2", "shadow.credit"}
    # Both listeners carry a tap the agent attaches to (idle until then).
    assert TAP_FILTER in listener_filters(snap, "credit-ingress")
    assert TAP_FILTER in listener_filters(snap, "credit-shadow")


def test_shadow_listener_answers_503_while_nothing_is_mirrored():
    snap = build_snapshot(SHADOWED, (("v1", 100), ("v2", 0)))
    shadow_route = routes(snap)["credit-shadow-route"].virtual_hosts[0].routes[0]
    assert shadow_route.direct_response.status == 503


def test_without_capture_no_tap_filter_is_configured():
    topology = dataclasses.replace(TOPOLOGY, shadow=ShadowSettings(port=10001, capture=False))
    snap = build_snapshot(topology, (("v1", 100), ("v2", 0)), mirror=Mirror("v2", 0.5))
    assert TAP_FILTER not in listener_filters(snap, "credit-ingress")
    assert TAP_FILTER not in listener_filters(snap, "credit-shadow")
    assert TAP_FILTER not in listener_filters(build_snapshot(TOPOLOGY, (("v1", 100),)), "credit-ingress")


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        (Mirror("v9", 0.5), "v9"),
        (Mirror("v2", 1.5), r"\[0, 1\]"),
        (Mirror("v2", -0.1), r"\[0, 1\]"),
    ],
)
def test_a_mirror_the_route_cannot_carry_is_refused(mirror, message):
    with pytest.raises(InconsistentSnapshotError, match=message):
        build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)), mirror=mirror)


def test_mirroring_to_a_version_told_apart_by_path_only_is_refused():
    shared = dataclasses.replace(
        TOPOLOGY,
        upstreams=(
            VersionUpstream("v1", "127.0.0.1", 8001, OipVersionPath("credit", "1")),
            VersionUpstream("v2", "127.0.0.1", 8001, OipVersionPath("credit", "2")),
        ),
    )
    with pytest.raises(InconsistentSnapshotError, match="by path only"):
        build_snapshot(shared, (("v1", 100), ("v2", 0)), mirror=Mirror("v2", 0.5))


def test_a_route_mirroring_to_a_missing_cluster_is_refused():
    route = build_route(TOPOLOGY, (("v1", 100),), mirror=MirrorShare("v2", "credit__v2", 0.5))
    with pytest.raises(InconsistentSnapshotError, match="credit__v2"):
        assemble_snapshot(
            listeners=[build_listener(TOPOLOGY)],
            clusters=[build_cluster(TOPOLOGY, TOPOLOGY.upstreams[0])],
            routes=[route],
        )
