"""latency_p99_sequential: a sequential test that more than 1 - quantile of the requests are slower than the SLA.

The same test as error_rate_sequential (kinds/sequential.py), on "slower than the SLA" instead of "failed": with
the p99 at the SLA, 1 % of requests are slower (H0); H1 is `effect` times that share. Counts come from the latency
histogram's window deltas (exact when the SLA is a bucket edge, as for latency_p99).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from agent.domain.signals import Window
from agent.triggers.context import VersionContext
from agent.triggers.kinds.sequential import SequentialRule, null_rates, window_counts
from agent.triggers.kinds.traffic import LATENCY, LATENCY_UNIT_MS, TrafficSource
from agent.triggers.verdict import Verdict


class LatencySequentialRule(SequentialRule):
    kind: Literal["latency_p99_sequential"]
    sla_ms: float = Field(gt=0)
    quantile: float = Field(default=0.99, gt=0, lt=1)
    source: TrafficSource = "envoy"

    @property
    def threshold(self) -> float:
        return self.sla_ms

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        signal = LATENCY[self.source]
        scale = LATENCY_UNIT_MS[self.source]
        limit_ms = self.limit(self.sla_ms, firing)
        longest = ctx.window(self.window)
        histogram = longest.histogram(signal) if longest is not None else None
        if longest is not None and histogram is None:
            return self.insufficient(ctx, "{} not reported", (signal,), unit="requests")
        if histogram is not None:
            finite = [b for b in histogram.bounds if not math.isinf(b)]
            top = finite[-1] if finite else 0.0
            if limit_ms / scale > top and (histogram.fraction_above(top) or 0.0) > 0:
                # Requests above the last finite edge, which is below the SLA: how many beat the SLA is unknown.
                return self.insufficient(
                    ctx,
                    "the {} histogram has no bucket edge at or above the SLA {:g} ms, add one",
                    (signal, limit_ms),
                    unit="requests",
                )

        def measure(window: Window) -> tuple[float, float] | None:
            observed = window.histogram(signal)
            if observed is None:
                return None
            total = observed.cumulative[-1] if observed.cumulative else 0.0
            return total, total * (observed.fraction_above(limit_ms / scale) or 0.0)

        counts = window_counts(ctx, self.window, ("slow", signal, limit_ms), measure)
        null = null_rates(self, 1.0 - self.quantile, ctx, stable, ("slow", signal, limit_ms), measure)
        slower = f"slower than {limit_ms:g} ms"
        return self.sequential_verdict(
            ctx,
            counts,
            null,
            f"share of requests {slower} (p{self.quantile * 100:g} at the SLA{self.limit_note(firing)})",
            slower,
            firing=False,  # the clear threshold is already in the SLA above, not in the rate
        )
