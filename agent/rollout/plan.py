"""A rollout plan (YAML, kept in git beside the rules): ordered stages a candidate passes through to 100 %.

Each stage has a traffic share (or a mirrored share, for shadow), a minimum duration, its gates and the minimum
evidence they need. A gate is one of (`kind:`; `{rule: NAME}` alone is a rule gate):
- `rule`: a rule of the model's rule file, by name, judged on the candidate (its absolute threshold, its evidence);
- `relative`: a signal of the candidate against the stable version over the same window, not worse by more than a
  margin (`max(relative x stable, absolute)`);
- `judge`: the statistical judge (Mann-Whitney U) on raw samples of both versions.
A breach of any gate goes back one stage (`on_breach: previous_stage`, the default) or straight to stable
(`on_breach: stable`); after `max_breaches` breaches in one rollout, it goes to stable.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.triggers.errors import RuleError, RuleFileError, located_errors, parse_yaml, read_yaml_file
from agent.triggers.rule import RULE_NAME_PATTERN
from agent.triggers.units import Duration, PositiveDuration, Ratio

STAGE_NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
# The shipped plans per tier (rules/tiers/rollout-<tier>.yaml in the repository link here).
SHIPPED_PLANS_DIR: Final = Path(__file__).resolve().parent / "plans"
# Signals a relative gate or the judge can compare (the stream keeps raw samples of these per request).
# `agreement_rate` and `abs_error_mean` compare both versions' answers to the same mirrored requests (shadow stages,
# agent/domain/shadow.py); stable's figure is its agreement with itself (1) and its error against itself (0).
RelativeSignal = Literal[
    "error_rate", "latency_p99_ms", "latency_p50_ms", "confidence_mean", "agreement_rate", "abs_error_mean"
]
JudgeSignal = Literal["latency_ms", "error", "confidence"]
LOWER_IS_WORSE: Final = frozenset({"confidence_mean", "confidence", "agreement_rate"})
SHADOW_SIGNALS: Final = frozenset({"agreement_rate", "abs_error_mean"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleGate(_Strict):
    """A rule of the rule file, by name: passes when its verdict on the candidate is ok."""

    kind: Literal["rule"] = "rule"
    rule: Annotated[str, Field(pattern=RULE_NAME_PATTERN)]

    @property
    def name(self) -> str:
        return f"rule:{self.rule}"


class RelativeGate(_Strict):
    """Candidate not worse than stable by more than max(relative x stable, absolute), over the same window."""

    kind: Literal["relative"]
    signal: RelativeSignal
    window: PositiveDuration = 60.0
    relative: Annotated[float, Field(ge=0, le=100)] = 0.1
    absolute: Annotated[float, Field(ge=0)] = 0.0
    min_requests: Annotated[int, Field(ge=1)] = 100  # on each side, in the window

    @property
    def name(self) -> str:
        return f"relative:{self.signal}"


class JudgeGate(_Strict):
    """The statistical judge on raw samples of candidate and stable (see agent/triggers/judge.py)."""

    kind: Literal["judge"]
    signal: JudgeSignal
    window: PositiveDuration = 300.0
    confidence: Annotated[float, Field(ge=0.5, lt=1)] = 0.98
    min_points: Annotated[int, Field(ge=5)] = 50
    tolerance: Annotated[float, Field(ge=0)] = 0.0
    # A difference smaller than this, in the signal's unit (ms for latency_ms), is never material: a candidate 0.4 ms
    # slower than a 0.3 ms stable is 130 % slower and of no consequence to anyone.
    min_shift: Annotated[float, Field(ge=0)] = 0.0

    @property
    def name(self) -> str:
        return f"judge:{self.signal}"


def _gate_kind(value: object) -> str | None:
    """`kind`, or `rule` for the shorthand `{rule: NAME}`."""
    if isinstance(value, dict):
        kind = value.get("kind", "rule" if "rule" in value else None)
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


Gate = Annotated[
    Annotated[RuleGate, Tag("rule")] | Annotated[RelativeGate, Tag("relative")] | Annotated[JudgeGate, Tag("judge")],
    Discriminator(_gate_kind),
]


class Stage(_Strict):
    name: Annotated[str, Field(pattern=STAGE_NAME_PATTERN)]
    weight: Annotated[int, Field(ge=0, le=100)] = 0  # % of live traffic on the candidate
    mirror: Ratio = 0.0  # share of live requests mirrored to the candidate (answers never reach a user)
    min_duration: Duration = 300.0
    # The comparing gates (relative, judge) ignore what was measured in the stage's first `warmup`: a candidate's
    # first requests at a new share (cold caches, new connections) are not its steady state. Rule gates judge from
    # the first second: a breach during warm-up still counts.
    warmup: Duration = 0.0
    gates: list[Gate] = []

    @model_validator(mode="after")
    def _judgeable(self) -> Self:
        if self.weight == 0 and self.mirror == 0:
            raise ValueError("give the stage a weight (live traffic) or a mirror share (shadow)")
        if self.warmup and self.warmup >= self.min_duration:
            raise ValueError(
                f"warmup ({self.warmup:g}s) must be shorter than min_duration ({self.min_duration:g}s): the comparing "
                "gates need time after it to judge"
            )
        if self.mirror == 0:
            shadow = [g.name for g in self.gates if isinstance(g, RelativeGate) and g.signal in SHADOW_SIGNALS]
            if shadow:
                raise ValueError(f"gates {shadow} compare mirrored answers; give the stage a mirror share")
        if self.weight == 100:
            comparing = [g.name for g in self.gates if not isinstance(g, RuleGate)]
            if comparing:
                raise ValueError(
                    f"at 100 % stable gets no traffic to compare with, so gates {comparing} could never pass; "
                    "use rule gates here"
                )
        return self

    @property
    def is_shadow(self) -> bool:
        return self.weight == 0


class RolloutPlan(_Strict):
    """Ordered stages; the last one sends 100 % to the candidate."""

    stages: Annotated[list[Stage], Field(min_length=1, max_length=20)]
    on_breach: Literal["previous_stage", "stable"] = "previous_stage"
    max_breaches: Annotated[int, Field(ge=1, le=100)] = 3
    standby: Duration = 3600.0  # the previous stable stays warm (and the rollback target) this long after promotion

    @field_validator("stages")
    @classmethod
    def _ordered_to_full(cls, stages: list[Stage]) -> list[Stage]:
        names = [s.name for s in stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate stage name(s) {duplicates}")
        weights = [s.weight for s in stages]
        if any(b < a for a, b in itertools.pairwise(weights)):
            raise ValueError(f"weights must not decrease from one stage to the next, got {weights}")
        if weights[-1] != 100:
            raise ValueError(f"the last stage ({names[-1]}) must send 100 % to the candidate")
        return stages


_PLAN: Final = TypeAdapter(RolloutPlan)


def parse_plan(text: str | bytes, source: str) -> RolloutPlan:
    """A plan document; every error names the file and the line (RuleFileError)."""
    parsed = parse_yaml(text, source)
    data = parsed.data
    prefix: tuple[str, ...] = ()
    if isinstance(data, dict) and "rollout" in data and len(data) == 1:
        data, prefix = data["rollout"], ("rollout",)
    if not isinstance(data, dict):
        raise RuleFileError([RuleError(source, parsed.root.start_mark.line + 1, "expected a mapping with `stages`")])
    try:
        return _PLAN.validate_python(data)
    except ValidationError as exc:
        raise RuleFileError(located_errors(exc, source, parsed.root, prefix)) from None


def load_plan(path: Path) -> RolloutPlan:
    return parse_plan(read_yaml_file(path, "rollout plan"), str(path))


def shipped_plan(tier: str) -> Path:
    return SHIPPED_PLANS_DIR / f"{tier}.yaml"


def rule_gates(plan: RolloutPlan) -> set[str]:
    """The rule names the plan's gates refer to."""
    return {g.rule for stage in plan.stages for g in stage.gates if isinstance(g, RuleGate)}


def is_plan(data: object) -> bool:
    """A mapping with `stages` (or `rollout: {stages}`) and no `rules`: a rollout plan, not a rule file."""
    if isinstance(data, dict) and set(data) == {"rollout"}:
        data = data["rollout"]
    return isinstance(data, dict) and "stages" in data and "rules" not in data


def split_plan_files(paths: Sequence[Path]) -> tuple[list[Path], list[RuleError]]:
    """For `rules check`: the files that are not rollout plans, and the errors of those that are (checked here)."""
    others: list[Path] = []
    errors: list[RuleError] = []
    for path in paths:
        try:
            text = read_yaml_file(path, "rule file")
            parsed = parse_yaml(text, str(path))
        except RuleFileError:
            others.append(path)  # the rule checker reports it
            continue
        if not is_plan(parsed.data):
            others.append(path)
            continue
        try:
            parse_plan(text, str(path))
        except RuleFileError as exc:
            errors.extend(exc.errors)
    return others, errors
