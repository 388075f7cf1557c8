"""A rollout stage's gates, judged on what the agent measures: the monitor's rule verdicts, both versions' signal
histories and the raw per-request samples of the access-log stream.

- `rule`: the rule's latest verdict on the candidate (ok -> pass, breach -> fail; insufficient evidence, or a rule
  that did not judge the candidate this tick -> insufficient).
- `relative`: the candidate's figure against stable's over the same window: worse by more than
  max(relative x stable, absolute) fails; either side under `min_requests` is insufficient.
- `judge`: agent/triggers/judge.py on the raw samples of both versions in the window.
The comparing gates count only what was measured since the stage was entered and warmed up (`stage_since` plus the
stage's `warmup`): their window is cut there, so a stage is judged on its own split in its steady state, and the
evidence of a breach that already sent the rollout back one stage does not fail the stage it went back to as well.
Nothing here moves traffic or writes anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.domain.signals import Signal, SignalHistory, Window
from agent.domain.stream_state import RecentEntry
from agent.engine.shadow_gates import ShadowSource, judge_shadow_gate
from agent.rollout.machine import GateOutcome, GateResult
from agent.rollout.plan import LOWER_IS_WORSE, SHADOW_SIGNALS, JudgeGate, RelativeGate, RuleGate, Stage
from agent.triggers.engine import RuleStatus
from agent.triggers.judge import Outcome, judge
from agent.triggers.verdict import VerdictStatus


class RawSamples(Protocol):
    """The access-log stream's ring of recent raw entries per version (monotonic time)."""

    def recent(self, version: str, since: float = -math.inf) -> Sequence[RecentEntry]: ...


@dataclass(frozen=True, slots=True)
class Measurements:
    now: float  # the monitor's clock (monotonic), the time base of histories and raw samples
    candidate: str
    stable: str
    statuses: Sequence[RuleStatus]  # the monitor's last tick
    histories: Mapping[str, SignalHistory]
    raw: RawSamples | None
    shadow: ShadowSource | None = None  # the shadow capture's join (mirrored requests answered by both versions)
    stage_since: float = -math.inf  # when the current stage was entered (the same clock as `now`)
    warmup: float = 0.0  # the comparing gates ignore the stage's first `warmup` seconds

    @property
    def compare_since(self) -> float:
        return self.stage_since + self.warmup

    def window_s(self, window: float) -> float:
        """The gate's window, cut at the stage's entry plus its warm-up."""
        return min(window, self.now - self.compare_since)

    def too_early(self, gate: str) -> GateResult | None:
        """INSUFFICIENT while the stage has just begun or is warming up, else None."""
        if self.now > self.compare_since:
            return None
        if self.warmup > 0:
            left = self.compare_since - self.now
            return GateResult(
                gate,
                GateOutcome.INSUFFICIENT,
                f"warming up: compares from {self.warmup:g}s into the stage ({left:.3g}s left)",
            )
        return GateResult(gate, GateOutcome.INSUFFICIENT, "the stage has just begun")


def judge_stage(stage: Stage, m: Measurements) -> tuple[GateResult, ...]:
    return tuple(judge_gate(gate, m) for gate in stage.gates)


def judge_gate(gate: RuleGate | RelativeGate | JudgeGate, m: Measurements) -> GateResult:
    if isinstance(gate, RuleGate):
        return _rule_gate(gate, m)
    if isinstance(gate, RelativeGate):
        return _relative_gate(gate, m)
    return _judge_gate(gate, m)


def _rule_gate(gate: RuleGate, m: Measurements) -> GateResult:
    for status in m.statuses:
        if status.rule == gate.rule and status.version == m.candidate:
            verdict = status.verdict
            outcome = {
                VerdictStatus.OK: GateOutcome.PASS,
                VerdictStatus.BREACH: GateOutcome.FAIL,
            }.get(verdict.status, GateOutcome.INSUFFICIENT)
            return GateResult(gate.name, outcome, verdict.reason, verdict.value, verdict.threshold)
    return GateResult(
        gate.name,
        GateOutcome.INSUFFICIENT,
        f"rule {gate.rule} has no verdict on {m.candidate} (not in the rule file, or not judging candidates)",
    )


def _figure(gate: RelativeGate, window: Window) -> tuple[float | None, float]:
    """(value, requests) of the gate's signal over the window."""
    requests = window.delta(Signal.ENVOY_RQ_TOTAL) or 0.0
    if gate.signal == "error_rate":
        errors = window.delta(Signal.ENVOY_RQ_5XX) or 0.0
        return (min(errors, requests) / requests if requests > 0 else None), requests
    if gate.signal in ("latency_p99_ms", "latency_p50_ms"):
        histogram = window.histogram(Signal.ENVOY_RQ_TIME_MS)
        q = 0.99 if gate.signal == "latency_p99_ms" else 0.5
        return (histogram.quantile(q) if histogram is not None else None), requests
    confidence = window.histogram(Signal.MODEL_CONFIDENCE)  # the model server's top-class confidence
    return (confidence.mean() if confidence is not None else None), requests


def _relative_gate(gate: RelativeGate, m: Measurements) -> GateResult:
    if gate.signal in SHADOW_SIGNALS:
        return judge_shadow_gate(gate, m.shadow, m.now)
    figures: dict[str, tuple[float | None, float]] = {}
    early = m.too_early(gate.name)
    if early is not None:
        return early
    seconds = m.window_s(gate.window)
    for version in (m.candidate, m.stable):
        history = m.histories.get(version)
        window = history.window_since(m.compare_since, gate.window, m.now) if history is not None else None
        if window is None:
            return GateResult(gate.name, GateOutcome.INSUFFICIENT, f"{version}: no samples in the window")
        figures[version] = _figure(gate, window)
    (c_value, c_requests), (s_value, s_requests) = figures[m.candidate], figures[m.stable]
    if c_requests < gate.min_requests or s_requests < gate.min_requests:
        return GateResult(
            gate.name,
            GateOutcome.INSUFFICIENT,
            f"{c_requests:,.0f} candidate and {s_requests:,.0f} stable requests, {gate.min_requests:,} needed on each",
        )
    if c_value is None or s_value is None:
        return GateResult(gate.name, GateOutcome.INSUFFICIENT, f"{gate.signal} not measured on both versions")
    margin = max(gate.relative * abs(s_value), gate.absolute)
    lower_is_worse = gate.signal in LOWER_IS_WORSE
    limit = s_value - margin if lower_is_worse else s_value + margin
    failed = c_value < limit if lower_is_worse else c_value > limit
    compare = ("<" if failed else ">=") if lower_is_worse else (">" if failed else "<=")
    return GateResult(
        gate.name,
        GateOutcome.FAIL if failed else GateOutcome.PASS,
        f"{gate.signal} candidate {c_value:.6g} {compare} limit {limit:.6g} (stable {s_value:.6g}, margin "
        f"{margin:.6g}) over {seconds:.3g}s",
        c_value,
        limit,
    )


def _values(entries: Sequence[RecentEntry], signal: str) -> list[float]:
    if signal == "latency_ms":
        return [e.latency_ms for e in entries if not math.isnan(e.latency_ms)]
    if signal == "error":
        return [1.0 if e.error else 0.0 for e in entries]
    return [e.confidence for e in entries if e.confidence is not None and not math.isnan(e.confidence)]


def _judge_gate(gate: JudgeGate, m: Measurements) -> GateResult:
    if m.raw is None:
        return GateResult(gate.name, GateOutcome.INSUFFICIENT, "no raw samples: the access-log stream is off")
    early = m.too_early(gate.name)
    if early is not None:
        return early
    since = m.now - m.window_s(gate.window)
    candidate = _values(m.raw.recent(m.candidate, since), gate.signal)
    stable = _values(m.raw.recent(m.stable, since), gate.signal)
    judgement = judge(
        candidate,
        stable,
        confidence=gate.confidence,
        min_points=gate.min_points,
        tolerance=gate.tolerance,
        min_shift=gate.min_shift,
        higher_is_worse=gate.signal not in LOWER_IS_WORSE,
        signal=gate.signal,
    )
    outcome = {
        Outcome.PASS: GateOutcome.PASS,
        Outcome.FAIL: GateOutcome.FAIL,
        Outcome.NOT_ENOUGH_DATA: GateOutcome.INSUFFICIENT,
    }[judgement.outcome]
    test = judgement.test
    return GateResult(
        gate.name,
        outcome,
        judgement.reason,
        test.p_value if test is not None else None,
        1.0 - gate.confidence,
    )
