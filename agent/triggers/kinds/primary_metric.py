"""primary_metric: accuracy from labelled outcomes, below an SLO in each of N consecutive buckets (minutes).

Buckets roll with `now`. One bucket with enough labels at or above the SLO makes the rule ok; a bucket with too
few labels makes it inconclusive (the streak cannot be confirmed), never a breach.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from agent.domain.signals import Signal
from agent.triggers.context import VersionContext
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.units import PositiveDuration, Ratio, format_duration
from agent.triggers.verdict import Verdict


class LabelEvidence(Evidence):
    count_field = "labels"
    labels: int = Field(default=20, ge=1)  # labelled outcomes required in each bucket


@dataclass(frozen=True, slots=True)
class AccuracyBuckets:
    """Per-bucket accuracies of one version, shared by the rules with the same buckets and label minimum."""

    accuracies: tuple[float, ...]  # ascending, of the buckets with enough labels
    short: int  # buckets with too few labels (or before the history)
    labels: float  # labels in the buckets with enough of them
    correct: float

    @property
    def pooled(self) -> float:
        return self.correct / self.labels if self.labels else 0.0


class PrimaryMetricRule(RuleBase):
    kind: Literal["primary_metric"]
    min_accuracy: Ratio
    consecutive: int = Field(default=10, ge=1, le=1440)
    bucket: PositiveDuration = 60.0
    correct: str = Signal.MODEL_OUTCOMES_CORRECT
    incorrect: str = Signal.MODEL_OUTCOMES_INCORRECT
    min_evidence: LabelEvidence = LabelEvidence()

    @property
    def window_s(self) -> float:
        return self.consecutive * self.bucket

    @property
    def threshold(self) -> float:
        return self.min_accuracy

    def higher_is_worse(self) -> bool:
        return False

    def _buckets(self, ctx: VersionContext) -> AccuracyBuckets:
        history = ctx.history
        correct = history.bucket_deltas(self.correct, self.bucket, self.consecutive, ctx.now) if history else []
        incorrect = history.bucket_deltas(self.incorrect, self.bucket, self.consecutive, ctx.now) if history else []
        minimum = self.min_evidence.labels
        accuracies: list[float] = []
        short = self.consecutive - len(correct)
        total_correct = total_labels = 0.0
        for right, wrong in zip(correct, incorrect, strict=True):
            labels = (right or 0.0) + (wrong or 0.0)
            if right is None or wrong is None or labels < minimum:
                short += 1
                continue
            accuracies.append(right / labels)
            total_correct += right
            total_labels += labels
        return AccuracyBuckets(tuple(sorted(accuracies)), short, total_labels, total_correct)

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        window = self.covered_window(ctx, self.window_s, "labels")
        if isinstance(window, Verdict):
            return window
        key = ("accuracy", self.correct, self.incorrect, self.bucket, self.consecutive, self.min_evidence.labels)
        buckets = ctx.cached(key, lambda: self._buckets(ctx))
        limit = self.limit(self.min_accuracy, firing)
        bad = bisect_left(buckets.accuracies, limit)  # buckets below the limit
        good = len(buckets.accuracies) - bad
        n, bucket = self.consecutive, format_duration(self.bucket)
        if good:
            return self.judged(
                ctx,
                False,
                "accuracy >= {:.1%}{} in {} of the last {} buckets of {} (pooled {:.1%}, {:,.0f} labels)",
                (limit, self.limit_note(firing), good, n, bucket, buckets.pooled, buckets.labels),
                value=buckets.pooled,
                threshold=limit,
                evidence=buckets.labels,
                unit="labels",
            )
        if buckets.short:
            return self.insufficient(
                ctx,
                "{} of the last {} buckets of {} have < {:,} labels ({} below {:.1%})",
                (buckets.short, n, bucket, self.min_evidence.labels, bad, limit),
                evidence=buckets.labels,
                unit="labels",
                value=buckets.pooled if buckets.labels else None,
                threshold=limit,
            )
        return self.judged(
            ctx,
            True,
            "accuracy {:.1%} < {:.1%}{} in each of the last {} buckets of {} ({:,.0f} labels)",
            (buckets.pooled, limit, self.limit_note(firing), n, bucket, buckets.labels),
            value=buckets.pooled,
            threshold=limit,
            evidence=buckets.labels,
            unit="labels",
        )
