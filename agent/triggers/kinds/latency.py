"""latency_p99: a latency quantile (p99 by default) from the histogram observed in the window, against an SLA.

The decision uses the fraction of requests slower than the SLA (exact when the SLA is a bucket edge, which is
why the edge should be placed there); the reported value is Prometheus' interpolated quantile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from agent.domain.signals import Histogram
from agent.triggers.context import VersionContext
from agent.triggers.kinds.error_rate import RequestEvidence
from agent.triggers.kinds.traffic import LATENCY, LATENCY_UNIT_MS, TrafficSource
from agent.triggers.rule import RuleBase
from agent.triggers.units import PositiveDuration, format_duration
from agent.triggers.verdict import Verdict


@dataclass(frozen=True, slots=True)
class LatencyView:
    """What every latency rule with the same source, window and quantile shares within a tick."""

    histogram: Histogram
    requests: float
    quantile_ms: float  # Prometheus' estimate (the top finite edge when the rank is in the overflow bucket)
    top_ms: float  # highest finite bucket edge
    in_overflow: bool  # the quantile lies above the highest finite edge
    label: str  # "p99"
    shown: str  # the quantile as reported: "212.5 ms", or "> 1000 ms" when in the overflow bucket


def latency_view(histogram: Histogram, quantile: float, scale: float) -> LatencyView:
    finite = [b for b in histogram.bounds if not math.isinf(b)]
    top = finite[-1] if finite else 0.0
    in_overflow = (histogram.fraction_above(top) or 0.0) > 1.0 - quantile
    quantile_ms = (histogram.quantile(quantile) or 0.0) * scale
    return LatencyView(
        histogram,
        histogram.cumulative[-1] if histogram.cumulative else 0.0,
        quantile_ms,
        top * scale,
        in_overflow,
        f"p{quantile * 100:g}",
        f"> {top * scale:g} ms" if in_overflow else f"{quantile_ms:.1f} ms",
    )


class LatencyRule(RuleBase):
    kind: Literal["latency_p99"]
    sla_ms: float = Field(gt=0)
    quantile: float = Field(default=0.99, gt=0, lt=1)
    source: TrafficSource = "envoy"
    window: PositiveDuration = 60.0
    min_evidence: RequestEvidence = RequestEvidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float:
        return self.sla_ms

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        window = self.covered_window(ctx, self.window, "requests")
        if isinstance(window, Verdict):
            return window
        signal = LATENCY[self.source]
        histogram = window.histogram(signal)
        if histogram is None:
            return self.insufficient(ctx, "{} not reported", (signal,), unit="requests")
        scale = LATENCY_UNIT_MS[self.source]
        view = ctx.cached(
            ("latency", signal, self.window, self.quantile), lambda: latency_view(histogram, self.quantile, scale)
        )
        requests = view.requests
        minimum = self.min_evidence.requests
        if requests < minimum or requests <= 0:
            return self.insufficient(
                ctx,
                "{:,.0f} requests < {:,} minimum over {}",
                (requests, max(minimum, 1), format_duration(self.window)),
                evidence=requests,
                unit="requests",
            )
        limit_ms = self.limit(self.sla_ms, firing)
        breached = (histogram.fraction_above(limit_ms / scale) or 0.0) > 1.0 - self.quantile
        label, shown = view.label, view.shown
        if breached and limit_ms > view.top_ms:
            # The quantile is somewhere above the last finite bucket edge, which is below the SLA: unknown.
            return self.insufficient(
                ctx,
                "{} latency {}: the histogram has no bucket edge at or above the SLA {:g} ms, add one",
                (label, shown, limit_ms),
                evidence=requests,
                unit="requests",
                value=view.top_ms,
                threshold=limit_ms,
            )
        return self.judged(
            ctx,
            breached,
            "{} latency {} {} SLA {:g} ms{} over {} ({:,.0f} requests)",
            (
                label,
                shown,
                self.comparison(breached),
                limit_ms,
                self.limit_note(firing),
                format_duration(self.window),
                requests,
            ),
            value=max(view.quantile_ms, view.top_ms) if view.in_overflow else view.quantile_ms,
            threshold=limit_ms,
            evidence=requests,
            unit="requests",
        )
