"""The state of one ADS stream, per resource type: what was sent, what Envoy ACKed or rejected, what it wants.

Pure: it takes requests as plain values and a snapshot, and says which responses are due. No gRPC, no clock of
its own (times are passed in), so every protocol rule is unit-tested with request sequences.

Rules (from Envoy's xDS protocol documentation, "xDS REST and gRPC protocol"):
- a request with an empty or unknown nonce opens (or re-opens, after a reconnect) a subscription: answer it with the
  current state;
- a request whose nonce is not the last one sent on that type is stale: ignore it entirely;
- error_detail set on the current nonce is a NACK: remember the rejected version and never send it again;
- the current nonce without error is an ACK: record it; answer only if the requested names changed;
- responses go out only when something changed, clusters before listeners before routes, and a route only once
  the stream has ACKed every cluster it sends traffic to (make-before-break); a cluster set that drops a cluster
  still used by the stream's current route waits until the new route is ACKed (break after make).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.adapters.xds.resources import CLUSTER_TYPE, PUSH_ORDER, ROUTE_TYPE
from agent.adapters.xds.snapshot import Snapshot


class RequestKind(enum.Enum):
    SUBSCRIBE = "subscribe"  # empty/unknown nonce: new stream, reconnect, or a new type on this stream
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"
    RESUBSCRIBE = "resubscribe"  # current nonce, but the requested names changed


@dataclass(frozen=True, slots=True)
class Request:
    type_url: str
    version_info: str = ""
    nonce: str = ""
    resource_names: tuple[str, ...] = ()
    error: str = ""  # error_detail.message when Envoy rejected the response
    node_id: str = ""
    node_cluster: str = ""


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    kind: RequestKind
    type_url: str
    version: str = ""  # the ACKed version, or the rejected one for a NACK
    serving_version: str = ""  # for a NACK: the version Envoy keeps
    error: str = ""
    sent_at: float = 0.0  # when the response this request answers was sent


@dataclass(frozen=True, slots=True)
class Response:
    type_url: str
    version: str
    nonce: str
    names: frozenset[str]


@dataclass(slots=True)
class TypeState:
    subscribed: bool = False
    names: frozenset[str] = frozenset()  # empty = wildcard
    send_requested: bool = False  # a (re)subscription that must be answered even with an unchanged version
    sent_version: str = ""
    sent_nonce: str = ""
    sent_names: frozenset[str] = frozenset()
    sent_at: float = 0.0
    acked_version: str = ""
    acked_names: frozenset[str] = frozenset()
    acked_at: float = 0.0
    rejected_version: str = ""
    nacks: int = 0
    last_error: str = ""


@dataclass(slots=True)
class StreamState:
    stream_id: str
    node_id: str = ""
    node_cluster: str = ""
    opened_at: float = 0.0
    types: dict[str, TypeState] = field(default_factory=dict)
    _nonce_counter: int = 0
    # Route name -> clusters it uses, for the route version this stream last ACKed.
    _acked_route_clusters: frozenset[str] = frozenset()
    _sent_route_clusters: frozenset[str] = frozenset()

    def state(self, type_url: str) -> TypeState:
        found = self.types.get(type_url)
        if found is None:
            found = self.types[type_url] = TypeState()
        return found

    def handle(self, request: Request, now: float) -> RequestOutcome:
        if request.node_id and not self.node_id:
            self.node_id, self.node_cluster = request.node_id, request.node_cluster
        ts = self.state(request.type_url)
        names = frozenset(request.resource_names)
        if not request.nonce or not ts.sent_nonce:
            ts.subscribed, ts.names, ts.send_requested = True, names, True
            return RequestOutcome(RequestKind.SUBSCRIBE, request.type_url, version=request.version_info)
        if request.nonce != ts.sent_nonce:
            return RequestOutcome(RequestKind.STALE, request.type_url, version=request.version_info)
        if request.error:
            ts.rejected_version = ts.sent_version
            ts.nacks += 1
            ts.last_error = request.error
            ts.names = names
            return RequestOutcome(
                RequestKind.NACK,
                request.type_url,
                version=ts.sent_version,
                serving_version=request.version_info,
                error=request.error,
                sent_at=ts.sent_at,
            )
        ts.acked_version, ts.acked_names, ts.acked_at = ts.sent_version, ts.sent_names, now
        if request.type_url == ROUTE_TYPE:
            self._acked_route_clusters = self._sent_route_clusters
        if names != ts.names:
            ts.names, ts.send_requested = names, True
            return RequestOutcome(RequestKind.RESUBSCRIBE, request.type_url, version=ts.acked_version)
        return RequestOutcome(RequestKind.ACK, request.type_url, version=ts.acked_version, sent_at=ts.sent_at)

    def due(self, snapshot: Snapshot | None, now: float) -> list[Response]:
        """The responses to send now, in make-before-break order; marks them sent."""
        if snapshot is None:
            return []
        out: list[Response] = []
        for type_url in PUSH_ORDER:
            ts = self.types.get(type_url)
            if ts is None or not ts.subscribed:
                continue
            version = snapshot.version(type_url)
            if not ts.send_requested and self._already_there(ts, version):
                continue
            if type_url == ROUTE_TYPE and not self._route_clusters_ready(snapshot, ts):
                continue
            if type_url == CLUSTER_TYPE and not self._cluster_removal_safe(snapshot):
                continue
            self._nonce_counter += 1
            typed = snapshot.types.get(type_url)
            names = frozenset(typed.resources) if typed else frozenset()
            if ts.names:
                names = names & ts.names
            ts.sent_version, ts.sent_nonce, ts.sent_names, ts.sent_at = version, str(self._nonce_counter), names, now
            ts.send_requested = False
            if type_url == ROUTE_TYPE:
                self._sent_route_clusters = self._clusters_of(snapshot, names)
            out.append(Response(type_url, version, ts.sent_nonce, names))
        return out

    @staticmethod
    def _already_there(ts: TypeState, version: str) -> bool:
        """Sent already, rejected already, or reverted to what Envoy kept after rejecting the last one."""
        if version in (ts.sent_version, ts.rejected_version):
            return True
        return ts.sent_version == ts.rejected_version and version == ts.acked_version

    def in_sync(self, snapshot: Snapshot | None) -> bool:
        """True when this stream ACKed the snapshot's version of every type it subscribed to."""
        if snapshot is None or not self.types:
            return False
        subscribed = [(t, s) for t, s in self.types.items() if s.subscribed]
        if not any(t == ROUTE_TYPE for t, _ in subscribed):
            return False
        return all(s.acked_version == snapshot.version(t) for t, s in subscribed)

    def rejected(self, snapshot: Snapshot) -> list[tuple[str, TypeState]]:
        """Types whose current snapshot version this stream rejected."""
        return [
            (t, s) for t, s in self.types.items() if s.rejected_version and s.rejected_version == snapshot.version(t)
        ]

    @staticmethod
    def _clusters_of(snapshot: Snapshot, route_names: frozenset[str]) -> frozenset[str]:
        used: set[str] = set()
        for name in route_names:
            used |= snapshot.route_clusters.get(name, frozenset())
        return frozenset(used)

    def _route_clusters_ready(self, snapshot: Snapshot, routes: TypeState) -> bool:
        clusters = self.types.get(CLUSTER_TYPE)
        if clusters is None or not clusters.subscribed:
            return True  # this Envoy takes clusters from elsewhere; nothing to order against
        names = frozenset(snapshot.types[ROUTE_TYPE].resources) if ROUTE_TYPE in snapshot.types else frozenset()
        if routes.names:
            names &= routes.names
        return self._clusters_of(snapshot, names) <= clusters.acked_names

    def _cluster_removal_safe(self, snapshot: Snapshot) -> bool:
        still_used = self._acked_route_clusters | self._sent_route_clusters
        if still_used <= snapshot.cluster_names:
            return True
        routes = self.types.get(ROUTE_TYPE)
        # Until the stream moves to a route that no longer uses the cluster, keep it.
        return routes is None or not routes.subscribed
