"""A dry-run route sink: decisions are made, recorded and reported, but no traffic moves."""

from __future__ import annotations

import hashlib
import logging
import time

from agent.ports.route_sink import Confirmation, RouteApplied

log = logging.getLogger(__name__)


class NopRouteSink:
    def __init__(self) -> None:
        self._weights: tuple[tuple[str, int], ...] | None = None

    async def apply(self, weights: tuple[tuple[str, int], ...], timeout_s: float) -> RouteApplied:
        changed = weights != self._weights
        self._weights = weights
        version = hashlib.sha256(repr(weights).encode()).hexdigest()[:16]
        log.warning("dry run: would route %s (route version %s)", dict(weights), version)
        return RouteApplied(version, (Confirmation("dry-run", time.time()),), changed)

    def served(self) -> tuple[tuple[str, int], ...] | None:
        return self._weights

    def ready(self) -> bool:
        return True
