"""golden: the golden inference (`probes.golden` in the agent's config) answered wrongly N times in a row.

Wrong answers served with HTTP 200 pass every error-rate rule; the golden check catches them. The health source
re-runs it every `probes.golden_interval_s` and keeps, per version, the number of consecutive failed checks of a
ready version (`health.golden_failing`; a pass resets it, and a version that is not ready is left to the readiness
and crash rules). The rule breaches when that streak reaches `consecutive`. A streak not reported within `window`
(no golden check configured, or the probes stopped) is insufficient evidence, never ok.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.domain.signals import Signal
from agent.triggers.context import VersionContext
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.units import PositiveDuration, format_duration
from agent.triggers.verdict import Verdict


class GoldenRule(RuleBase):
    kind: Literal["golden"]
    consecutive: int = Field(default=3, ge=1, le=10_000)  # failed checks in a row that breach
    window: PositiveDuration = 60.0  # how recent the last reported check must be
    min_evidence: Evidence = Evidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float:
        return float(self.consecutive)

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        during = format_duration(self.window)
        history = ctx.history
        streak = history.latest_gauge(Signal.HEALTH_GOLDEN_FAILING, self.window, ctx.now) if history else None
        if streak is None:
            return self.insufficient(
                ctx, "no golden check reported in the last {} (is probes.golden configured?)", (during,), unit="checks"
            )
        window = ctx.window(self.window)
        checks = (window.delta(Signal.HEALTH_GOLDEN_CHECKS) if window is not None else None) or 0.0
        limit = self.limit(self.consecutive, firing)
        breached = streak >= limit
        return self.judged(
            ctx,
            breached,
            "{:,.0f} consecutive failed golden check{} {} {:g}{} ({:,.0f} checks over {})",
            (
                streak,
                "" if streak == 1 else "s",
                ">=" if breached else "<",
                limit,
                self.limit_note(firing),
                checks,
                during,
            ),
            value=streak,
            threshold=limit,
            evidence=checks,
            unit="checks",
        )
