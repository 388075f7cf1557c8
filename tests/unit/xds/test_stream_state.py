"""The per-stream protocol state machine, driven with request sequences as Envoy sends them."""

from agent.adapters.xds.resources import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, ModelTopology, VersionUpstream
from agent.adapters.xds.snapshot import build_snapshot
from agent.adapters.xds.stream_state import Request, RequestKind, StreamState
from tests.unit.xds.helpers import TOPOLOGY

A = build_snapshot(TOPOLOGY, (("v1", 100), ("v2", 0)))
B = build_snapshot(TOPOLOGY, (("v1", 0), ("v2", 100)))


def connect(stream: StreamState, snapshot):
    """Envoy's start-up sequence: CDS and LDS wildcard, ACK them, then RDS for the listener's route."""
    stream.handle(Request(CLUSTER_TYPE, node_id="envoy-1"), 0)
    stream.handle(Request(LISTENER_TYPE), 0)
    sent = stream.due(snapshot, 0)
    assert [r.type_url for r in sent] == [CLUSTER_TYPE, LISTENER_TYPE]
    for r in sent:
        assert stream.handle(Request(r.type_url, r.version, r.nonce), 1).kind is RequestKind.ACK
    assert stream.due(snapshot, 1) == []
    stream.handle(Request(ROUTE_TYPE, resource_names=("credit-route",)), 1)
    (route,) = stream.due(snapshot, 1)
    assert route.names == {"credit-route"}
    stream.handle(Request(ROUTE_TYPE, route.version, route.nonce, ("credit-route",)), 2)
    assert stream.in_sync(snapshot)
    return route


def test_initial_sync_and_node_from_first_request():
    s = StreamState("s1")
    connect(s, A)
    assert s.node_id == "envoy-1"
    assert s.state(ROUTE_TYPE).acked_version == A.route_version


def test_ack_needs_no_reply_and_a_change_sends_only_the_changed_type():
    s = StreamState("s1")
    connect(s, A)
    sent = s.due(B, 3)
    assert [r.type_url for r in sent] == [ROUTE_TYPE]
    assert not s.in_sync(B)
    s.handle(Request(ROUTE_TYPE, sent[0].version, sent[0].nonce, ("credit-route",)), 4)
    assert s.in_sync(B) and s.due(B, 5) == []


def test_nack_keeps_last_good_and_never_resends_the_rejected_content():
    s = StreamState("s1")
    connect(s, A)
    (r,) = s.due(B, 3)
    out = s.handle(Request(ROUTE_TYPE, A.route_version, r.nonce, ("credit-route",), error="bad route"), 4)
    assert out.kind is RequestKind.NACK
    assert (out.version, out.serving_version, out.error) == (B.route_version, A.route_version, "bad route")
    assert s.state(ROUTE_TYPE).acked_version == A.route_version
    assert s.due(B, 5) == []  # the same content is never sent again
    assert s.due(A, 5) == []  # reverting to what Envoy kept sends nothing either
    assert s.rejected(B) and not s.rejected(A)


def test_new_content_after_a_nack_is_sent():
    s = StreamState("s1")
    connect(s, A)
    (r,) = s.due(B, 3)
    s.handle(Request(ROUTE_TYPE, A.route_version, r.nonce, ("credit-route",), error="bad"), 4)
    c = build_snapshot(TOPOLOGY, (("v1", 50), ("v2", 50)))
    assert [x.version for x in s.due(c, 5)] == [c.route_version]


def test_stale_nonce_is_ignored():
    s = StreamState("s1")
    connect(s, A)
    (first,) = s.due(B, 3)
    c = build_snapshot(TOPOLOGY, (("v1", 50), ("v2", 50)))
    (second,) = s.due(c, 3)
    out = s.handle(Request(ROUTE_TYPE, B.route_version, first.nonce, ("credit-route",)), 4)
    assert out.kind is RequestKind.STALE
    assert s.state(ROUTE_TYPE).acked_version == A.route_version
    # even a stale NACK changes nothing
    out = s.handle(Request(ROUTE_TYPE, A.route_version, first.nonce, ("credit-route",), error="x"), 4)
    assert out.kind is RequestKind.STALE and s.state(ROUTE_TYPE).nacks == 0
    s.handle(Request(ROUTE_TYPE, c.route_version, second.nonce, ("credit-route",)), 5)
    assert s.in_sync(c)


def test_reconnect_gets_current_state_even_if_envoy_claims_it():
    s = StreamState("s2")
    s.handle(Request(CLUSTER_TYPE, version_info=A.version(CLUSTER_TYPE), node_id="envoy-1"), 0)
    s.handle(Request(LISTENER_TYPE, version_info=A.version(LISTENER_TYPE)), 0)
    assert [r.type_url for r in s.due(A, 0)] == [CLUSTER_TYPE, LISTENER_TYPE]


def test_route_requested_names_subset_and_resubscribe():
    s = StreamState("s1")
    connect(s, A)
    r = s.state(ROUTE_TYPE)
    out = s.handle(Request(ROUTE_TYPE, r.acked_version, r.sent_nonce, ("credit-route", "other")), 3)
    assert out.kind is RequestKind.RESUBSCRIBE
    (resp,) = s.due(A, 3)
    assert resp.names == {"credit-route"}  # only what exists; "other" is remembered


def test_route_waits_for_new_clusters_to_be_acked():
    s = StreamState("s1")
    connect(s, A)
    three = ModelTopology(
        model="credit",
        upstreams=(*TOPOLOGY.upstreams, VersionUpstream("v3", "127.0.0.1", 8003)),
        listener_host="127.0.0.1",
        listener_port=10000,
    )
    c = build_snapshot(three, (("v1", 50), ("v2", 0), ("v3", 50)))
    sent = s.due(c, 3)
    assert [r.type_url for r in sent] == [CLUSTER_TYPE]  # make before break: the route waits
    s.handle(Request(CLUSTER_TYPE, sent[0].version, sent[0].nonce), 4)
    assert [r.type_url for r in s.due(c, 4)] == [ROUTE_TYPE]


def test_cluster_removal_waits_until_the_route_stops_using_it():
    three = ModelTopology(
        model="credit",
        upstreams=(*TOPOLOGY.upstreams, VersionUpstream("v3", "127.0.0.1", 8003)),
        listener_host="127.0.0.1",
        listener_port=10000,
    )
    big = build_snapshot(three, (("v1", 50), ("v2", 0), ("v3", 50)))
    s = StreamState("s1")
    connect(s, big)
    sent = s.due(A, 3)
    assert [r.type_url for r in sent] == [ROUTE_TYPE]  # break after make: clusters stay until the route moved
    s.handle(Request(ROUTE_TYPE, sent[0].version, sent[0].nonce, ("credit-route",)), 4)
    assert [r.type_url for r in s.due(A, 4)] == [CLUSTER_TYPE]
