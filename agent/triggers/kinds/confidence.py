"""confidence_drop: mean prediction confidence relative to a baseline, over a rolling window.

Baseline: a fixed number, the registry's `confidence_mean` for the version, or the stable version's live mean
over the same window ("auto": the registry's number when it has one, else the stable version).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from agent.domain.signals import BaselineKey, Signal
from agent.triggers.context import VersionContext
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.units import PositiveDuration, Ratio, format_duration
from agent.triggers.verdict import Verdict


class PredictionEvidence(Evidence):
    count_field = "samples"
    samples: int = Field(default=100, ge=0)  # predictions observed in the window


@dataclass(frozen=True, slots=True)
class Unmeasured:
    """Why a value could not be measured: a reason template, its arguments, and the evidence seen."""

    template: str
    args: tuple[object, ...] = ()
    evidence: float = 0.0


class ConfidenceDropRule(RuleBase):
    kind: Literal["confidence_drop"]
    window: PositiveDuration = 300.0
    max_drop: Ratio = 0.15  # relative: (baseline - current) / baseline
    baseline: Literal["auto", "registry", "stable"] | float = "auto"
    signal: str = Signal.MODEL_CONFIDENCE
    min_evidence: PredictionEvidence = PredictionEvidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float:
        return self.max_drop

    def _mean(self, ctx: VersionContext) -> tuple[float, float] | Unmeasured:
        """(mean confidence, predictions) of the version over the window, shared by rules asking the same."""
        key = ("confidence", self.signal, self.window, self.min_evidence.samples, self.min_evidence.coverage)
        return ctx.cached(key, lambda: self._measure_mean(ctx))

    def _measure_mean(self, ctx: VersionContext) -> tuple[float, float] | Unmeasured:
        during = format_duration(self.window)
        window = ctx.window(self.window)
        if window is None:
            return Unmeasured("no samples of {} in the last {}", (ctx.version, during))
        if window.coverage < self.min_evidence.coverage:
            return Unmeasured("samples of {} cover {:.1%} of {}", (ctx.version, window.coverage, during))
        histogram = window.histogram(self.signal)
        if histogram is None:
            return Unmeasured("{} not reported by {}", (self.signal, ctx.version))
        minimum = self.min_evidence.samples
        if histogram.count < minimum or histogram.count <= 0:
            return Unmeasured(
                "{:,.0f} predictions of {} < {:,} minimum over {}",
                (histogram.count, ctx.version, max(minimum, 1), during),
                histogram.count,
            )
        return histogram.sum / histogram.count, histogram.count

    def _baseline(self, ctx: VersionContext, stable: VersionContext | None) -> tuple[float, str] | Unmeasured:
        """(baseline, where it comes from)."""
        if isinstance(self.baseline, float | int):
            return float(self.baseline), "fixed"
        registry = ctx.baseline.numbers.get(BaselineKey.CONFIDENCE_MEAN)
        if self.baseline == "registry" or (self.baseline == "auto" and registry is not None):
            if registry is None:
                return Unmeasured("no registry baseline {} for {}", (BaselineKey.CONFIDENCE_MEAN, ctx.version))
            return registry, "registry"
        if stable is None or stable.version == ctx.version:
            return Unmeasured("no registry baseline and no other stable version to compare with")
        measured = self._mean(stable)
        if isinstance(measured, Unmeasured):
            return measured
        return measured[0], f"stable {stable.version}, live"

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        current = self._mean(ctx)
        if isinstance(current, Unmeasured):
            return self.insufficient(ctx, current.template, current.args, evidence=current.evidence, unit="predictions")
        mean, predictions = current
        baseline = self._baseline(ctx, stable)
        if isinstance(baseline, Unmeasured):
            return self.insufficient(ctx, baseline.template, baseline.args, evidence=predictions, unit="predictions")
        reference, label = baseline
        if reference <= 0:
            return self.insufficient(ctx, "baseline confidence {:g} is not positive", (reference,), unit="predictions")
        drop = (reference - mean) / reference
        limit = self.limit(self.max_drop, firing)
        breached = drop > limit
        return self.judged(
            ctx,
            breached,
            "mean confidence {:.3f} is {:.1%} {} baseline {:.3f} ({}); drop {} {:.1%}{} over {} ({:,.0f} predictions)",
            (
                mean,
                abs(drop),
                "below" if drop >= 0 else "above",
                reference,
                label,
                self.comparison(breached),
                limit,
                self.limit_note(firing),
                format_duration(self.window),
                predictions,
            ),
            value=drop,
            threshold=limit,
            evidence=predictions,
            unit="predictions",
        )
