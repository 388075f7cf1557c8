"""The rollout state machine: plain data in, plain data out, no clock and no I/O.

The engine calls `tick` about once a second with the gates' results and whether the candidate is held, and applies
the returned Transition (weights, mirror, registry marks, audit record). Time in a stage is accumulated from the
ticks (only while running), so a restart resumes the same stage with the time already spent in it: the state is
persisted after every transition and every `checkpoint_s` of accumulated time.

Rules:
- Advancing needs the stage's minimum duration and every gate passing. A gate without enough evidence extends the
  stage: it never passes or fails it.
- Any failing gate is a breach: back one stage (from the first stage, or with `on_breach: stable`, or after
  `max_breaches`, straight to stable: the rollout ends rolled back and the candidate is marked failed).
- A hold freezes advancement (time still counts, a breach still goes back: going back never raises the held
  version's weight). Pause stops the clock and every automatic move; resume starts it again.
- `promote` skips to the next stage now (the last: completes), `abort` goes to stable and quarantines the candidate;
  both carry the operator's reason.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from agent.rollout.plan import RolloutPlan, Stage

CHECKPOINT_S: Final = 10.0


class GateOutcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INSUFFICIENT = "insufficient_evidence"


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str  # e.g. "rule:error-rate", "judge:latency_ms"
    outcome: GateOutcome
    reason: str
    value: float | None = None
    threshold: float | None = None


class Status(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"  # the candidate is the new verified-stable
    ROLLED_BACK = "rolled_back"  # a breach sent everything back to stable; the candidate is failed
    ABORTED = "aborted"  # an operator sent everything back to stable; the candidate is quarantined

    @property
    def finished(self) -> bool:
        return self in (Status.COMPLETED, Status.ROLLED_BACK, Status.ABORTED)


class Move(enum.StrEnum):
    STARTED = "started"
    ADVANCED = "advanced"
    WENT_BACK = "went_back"
    PROMOTED = "promoted"  # an operator skipped to the next stage
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    PAUSED = "paused"
    RESUMED = "resumed"


@dataclass(frozen=True, slots=True)
class RolloutState:
    candidate: str
    stable: str
    stage: int
    status: Status = Status.RUNNING
    in_stage_s: float = 0.0
    breaches: int = 0
    started_at: float = 0.0  # wall time, for records only
    stage_entered_at: float = 0.0
    # After completion: the previous stable stays warm as the rollback target until then (wall time; plan.standby).
    standby_until: float = 0.0
    standby_ended: bool = False


@dataclass(frozen=True, slots=True)
class Split:
    """What the data plane should do: candidate's share of live traffic (%) and of mirrored requests."""

    candidate_weight: int
    mirror: float

    def weights(self, candidate: str, stable: str) -> dict[str, int]:
        return {candidate: self.candidate_weight, stable: 100 - self.candidate_weight}


@dataclass(frozen=True, slots=True)
class Transition:
    move: Move
    from_stage: int
    to_stage: int
    split: Split | None  # None: the data plane stays as it is
    reason: str
    evidence: tuple[GateResult, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Progress:
    """A tick that changed nothing visible: why the stage goes on (for status)."""

    waiting_for: str
    gates: tuple[GateResult, ...]


def split_of(stage: Stage) -> Split:
    return Split(stage.weight, stage.mirror)


STABLE_ONLY: Final = Split(0, 0.0)


class RolloutMachine:
    def __init__(self, plan: RolloutPlan) -> None:
        self.plan = plan

    def stage(self, state: RolloutState) -> Stage:
        return self.plan.stages[state.stage]

    def start(self, candidate: str, stable: str, now: float) -> tuple[RolloutState, Transition]:
        if candidate == stable:
            raise ValueError(f"the candidate {candidate} is the stable version")
        state = RolloutState(candidate, stable, 0, started_at=now, stage_entered_at=now)
        first = self.plan.stages[0]
        return state, Transition(Move.STARTED, -1, 0, split_of(first), f"rollout of {candidate} started: {first.name}")

    def tick(
        self, state: RolloutState, elapsed_s: float, now: float, gates: Sequence[GateResult], held: bool
    ) -> tuple[RolloutState, Transition | Progress]:
        """`elapsed_s`: time since the previous tick (counted only while running)."""
        if state.status is not Status.RUNNING:
            return state, Progress(f"rollout {state.status.value}", tuple(gates))
        state = replace(state, in_stage_s=state.in_stage_s + max(0.0, elapsed_s))
        stage = self.stage(state)
        failed = tuple(g for g in gates if g.outcome is GateOutcome.FAIL)
        if failed:
            return self._breach(state, now, failed, tuple(gates))
        if held:
            return state, Progress("a hold on the candidate freezes advancement", tuple(gates))
        if state.in_stage_s < stage.min_duration:
            left = stage.min_duration - state.in_stage_s
            return state, Progress(f"minimum duration: {left:.0f}s left in {stage.name}", tuple(gates))
        waiting = [g for g in gates if g.outcome is not GateOutcome.PASS]
        if waiting:
            return state, Progress(
                "not enough evidence yet: " + ", ".join(f"{g.gate} ({g.reason})" for g in waiting), tuple(gates)
            )
        return self._advance(state, now, Move.ADVANCED, f"every gate of {stage.name} passed", tuple(gates))

    def breach(self, state: RolloutState, now: float, failed: Sequence[GateResult]) -> tuple[RolloutState, Transition]:
        """A breach reported outside the gates (a rule or an alert that would roll the candidate back): the same
        as a failing gate. Applies while paused too: going back is always allowed."""
        if state.status.finished:
            raise RolloutStateError(f"the rollout of {state.candidate} is {state.status.value}")
        running = replace(state, status=Status.RUNNING) if state.status is Status.PAUSED else state
        moved, transition = self._breach(running, now, tuple(failed), tuple(failed))
        if state.status is Status.PAUSED and not moved.status.finished:
            moved = replace(moved, status=Status.PAUSED)
        return moved, transition

    def _advance(
        self, state: RolloutState, now: float, move: Move, reason: str, evidence: tuple[GateResult, ...]
    ) -> tuple[RolloutState, Transition]:
        if state.stage + 1 >= len(self.plan.stages):
            done = replace(state, status=Status.COMPLETED, standby_until=now + self.plan.standby)
            return done, Transition(
                Move.COMPLETED,
                state.stage,
                state.stage,
                None,
                f"{reason}; {state.candidate} is verified-stable",
                evidence,
            )
        nxt = state.stage + 1
        stage = self.plan.stages[nxt]
        moved = replace(state, stage=nxt, in_stage_s=0.0, stage_entered_at=now)
        return moved, Transition(move, state.stage, nxt, split_of(stage), f"{reason}; now {stage.name}", evidence)

    def _breach(
        self, state: RolloutState, now: float, failed: tuple[GateResult, ...], evidence: tuple[GateResult, ...]
    ) -> tuple[RolloutState, Transition]:
        breaches = state.breaches + 1
        what = "; ".join(f"{g.gate}: {g.reason}" for g in failed)
        stage = self.stage(state)
        to_stable = self.plan.on_breach == "stable" or state.stage == 0 or breaches >= self.plan.max_breaches
        if to_stable:
            why = (
                "on_breach: stable"
                if self.plan.on_breach == "stable"
                else ("breach in the first stage" if state.stage == 0 else f"{breaches} breaches")
            )
            ended = replace(state, status=Status.ROLLED_BACK, breaches=breaches, stage_entered_at=now)
            return ended, Transition(
                Move.ROLLED_BACK,
                state.stage,
                -1,
                STABLE_ONLY,
                f"breach in {stage.name} ({what}); back to stable {state.stable} ({why})",
                evidence,
            )
        back = state.stage - 1
        previous = self.plan.stages[back]
        moved = replace(state, stage=back, in_stage_s=0.0, breaches=breaches, stage_entered_at=now)
        return moved, Transition(
            Move.WENT_BACK,
            state.stage,
            back,
            split_of(previous),
            f"breach in {stage.name} ({what}); back to {previous.name} (breach {breaches} of {self.plan.max_breaches})",
            evidence,
        )

    def pause(self, state: RolloutState, reason: str) -> tuple[RolloutState, Transition]:
        self._require(state, Status.RUNNING, "pause")
        return replace(state, status=Status.PAUSED), Transition(
            Move.PAUSED, state.stage, state.stage, None, f"paused: {reason}"
        )

    def resume(self, state: RolloutState, reason: str) -> tuple[RolloutState, Transition]:
        self._require(state, Status.PAUSED, "resume")
        return replace(state, status=Status.RUNNING), Transition(
            Move.RESUMED, state.stage, state.stage, None, f"resumed: {reason}"
        )

    def promote(self, state: RolloutState, now: float, reason: str, held: bool) -> tuple[RolloutState, Transition]:
        if state.status.finished:
            raise RolloutStateError(f"the rollout of {state.candidate} is {state.status.value}: nothing to promote")
        if held:
            raise RolloutStateError(f"{state.candidate} is held: no weight increase until the hold ends")
        return self._advance(state, now, Move.PROMOTED, f"promoted by an operator: {reason}", ())

    def abort(self, state: RolloutState, now: float, reason: str) -> tuple[RolloutState, Transition]:
        if state.status.finished:
            raise RolloutStateError(f"the rollout of {state.candidate} is {state.status.value}: nothing to abort")
        ended = replace(state, status=Status.ABORTED, stage_entered_at=now)
        return ended, Transition(
            Move.ABORTED, state.stage, -1, STABLE_ONLY, f"aborted by an operator: {reason}; back to {state.stable}"
        )

    @staticmethod
    def _require(state: RolloutState, status: Status, action: str) -> None:
        if state.status is not status:
            raise RolloutStateError(f"cannot {action}: the rollout of {state.candidate} is {state.status.value}")


class RolloutStateError(ValueError):
    """An operator action that does not apply to the rollout's current state (a 409 at the control API)."""
