"""crash: counted failure events of the version (OOM kills, crashes, readiness lost, upstream connect failures).

Observed events are evidence on their own: they breach even when sampling was patchy. Only an "ok" needs the
window to be covered.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agent.domain.signals import Signal
from agent.triggers.context import VersionContext
from agent.triggers.rule import Evidence, RuleBase
from agent.triggers.units import PositiveDuration, format_duration
from agent.triggers.verdict import Verdict

DEFAULT_EVENTS = (
    Signal.HEALTH_OOM,
    Signal.HEALTH_CRASHES,
    Signal.HEALTH_READY_LOST,
    Signal.ENVOY_CX_CONNECT_FAIL,
)


class CrashRule(RuleBase):
    kind: Literal["crash"]
    window: PositiveDuration = 1800.0
    max_events: int = Field(default=0, ge=0)  # events allowed in the window; one more breaches
    events: Annotated[tuple[Annotated[str, Field(min_length=1)], ...], Field(min_length=1)] = DEFAULT_EVENTS
    min_evidence: Evidence = Evidence()

    @property
    def window_s(self) -> float:
        return self.window

    @property
    def threshold(self) -> float:
        return float(self.max_events)

    def _events(self, ctx: VersionContext) -> tuple[float, str] | None:
        """(events in the window, per-signal detail), or None when none of the event counters is reported."""
        window = ctx.window(self.window)
        if window is None:
            return None
        counts = {name: window.delta(name) for name in self.events}
        reported = {name: n for name, n in counts.items() if n is not None}
        if not reported:
            return None
        detail = ", ".join(f"{name}: {n:,.0f}" for name, n in reported.items() if n > 0)
        return sum(reported.values()), f" ({detail})" if detail else ""

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        during = format_duration(self.window)
        window = ctx.window(self.window)
        if window is None:
            return self.insufficient(ctx, "no samples in the last {}", (during,), unit="events")
        measured = ctx.cached(("events", self.window, self.events), lambda: self._events(ctx))
        if measured is None:
            return self.insufficient(ctx, "none of {} reported", (", ".join(self.events),), unit="events")
        events, detail = measured
        limit = self.limit(self.max_events, firing)
        breached = events > limit
        if not breached and window.coverage < self.min_evidence.coverage:
            return self.insufficient(
                ctx,
                "samples cover {:.1%} of {} < {:.1%} minimum",
                (window.coverage, during, self.min_evidence.coverage),
                evidence=events,
                unit="events",
            )
        return self.judged(
            ctx,
            breached,
            "{:,.0f} failure event{} {} {:g} allowed{} over {}{}",
            (
                events,
                "" if events == 1 else "s",
                self.comparison(breached),
                limit,
                self.limit_note(firing),
                during,
                detail,
            ),
            value=events,
            threshold=limit,
            evidence=events,
            unit="events",
        )
