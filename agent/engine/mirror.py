"""Shadow traffic control: the share of live requests Envoy mirrors to a candidate (its answers reach no user).

The rollout driver's MirrorControl seam (agent/engine/rollout.py). A change goes the way a weight change does: one
at a time with weight changes (TrafficController.exclusive), guards (no more mirroring to a failed, quarantined or
held version unless forced), published in a consistency-checked snapshot beside the split being served, returned
once every connected Envoy ACKed it, and recorded (MirrorChanged) with its outcome. The mirror is not persisted on
its own: the rollout's saved stage says what to mirror, and the driver re-applies it at start.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.engine.traffic import TrafficChangeError, TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.route_sink import RouteApplied, RouteRejectedError, RouteTimeoutError
from agent.ports.store import StateStore, StoreUnavailableError

log = logging.getLogger(__name__)


class MirrorSink(Protocol):
    async def apply_mirror(self, version: str, fraction: float, timeout_s: float) -> RouteApplied:
        """Mirror `fraction` of live requests to `version` (0: none); return once every data plane confirmed it."""
        ...


@dataclass(frozen=True, slots=True)
class MirrorState:
    version: str
    fraction: float  # 0: nothing mirrored


class MirrorController:
    def __init__(
        self,
        *,
        traffic: TrafficController,
        sink: MirrorSink,
        store: StateStore,
        ack_timeout_s: float,
        perf_clock: Callable[[], float] = time.perf_counter,
        on_mirrored: Callable[[float], None] | None = None,
    ) -> None:
        self._traffic = traffic
        # Told the share the route now mirrors (the shadow capture selects the same requests).
        self._on_mirrored = on_mirrored
        self._sink = sink
        self._store = store
        self._ack_timeout_s = ack_timeout_s
        self._perf = perf_clock
        self.state = MirrorState(version="", fraction=0.0)

    async def set_mirror(self, version: str, fraction: float, *, reason: str, actor: str, force: bool = False) -> None:
        """Mirror `fraction` (0..1) of live requests to `version`; 0 stops mirroring. Raises TrafficChangeError."""
        started = self._perf()
        if version not in self._traffic.versions:
            raise TrafficChangeError(
                "invalid_argument", f"unknown version {version!r}; this model has {', '.join(self._traffic.versions)}"
            )
        if not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
            raise TrafficChangeError("invalid_argument", f"mirror fraction must be within [0, 1], got {fraction!r}")
        async with self._traffic.exclusive():
            previous = self.state
            before = previous.fraction if previous.version == version else 0.0
            overridden = [f"{version}: {why}" for why in self._traffic.guards(version)] if fraction > before else []
            if overridden and not force:
                raise TrafficChangeError(
                    "refused",
                    "refused: no mirroring to " + "; ".join(overridden) + " (an operator can override with force, "
                    "which is recorded)",
                )
            event = audit_pb2.MirrorChanged(
                version=version,
                from_fraction=before,
                to_fraction=fraction,
                reason=reason,
                forced=bool(overridden),
                overridden=overridden,
            )
            try:
                applied = await self._sink.apply_mirror(version, fraction, self._ack_timeout_s)
            except RouteRejectedError as exc:
                await self._record(event, "rejected", started, actor, detail=str(exc))
                raise TrafficChangeError("rejected", f"{exc}; still mirroring {_describe(previous)}") from None
            except RouteTimeoutError as exc:
                self.state = MirrorState(version, fraction)
                self._told(fraction)
                await self._record(event, "timeout", started, actor, detail=str(exc))
                raise TrafficChangeError("ack_timeout", str(exc)) from None
            self.state = MirrorState(version, fraction) if fraction > 0 else MirrorState("", 0.0)
            self._told(fraction)
            event.route_version = applied.route_version
            outcome = "acked" if applied.changed else "unchanged"
            if outcome == "unchanged" and before == fraction:
                return  # e.g. every weighted stage says "mirror nothing": no record of a non-change
            if not await self._record(event, outcome, started, actor):
                raise TrafficChangeError(
                    "unavailable",
                    f"now mirroring {_describe(self.state)} (ACKed) but the change could not be recorded",
                )
            log.info("mirror %s -> %s %s (%s: %s)", _describe(previous), _describe(self.state), outcome, actor, reason)

    def _told(self, fraction: float) -> None:
        if self._on_mirrored is not None:
            self._on_mirrored(fraction)

    async def _record(
        self, event: audit_pb2.MirrorChanged, outcome: str, started: float, actor: str, detail: str = ""
    ) -> bool:
        event.outcome = outcome
        event.detail = detail
        event.decision_to_ack_ms = (self._perf() - started) * 1000.0
        try:
            await self._store.append(event, actor)
        except StoreUnavailableError as exc:
            log.error("mirror change not recorded: %s", exc)
            return False
        return True


def _describe(state: MirrorState) -> str:
    return f"{state.fraction:.1%} to {state.version}" if state.fraction > 0 else "nothing"
