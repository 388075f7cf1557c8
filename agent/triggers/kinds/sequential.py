"""The sequential test behind the `*_sequential` kinds: Page's CUSUM of the binomial SPRT log-likelihood ratio.

Each request is a Bernoulli trial (failed or not; slower than the SLA or not). H0: the rate is at most `p0` (the
rule's threshold); H1: it is `p1` = effect x p0. Over a stretch of n requests with x events, Wald's log-likelihood
ratio is  x ln(p1/p0) + (n - x) ln((1 - p1)/(1 - p0)). Page's CUSUM is the largest ratio over every possible change
point; here the change points are a geometric grid of windows ending now (lookback, lookback/2, ... down to
`SHORTEST_S`), a lower bound of the exact CUSUM: it alarms only when the exact one would, so the exact one's
false-alarm guarantee carries over, and a change is caught from a window at least half as long as the faulty stretch.

The test alarms when the statistic reaches ln(1/alpha) on a window holding at least the rule's minimum requests.
Counts are window deltas of the history's counters and latency histogram, so it reads samples of any rate: one-second
Envoy stats or per-request stream samples alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pydantic import Field

from agent.domain.signals import Window
from agent.triggers.context import VersionContext
from agent.triggers.kinds.error_rate import RequestEvidence
from agent.triggers.rule import RuleBase
from agent.triggers.units import PositiveDuration, format_duration
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


def strongest(counts: tuple[Counts, ...], p0: float, p1: float, min_trials: float) -> tuple[float, Counts | None]:
    """The largest log-likelihood ratio among windows with at least min_trials trials, and its window."""
    best: Counts | None = None
    statistic = -math.inf
    for c in counts:
        if c.trials < min_trials or c.trials <= 0:
            continue
        ratio = log_likelihood_ratio(c.events, c.trials, p0, p1)
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


class SequentialRule(RuleBase):
    """Fields and verdict shared by the sequential kinds. `window` is the lookback: the oldest change point."""

    window: PositiveDuration = 120.0
    alpha: float = Field(default=1e-5, gt=0, lt=0.5)  # false-alarm bound: the test's bound is ln(1/alpha)
    effect: float = Field(default=2.0, gt=1, le=100)  # H1: the threshold rate x effect
    min_evidence: RequestEvidence = RequestEvidence(requests=40, coverage=0.1)

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
        p0: float,
        p1: float,
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
        statistic, best = strongest(counts, p0, p1, max(minimum, 1))
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
                hypothesis,
                p0,
                self.limit_note(firing),
                p1,
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
