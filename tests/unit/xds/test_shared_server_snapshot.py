"""The snapshot for versions sharing one server (a path rewrite per weighted cluster) and endpoints by DNS name."""

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from agent.adapters.xds.resources import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    LUA_FILTER,
    ROUTE_TYPE,
    ModelTopology,
    OipVersionPath,
    VersionUpstream,
    build_cluster,
    build_listener,
    build_route,
    oip_version_script,
)
from agent.adapters.xds.snapshot import InconsistentSnapshotError, assemble_snapshot, build_snapshot

SHARED = ModelTopology(
    model="iris",
    upstreams=(
        VersionUpstream("v1", "127.0.0.1", 8080, OipVersionPath("iris", "1")),
        VersionUpstream("v2", "127.0.0.1", 8080, OipVersionPath("iris", "2")),
        VersionUpstream("v3", "iris-v3.models.svc.cluster.local", 8080),
    ),
    listener_host="127.0.0.1",
    listener_port=10000,
)


def unpacked(snapshot, type_url, message_type):
    out = {}
    for name, packed in snapshot.types[type_url].resources.items():
        message = message_type()
        packed.Unpack(message)
        out[name] = message
    return out


def listener_filters(listener):
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return [f.name for f in manager.http_filters]


def test_each_versioned_cluster_carries_its_own_rewrite_and_the_weights_stay_in_one_split():
    snap = build_snapshot(SHARED, (("v1", 50), ("v2", 50), ("v3", 0)))
    route = next(iter(unpacked(snap, ROUTE_TYPE, route_pb2.RouteConfiguration).values()))
    clusters = route.virtual_hosts[0].routes[-1].route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in clusters] == [("iris__v1", 50), ("iris__v2", 50), ("iris__v3", 0)]
    scripts = {}
    for c in clusters:
        if LUA_FILTER in c.typed_per_filter_config:
            per_route = lua_pb2.LuaPerRoute()
            c.typed_per_filter_config[LUA_FILTER].Unpack(per_route)
            scripts[c.name] = per_route.source_code.inline_string
    assert scripts == {
        "iris__v1": oip_version_script(OipVersionPath("iris", "1")),
        "iris__v2": oip_version_script(OipVersionPath("iris", "2")),
    }
    listener = unpacked(snap, LISTENER_TYPE, listener_pb2.Listener)["iris-ingress"]
    assert listener_filters(listener) == [LUA_FILTER, "envoy.filters.http.router"]


def test_without_versioned_paths_the_listener_has_no_lua_filter():
    plain = ModelTopology("m", (VersionUpstream("v1", "127.0.0.1", 1),), "127.0.0.1", 2)
    listener = unpacked(build_snapshot(plain, (("v1", 1),)), LISTENER_TYPE, listener_pb2.Listener)["m-ingress"]
    assert listener_filters(listener) == ["envoy.filters.http.router"]


def test_a_weight_change_changes_only_the_route():
    a = build_snapshot(SHARED, (("v1", 50), ("v2", 50), ("v3", 0)))
    b = build_snapshot(SHARED, (("v1", 100), ("v2", 0), ("v3", 0)))
    assert a.route_version != b.route_version
    assert (a.version(CLUSTER_TYPE), a.version(LISTENER_TYPE)) == (b.version(CLUSTER_TYPE), b.version(LISTENER_TYPE))


def test_ip_literals_are_static_and_names_strict_dns_preferring_ipv4():
    clusters = unpacked(build_snapshot(SHARED, (("v1", 1),)), CLUSTER_TYPE, cluster_pb2.Cluster)
    kinds = {n: (c.type, c.dns_lookup_family) for n, c in clusters.items()}
    assert kinds["iris__v1"][0] == cluster_pb2.Cluster.STATIC
    assert kinds["iris__v3"] == (cluster_pb2.Cluster.STRICT_DNS, cluster_pb2.Cluster.V4_PREFERRED)
    address = clusters["iris__v3"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("iris-v3.models.svc.cluster.local", 8080)
    ipv6 = build_cluster(SHARED, VersionUpstream("v4", "::1", 8080))
    assert ipv6.type == cluster_pb2.Cluster.STATIC


def test_a_route_whose_rewrite_the_listener_cannot_run_is_refused():
    without_lua = build_listener(ModelTopology("iris", (VersionUpstream("v1", "127.0.0.1", 1),), "127.0.0.1", 10000))
    with pytest.raises(InconsistentSnapshotError, match=r"\['envoy.filters.http.lua'\] per cluster.*iris-ingress"):
        assemble_snapshot(
            listeners=[without_lua],
            clusters=[build_cluster(SHARED, u) for u in SHARED.upstreams],
            routes=[build_route(SHARED, (("v1", 50), ("v2", 50)))],
        )


@pytest.mark.parametrize("model", ['iris"..os.exit().."', "iris\nend", "iris\\", "ïris"])
def test_the_script_holds_names_only_as_escaped_data(model):
    script = oip_version_script(OipVersionPath(model, "2"))
    literal = script.split("\n")[1].removeprefix('local prefix = "/v2/models/" .. ')
    assert literal.startswith('"\\') and literal.endswith('"')
    assert set(literal[1:-1]) <= set("\\0123456789")  # only decimal escapes: nothing can end the literal
    decoded = bytes(int(code) for code in literal[2:-1].split("\\"))
    assert decoded.decode() == model
