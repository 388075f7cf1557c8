"""A shadow stage's comparison gates: relative gates on `agreement_rate` or `abs_error_mean` (plan.SHADOW_SIGNALS),
judged on the candidate's and stable's answers to the same mirrored requests (agent/domain/shadow.py).

Stable's own figure is exact: it agrees with itself (1) with no error (0). So `agreement_rate` fails below
1 - max(relative, absolute), and `abs_error_mean` fails above `absolute`. Fewer than `min_requests` requests that
both answered in the window is not enough evidence (it extends the stage, it never passes or fails it).
"""

from __future__ import annotations

from typing import Protocol

from agent.domain.shadow import ShadowStats, Task
from agent.rollout.machine import GateOutcome, GateResult
from agent.rollout.plan import RelativeGate


class ShadowSource(Protocol):
    def stats(self, since: float = ..., task: Task = ...) -> ShadowStats: ...


def judge_shadow_gate(gate: RelativeGate, source: ShadowSource | None, now: float) -> GateResult:
    """`now` is on the clock the capture stamps pairs with (monotonic)."""
    if source is None:
        return GateResult(gate.name, GateOutcome.INSUFFICIENT, "no shadow capture: shadow settings are off")
    task: Task = "classification" if gate.signal == "agreement_rate" else "regression"
    stats = source.stats(since=now - gate.window, task=task)
    if stats.pairs < gate.min_requests:
        return GateResult(
            gate.name,
            GateOutcome.INSUFFICIENT,
            f"{stats.pairs:,} mirrored requests answered by both versions in {gate.window:g}s, "
            f"{gate.min_requests:,} needed",
        )
    if gate.signal == "agreement_rate":
        value, limit = stats.agreement_rate, 1.0 - max(gate.relative, gate.absolute)
        if value is None:
            return GateResult(gate.name, GateOutcome.INSUFFICIENT, "no rows compared")
        failed, compare = value < limit, "<" if value < limit else ">="
    else:
        value, limit = stats.abs_error_mean, gate.absolute
        if value is None:
            return GateResult(
                gate.name, GateOutcome.FAIL, f"the candidate answered none of {stats.pairs:,} mirrored requests"
            )
        failed, compare = value > limit, ">" if value > limit else "<="
    return GateResult(
        gate.name,
        GateOutcome.FAIL if failed else GateOutcome.PASS,
        f"{gate.signal} {value:.6g} {compare} limit {limit:.6g} over {stats.rows:,} rows of {stats.pairs:,} "
        f"mirrored requests ({stats.shadow_failures:,} failed on the candidate) in {gate.window:g}s",
        value,
        limit,
    )
