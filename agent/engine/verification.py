"""Verification after a rollback: the target's live figures over a window, against its own baseline.

Passes when the error rate stays within max(2 x baseline, baseline + 1 point) (5 % without a baseline) and, with a
baseline p99, the p99 stays within 1.5 x it. Fewer than `min_requests` requests in the window: inconclusive
(None), never a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from agent.domain.signals import Baseline, Signal, SignalHistory
from agent.ports.rollback import VerificationResult


class BaselineVerifier:
    def __init__(
        self,
        histories: Mapping[str, SignalHistory],
        baselines: Callable[[], Mapping[str, Baseline]],
        *,
        min_requests: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._histories = histories
        self._baselines = baselines
        self._min_requests = min_requests
        self._clock = clock

    async def verify(self, version: str, window_s: float) -> VerificationResult:
        if window_s <= 0:
            return VerificationResult(None, "verification disabled (window 0)")
        start = self._clock()
        await asyncio.sleep(window_s)
        return self.judge(version, self._clock() - start)

    def judge(self, version: str, window_s: float) -> VerificationResult:
        history = self._histories.get(version)
        if history is None:
            return VerificationResult(None, f"no measurements of {version} in the window")
        requests = history.delta(Signal.ENVOY_RQ_TOTAL, window_s)
        errors = history.delta(Signal.ENVOY_RQ_5XX, window_s)
        if requests is None or errors is None or requests < self._min_requests:
            return VerificationResult(
                None, f"insufficient evidence: {int(requests or 0)} requests < {self._min_requests} in {window_s:.0f}s"
            )
        baseline = self._baselines().get(version)
        numbers = baseline.numbers if baseline else {}
        error_rate = errors / requests
        base_rate = numbers.get("error_rate")
        limit = max(2 * base_rate, base_rate + 0.01) if base_rate is not None else 0.05
        measured = {"requests": requests, "error_rate": error_rate, "error_rate_limit": limit}
        problems = []
        if error_rate > limit:
            problems.append(f"error rate {error_rate:.2%} > {limit:.2%}")
        latency = history.histogram_delta(Signal.ENVOY_RQ_TIME_MS, window_s)
        p99 = latency.quantile(0.99) if latency is not None else None
        base_p99 = numbers.get("latency_p99_ms")
        if p99 is not None:
            measured["latency_p99_ms"] = p99
            if base_p99 is not None and p99 > 1.5 * base_p99:
                problems.append(f"p99 {p99:.1f} ms > 1.5 x baseline {base_p99:.1f} ms")
        summary = f"{int(requests)} requests, error rate {error_rate:.2%} (limit {limit:.2%})" + (
            f", p99 {p99:.1f} ms" if p99 is not None else ""
        )
        if problems:
            return VerificationResult(False, "; ".join(problems) + f" over {window_s:.0f}s", measured)
        return VerificationResult(True, summary + f" over {window_s:.0f}s", measured)
