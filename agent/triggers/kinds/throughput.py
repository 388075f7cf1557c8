"""throughput_anomaly: z-score of the version's request rate against its own baseline mean and std.

Baseline: the registry's `throughput_rps_mean` / `throughput_rps_std` for the version (which the layer above
should scale to the version's current traffic weight), or the version's own per-window rates over
`history_window` just before the evaluated window ("auto": registry when present, else history). Below the
low-traffic floor `min_rps` z-scores mean nothing, so the verdict is inconclusive.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.domain.signals import BaselineKey
from agent.triggers.context import VersionContext
from agent.triggers.kinds.traffic import REQUESTS, TrafficSource
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.stats import mean_and_std
from agent.triggers.units import PositiveDuration, Ratio, format_duration
from agent.triggers.verdict import Verdict

MIN_HISTORY_BUCKETS = 5
_SCORE_LABEL = {"both": "|z|", "drop": "-z", "spike": "z"}


class ThroughputAnomalyRule(RuleBase):
    kind: Literal["throughput_anomaly"]
    window: PositiveDuration = 60.0
    max_z: float = Field(default=3.0, gt=0)
    direction: Literal["both", "drop", "spike"] = "both"
    source: TrafficSource = "envoy"
    baseline: Literal["auto", "registry", "history"] = "auto"
    history_window: PositiveDuration = 1800.0
    min_rps: float = Field(default=1.0, ge=0)  # low-traffic floor of the baseline mean
    min_relative_std: Ratio = 0.05  # std floor, as a fraction of the mean, so a flat baseline is not brittle
    min_evidence: Evidence = Evidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def lookback_s(self) -> float:
        return self.window + (self.history_window if self.baseline != "registry" else 0.0)

    @property
    def threshold(self) -> float:
        return self.max_z

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.baseline != "registry" and self.history_window < MIN_HISTORY_BUCKETS * self.window:
            found.append(("history_window", f"must hold at least {MIN_HISTORY_BUCKETS} windows of {self.window:g}s"))
        return found

    def _baseline(self, ctx: VersionContext) -> tuple[float, float, str] | str:
        """(mean rps, std, where it comes from) or why there is none."""
        numbers = ctx.baseline.numbers
        mean = numbers.get(BaselineKey.THROUGHPUT_RPS_MEAN)
        std = numbers.get(BaselineKey.THROUGHPUT_RPS_STD)
        if self.baseline == "registry" or (self.baseline == "auto" and mean is not None):
            if mean is None:
                return f"no registry baseline {BaselineKey.THROUGHPUT_RPS_MEAN} for {ctx.version}"
            return mean, std or 0.0, "registry"
        key = ("throughput-history", REQUESTS[self.source], self.window, self.history_window)
        return ctx.cached(key, lambda: self._history_baseline(ctx))

    def _history_baseline(self, ctx: VersionContext) -> tuple[float, float, str] | str:
        history = ctx.history
        if history is None:
            return "no history"
        buckets = int(self.history_window // self.window)
        deltas = history.bucket_deltas(REQUESTS[self.source], self.window, buckets, ctx.now - self.window)
        rates = [d / self.window for d in deltas if d is not None]
        if len(rates) < MIN_HISTORY_BUCKETS:
            return f"{len(rates)} baseline windows of history < {MIN_HISTORY_BUCKETS} minimum"
        mean, std = mean_and_std(rates)
        return mean, std, f"own last {format_duration(len(rates) * self.window)}"

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        window = self.covered_window(ctx, self.window, "requests")
        if isinstance(window, Verdict):
            return window
        counter = REQUESTS[self.source]
        rate = window.rate(counter)
        if rate is None:
            return self.insufficient(ctx, "{} not reported", (counter,), unit="requests")
        baseline = self._baseline(ctx)
        if isinstance(baseline, str):
            return self.insufficient(ctx, "{}", (baseline,), unit="requests", value=rate)
        mean, std, label = baseline
        if mean < self.min_rps:
            return self.insufficient(
                ctx,
                "baseline {:.2f} rps is below the low-traffic floor {:g} rps",
                (mean, self.min_rps),
                unit="requests",
            )
        std = max(std, self.min_relative_std * mean, 1e-9)
        z = (rate - mean) / std
        score = abs(z) if self.direction == "both" else -z if self.direction == "drop" else z
        limit = self.limit(self.max_z, firing)
        breached = score > limit
        return self.judged(
            ctx,
            breached,
            "request rate {:.2f} rps vs baseline {:.2f} ± {:.2f} rps ({}): z = {:+.2f}, {} {} {:g}{} over {}",
            (
                rate,
                mean,
                std,
                label,
                z,
                _SCORE_LABEL[self.direction],
                self.comparison(breached),
                limit,
                self.limit_note(firing),
                format_duration(self.window),
            ),
            value=z,
            threshold=limit,
            evidence=rate * window.span_s,
            unit="requests",
        )
