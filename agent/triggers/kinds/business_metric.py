"""business_metric: a business gauge exported by the model server (`model.business.<metric>`) against bounds."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from agent.domain.signals import Signal
from agent.triggers.context import VersionContext
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.units import PositiveDuration, format_duration
from agent.triggers.verdict import Verdict


class BusinessMetricRule(RuleBase):
    kind: Literal["business_metric"]
    metric: str = Field(min_length=1)
    above: float | None = None  # breach when the value is above this
    below: float | None = None  # breach when the value is below this
    aggregate: Literal["mean", "last", "min", "max"] = "mean"  # mean is time-weighted
    window: PositiveDuration = 300.0
    min_evidence: Evidence = Evidence()

    @model_validator(mode="after")
    def _has_a_bound(self) -> Self:
        if self.above is None and self.below is None:
            raise ValueError("business_metric needs `above` and/or `below`")
        if self.above is not None and self.below is not None and self.below >= self.above:
            raise ValueError("`below` must be smaller than `above`")
        return self

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float | None:
        if self.above is not None and self.below is not None:
            return None
        return self.above if self.above is not None else self.below

    def higher_is_worse(self) -> bool:
        return self.above is not None

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        during = format_duration(self.window)
        gauge = Signal.business(self.metric)
        window = ctx.window(self.window)
        if window is None:
            return self.insufficient(ctx, "no samples in the last {}", (during,), unit="seconds")
        mean, observed = window.gauge_mean(gauge)
        coverage = observed / self.window
        if mean is None or coverage < self.min_evidence.coverage:
            return self.insufficient(
                ctx,
                "{} observed for {:.1%} of {} < {:.1%} minimum",
                (gauge, coverage, during, self.min_evidence.coverage),
                evidence=observed,
                unit="seconds",
            )
        value = mean if self.aggregate == "mean" else self._extreme(ctx, gauge)
        if value is None:
            return self.insufficient(ctx, "{} has no value in the last {}", (gauge, during), unit="seconds")
        above = self.limit(self.above, firing) if self.above is not None else None
        below = self.limit(self.below, firing) if self.below is not None else None
        if above is not None and value > above:
            breached, threshold, shown = True, above, f"> {above:g}"
        elif below is not None and value < below:
            breached, threshold, shown = True, below, f"< {below:g}"
        else:
            bounds = [f">= {below:g}"] if below is not None else []
            bounds += [f"<= {above:g}"] if above is not None else []
            threshold = above if above is not None else below if below is not None else 0.0
            breached, shown = False, " and ".join(bounds)
        return self.judged(
            ctx,
            breached,
            "{} ({}) {:g} {}{} over {}",
            (self.metric, self.aggregate, value, shown, self.limit_note(firing), during),
            value=value,
            threshold=threshold,
            evidence=observed,
            unit="seconds",
        )

    def _extreme(self, ctx: VersionContext, gauge: str) -> float | None:
        history = ctx.history
        if history is None:
            return None
        if self.aggregate == "last":
            return history.latest_gauge(gauge, self.window, ctx.now)
        series = [v for _, v in history.gauge_series(gauge, self.window, ctx.now)]
        if not series:
            return None
        return min(series) if self.aggregate == "min" else max(series)
