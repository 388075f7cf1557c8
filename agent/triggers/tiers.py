"""Sensitivity tiers: per-kind defaults a rule inherits. Resolution: rule value > tier profile > built-in default.

A tier profile (YAML) has `common` defaults for every kind (action, for, clear_after, versions,
min_evidence.coverage) and `defaults.<kind>` for kind-specific ones. Nested `min_evidence` is merged key by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agent.domain.safe_yaml import ParsedYaml
from agent.triggers.errors import RuleError, RuleFileError, located_errors, parse_yaml, read_yaml_file
from agent.triggers.kinds import RULE_TYPES
from agent.triggers.rule import RuleBase

TIER_NAME_PATTERN = r"^[a-z][a-z0-9_-]*$"
SHIPPED_TIERS: Final = ("critical", "experimental")
# Shipped inside the package (rules/tiers/ in the repository links here), so an installed agent has them too.
SHIPPED_TIERS_DIR: Final = Path(__file__).resolve().parent / "profiles"

# Fields a rule must state itself: they identify it or are specific to the model.
_NOT_DEFAULTABLE: Final = frozenset({"name", "kind", "description"})
_COMMON_FIELDS: Final = ("action", "for_", "clear_after", "versions", "min_evidence")


def _defaults_model(model: type[RuleBase], only: tuple[str, ...] | None = None) -> type[BaseModel]:
    """A model with the same fields and validation as `model`, all optional (a tier sets only some)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in _NOT_DEFAULTABLE or (only is not None and name not in only):
            continue
        annotation: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (annotation | None, Field(default=None, alias=info.alias))
    config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    defaults: type[BaseModel] = create_model(f"{model.__name__}Defaults", __config__=config, **fields)
    return defaults


CommonDefaults: Final = _defaults_model(RuleBase, _COMMON_FIELDS)
KindDefaults: Final[type[BaseModel]] = create_model(
    "KindDefaults",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{kind: (_defaults_model(model) | None, None) for kind, model in RULE_TYPES.items()},  # type: ignore[call-overload]
)


class TierProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: str = Field(pattern=TIER_NAME_PATTERN)
    description: str = ""
    common: CommonDefaults = Field(default_factory=CommonDefaults)  # type: ignore[valid-type]
    defaults: KindDefaults = Field(default_factory=KindDefaults)  # type: ignore[valid-type]

    def layers_for(self, kind: str) -> list[dict[str, Any]]:
        """The profile's defaults for a kind, common first, as plain data with only the values it sets."""
        kind_defaults: BaseModel | None = getattr(self.defaults, kind, None)
        common: BaseModel = self.common
        layers = [common.model_dump(exclude_unset=True, by_alias=True)]
        if kind_defaults is not None:
            layers.append(kind_defaults.model_dump(exclude_unset=True, by_alias=True))
        return layers


class RuleResolutionError(ValueError):
    """The rule, completed with the tier's defaults, is inconsistent. `problems`: (field, message)."""

    def __init__(self, rule: str, tier: str, problems: list[tuple[str, str]]) -> None:
        self.rule = rule
        self.tier = tier
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def resolve_rule(rule: RuleBase, profile: TierProfile | None) -> RuleBase:
    """The effective rule for a tier: values the rule sets win, then the profile's, then built-in defaults."""
    merged: dict[str, Any] = {}
    if profile is not None:
        for layer in profile.layers_for(rule.kind):
            merged = _merge(merged, layer)
    merged = _merge(merged, rule.model_dump(exclude_unset=True, by_alias=True))
    tier = profile.tier if profile is not None else "built-in"
    try:
        resolved = RULE_TYPES[rule.kind].model_validate(merged)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in e["loc"]), str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors(include_url=False)
        ]
        raise RuleResolutionError(rule.name, tier, problems) from None
    problems = resolved.problems()
    if problems:
        raise RuleResolutionError(rule.name, tier, problems)
    return resolved


def load_tier_profile(path: str | Path) -> TierProfile:
    path = Path(path)
    return parse_tier_profile(read_yaml_file(path, "tier profile"), str(path))


def parse_tier_profile(text: str | bytes, source: str) -> TierProfile:
    return validate_tier_profile(parse_yaml(text, source), source)


def validate_tier_profile(parsed: ParsedYaml, source: str) -> TierProfile:
    try:
        return TierProfile.model_validate(parsed.data)
    except ValidationError as exc:
        raise RuleFileError(located_errors(exc, source, parsed.root)) from None


@cache
def _shipped(path: Path, mtime_ns: int) -> TierProfile:
    return load_tier_profile(path)


def tier_profile(tier: str, directory: str | Path | None = None) -> TierProfile:
    """The profile named `tier` from `directory` (default: the shipped rules/tiers). Cached per file version."""
    path = Path(directory or SHIPPED_TIERS_DIR) / f"{tier}.yaml"
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError:
        raise RuleFileError([RuleError(str(path), 0, f"no tier profile '{tier}'")]) from None
    return _shipped(path, mtime_ns)
