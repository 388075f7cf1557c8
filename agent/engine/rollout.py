"""The rollout driver: runs agent/rollout/machine.py against the real agent.

About once a second it judges the current stage's gates (agent/engine/rollout_gates.py) and ticks the machine;
every move it returns is carried out like any other traffic change, on record before it takes effect:

1. `RolloutChanged(phase=intended)` with the new rollout state, in one transaction (record_setting);
2. the split through the TrafficController (its own write-ahead intent, Envoy's ACK, its outcome record);
3. `RolloutChanged(phase=applied)` naming the intended record — or `failed` with the error, the rollout state put
   back as it was before the move (nothing moved, or the traffic controller restored the previous split).

A kill between 1 and 3 leaves the saved state on the new stage: the next start (`restore`) applies that stage's
split again and writes the missing outcome. Time in a stage is saved every CHECKPOINT_S, so a restart resumes the
stage with the time already spent in it (at most CHECKPOINT_S is lost, never gained).

Breaches that the agent's rules or alerts raise against the candidate while a rollout runs come here through
Admission (`on_breach`): the rollout goes back one stage (or to stable) instead of the whole rollback procedure. An
operator's `rollback` is never routed here: it is a rollback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Final, Protocol

from agent.engine.decisions import Decision, DecisionOutcome, TriggerEvent, actor_of
from agent.engine.rollout_gates import Measurements, judge_stage
from agent.engine.traffic import TrafficChangeError, TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.store import StateStore, StoreUnavailableError
from agent.rollout.machine import (
    CHECKPOINT_S,
    GateOutcome,
    GateResult,
    Move,
    Progress,
    RolloutMachine,
    RolloutState,
    RolloutStateError,
    Status,
    Transition,
)
from agent.rollout.plan import SHADOW_SIGNALS, RelativeGate, RolloutPlan, RuleGate, parse_plan, rule_gates

log = logging.getLogger(__name__)

ROLLOUT_KEY: Final = "rollout"
STABLE_KEY: Final = "stable"  # the stable version a completed rollout promoted (overrides the config's)
BREACH_GRACE_S: Final = 5.0  # a breach report this soon after going back is the same episode


class RolloutError(Exception):
    """An operator's rollout action that cannot be carried out. Codes as TrafficChangeError's: invalid_argument
    (400), refused / conflict (409), unavailable (503)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RegistryMarks(Protocol):
    """What a rollout leaves in the version registry."""

    async def mark_stable(self, candidate: str, previous: str, evidence: Sequence[GateResult], actor: str) -> None: ...

    async def mark_failed(self, version: str, reason: str, actor: str) -> str: ...

    async def mark_quarantined(self, version: str, reason: str, actor: str) -> None: ...


class MirrorControl(Protocol):
    async def set_mirror(self, version: str, fraction: float, *, reason: str, actor: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Saved:
    """The persisted rollout: the plan document it runs and the machine's state."""

    plan_text: str
    plan_digest: str
    state: RolloutState

    def to_json(self) -> str:
        state = asdict(self.state)
        state["status"] = self.state.status.value
        return json.dumps({"plan": self.plan_text, "digest": self.plan_digest, "state": state}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Saved:
        data = json.loads(text)
        state = dict(data["state"])
        state["status"] = Status(state["status"])
        return cls(data["plan"], data["digest"], RolloutState(**state))


@dataclass(frozen=True, slots=True)
class RolloutView:
    """What `rollout status` shows."""

    saved: Saved | None
    plan: RolloutPlan | None
    progress: Progress | None
    last_move: str
    stable: str


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def evidence_pb(gates: Sequence[GateResult]) -> list[audit_pb2.GateEvidence]:
    found = []
    for gate in gates:
        item = audit_pb2.GateEvidence(gate=gate.gate, outcome=gate.outcome.value, reason=gate.reason)
        if gate.value is not None:
            item.value = gate.value
        if gate.threshold is not None:
            item.threshold = gate.threshold
        found.append(item)
    return found


class RolloutDriver:
    def __init__(
        self,
        *,
        traffic: TrafficController,
        store: StateStore,
        marks: RegistryMarks,
        holds: Callable[[str], Sequence[str]],
        measurements: Callable[[str, str], Measurements | None],
        mirror: MirrorControl | None = None,
        interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rule_names: Callable[[], set[str]] | None = None,
        pins: Callable[[], Mapping[str, str]] = dict,
        shadow_capture: bool = False,
    ) -> None:
        self._traffic = traffic
        self._store = store
        self._marks = marks
        self.holds = holds
        self._measurements = measurements
        self._mirror = mirror
        self.interval_s = interval_s
        self._mono = monotonic
        self._wall = wall_clock
        self._rule_names = rule_names
        self._pins = pins
        self._shadow_capture = shadow_capture
        self._lock = asyncio.Lock()
        self.saved: Saved | None = None
        self.machine: RolloutMachine | None = None
        self.progress: Progress | None = None
        self.last_move = ""
        self._last_move_kind: Move | None = None
        self._entered_mono = 0.0  # monotonic time the current stage was entered (this process)
        self._last_tick = 0.0
        self._last_checkpoint = 0.0
        self._resume: Transition | None = None  # a restart's stage to push once Envoy is connected
        self._dangling: tuple[audit_pb2.RolloutChanged, int] | None = None  # its move's record without outcome

    # -- queries --------------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.saved is not None and not self.saved.state.status.finished

    def candidate(self) -> str | None:
        return self.saved.state.candidate if self.running and self.saved is not None else None

    def view(self) -> RolloutView:
        return RolloutView(
            self.saved, self.machine.plan if self.machine else None, self.progress, self.last_move, self._traffic.stable
        )

    # -- start-up -------------------------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Load the persisted rollout; a running one resumes its stage (its split applied again if the last move
        was interrupted) with the time already spent in it."""
        text = await self._store.get_setting(ROLLOUT_KEY)
        if not text:
            return
        saved = Saved.from_json(text)
        last, last_seq = await self._check_against_trail(saved)
        self.saved = saved
        self.machine = RolloutMachine(parse_plan(saved.plan_text, "the saved rollout plan"))
        now = self._mono()
        self._entered_mono = now - saved.state.in_stage_s
        self._last_tick = self._last_checkpoint = now
        if saved.state.status.finished:
            return
        stage = self.machine.stage(saved.state)
        split_missing = self._traffic.desired.weight(saved.state.candidate) != stage.weight
        if split_missing or stage.mirror > 0:
            # Pushed once Envoy is connected (`run`): a split not in force (the agent stopped between the move's
            # record and its traffic change), or the stage's mirror share (kept in memory only).
            log.warning(
                "rollout of %s resumes %s: its split (%d %%, mirror %.0f %%) is applied again once Envoy is connected",
                saved.state.candidate,
                stage.name,
                stage.weight,
                stage.mirror * 100,
            )
            self._resume = Transition(
                Move.ADVANCED, saved.state.stage, saved.state.stage, None, f"resumed after a restart in {stage.name}"
            )
        if last.phase == "intended":
            if split_missing:
                self._dangling = (last, last_seq)  # closed once the split is in force again
            else:
                await self._close_interrupted(last, last_seq)
        log.info(
            "rollout of %s resumed in %s (%.0fs spent, %s)",
            saved.state.candidate,
            stage.name,
            saved.state.in_stage_s,
            saved.state.status.value,
        )

    async def _standby(self, saved: Saved, now: float, ended_by: str = "") -> Progress | None:
        """A completed rollout's previous stable is the warm rollback target until `standby_until`; when that passes
        (or a new rollout replaces this one: `ended_by`), a `standby_ended` record says it need not be kept warm."""
        state = saved.state
        if state.status is not Status.COMPLETED or state.standby_ended or not state.standby_until:
            return None
        until = datetime.fromtimestamp(state.standby_until, UTC).isoformat(timespec="seconds")
        if now < state.standby_until and not ended_by:
            return Progress(f"{state.stable} stays warm as the rollback target until {until}", ())
        ended = Saved(saved.plan_text, saved.plan_digest, replace(state, standby_ended=True))
        why = ended_by or f"its standby after {state.candidate}'s promotion ended at {until}"
        record = audit_pb2.RolloutChanged(
            candidate=state.candidate,
            stable=state.candidate,
            move="standby_ended",
            phase="recorded",
            from_stage=state.stage,
            to_stage=state.stage,
            candidate_weight=100,
            reason=f"{state.stable} no longer needs to be kept warm: {why}. It stays verified; a rollback to it "
            "checks that it is warm first",
            plan_digest=saved.plan_digest,
        )
        await self._store.record_setting(ROLLOUT_KEY, ended.to_json(), record, "agent:rollout")
        self.saved = ended
        log.info("rollout of %s: %s's standby ended (%s)", state.candidate, state.stable, why)
        return None

    async def _close_interrupted(self, last: audit_pb2.RolloutChanged, last_seq: int) -> None:
        """The agent stopped between a move's record and its outcome, and the move's split is in force: record that
        it took effect."""
        outcome = audit_pb2.RolloutChanged()
        outcome.CopyFrom(last)
        outcome.phase = "applied"
        outcome.intended_seq = last_seq
        outcome.reason = f"{last.reason} (outcome recorded at start-up: the agent stopped before recording it)"
        await self._store.append(outcome, "agent:restart")

    async def _apply_resume(self) -> None:
        """Push the split and mirror of the stage a restart resumed (retried each tick until Envoy ACKs)."""
        saved, transition = self.saved, self._resume
        if saved is None or transition is None or self.machine is None or saved.state.status.finished:
            self._resume = None
            return
        stage = self.machine.stage(saved.state)
        # previous=saved: a failed push keeps the rollout where it is (and is retried), never drops it.
        await self._apply_split(saved, transition, stage.weight, stage.mirror, actor="agent:restart", previous=saved)
        self._resume = None
        if self._dangling is not None:
            last, last_seq = self._dangling
            self._dangling = None
            await self._close_interrupted(last, last_seq)

    async def _check_against_trail(self, saved: Saved) -> tuple[audit_pb2.RolloutChanged, int]:
        """The saved stage must be the one the trail's last rollout record left (checkpoints carry no record, so a
        hand-edited stage would otherwise skip stages unseen)."""
        last: audit_pb2.RolloutChanged | None = None
        last_seq = seq = 0
        while True:
            page = await self._store.records(since_seq=seq, limit=1000)
            if not page:
                break
            for record in page:
                if record.WhichOneof("event") == "rollout_changed" and record.rollout_changed.move != "stable_changed":
                    last, last_seq = record.rollout_changed, record.seq
            seq = page[-1].seq
        if last is None:
            raise RolloutError("refused", "a saved rollout exists but the audit trail has no rollout record")
        expected = last.from_stage if last.phase == "failed" else last.to_stage
        if saved.state.status.finished:
            return last, last_seq
        if last.candidate != saved.state.candidate or expected != saved.state.stage:
            raise RolloutError(
                "refused",
                f"the saved rollout ({saved.state.candidate}, stage {saved.state.stage}) does not match the audit "
                f"trail's last rollout record ({last.candidate}, stage {expected}): the state was edited or lost",
            )
        return last, last_seq

    # -- operator actions -----------------------------------------------------------------------------------------

    async def start(self, candidate: str, plan_text: str, *, reason: str, actor: str, source: str) -> Transition:
        try:
            plan = parse_plan(plan_text, source)
        except Exception as exc:  # RuleFileError: the plan's own errors, with file and line
            raise RolloutError("invalid_argument", str(exc)) from None
        async with self._lock:
            if self.running and self.saved is not None:
                raise RolloutError(
                    "conflict", f"a rollout of {self.saved.state.candidate} is {self.saved.state.status.value}"
                )
            stable = self._traffic.stable
            if candidate not in self._traffic.versions:
                raise RolloutError(
                    "invalid_argument", f"unknown version {candidate!r}; this model has {self._traffic.versions}"
                )
            if candidate == stable:
                raise RolloutError("invalid_argument", f"{candidate} is the stable version")
            if any(s.mirror > 0 for s in plan.stages) and self._mirror is None:
                raise RolloutError(
                    "invalid_argument",
                    "the plan has shadow (mirror) stages, and this agent cannot mirror requests yet; use weighted "
                    "stages",
                )
            if self._rule_names is not None:
                missing = sorted(rule_gates(plan) - self._rule_names())
                if missing:
                    raise RolloutError(
                        "invalid_argument",
                        f"{source}: gates name rules the agent's rule file does not have: {missing}; a gate on a rule "
                        "that never judges would hold the stage forever",
                    )
            compared = sorted(
                g.name
                for stage in plan.stages
                for g in stage.gates
                if isinstance(g, RelativeGate) and g.signal in SHADOW_SIGNALS
            )
            if compared and not self._shadow_capture:
                raise RolloutError(
                    "invalid_argument",
                    f"{source}: gates {compared} compare the shadow answers, and rollout.shadow.capture is off",
                )
            blocked = self.holds(candidate)
            if blocked:
                raise RolloutError("refused", f"{candidate} may not receive traffic: {'; '.join(blocked)}")
            if self.saved is not None:
                await self._standby(self.saved, self._wall(), ended_by=f"a rollout of {candidate} started")
            machine = RolloutMachine(plan)
            state, transition = machine.start(candidate, stable, self._wall())
            saved = Saved(plan_text, digest(plan_text), state)
            self.machine = machine
            previous = self.saved
            self.saved = saved
            try:
                await self._carry_out(saved, previous, transition, f"{transition.reason}: {reason}", actor)
            except RolloutError:
                self.saved = previous
                raise
            return transition

    async def act(self, action: str, *, reason: str, actor: str) -> Transition:
        """pause | resume | promote | abort."""
        async with self._lock:
            saved, machine = self.saved, self.machine
            if saved is None or machine is None:
                raise RolloutError("conflict", "no rollout has been started")
            try:
                if action == "pause":
                    state, transition = machine.pause(saved.state, reason)
                elif action == "resume":
                    state, transition = machine.resume(saved.state, reason)
                elif action == "promote":
                    held = self.holds(saved.state.candidate)
                    state, transition = machine.promote(saved.state, self._wall(), reason, held=bool(held))
                elif action == "abort":
                    state, transition = machine.abort(saved.state, self._wall(), reason)
                else:
                    raise RolloutError("invalid_argument", f"unknown rollout action {action!r}")
            except RolloutStateError as exc:
                raise RolloutError("conflict", str(exc)) from None
            await self._carry_out(Saved(saved.plan_text, saved.plan_digest, state), saved, transition, None, actor)
            return transition

    # -- automatic ------------------------------------------------------------------------------------------------

    async def on_breach(self, event: TriggerEvent, failing: str) -> Decision | None:
        """Admission's hook: a rule or alert would roll back `failing`. During a rollout of it, the rollout goes
        back instead; None: not ours (no rollout of that version)."""
        async with self._lock:
            saved, machine = self.saved, self.machine
            if saved is None or machine is None or not self.running or saved.state.candidate != failing:
                return None
            since = self._mono() - self._entered_mono
            # Only a breach's own move makes the next report the same episode: a fault that appears just after an
            # advance (more traffic on the candidate) is a new breach.
            if since < BREACH_GRACE_S and self._last_move_kind is Move.WENT_BACK:
                return Decision(
                    DecisionOutcome.RECORDED,
                    f"rollout of {failing} already moved {since:.1f}s ago ({self.last_move}); {event.summary}",
                )
            failed = GateResult(f"trigger:{actor_of(event)}", GateOutcome.FAIL, event.summary)
            state, transition = machine.breach(saved.state, self._wall(), [failed])
            await self._carry_out(
                Saved(saved.plan_text, saved.plan_digest, state), saved, transition, None, actor_of(event)
            )
            target = saved.state.stable if transition.to_stage < 0 else ""
            return Decision(
                DecisionOutcome.ROLLED_BACK if transition.to_stage < 0 else DecisionOutcome.RECORDED,
                transition.reason,
                target=target,
            )

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    await self.tick()
                except (StoreUnavailableError, RolloutError) as exc:
                    log.error("rollout tick could not be recorded: %s (retried next tick)", exc)
        finally:
            # A stop (SIGTERM) saves the time spent in the stage up to the last tick; only a kill loses any of it.
            if self.running and self.saved is not None:
                await self._checkpoint(self.saved)

    async def tick(self) -> Transition | Progress | None:
        async with self._lock:
            saved, machine = self.saved, self.machine
            if saved is None or machine is None:
                return None
            if saved.state.status.finished:
                self.progress = await self._standby(saved, self._wall())
                return None
            if self._resume is not None:
                if not self._traffic.ready():
                    self.progress = Progress("waiting for Envoy to connect to resume the stage", ())
                    return self.progress
                await self._apply_resume()
            now = self._mono()
            elapsed = now - self._last_tick if self._last_tick else 0.0
            self._last_tick = now
            state = saved.state
            gates = self._judge(saved, stage_started=self._entered_mono)
            if self._traffic.automation.paused:
                # Automation paused by an operator: the rollout observes but moves nothing, either way.
                self.progress = Progress(f"automation paused ({self._traffic.automation.reason})", gates)
                return self.progress
            pins = self._pins()
            pinned = [f"{v} is pinned ({pins[v]})" for v in (state.candidate, state.stable) if v in pins]
            if pinned:
                # A pinned version's traffic is the operator's: the rollout moves nothing automatically, and, as
                # while automation is paused, the stage's clock stands still.
                self.progress = Progress("; ".join(pinned) + ": nothing moves automatically", gates)
                return self.progress
            held = bool(self.holds(state.candidate))
            new_state, result = machine.tick(state, elapsed, self._wall(), gates, held)
            current = Saved(saved.plan_text, saved.plan_digest, new_state)
            if isinstance(result, Progress):
                self.progress = result
                self.saved = current
                if now - self._last_checkpoint >= CHECKPOINT_S:
                    await self._checkpoint(current)
                return result
            await self._carry_out(current, saved, result, None, f"rollout:{state.candidate}")
            return result

    def _judge(self, saved: Saved, stage_started: float) -> tuple[GateResult, ...]:
        assert self.machine is not None
        stage = self.machine.stage(saved.state)
        measured = self._measurements(saved.state.candidate, saved.state.stable)
        if measured is None:
            return tuple(GateResult(g.name, GateOutcome.INSUFFICIENT, "no measurements yet") for g in stage.gates)
        measured = replace(measured, stage_since=stage_started, warmup=stage.warmup)
        gates = []
        for gate, result in zip(stage.gates, judge_stage(stage, measured), strict=True):
            if isinstance(gate, RuleGate) and result.outcome is GateOutcome.FAIL:
                # A breach episode that began before this stage was entered was already acted on.
                status = next(
                    (
                        s
                        for s in measured.statuses
                        if s.rule == gate.rule and s.version == saved.state.candidate and s.breach_since is not None
                    ),
                    None,
                )
                if status is not None and status.breach_since is not None and status.breach_since < stage_started:
                    result = GateResult(
                        result.gate,
                        GateOutcome.INSUFFICIENT,
                        f"its breach began before this stage; waiting for it to clear ({result.reason})",
                        result.value,
                        result.threshold,
                    )
            gates.append(result)
        return tuple(gates)

    # -- carrying out a move --------------------------------------------------------------------------------------

    async def _checkpoint(self, saved: Saved) -> None:
        """Save the time spent in the stage. No audit record: time passing is not a decision; the stage itself
        only changes with a record, and `restore` refuses a saved stage that its last record does not show."""
        try:
            await self._store.put_setting(ROLLOUT_KEY, saved.to_json())
        except StoreUnavailableError as exc:
            log.warning("rollout checkpoint not saved: %s", exc)
            return
        self._last_checkpoint = self._mono()

    def _record(
        self, saved: Saved, transition: Transition, phase: str, weight: int, mirror: float
    ) -> audit_pb2.RolloutChanged:
        assert self.machine is not None
        stages = self.machine.plan.stages

        def name(index: int) -> str:
            return stages[index].name if 0 <= index < len(stages) else ("stable" if index < 0 else "")

        return audit_pb2.RolloutChanged(
            candidate=saved.state.candidate,
            stable=saved.state.stable,
            move=transition.move.value,
            phase=phase,
            from_stage=transition.from_stage,
            to_stage=transition.to_stage,
            from_stage_name=name(transition.from_stage) if transition.from_stage >= 0 else "",
            to_stage_name=name(transition.to_stage),
            candidate_weight=weight,
            mirror=mirror,
            reason=transition.reason,
            evidence=evidence_pb(transition.evidence),
            plan_digest=saved.plan_digest,
        )

    async def _carry_out(
        self, saved: Saved, previous: Saved | None, transition: Transition, reason: str | None, actor: str
    ) -> None:
        if reason is not None:
            transition = Transition(
                transition.move,
                transition.from_stage,
                transition.to_stage,
                transition.split,
                reason,
                transition.evidence,
            )
        split = transition.split
        if split is None:
            record = self._record(saved, transition, "recorded", self._current_weight(saved), 0.0)
            if transition.move is Move.COMPLETED:
                await self._complete(saved, record, transition, actor)
            else:
                await self._save(saved, record, actor)
        else:
            await self._apply_split(
                saved, transition, split.candidate_weight, split.mirror, actor=actor, previous=previous
            )
        self.saved = saved
        self.last_move = transition.reason
        self._last_move_kind = transition.move
        self.progress = None
        self._entered_mono = self._mono() if transition.to_stage != transition.from_stage else self._entered_mono
        self._last_checkpoint = self._mono()
        if transition.move is Move.ROLLED_BACK:
            await self._marks.mark_failed(saved.state.candidate, transition.reason, actor)
        elif transition.move is Move.ABORTED:
            await self._marks.mark_quarantined(saved.state.candidate, transition.reason, actor)
        log.warning("rollout of %s: %s", saved.state.candidate, transition.reason)

    def _current_weight(self, saved: Saved) -> int:
        return self._traffic.desired.weight(saved.state.candidate)

    async def _save(self, saved: Saved, record: audit_pb2.RolloutChanged, actor: str) -> audit_pb2.AuditRecord:
        try:
            return await self._store.record_setting(ROLLOUT_KEY, saved.to_json(), record, actor)
        except StoreUnavailableError as exc:
            raise RolloutError("unavailable", f"{exc}; the rollout did not move") from None

    async def _apply_split(
        self,
        saved: Saved,
        transition: Transition,
        weight: int,
        mirror: float,
        *,
        actor: str,
        previous: Saved | None = None,
    ) -> None:
        intended = await self._save(saved, self._record(saved, transition, "intended", weight, mirror), actor)
        weights = {saved.state.candidate: weight, saved.state.stable: 100 - weight}
        outcome = self._record(saved, transition, "applied", weight, mirror)
        outcome.intended_seq = intended.seq
        try:
            if self._mirror is not None:
                await self._mirror.set_mirror(saved.state.candidate, mirror, reason=transition.reason, actor=actor)
            await self._traffic.set_weights(weights, reason=f"rollout: {transition.reason}", actor=actor)
        except TrafficChangeError as exc:
            outcome.phase = "failed"
            outcome.error = str(exc)
            restore = previous if previous is not None else Saved(saved.plan_text, saved.plan_digest, saved.state)
            if previous is None:
                await self._store.record_setting(ROLLOUT_KEY, "", outcome, actor)
            else:
                await self._store.record_setting(ROLLOUT_KEY, restore.to_json(), outcome, actor)
            raise RolloutError(exc.code, f"the rollout did not move: {exc}") from None
        await self._store.append(outcome, actor)

    async def _complete(
        self, saved: Saved, record: audit_pb2.RolloutChanged, transition: Transition, actor: str
    ) -> None:
        """The candidate becomes the stable version: recorded with the rollout state, then the registry marks."""
        assert self.machine is not None
        candidate, previous = saved.state.candidate, saved.state.stable
        await self._save(saved, record, actor)
        await self._store.record_setting(
            STABLE_KEY,
            candidate,
            audit_pb2.RolloutChanged(
                candidate=candidate,
                stable=candidate,
                move="stable_changed",
                phase="recorded",
                reason=f"{candidate} is the stable version; {previous} stays warm as the rollback target for "
                f"{self.machine.plan.standby:g}s",
                plan_digest=saved.plan_digest,
            ),
            actor,
        )
        self._traffic.stable = candidate
        await self._marks.mark_stable(candidate, previous, transition.evidence, actor)
