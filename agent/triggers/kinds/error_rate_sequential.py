"""error_rate_sequential: a sequential test that the version's error rate is above the threshold.

Decides as soon as the evidence is strong enough (see kinds/sequential.py) instead of waiting for a window to fill:
a severe fault is caught from its first few dozen requests, while healthy noise almost never adds up to the bound.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.domain.signals import Window
from agent.triggers.context import VersionContext
from agent.triggers.kinds.error_rate_counting import (
    DEFAULT_COUNT,
    CountedErrors,
    ExcludedCodes,
    count_errors,
    counting_problems,
)
from agent.triggers.kinds.sequential import SequentialRule, null_rates, window_counts
from agent.triggers.kinds.traffic import REQUESTS, TrafficSource
from agent.triggers.units import Ratio
from agent.triggers.verdict import Verdict


class ErrorRateSequentialRule(SequentialRule):
    kind: Literal["error_rate_sequential"]
    source: TrafficSource = "envoy"
    max_rate: Ratio = Field(default=0.05, gt=0, lt=1)  # H0: the error rate is at most this
    count: CountedErrors = DEFAULT_COUNT  # what counts as failed: see error_rate_counting
    exclude: ExcludedCodes = ()

    @property
    def threshold(self) -> float:
        return self.max_rate

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.clear_threshold is not None and self.clear_threshold <= 0:
            found.append(("clear_threshold", "must be > 0 (the test compares rates by their ratio)"))
        return [*found, *counting_problems(self.source, self.count, self.exclude)]

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        requests, key = REQUESTS[self.source], ("errors", self.source, self.count, self.exclude)

        def measure(window: Window) -> tuple[float, float] | None:
            total = window.delta(requests)
            if total is None:
                return None
            return total, min(total, count_errors(window, self.source, self.count, self.exclude).errors)

        counts = window_counts(ctx, self.window, key, measure)
        # While firing, the whole test moves to the clear threshold: clearing needs evidence of a rate below it.
        null = null_rates(self, self.limit(self.max_rate, firing), ctx, stable, key, measure)
        labels = [str(t).replace("_", " ") for t in self.count]
        failed = "failed as " + (f"{', '.join(labels[:-1])} or {labels[-1]}" if len(labels) > 1 else labels[0])
        return self.sequential_verdict(ctx, counts, null, "error rate", failed, firing)
