"""Fields shared by every rule kind: identity, action, timing (for / hysteresis), evidence, version selection."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from agent.domain.actions import Action
from agent.domain.signals import Window
from agent.triggers.context import VersionContext
from agent.triggers.units import Duration, Ratio, format_duration, parse_ratio
from agent.triggers.verdict import Verdict, VerdictStatus

VersionName = Annotated[str, Field(min_length=1, max_length=200)]
_SELECTOR_WORDS = ("candidates", "stable", "all")


def _selector_shape(value: Any) -> Any:
    if isinstance(value, str):
        return value if value in _SELECTOR_WORDS else (value,)
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("must be candidates, stable, all, a version name or a list of version names")


# "candidates": every version receiving traffic except the stable one; "stable": the stable version only;
# "all": every version receiving traffic; or explicit version names.
VersionSelector = Annotated[
    Literal["candidates", "stable", "all"] | tuple[VersionName, ...], BeforeValidator(_selector_shape)
]

RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
# A threshold in the kind's unit; "5%" is accepted for ratio thresholds.
Threshold = Annotated[float, BeforeValidator(parse_ratio)]


class Evidence(BaseModel):
    """Minimum evidence before a rule may judge. `coverage`: the fraction of the window covered by samples.

    Subclasses add the kind's count (requests, labels, samples); a bare number is shorthand for that count.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    count_field: ClassVar[str | None] = None
    coverage: Ratio = 0.5

    @model_validator(mode="before")
    @classmethod
    def _number_is_the_count(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            if cls.count_field is None:
                raise ValueError("this rule kind takes no count here; use {coverage: 0.8}")
            return {cls.count_field: data}
        return data


class RuleBase(BaseModel):
    """A rule as written, or (after tier resolution) as evaluated. Cross-field checks live in `problems()`,
    run on the resolved rule, because a tier may supply the other half of a pair."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=RULE_NAME_PATTERN, max_length=100)
    kind: str
    description: str = ""
    action: Action = Action.ROLLBACK
    for_: Duration = Field(default=0.0, alias="for")  # how long a breach must persist before the rule fires
    clear_after: Duration = 60.0  # how long it must be ok (with evidence) before a firing rule clears
    clear_threshold: Threshold | None = None  # while firing, the threshold to get back past (hysteresis)
    versions: VersionSelector = "candidates"
    min_evidence: Evidence = Evidence()

    @property
    def window_s(self) -> float:
        """The window the verdict talks about."""
        raise NotImplementedError

    @property
    def lookback_s(self) -> float:
        """How much history the rule needs."""
        return self.window_s

    def higher_is_worse(self) -> bool:
        """Direction of the main threshold: True when larger measured values are worse."""
        return True

    @property
    def threshold(self) -> float | None:
        """The main threshold, for hysteresis checks; None when the kind has no single one."""
        return None

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for inconsistent values of the resolved rule."""
        found: list[tuple[str, str]] = []
        if self.action is Action.ROLLBACK and self.versions == "stable":
            found.append(("versions", "a rollback rule cannot judge only the stable version; use alert or hold"))
        if self.clear_threshold is not None:
            threshold = self.threshold
            if threshold is None:
                found.append(("clear_threshold", f"{self.kind} rules take no clear_threshold"))
            elif self.higher_is_worse() and self.clear_threshold > threshold:
                found.append(("clear_threshold", f"must be <= the threshold {threshold:g} (larger values are worse)"))
            elif not self.higher_is_worse() and self.clear_threshold < threshold:
                found.append(("clear_threshold", f"must be >= the threshold {threshold:g} (smaller values are worse)"))
        return found

    def comparison(self, breached: bool) -> str:
        if self.higher_is_worse():
            return ">" if breached else "<="
        return "<" if breached else ">="

    def limit_note(self, firing: bool) -> str:
        return " (clear threshold)" if firing and self.clear_threshold is not None else ""

    def limit(self, threshold: float, firing: bool) -> float:
        """The threshold in force: the clear threshold while firing, if one is set."""
        if firing and self.clear_threshold is not None:
            return self.clear_threshold
        return threshold

    def evaluate(self, ctx: VersionContext, stable: VersionContext | None, firing: bool) -> Verdict:
        """Judge the version now. `stable` is the stable version's context (for live baselines), if any."""
        raise NotImplementedError

    # ---- helpers for the kinds ----------------------------------------------------------------------------
    # Reasons are str.format templates plus arguments (see Verdict.reason); values from users (feature and
    # metric names) always go in the arguments, never in the template.

    def judged(
        self,
        ctx: VersionContext,
        breached: bool,
        template: str,
        args: tuple[object, ...],
        *,
        value: float,
        threshold: float,
        evidence: float,
        unit: str,
        window_s: float | None = None,
    ) -> Verdict:
        return Verdict(
            self.name,
            self.kind,
            ctx.version,
            VerdictStatus.BREACH if breached else VerdictStatus.OK,
            value,
            threshold,
            self.window_s if window_s is None else window_s,
            evidence,
            unit,
            template,
            args,
        )

    def insufficient(
        self,
        ctx: VersionContext,
        template: str,
        args: tuple[object, ...] = (),
        *,
        evidence: float = 0.0,
        unit: str = "samples",
        value: float | None = None,
        threshold: float | None = None,
        window_s: float | None = None,
    ) -> Verdict:
        return Verdict(
            self.name,
            self.kind,
            ctx.version,
            VerdictStatus.INSUFFICIENT_EVIDENCE,
            value,
            threshold,
            self.window_s if window_s is None else window_s,
            evidence,
            unit,
            "insufficient evidence: " + template,
            args,
        )

    def covered_window(self, ctx: VersionContext, seconds: float, unit: str = "samples") -> Window | Verdict:
        """The window if samples cover at least min_evidence.coverage of it, else an insufficient verdict."""
        window = ctx.window(seconds)
        if window is None:
            return self.insufficient(
                ctx, "no samples in the last {}", (format_duration(seconds),), unit=unit, window_s=seconds
            )
        minimum = self.min_evidence.coverage
        if window.coverage < minimum:
            return self.insufficient(
                ctx,
                "samples cover {:.1%} of {} < {:.1%} minimum",
                (window.coverage, format_duration(seconds), minimum),
                unit=unit,
                window_s=seconds,
            )
        return window
