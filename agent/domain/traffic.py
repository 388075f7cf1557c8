"""The traffic policy: how the model's traffic is split between its versions. Pure data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class PolicyError(ValueError):
    """A requested policy is not valid for this model; nothing was changed."""


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    # (version, weight) in the order of the configured versions; every configured version appears once.
    weights: tuple[tuple[str, int], ...]
    revision: int = 0
    reason: str = ""
    actor: str = ""
    changed_at: float = 0.0  # unix seconds
    _by_version: Mapping[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_version", dict(self.weights))

    def weight(self, version: str) -> int:
        return self._by_version.get(version, 0)

    def as_dict(self) -> dict[str, int]:
        return dict(self.weights)

    @property
    def total(self) -> int:
        return sum(w for _, w in self.weights)

    def serving(self) -> list[str]:
        """The versions that receive any traffic."""
        return [v for v, w in self.weights if w > 0]

    def same_split(self, other: TrafficPolicy | None) -> bool:
        return other is not None and self.weights == other.weights


def normalize_weights(requested: Mapping[str, int], versions: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """Validate requested weights against the model's versions; versions not named get 0.

    Raises PolicyError naming what is wrong (an unknown version, a negative weight, a zero sum).
    """
    known = list(versions)
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise PolicyError(f"unknown version(s) {', '.join(unknown)}; this model has {', '.join(known)}")
    for version, weight in requested.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0 or weight > 1_000_000:
            raise PolicyError(f"weight of {version} must be a whole number from 0 to 1000000, got {weight!r}")
    result = tuple((v, int(requested.get(v, 0))) for v in known)
    if sum(w for _, w in result) <= 0:
        raise PolicyError("the weights must sum to more than 0: at least one version must receive traffic")
    return result


def refuse_unsafe_start(policy: TrafficPolicy, statuses: Mapping[str, str], source: str) -> None:
    """A new state store never starts by routing to a version the registry says was rolled back or is quarantined.
    Raises PolicyError naming them."""
    bad = [f"{v} ({statuses[v]})" for v in policy.serving() if statuses.get(v) in ("failed", "quarantined")]
    if bad:
        raise PolicyError(
            f"{source} route traffic to {', '.join(bad)}: the registry marks it rolled back or under investigation; "
            f"change the starting weights"
        )
