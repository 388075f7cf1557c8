"""Route sink: where a traffic split goes to be served. One seam: apply a split and learn it is served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RouteRejectedError(Exception):
    """The data plane refused the split; it keeps serving the previous one."""


class RouteTimeoutError(Exception):
    """The split was published but not confirmed in time; it stays published and is served on (re)connect."""


@dataclass(frozen=True, slots=True)
class Confirmation:
    node: str
    at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class RouteApplied:
    route_version: str
    confirmations: tuple[Confirmation, ...]
    changed: bool  # False when the split was already being served


class RouteSink(Protocol):
    async def apply(self, weights: tuple[tuple[str, int], ...], timeout_s: float) -> RouteApplied:
        """Publish the split and return once every connected data plane confirmed it."""
        ...

    def served(self) -> tuple[tuple[str, int], ...] | None:
        """The split every connected data plane confirmed last, or None."""
        ...

    def ready(self) -> bool:
        """A data plane is connected and serves the current split."""
        ...
