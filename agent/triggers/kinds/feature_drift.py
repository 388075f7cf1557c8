"""feature_drift: KL(reference || current) per feature, on the bins frozen from the reference distribution.

The model server exports one histogram per feature whose bucket edges are the reference's quantile edges, so
the reference is just a fraction per bucket. Reference: inline in the rule, the registry baseline's bins for the
version, or the stable version's live histogram over the same window ("auto": in that order of availability).
Features with fewer than `min_evidence.samples` observations are skipped, never counted as drifted.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple

from pydantic import Field

from agent.domain.signals import Histogram, Signal, Window
from agent.triggers.context import VersionContext
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.stats import kl_divergence, kl_from_distribution, reference_distribution
from agent.triggers.units import PositiveDuration, format_count, format_duration
from agent.triggers.verdict import Verdict

FeatureList = Literal["all"] | Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)]
Bins = Annotated[tuple[Annotated[float, Field(ge=0)], ...], Field(min_length=2)]


class DriftEvidence(Evidence):
    count_field = "samples"
    samples: int = Field(default=1000, ge=1)  # observations of a feature in the window


class FeatureDrift(NamedTuple):
    feature: str
    kl: float
    samples: float
    reference: str


@dataclass(frozen=True, slots=True)
class DriftSummary:
    """Per-feature drift of one version, shared within a tick by rules with the same window and reference."""

    measured: tuple[FeatureDrift, ...]  # largest KL first
    lacking: tuple[tuple[str, str], ...]  # (feature, why it was not measured)
    ascending: tuple[float, ...]  # the measured KLs, ascending, to count those above a limit

    def above(self, limit: float) -> int:
        return len(self.ascending) - bisect_right(self.ascending, limit)


def _same_bounds(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    if a == b:
        return True
    return len(a) == len(b) and all(x == y or math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a, b, strict=True))


class FeatureDriftRule(RuleBase):
    kind: Literal["feature_drift"]
    window: PositiveDuration = 300.0
    max_kl: float = Field(default=0.1, gt=0)
    features: FeatureList = "all"
    reference: Literal["auto", "inline", "baseline", "stable"] = "auto"
    # Inline reference per feature: a weight per bucket of the feature's histogram (fractions or counts).
    reference_bins: dict[str, Bins] = Field(default_factory=dict)
    smoothing: Literal["epsilon", "laplace"] = "epsilon"
    epsilon: float = Field(default=1e-4, gt=0, lt=0.01)
    min_evidence: DriftEvidence = DriftEvidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float:
        return self.max_kl

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.reference == "inline" and not self.reference_bins:
            found.append(("reference_bins", "reference: inline needs reference_bins"))
        return found

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        window = self.covered_window(ctx, self.window)
        if isinstance(window, Verdict):
            return window
        key = (
            "drift",
            self.window,
            self.features,
            self.reference,
            id(self.reference_bins) if self.reference_bins else None,
            self.smoothing,
            self.epsilon,
            self.min_evidence.samples,
        )
        summary = ctx.cached(key, lambda: self._summarize(ctx, stable, window))
        lacking = len(summary.lacking)
        if not summary.measured:
            if not summary.lacking:
                return self.insufficient(ctx, "no feature histograms reported")
            feature, why = summary.lacking[0]
            return self.insufficient(ctx, "no feature could be measured ({}; '{}': {})", (lacking, feature, why))
        limit = self.limit(self.max_kl, firing)
        worst = summary.measured[0]
        breached = worst.kl > limit
        return self.judged(
            ctx,
            breached,
            "KL drift {:.3f} {} {:g}{} on feature '{}' vs {} ({} of {} features above{}) over {} ({:,.0f} samples)",
            (
                worst.kl,
                self.comparison(breached),
                limit,
                self.limit_note(firing),
                worst.feature,
                worst.reference,
                summary.above(limit),
                len(summary.measured),
                f"; {lacking} lacked evidence" if lacking else "",
                format_duration(self.window),
                worst.samples,
            ),
            value=worst.kl,
            threshold=limit,
            evidence=worst.samples,
            unit="samples",
        )

    def _summarize(self, ctx: VersionContext, stable: VersionContext | None, window: Window) -> DriftSummary:
        features = window.names("histogram", Signal.FEATURE_PREFIX) if self.features == "all" else self.features
        measured: list[FeatureDrift] = []
        lacking: list[tuple[str, str]] = []
        for feature in features:
            result = self._measure(ctx, stable, window, feature)
            if isinstance(result, FeatureDrift):
                measured.append(result)
            else:
                lacking.append((feature, result))
        measured.sort(key=lambda d: d.kl, reverse=True)
        return DriftSummary(tuple(measured), tuple(lacking), tuple(d.kl for d in reversed(measured)))

    def _measure(
        self, ctx: VersionContext, stable: VersionContext | None, window: Window, feature: str
    ) -> FeatureDrift | str:
        current = window.histogram(Signal.feature(feature))
        if current is None:
            return "not reported"
        minimum = self.min_evidence.samples
        if current.count < minimum:
            return f"{format_count(current.count)} samples < {format_count(minimum)} minimum"
        reference = self._reference(ctx, stable, feature, current)
        if isinstance(reference, str):
            return reference
        weights, label, constant = reference
        counts = current.bucket_counts()
        if len(weights) != len(counts):
            return f"reference has {len(weights)} bins, the histogram {len(counts)}"
        laplace = self.smoothing == "laplace"
        if constant:
            p = reference_distribution(weights, self.epsilon)
            kl = kl_from_distribution(p, counts, epsilon=self.epsilon, laplace=laplace)
        else:
            kl = kl_divergence(weights, counts, epsilon=self.epsilon, laplace=laplace)
        return FeatureDrift(feature, kl, current.count, label)

    def _reference(
        self, ctx: VersionContext, stable: VersionContext | None, feature: str, current: Histogram
    ) -> tuple[tuple[float, ...], str, bool] | str:
        """(weights per bucket, where they come from, whether they stay the same tick after tick) or why not."""
        mode = self.reference
        if mode == "auto":
            if feature in self.reference_bins:
                mode = "inline"
            elif feature in ctx.baseline.reference_bins:
                mode = "baseline"
            else:
                mode = "stable"
        if mode == "inline":
            inline = self.reference_bins.get(feature)
            return (inline, "the rule's reference", True) if inline is not None else "no inline reference bins"
        if mode == "baseline":
            bins = ctx.baseline.reference_bins.get(feature)
            if bins is None:
                return "no reference bins in the registry baseline"
            if not _same_bounds(bins.bounds, current.bounds):
                return "registry reference bins do not match the histogram's bucket edges"
            return bins.fractions, "the registry reference", True
        if stable is None or stable.version == ctx.version:
            return "no reference bins and no other stable version to compare with"
        stable_window = stable.window(self.window)
        if stable_window is None or stable_window.coverage < self.min_evidence.coverage:
            return f"stable {stable.version} has too few samples in the window"
        reference = stable_window.histogram(Signal.feature(feature))
        if reference is None or reference.count < self.min_evidence.samples:
            return f"stable {stable.version} has < {format_count(self.min_evidence.samples)} samples"
        if not _same_bounds(reference.bounds, current.bounds):
            return f"stable {stable.version} uses different bucket edges"
        return reference.bucket_counts(), f"stable {stable.version}", False
