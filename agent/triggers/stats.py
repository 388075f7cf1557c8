"""Small pure statistics used by the rule kinds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache


def normalized(weights: Sequence[float], epsilon: float) -> list[float]:
    """Weights -> probabilities with every bin at least epsilon (then renormalized), so logs stay finite."""
    total = sum(weights)
    if total <= 0:
        return [1.0 / len(weights)] * len(weights)
    floored = [max(w / total, epsilon) for w in weights]
    floored_total = sum(floored)
    return [p / floored_total for p in floored]


@lru_cache(maxsize=1024)
def reference_distribution(weights: tuple[float, ...], epsilon: float) -> tuple[float, ...]:
    """`normalized`, cached: registry and inline references are the same every tick."""
    return tuple(normalized(weights, epsilon))


def kl_divergence(
    reference: Sequence[float], current: Sequence[float], *, epsilon: float, laplace: bool = False
) -> float:
    """KL(reference || current) in nats over the same bins.

    `reference` may be fractions or counts; `current` are counts. Empty bins are floored at epsilon (as
    Evidently does with 1e-4); with `laplace`, one pseudo-observation is first added to every current bin.
    """
    return kl_from_distribution(normalized(reference, epsilon), current, epsilon=epsilon, laplace=laplace)


def kl_from_distribution(
    p: Sequence[float], current: Sequence[float], *, epsilon: float, laplace: bool = False
) -> float:
    """KL(p || current) where p is already a smoothed distribution (see `reference_distribution`)."""
    if len(p) != len(current):
        raise ValueError(f"reference has {len(p)} bins, current {len(current)}")
    if laplace:
        current = [c + 1.0 for c in current]
    total = sum(current)
    if total <= 0:
        q = [1.0 / len(current)] * len(current)
    else:
        q = [c / total for c in current]
        if min(q) < epsilon:
            q = normalized(current, epsilon)
    log = math.log
    return sum([pi * log(pi / qi) for pi, qi in zip(p, q, strict=True)])


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
