"""error_rate: failed / total requests of a version over a window (what counts as failed: error_rate_counting)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.triggers.context import VersionContext
from agent.triggers.kinds.error_rate_counting import (
    DEFAULT_COUNT,
    CountedErrors,
    ExcludedCodes,
    count_errors,
    counting_problems,
)
from agent.triggers.kinds.traffic import REQUESTS, TrafficSource
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.units import PositiveDuration, Ratio, format_duration
from agent.triggers.verdict import Verdict


class RequestEvidence(Evidence):
    count_field = "requests"
    requests: int = Field(default=50, ge=0)


class ErrorRateRule(RuleBase):
    kind: Literal["error_rate"]
    source: TrafficSource = "envoy"
    window: PositiveDuration = 30.0
    max_rate: Ratio = 0.05
    count: CountedErrors = DEFAULT_COUNT
    exclude: ExcludedCodes = ()
    min_evidence: RequestEvidence = RequestEvidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float:
        return self.max_rate

    def problems(self) -> list[tuple[str, str]]:
        return [*super().problems(), *counting_problems(self.source, self.count, self.exclude)]

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        window = self.covered_window(ctx, self.window, "requests")
        if isinstance(window, Verdict):
            return window
        requests_counter = REQUESTS[self.source]
        requests = window.delta(requests_counter)
        if requests is None:
            return self.insufficient(ctx, "{} not reported", (requests_counter,), unit="requests")
        minimum = self.min_evidence.requests
        if requests < minimum or requests <= 0:
            return self.insufficient(
                ctx,
                "{:,.0f} requests < {:,} minimum over {}",
                (requests, max(minimum, 1), format_duration(self.window)),
                evidence=requests,
                unit="requests",
            )
        failed = count_errors(window, self.source, self.count, self.exclude)
        rate = min(failed.errors, requests) / requests
        limit = self.limit(self.max_rate, firing)
        breached = rate > limit
        return self.judged(
            ctx,
            breached,
            "error rate {:.1%} {} {:.1%}{} over {} ({:,.0f} requests; failed: {})",
            (
                rate,
                self.comparison(breached),
                limit,
                self.limit_note(firing),
                format_duration(self.window),
                requests,
                failed.describe(),
            ),
            value=rate,
            threshold=limit,
            evidence=requests,
            unit="requests",
        )
