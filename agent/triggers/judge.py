"""The statistical judge of a canary gate: is the candidate's sample worse than the stable version's?

A Mann-Whitney U (Wilcoxon rank-sum) test, as Kayenta's judge uses: rank-based, so it needs no assumption about the
shape of latencies, confidences or any other numeric signal, and a few extreme values cannot dominate it. The test
is one-sided in the direction that is worse for the signal (higher latency, lower confidence). Ties get average
ranks and the tie-corrected variance; the p-value is the normal approximation with a continuity correction (the same
as scipy.stats.mannwhitneyu(method="asymptotic", use_continuity=True), which the tests check it against). The
approximation is sound at the sample sizes a gate requires (Kayenta's default minimum is 50 points per side).

A gate fails only when the difference is both significant (p below 1 - confidence) and material: the candidate's
mean is worse than stable's by more than `tolerance` (relative) — with thousands of requests, a 1 % slower model is
"significantly" slower, and that is not what anyone means by a failed canary. The mean, not the median, measures the
size: for an error indicator (0/1) both medians are 0 while the means are the error rates. Too few points on either
side is `not enough data`, never a pass or a fail.

Memory: the judge sorts the two samples once (O(n log n) time, O(n) space); the samples are the bounded rings the
signal sources keep, not every request.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

TEST_NAME: Final = "Mann-Whitney U"


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_ENOUGH_DATA = "not_enough_data"


@dataclass(frozen=True, slots=True)
class RankTest:
    """U of the candidate sample, its normal approximation and the one-sided p-value (candidate worse)."""

    u: float
    z: float
    p_value: float


@dataclass(frozen=True, slots=True)
class Judgement:
    outcome: Outcome
    reason: str
    candidate_n: int
    stable_n: int
    test: RankTest | None = None
    candidate_median: float | None = None
    stable_median: float | None = None
    candidate_mean: float | None = None
    stable_mean: float | None = None

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS


def average_ranks(values: Sequence[float]) -> tuple[list[float], float]:
    """1-based ranks with ties sharing their average rank, and the tie term sum(t^3 - t) over tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[order[k]] = rank
        size = j - i + 1
        ties += size**3 - size
        i = j + 1
    return ranks, ties


def mann_whitney(candidate: Sequence[float], stable: Sequence[float], *, higher_is_worse: bool = True) -> RankTest:
    """One-sided test that `candidate` tends to be worse (greater when higher_is_worse, else smaller)."""
    n1, n2 = len(candidate), len(stable)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, ties = average_ranks([*candidate, *stable])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    mean = n1 * n2 / 2.0
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:  # every value equal: no evidence of a difference either way
        return RankTest(u1, 0.0, 1.0)
    # The statistic in the worse direction, continuity-corrected toward the mean.
    excess = (u1 - mean) if higher_is_worse else (mean - u1)
    z = (excess - 0.5) / math.sqrt(variance)
    return RankTest(u1, z, 0.5 * math.erfc(z / math.sqrt(2.0)))


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def judge(
    candidate: Sequence[float],
    stable: Sequence[float],
    *,
    confidence: float = 0.98,
    min_points: int = 50,
    tolerance: float = 0.0,
    min_shift: float = 0.0,
    higher_is_worse: bool = True,
    signal: str = "value",
) -> Judgement:
    """pass / fail / not enough data for `candidate` against `stable`, with the statistic in the reason.

    `tolerance`: how much worse (relative to stable's mean; absolute when that mean is 0) the candidate's mean may
    be before a significant difference fails the gate. `min_shift`: the least worsening of the mean, in the signal's
    unit, that is material whatever the tolerance allows."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    n1, n2 = len(candidate), len(stable)
    if n1 < min_points or n2 < min_points:
        return Judgement(
            Outcome.NOT_ENOUGH_DATA,
            f"not enough data: {signal} has {n1:,} candidate and {n2:,} stable points, {min_points:,} needed on each "
            "side",
            n1,
            n2,
        )
    test = mann_whitney(candidate, stable, higher_is_worse=higher_is_worse)
    c_median, s_median = median(candidate), median(stable)
    c_mean, s_mean = math.fsum(candidate) / n1, math.fsum(stable) / n2
    shift = (c_mean - s_mean) if higher_is_worse else (s_mean - c_mean)
    allowed = max(tolerance * abs(s_mean) if s_mean != 0 else tolerance, min_shift)
    significant = test.p_value < 1.0 - confidence
    material = shift > allowed
    failed = significant and material
    worse = "higher" if higher_is_worse else "lower"
    reason = (
        f"{TEST_NAME}: {signal} candidate median {c_median:.6g} / mean {c_mean:.6g} vs stable {s_median:.6g} / "
        f"{s_mean:.6g} "
        f"({n1:,} vs {n2:,} points); U {test.u:.6g}, z {test.z:.3f}, one-sided p {test.p_value:.3g} "
        f"{'<' if significant else '>='} {1.0 - confidence:.3g} (confidence {confidence:.3g}) that the candidate is "
        f"{worse}"
    )
    if significant and not material:
        reason += f"; the difference {shift:.6g} is within the allowed {allowed:.6g} (tolerance {tolerance:.3g}"
        reason += f", min_shift {min_shift:.6g})" if min_shift else ")"
    return Judgement(
        Outcome.FAIL if failed else Outcome.PASS,
        reason,
        n1,
        n2,
        test,
        candidate_median=c_median,
        stable_median=s_median,
    )
