"""Is an observed traffic split consistent with the configured weights?

Envoy's `weighted_clusters` picks the cluster of each request independently at random with probability
p = weight / sum(weights). So with n requests the count for one version is Binomial(n, p), and the check is an
exact two-sided binomial test per version:

    p_value = min(1, 2 * min(P(X <= c), P(X >= c))),   X ~ Binomial(n, p)

and the split is accepted when every version's p_value >= alpha / k (Bonferroni over the k versions checked).

Why alpha = 1e-5 by default: a correct split then fails a test run at most once in 100,000 runs (the union
bound), so a red test means a real problem, not bad luck. The price is sensitivity: with k = 2 the per-version
threshold 5e-6 corresponds to |z| ~ 4.56, so the check notices a true share off by more than about
4.56 * sqrt(p (1 - p) / n): with n = 2,000 at 50/50 that is ~5.1 percentage points, with n = 20,000 ~1.6.
Size n for the deviation you need to detect. The exact tail (not the normal approximation) keeps this honest
for small n * p, and a weight of 0 (or 100 %) requires the count to be exactly 0 (or n).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["SplitCheck", "VersionSplit", "binomial_two_sided_p", "split_within_tolerance"]


def _log_pmf(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def _tail_ge(c: int, n: int, p: float) -> float:
    """P(X >= c) for X ~ Binomial(n, p), 0 < p < 1."""
    if c <= 0:
        return 1.0
    if c > n:
        return 0.0
    if c <= n * p:
        return max(0.0, 1.0 - _tail_le(c - 1, n, p))
    # c > n p >= mode - 1: terms are non-increasing from c upward, stop when negligible.
    total = 0.0
    for k in range(c, n + 1):
        term = math.exp(_log_pmf(k, n, p))
        total += term
        if term <= total * 1e-17:
            break
    return min(total, 1.0)


def _tail_le(c: int, n: int, p: float) -> float:
    """P(X <= c) for X ~ Binomial(n, p), 0 < p < 1."""
    if c < 0:
        return 0.0
    if c >= n:
        return 1.0
    if c >= n * p:
        return max(0.0, 1.0 - _tail_ge(c + 1, n, p))
    total = 0.0
    for k in range(c, -1, -1):
        term = math.exp(_log_pmf(k, n, p))
        total += term
        if term <= total * 1e-17:
            break
    return min(total, 1.0)


def binomial_two_sided_p(c: int, n: int, p: float) -> float:
    """Exact two-sided p-value of observing c successes in n trials with success probability p."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c} n={n}")
    if p <= 0.0:
        return 1.0 if c == 0 else 0.0
    if p >= 1.0:
        return 1.0 if c == n else 0.0
    return min(1.0, 2.0 * min(_tail_le(c, n, p), _tail_ge(c, n, p)))


@dataclass(frozen=True)
class VersionSplit:
    version: str | None
    observed: int
    expected_share: float
    expected: float
    z: float
    p_value: float
    ok: bool


@dataclass(frozen=True)
class SplitCheck:
    """Result of `split_within_tolerance`; truthy when the split is acceptable. `str()` is a readable
    table."""

    ok: bool
    n: int
    alpha: float
    versions: dict[str | None, VersionSplit] = field(default_factory=dict)
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = f"split {'OK' if self.ok else 'REJECTED'} (n={self.n}, alpha={self.alpha:g})"
        if self.reason:
            head += f": {self.reason}"
        rows = [
            f"  {v.version!s:>12}: observed {v.observed:>7} expected {v.expected:>10.1f} "
            f"({v.expected_share:6.1%}) z={v.z:+7.2f} p={v.p_value:.2e}{'' if v.ok else '  <-- out'}"
            for v in self.versions.values()
        ]
        return "\n".join([head, *rows])


def split_within_tolerance(
    counts: Mapping[str | None, int],
    expected_weights: Mapping[str, float],
    n: int | None = None,
    *,
    alpha: float = 1e-5,
) -> SplitCheck:
    """Check observed `counts` (version -> responses, e.g. `counts_by_version()`) against `expected_weights`
    (version -> weight, any scale). `n` is the number of trials (default: sum of counts); responses in n but
    in no count (e.g. failures left out of counts) and versions without a weight are treated as weight 0, so
    they must be absent. See the module docstring for the statistics and the choice of alpha."""
    total_counted = sum(counts.values())
    n = total_counted if n is None else n
    if n < total_counted:
        raise ValueError(f"n={n} is smaller than the sum of counts {total_counted}")
    weight_sum = float(sum(expected_weights.values()))
    if weight_sum <= 0 or any(w < 0 for w in expected_weights.values()):
        raise ValueError(f"weights must be >= 0 and sum to > 0: {dict(expected_weights)}")
    if n == 0:
        return SplitCheck(False, 0, alpha, reason="no responses")
    observed: dict[str | None, int] = {v: int(counts.get(v, 0)) for v in expected_weights}
    for v, c in counts.items():
        if v not in observed:
            observed[v] = int(c)
    if n > total_counted:
        observed["<uncounted>"] = n - total_counted
    threshold = alpha / len(observed)
    rows: dict[str | None, VersionSplit] = {}
    for version, c in observed.items():
        share = (expected_weights.get(version, 0.0) if version is not None else 0.0) / weight_sum
        expected = n * share
        var = n * share * (1.0 - share)
        if var > 0:
            z = (c - expected) / math.sqrt(var)
        else:
            z = 0.0 if c == expected else math.copysign(math.inf, c - expected)
        p_value = binomial_two_sided_p(c, n, share)
        rows[version] = VersionSplit(version, c, share, expected, z, p_value, p_value >= threshold)
    bad = [str(v) for v, r in rows.items() if not r.ok]
    reason = f"out of tolerance: {', '.join(bad)}" if bad else ""
    return SplitCheck(not bad, n, alpha, rows, reason)
