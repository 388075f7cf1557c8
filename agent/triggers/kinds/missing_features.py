"""missing_features: per feature, missing / seen rows over a window, against the reference missing rate.

Breaches when some feature's missing rate exceeds its reference rate by more than `max_increase`. Reference:
`reference_rates` in the rule, else the registry baseline's `missing_rate.<feature>` ("baseline", 0 when
absent), the stable version's live rate ("stable"), or zero ("zero").
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal, NamedTuple

from pydantic import Field

from agent.domain.signals import BaselineKey, Signal, Window
from agent.triggers.context import VersionContext
from agent.triggers.kinds.feature_drift import FeatureList
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.units import PositiveDuration, Ratio, format_count, format_duration
from agent.triggers.verdict import Verdict


class RowEvidence(Evidence):
    count_field = "samples"
    samples: int = Field(default=100, ge=1)  # rows seen for a feature in the window


class FeatureMissing(NamedTuple):
    feature: str
    rate: float
    reference: float
    rows: float

    @property
    def increase(self) -> float:
        return self.rate - self.reference


@dataclass(frozen=True, slots=True)
class MissingSummary:
    """Per-feature missing rates of one version, shared within a tick by rules with the same window/reference."""

    measured: tuple[FeatureMissing, ...]  # largest increase first
    lacking: tuple[tuple[str, str], ...]  # (feature, why it was not measured)
    ascending: tuple[float, ...]  # the increases, ascending, to count those above a limit

    def above(self, limit: float) -> int:
        return len(self.ascending) - bisect_right(self.ascending, limit)


class MissingFeaturesRule(RuleBase):
    kind: Literal["missing_features"]
    window: PositiveDuration = 60.0
    max_increase: Ratio = 0.02  # allowed missing rate above the reference rate
    features: FeatureList = "all"
    reference: Literal["baseline", "stable", "zero"] = "baseline"
    reference_rates: dict[str, Ratio] = Field(default_factory=dict)
    min_evidence: RowEvidence = RowEvidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float:
        return self.max_increase

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        window = self.covered_window(ctx, self.window, "rows")
        if isinstance(window, Verdict):
            return window
        key = (
            "missing",
            self.window,
            self.features,
            self.reference,
            id(self.reference_rates) if self.reference_rates else None,
            self.min_evidence.samples,
            self.min_evidence.coverage,
        )
        summary = ctx.cached(key, lambda: self._summarize(ctx, stable, window))
        lacking = len(summary.lacking)
        if not summary.measured:
            if not summary.lacking:
                return self.insufficient(ctx, "no feature_seen counters reported", unit="rows")
            feature, why = summary.lacking[0]
            return self.insufficient(
                ctx, "no feature could be measured ({}; '{}': {})", (lacking, feature, why), unit="rows"
            )
        limit = self.limit(self.max_increase, firing)
        worst = summary.measured[0]
        breached = worst.increase > limit
        return self.judged(
            ctx,
            breached,
            "feature '{}' missing in {:.1%} of rows vs reference {:.1%}: +{:.1%} {} {:.1%}{}"
            " ({} of {} features above{}) over {} ({:,.0f} rows)",
            (
                worst.feature,
                worst.rate,
                worst.reference,
                max(0.0, worst.increase),
                self.comparison(breached),
                limit,
                self.limit_note(firing),
                summary.above(limit),
                len(summary.measured),
                f"; {lacking} lacked evidence" if lacking else "",
                format_duration(self.window),
                worst.rows,
            ),
            value=worst.increase,
            threshold=limit,
            evidence=worst.rows,
            unit="rows",
        )

    def _summarize(self, ctx: VersionContext, stable: VersionContext | None, window: Window) -> MissingSummary:
        seen_prefix = Signal.FEATURE_SEEN_PREFIX
        features = window.names("counter", seen_prefix) if self.features == "all" else self.features
        stable_window = None
        if self.reference == "stable" and stable is not None and stable.version != ctx.version:
            stable_window = stable.window(self.window)
        measured: list[FeatureMissing] = []
        lacking: list[tuple[str, str]] = []
        for feature in features:
            rate = self._rate(window, feature)
            if isinstance(rate, str):
                lacking.append((feature, rate))
                continue
            reference = self._reference(ctx, stable_window, feature)
            if isinstance(reference, str):
                lacking.append((feature, reference))
                continue
            measured.append(FeatureMissing(feature, rate[0], reference, rate[1]))
        measured.sort(key=lambda m: m.increase, reverse=True)
        return MissingSummary(tuple(measured), tuple(lacking), tuple(m.increase for m in reversed(measured)))

    def _rate(self, window: Window, feature: str) -> tuple[float, float] | str:
        """(missing rate, rows seen) or why not."""
        seen = window.delta(Signal.feature_seen(feature))
        if seen is None:
            return "not reported"
        if seen < self.min_evidence.samples:
            return f"{format_count(seen)} rows < {format_count(self.min_evidence.samples)} minimum"
        missing = window.delta(Signal.feature_missing(feature)) or 0.0
        return min(1.0, missing / seen), seen

    def _reference(self, ctx: VersionContext, stable_window: Window | None, feature: str) -> float | str:
        inline = self.reference_rates.get(feature)
        if inline is not None:
            return inline
        if self.reference == "zero":
            return 0.0
        if self.reference == "baseline":
            return ctx.baseline.numbers.get(BaselineKey.missing_rate(feature), 0.0)
        if stable_window is None or stable_window.coverage < self.min_evidence.coverage:
            return "no stable version samples to compare with"
        rate = self._rate(stable_window, feature)
        return f"stable: {rate}" if isinstance(rate, str) else rate[0]
