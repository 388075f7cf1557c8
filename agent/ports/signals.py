"""Signal source: one seam, `sample()`: the current cumulative measurements of each version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from agent.domain.signals import Sample


class SignalSourceError(Exception):
    """The source could not be read at all this tick (its versions get no sample; that is not a breach)."""


class SignalSource(Protocol):
    name: str  # "envoy", "model", "health": the metrics label

    async def sample(self, now: float) -> Mapping[str, Sample]:
        """version -> a (partial) sample stamped `now`; versions it could not read are left out."""
        ...
