"""The comparing gates judge only what was measured since the stage was entered: the evidence of a breach that
already sent the rollout back one stage must not fail the stage it went back to as well."""

from __future__ import annotations

import math
from collections.abc import Sequence

from agent.domain.stream_state import RecentEntry
from agent.engine.rollout_gates import Measurements, judge_gate
from agent.rollout.machine import GateOutcome
from agent.rollout.plan import JudgeGate

GATE = JudgeGate(kind="judge", signal="error", confidence=0.95, min_points=20, window=60.0)


class Raw:
    """50 failing requests of v2 at t 0-49 (the previous stage), then 50 good ones of each version at t 50-99."""

    def recent(self, version: str, since: float = -math.inf) -> Sequence[RecentEntry]:
        old = [RecentEntry(float(t), 10.0, version == "v2", None) for t in range(50)]
        new = [RecentEntry(float(t), 10.0, False, None) for t in range(50, 100)]
        return [e for e in old + new if e.ts >= since]


def measured(stage_since: float, warmup: float = 0.0) -> Measurements:
    return Measurements(100.0, "v2", "v1", [], {}, Raw(), stage_since=stage_since, warmup=warmup)


def test_samples_from_before_the_stage_do_not_count() -> None:
    assert judge_gate(GATE, measured(-math.inf)).outcome is GateOutcome.FAIL  # the window reaches the old errors
    assert judge_gate(GATE, measured(50.0)).outcome is GateOutcome.PASS


def test_a_stage_just_entered_has_not_enough_evidence_yet() -> None:
    result = judge_gate(GATE, measured(95.0))
    assert result.outcome is GateOutcome.INSUFFICIENT, result


def test_the_stage_warmup_is_skipped_by_the_comparing_gates() -> None:
    # The stage began at 0 with the failing requests as its cold start; a 50 s warm-up leaves them out.
    assert judge_gate(GATE, measured(0.0)).outcome is GateOutcome.FAIL
    assert judge_gate(GATE, measured(0.0, warmup=50.0)).outcome is GateOutcome.PASS
    early = judge_gate(GATE, measured(60.0, warmup=50.0))
    assert early.outcome is GateOutcome.INSUFFICIENT and "warming up" in early.reason and "10s left" in early.reason
