"""burn_rate: multi-window error-budget burn (SRE workbook). Burn = error ratio / (1 - SLO); breaches only when
both the long and the short window burn faster than `factor`.

A version younger than the long window is judged on its whole life for the long window (a fresh canary has no
older errors); evidence (coverage, requests) is required of the short window.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.triggers.context import VersionContext
from agent.triggers.kinds.error_rate import RequestEvidence
from agent.triggers.kinds.traffic import ERRORS, REQUESTS, TrafficSource
from agent.triggers.rule import RuleBase
from agent.triggers.units import PositiveDuration, format_duration
from agent.triggers.verdict import Verdict


class BurnRateRule(RuleBase):
    kind: Literal["burn_rate"]
    slo: float = Field(default=0.999, gt=0, lt=1)
    long_window: PositiveDuration = 3600.0
    short_window: PositiveDuration = 300.0
    factor: float = Field(default=14.4, gt=0)
    source: TrafficSource = "envoy"
    min_evidence: RequestEvidence = RequestEvidence()

    @property
    def window_s(self) -> float:
        return self.short_window

    @property
    def lookback_s(self) -> float:
        return self.long_window

    @property
    def threshold(self) -> float:
        return self.factor

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.short_window >= self.long_window:
            found.append(("short_window", "must be shorter than long_window"))
        return found

    def _counts(self, ctx: VersionContext) -> tuple[float, float, float, float] | None:
        """(short requests, short errors, long requests, long errors); None when requests are not reported."""
        short, long = ctx.window(self.short_window), ctx.window(self.long_window)
        if short is None or long is None:
            return None
        requests, errors = REQUESTS[self.source], ERRORS[self.source]
        short_requests = short.delta(requests)
        if short_requests is None:
            return None
        return (
            short_requests,
            short.delta(errors) or 0.0,
            long.delta(requests) or short_requests,
            long.delta(errors) or 0.0,
        )

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        short = self.covered_window(ctx, self.short_window, "requests")
        if isinstance(short, Verdict):
            return short
        counts = ctx.cached(("burn", self.source, self.short_window, self.long_window), lambda: self._counts(ctx))
        if counts is None:
            return self.insufficient(ctx, "{} not reported", (REQUESTS[self.source],), unit="requests")
        short_requests, short_errors, long_requests, long_errors = counts
        minimum = self.min_evidence.requests
        short_name = format_duration(self.short_window)
        if short_requests < minimum or short_requests <= 0:
            return self.insufficient(
                ctx,
                "{:,.0f} requests < {:,} minimum over {}",
                (short_requests, max(minimum, 1), short_name),
                evidence=short_requests,
                unit="requests",
            )
        budget = 1.0 - self.slo
        short_burn = short_errors / short_requests / budget
        long_burn = long_errors / long_requests / budget if long_requests > 0 else short_burn
        limit = self.limit(self.factor, firing)
        burn = min(short_burn, long_burn)
        breached = burn > limit
        return self.judged(
            ctx,
            breached,
            "error budget burn {:.1f}x over {} and {:.1f}x over {} (SLO {:g}%): {}both > {:g}x{}"
            " ({:,.0f} requests over {})",
            (
                long_burn,
                format_duration(self.long_window),
                short_burn,
                short_name,
                self.slo * 100,
                "" if breached else "not ",
                limit,
                self.limit_note(firing),
                short_requests,
                short_name,
            ),
            value=burn,
            threshold=limit,
            evidence=short_requests,
            unit="requests",
        )
