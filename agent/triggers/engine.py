"""RuleEngine: evaluates every rule for every targeted version each tick and keeps per-(rule, version) state.

States: ok -> pending (breaching, `for` not yet elapsed) -> firing (a Decision is emitted once, on entry).
A firing rule clears only after `clear_after` of uninterrupted ok verdicts (judged against `clear_threshold`
when one is set); insufficient evidence neither confirms nor clears: it resets a pending breach and interrupts
an ok streak, and is itself a visible state ("inconclusive since ...").
Pure: the clock comes in with the input; no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from agent.domain.actions import Action
from agent.domain.signals import Baseline, SignalHistory
from agent.triggers.context import VersionContext
from agent.triggers.rule import RuleBase, VersionSelector
from agent.triggers.ruleset import EMPTY_RULE_SET, RuleSet
from agent.triggers.signal_reads import unmeasurable
from agent.triggers.verdict import Verdict, VerdictStatus


class RuleState(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    INSUFFICIENT_EVIDENCE = "insufficient_evidence"


@dataclass(frozen=True, slots=True)
class EngineInput:
    now: float  # monotonic seconds, the same clock as the samples
    histories: Mapping[str, SignalHistory]  # version -> its history
    stable: str | None  # the stable version (never a rollback target of its own rules' decisions)
    serving: Collection[str]  # versions currently receiving traffic
    baselines: Mapping[str, Baseline] = field(default_factory=dict)
    # version -> signal name or prefix -> why it cannot be measured now (agent.domain.signals.Sample.unavailable)
    unavailable: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class RuleStatus(NamedTuple):
    """Immutable (a NamedTuple: one is built per rule and version every tick)."""

    rule: str
    kind: str
    action: Action
    version: str
    state: RuleState
    since: float  # when the current state was entered
    breach_since: float | None  # first breach of the current pending/firing episode
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule started firing for a version: the layer above acts on `action` (rollback, alert, hold).

    Never a rollback of the stable version: a rollback rule firing for it (versions: all) decides `alert`.
    """

    action: Action
    rule: str
    kind: str
    version: str
    at: float
    breach_since: float
    verdict: Verdict

    @property
    def reason(self) -> str:
        return f"rule '{self.rule}' ({self.kind}) fired for version {self.version}: {self.verdict.reason}"


@dataclass(frozen=True, slots=True)
class Transition:
    rule: str
    version: str
    before: RuleState | None  # None: first evaluation of the rule for this version
    after: RuleState
    at: float
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class TickResult:
    now: float
    statuses: tuple[RuleStatus, ...]
    decisions: tuple[Decision, ...]
    transitions: tuple[Transition, ...]

    def in_state(self, state: RuleState) -> list[RuleStatus]:
        return [status for status in self.statuses if status.state is state]


class _Track:
    """Mutable state of one (rule, version)."""

    __slots__ = ("breach_since", "ok_since", "since", "state")

    def __init__(self, now: float) -> None:
        self.state: RuleState | None = None  # None until first evaluated
        self.since = now
        self.breach_since: float | None = None
        self.ok_since: float | None = None

    def update(self, rule: RuleBase, verdict: Verdict, now: float) -> RuleState:
        status = verdict.status
        state = self.state
        if status is VerdictStatus.BREACH:
            self.ok_since = None
            if state is not RuleState.FIRING:
                if self.breach_since is None:
                    self.breach_since = now
                state = RuleState.FIRING if now - self.breach_since >= rule.for_ else RuleState.PENDING
        elif status is VerdictStatus.OK:
            if state is RuleState.FIRING:
                if self.ok_since is None:
                    self.ok_since = now
                if now - self.ok_since >= rule.clear_after:
                    state, self.breach_since, self.ok_since = RuleState.OK, None, None
            else:
                state, self.breach_since = RuleState.OK, None
        elif state is RuleState.FIRING:
            self.ok_since = None
        else:
            state, self.breach_since = RuleState.INSUFFICIENT_EVIDENCE, None
        if state is not self.state:
            self.state, self.since = state, now
        return state


class RuleEngine:
    def __init__(self, rule_set: RuleSet = EMPTY_RULE_SET) -> None:
        self._rule_set = rule_set
        self._tracks: dict[str, dict[str, _Track]] = {}
        self._last_targets: dict[VersionSelector, tuple[str, ...]] = {}

    @property
    def rule_set(self) -> RuleSet:
        return self._rule_set

    def replace_rules(self, rule_set: RuleSet) -> None:
        """Swap the rule set (hot reload). Rules that did not change keep their state (pending timers, firing)."""
        old = {rule.name: rule for rule in self._rule_set.rules}
        kept = {
            rule.name: self._tracks[rule.name]
            for rule in rule_set.rules
            if rule.name in self._tracks and old.get(rule.name) == rule
        }
        self._rule_set = rule_set
        self._tracks = kept

    def evaluate(self, inputs: EngineInput) -> TickResult:
        now = inputs.now
        targets: dict[VersionSelector, tuple[str, ...]] = {}
        for rule in self._rule_set.rules:
            if rule.versions not in targets:
                targets[rule.versions] = _select(rule.versions, inputs)
        changed = {selector for selector, versions in targets.items() if self._last_targets.get(selector) != versions}
        self._last_targets = targets
        versions_in_use: set[str] = {version for versions in targets.values() for version in versions}
        if inputs.stable is not None:
            versions_in_use.add(inputs.stable)
        contexts = {
            version: VersionContext(version, inputs.histories.get(version), now, inputs.baselines.get(version))
            for version in versions_in_use
        }
        stable = contexts[inputs.stable] if inputs.stable is not None else None
        statuses: list[RuleStatus] = []
        decisions: list[Decision] = []
        transitions: list[Transition] = []
        tracks_by_rule = self._tracks
        for rule in self._rule_set.rules:
            versions = targets[rule.versions]
            tracks = tracks_by_rule.get(rule.name)
            if tracks is None:
                tracks = tracks_by_rule[rule.name] = {}
            elif rule.versions in changed:
                for gone in [v for v in tracks if v not in versions]:  # version left traffic: forget its state
                    del tracks[gone]
            for version in versions:
                track = tracks.get(version)
                if track is None:
                    track = tracks[version] = _Track(now)
                before = track.state
                ctx = contexts[version]
                verdict = unmeasurable(rule, ctx, inputs.unavailable.get(version)) or rule.evaluate(
                    ctx, stable, before is RuleState.FIRING
                )
                after = track.update(rule, verdict, now)
                if after is not before:
                    transitions.append(Transition(rule.name, version, before, after, now, verdict))
                    if after is RuleState.FIRING:
                        breach_since = track.breach_since if track.breach_since is not None else now
                        # Rolling back means moving traffic to the stable version: for the stable version
                        # itself the only sensible action is to tell someone.
                        rolls_back_stable = version == inputs.stable and rule.action is Action.ROLLBACK
                        action = Action.ALERT if rolls_back_stable else rule.action
                        decisions.append(Decision(action, rule.name, rule.kind, version, now, breach_since, verdict))
                statuses.append(
                    RuleStatus(
                        rule.name, rule.kind, rule.action, version, after, track.since, track.breach_since, verdict
                    )
                )
        return TickResult(now, tuple(statuses), tuple(decisions), tuple(transitions))


def _select(selector: VersionSelector, inputs: EngineInput) -> tuple[str, ...]:
    serving = sorted(inputs.serving)
    if selector == "candidates":
        return tuple(v for v in serving if v != inputs.stable)
    if selector == "stable":
        return (inputs.stable,) if inputs.stable is not None else ()
    if selector == "all":
        return tuple(serving)
    return tuple(v for v in selector if v in inputs.histories or v in inputs.serving)
