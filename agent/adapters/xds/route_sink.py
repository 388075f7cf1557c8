"""The xDS route sink: a traffic split becomes a snapshot, confirmed when every connected Envoy ACKed it."""

from __future__ import annotations

import logging

from agent.adapters.xds.cache import AckTimeoutError, ConfigRejectedError, SnapshotCache, SupersededError
from agent.adapters.xds.mirror import Mirror
from agent.adapters.xds.resources import ModelTopology
from agent.adapters.xds.snapshot import InconsistentSnapshotError, Snapshot, build_snapshot
from agent.ports.route_sink import Confirmation, RouteApplied, RouteRejectedError, RouteTimeoutError

log = logging.getLogger(__name__)


class XdsRouteSink:
    def __init__(self, cache: SnapshotCache, topology: ModelTopology) -> None:
        self._cache = cache
        self._topology = topology
        self._served: Snapshot | None = None
        # Live batch-job leases (lease id, version): every snapshot carries them, whatever the split.
        self.leases: tuple[tuple[str, str], ...] = ()
        # The share of live requests mirrored to a version (shadow): every snapshot carries it, whatever the split.
        self.mirror: Mirror | None = None
        cache.listeners.append(self._track_served)

    def publish_initial(self, weights: tuple[tuple[str, int], ...]) -> Snapshot:
        """Publish the split to serve at start-up, before any Envoy connects."""
        snapshot = build_snapshot(self._topology, weights, self.leases, self.mirror)
        self._cache.set_snapshot(snapshot)
        return snapshot

    async def apply_leases(self, leases: tuple[tuple[str, str], ...], timeout_s: float) -> RouteApplied:
        """Publish the lease routes beside the split being served; returns once every connected Envoy ACKed them.
        The caller serializes this with weight changes (TrafficController.exclusive)."""
        current = self._cache.snapshot
        self.leases = leases
        if current is None:
            return RouteApplied(route_version="", confirmations=(), changed=False)
        try:
            return await self.apply(current.weights, timeout_s)
        except RouteRejectedError:
            self.leases = current.leases
            raise

    async def apply_mirror(self, version: str, fraction: float, timeout_s: float) -> RouteApplied:
        """Mirror `fraction` of live requests to `version` (0: none) beside the split being served; returns once every
        connected Envoy ACKed it. The caller serializes this with weight changes (TrafficController.exclusive)."""
        current = self._cache.snapshot
        previous, self.mirror = self.mirror, Mirror(version, fraction) if fraction > 0 else None
        if current is None:
            return RouteApplied(route_version="", confirmations=(), changed=False)
        try:
            return await self.apply(current.weights, timeout_s)
        except RouteRejectedError:
            self.mirror = previous
            raise

    async def apply(self, weights: tuple[tuple[str, int], ...], timeout_s: float) -> RouteApplied:
        try:
            snapshot = build_snapshot(self._topology, weights, self.leases, self.mirror)
        except InconsistentSnapshotError as exc:
            raise RouteRejectedError(f"inconsistent route: {exc}") from None
        previous = self._cache.snapshot
        changed = previous is None or previous.route_version != snapshot.route_version or not self._cache.in_sync()
        if previous is not None and previous.route_version == snapshot.route_version:
            snapshot = previous  # same content: keep the published object so waiters and streams see no change
        else:
            self._cache.set_snapshot(snapshot)
        try:
            acks = await self._cache.wait_in_sync(snapshot, timeout_s)
        except ConfigRejectedError as exc:
            if previous is not None and self._cache.snapshot is snapshot:
                # Envoy keeps its last good config; make every stream (and reconnects) agree with it again.
                self._cache.set_snapshot(previous)
            raise RouteRejectedError(str(exc)) from None
        except SupersededError as exc:
            raise RouteRejectedError(str(exc)) from None
        except AckTimeoutError as exc:
            raise RouteTimeoutError(str(exc)) from None
        return RouteApplied(
            route_version=snapshot.route_version,
            confirmations=tuple(Confirmation(a.node_id, a.acked_at) for a in acks),
            changed=changed,
        )

    def served(self) -> tuple[tuple[str, int], ...] | None:
        return self._served.weights if self._served is not None else None

    def ready(self) -> bool:
        return self._cache.in_sync()

    def _track_served(self) -> None:
        if self._cache.snapshot is not None and self._cache.in_sync():
            self._served = self._cache.snapshot
