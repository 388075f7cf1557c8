"""near_oom: the version's resident memory stays close to its memory limit (`model.memory_ratio`).

Judged on the lowest reading in the window, so one breach means memory stayed above the threshold for the whole
window. A version without a configured limit (no ratio) is never judged.
"""

from __future__ import annotations

from typing import Literal

from agent.domain.signals import Signal
from agent.triggers.context import VersionContext
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.units import PositiveDuration, Ratio, format_duration
from agent.triggers.verdict import Verdict


class NearOomRule(RuleBase):
    kind: Literal["near_oom"]
    window: PositiveDuration = 60.0
    max_ratio: Ratio = 0.9  # resident memory / the limit; the lowest reading in the window above it breaches
    min_evidence: Evidence = Evidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float:
        return self.max_ratio

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        during = format_duration(self.window)
        window = ctx.window(self.window)
        if window is None or ctx.history is None:
            return self.insufficient(ctx, "no samples in the last {}", (during,), unit="seconds")
        _, observed = window.gauge_mean(Signal.MODEL_MEMORY_RATIO)
        coverage = observed / self.window
        readings = [v for _, v in ctx.history.gauge_series(Signal.MODEL_MEMORY_RATIO, self.window, ctx.now)]
        if not readings or coverage < self.min_evidence.coverage:
            return self.insufficient(
                ctx,
                "{} observed for {:.1%} of {} < {:.1%} minimum",
                (Signal.MODEL_MEMORY_RATIO, coverage, during, self.min_evidence.coverage),
                evidence=observed,
                unit="seconds",
            )
        lowest = min(readings)
        limit = self.limit(self.max_ratio, firing)
        breached = lowest > limit
        return self.judged(
            ctx,
            breached,
            "memory at least {:.1%} of the limit over {} {} {:.1%}{} (latest {:.1%})",
            (lowest, during, self.comparison(breached), limit, self.limit_note(firing), readings[-1]),
            value=lowest,
            threshold=limit,
            evidence=observed,
            unit="seconds",
        )
