"""The sequential test behind the `*_sequential` kinds: Page's CUSUM of the binomial SPRT log-likelihood ratio.

Each request is a Bernoulli trial (failed or not; slower than the SLA or not). H0: the rate is at most `p0` (the
rule's threshold); H1: it is `p1` = effect x p0. Over a stretch of n requests with x events, Wald's log-likelihood
ratio is  x ln(p1/p0) + (n - x) ln((1 - p1)/(1 - p0)). Page's CUSUM is the largest ratio over every possible change
point; here the change points are a geometric grid of windows ending now (lookback, lookback/2, ... down to
`SHORTEST_S`), a lower bound of the exact CUSUM: it alarms only when the exact one would, so the exact one's
false-alarm guarantee carries over, and a change is caught from a window at least half as long as the faulty stretch.

The test alarms when the statistic reaches ln(1/alpha) on a window holding at least the rule's minimum requests.

With `versus_stable`, H0's rate for each change-point window is the larger of the threshold and the stable
version's own rate (x `factor` + `margin`) over the same stretch of time: the candidate is rolled back only when it
is both above the threshold and worse than stable, so a fault that hits every version (a failing feature store, a
network fault) is not blamed on the candidate, where a rollback would not help. Stable's rate is taken as known (a
plug-in estimate; it carries most of the traffic), from the shortest stable window at least as long as the
candidate's that holds `min_requests` of stable's own; with none, the threshold alone decides, and the verdict says
so. Comparing with stable never loosens the threshold.
Counts are window deltas of the history's counters and latency histogram, so it reads samples of any rate: one-second
Envoy stats or per-request stream samples alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from agent.domain.signals import Window
from agent.triggers.context import VersionContext
from agent.triggers.kinds.error_rate import RequestEvidence
from agent.triggers.rule import RuleBase
from agent.triggers.units import PositiveDuration, Ratio, format_duration
from agent.triggers.verdict import Verdict

SHORTEST_S: Final = 0.25  # the shortest change-point window (stream samples can be finer than the 1 s tick)
TEST_NAME: Final = "binomial CUSUM-SPRT"


@dataclass(frozen=True, slots=True)
class Counts:
    """Trials (requests) and events (failed, or slower than the SLA) of one change-point window."""

    window_s: float  # the change point's window as asked
    span_s: float  # the span its samples really cover (at least window_s unless the history is younger)
    trials: float
    events: float


Measure = Callable[[Window], tuple[float, float] | None]  # a window -> (trials, events), None: not measurable


def change_point_windows(lookback_s: float) -> tuple[float, ...]:
    """lookback, lookback/2, lookback/4, ... down to the shortest window."""
    windows = [lookback_s]
    while windows[-1] / 2 >= SHORTEST_S:
        windows.append(windows[-1] / 2)
    return tuple(windows)


def alternative(p0: float, effect: float) -> float:
    """H1's rate: effect x p0, kept below 1 (a 60 % threshold with effect 2 is tested against 99.96 %)."""
    return min(p0 * effect, 1.0 - (1.0 - p0) / 1000.0)


def log_likelihood_ratio(events: float, trials: float, p0: float, p1: float) -> float:
    return events * math.log(p1 / p0) + (trials - events) * math.log((1.0 - p1) / (1.0 - p0))


def strongest(
    counts: tuple[Counts, ...], null: NullRates, effect: float, min_trials: float
) -> tuple[float, Counts | None]:
    """The largest log-likelihood ratio among windows with at least min_trials trials, and its window."""
    best: Counts | None = None
    statistic = -math.inf
    for c in counts:
        if c.trials < min_trials or c.trials <= 0:
            continue
        p0 = null.rate(c.window_s)
        ratio = log_likelihood_ratio(c.events, c.trials, p0, alternative(p0, effect))
        if ratio > statistic:
            statistic, best = ratio, c
    return statistic, best


def window_counts(ctx: VersionContext, lookback_s: float, key: object, measure: Measure) -> tuple[Counts, ...]:
    """Counts per change-point window, longest first, computed once per tick for every rule sharing `key`.
    Windows without a sample, or that the measure cannot read, are left out."""

    def compute() -> tuple[Counts, ...]:
        found: list[Counts] = []
        for seconds in change_point_windows(lookback_s):
            window = ctx.window(seconds)
            if window is None:
                break  # no sample in it: none in the shorter ones either
            measured = measure(window)
            if measured is not None:
                found.append(Counts(seconds, window.span_s, measured[0], measured[1]))
        return tuple(found)

    return ctx.cached(("sequential", key, lookback_s), compute)


class StableComparison(BaseModel):
    """H0's rate from the stable version: max(threshold, stable's rate x factor + margin) over the same lookback."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factor: float = Field(default=1.0, ge=1, le=100)
    margin: Ratio = Field(default=0.01, ge=0, lt=1)
    min_requests: int = Field(default=200, ge=1)  # stable's own requests in the lookback before it is used


@dataclass(frozen=True, slots=True)
class NullRates:
    """H0's rate per change-point window: the threshold, or with a stable comparison the larger of it and stable's
    rate over the same stretch of time."""

    threshold: float
    comparison: StableComparison | None = None
    stable_version: str = ""
    stable_counts: tuple[Counts, ...] = ()  # stable's change-point windows, longest first

    def stable_rate(self, window_s: float) -> Counts | None:
        """Stable's counts over the shortest of its windows at least `window_s` long with enough requests."""
        if self.comparison is None:
            return None
        found = None
        for counts in self.stable_counts:  # longest first: the last qualifying one is the shortest
            if counts.window_s >= window_s and counts.trials >= self.comparison.min_requests:
                found = counts
        return found

    def rate(self, window_s: float) -> float:
        stable = self.stable_rate(window_s)
        if stable is None or self.comparison is None:
            return self.threshold
        derived = stable.events / stable.trials * self.comparison.factor + self.comparison.margin
        return max(self.threshold, min(derived, 0.99))

    def note(self, window_s: float) -> str:
        """What the verdict says of the comparison for the deciding window ("" without one)."""
        if self.comparison is None:
            return ""
        stable = self.stable_rate(window_s)
        if stable is None:
            return (
                f" (stable {self.stable_version}: under {self.comparison.min_requests:,} requests to compare with, "
                "threshold alone)"
            )
        span = format_duration(round(stable.span_s, 3))
        note = f" (stable {self.stable_version} {stable.events / stable.trials:.2%} over {span}"
        if self.comparison.factor != 1.0:
            note += f" x {self.comparison.factor:g}"
        note += f" + {self.comparison.margin:.2%} margin"
        return note + (", below the threshold)" if self.rate(window_s) <= self.threshold else ")")


def null_rates(
    rule: SequentialRule,
    threshold: float,
    ctx: VersionContext,
    stable: VersionContext | None,
    key: object,
    measure: Measure,
) -> NullRates:
    """The threshold, with stable's windows when the rule compares with stable (and this is not stable itself)."""
    comparison = rule.versus_stable
    if comparison is None:
        return NullRates(threshold)
    if stable is None or stable.version == ctx.version:
        return NullRates(threshold, comparison, stable.version if stable is not None else "")
    return NullRates(threshold, comparison, stable.version, window_counts(stable, rule.window, key, measure))


class SequentialRule(RuleBase):
    """Fields and verdict shared by the sequential kinds. `window` is the lookback: the oldest change point."""

    window: PositiveDuration = 120.0
    alpha: float = Field(default=1e-5, gt=0, lt=0.5)  # false-alarm bound: the test's bound is ln(1/alpha)
    effect: float = Field(default=2.0, gt=1, le=100)  # H1: the threshold rate x effect
    min_evidence: RequestEvidence = RequestEvidence(requests=40, coverage=0.1)
    versus_stable: StableComparison | None = None  # also compare with the stable version (see the module doc)

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def bound(self) -> float:
        return math.log(1.0 / self.alpha)

    def sequential_verdict(
        self,
        ctx: VersionContext,
        counts: tuple[Counts, ...],
        null: NullRates,
        hypothesis: str,
        outcome: str,
        firing: bool,
    ) -> Verdict:
        """Breach when the statistic reaches the bound (a breach needs no coverage, only its requests); ok when
        it does not and the lookback holds the minimum requests and coverage; otherwise insufficient evidence.

        `hypothesis`: what H0 bounds ("error rate", "share of requests slower than 250 ms");
        `outcome`: what an event is ("failed", "slower than 250 ms")."""
        minimum = self.min_evidence.requests
        if not counts:
            return self.insufficient(ctx, "no samples in the last {}", (format_duration(self.window),), unit="requests")
        statistic, best = strongest(counts, null, self.effect, max(minimum, 1))
        bound = self.bound
        breached = best is not None and statistic >= bound
        if not breached:
            longest = counts[0]
            if longest.window_s != self.window or longest.trials < minimum or longest.trials <= 0:
                trials = longest.trials if longest.window_s == self.window else 0.0
                return self.insufficient(
                    ctx,
                    "{:,.0f} requests < {:,} minimum over {}",
                    (trials, max(minimum, 1), format_duration(self.window)),
                    evidence=trials,
                    unit="requests",
                )
            covered = self.covered_window(ctx, self.window, "requests")
            if isinstance(covered, Verdict):
                return covered
        assert best is not None  # not breached: the lookback has the minimum requests, so some window qualifies
        p0 = null.rate(best.window_s)
        return self.judged(
            ctx,
            breached,
            "{} log-likelihood ratio {:.1f} {} bound {:.1f} = ln(1/alpha), alpha {:g}; H0 {} <= {:.2%}{}, "
            "H1 {:.2%}; {:,.0f} of {:,.0f} requests {} ({:.1%}) over the last {}",
            (
                TEST_NAME,
                statistic,
                ">=" if breached else "<",
                bound,
                self.alpha,
                hypothesis + null.note(best.window_s),
                p0,
                self.limit_note(firing),
                alternative(p0, self.effect),
                best.events,
                best.trials,
                outcome,
                best.events / best.trials,
                format_duration(round(best.span_s, 3)),
            ),
            value=statistic,
            threshold=bound,
            evidence=best.trials,
            unit="requests",
            window_s=best.span_s,
        )
