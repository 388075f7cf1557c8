"""RuleSet: an immutable, fully resolved set of rules for one model and tier, swapped whole on reload."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.triggers.errors import RuleError, RuleFileError
from agent.triggers.loader import RuleFile, load_rule_file, resolution_errors
from agent.triggers.rule import RuleBase
from agent.triggers.tiers import resolve_rule, tier_profile

DEFAULT_TIER: Final = "critical"  # when neither the caller nor the file names one: the more careful tier


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[RuleBase, ...]  # resolved: every value filled in from the rule, its tier or the built-ins
    tier: str
    source: str = ""
    model: str | None = None
    fingerprint: str = ""

    @property
    def max_lookback_s(self) -> float:
        """The longest history any rule needs; size `HistoryLimits.max_age_s` at least this."""
        return max((rule.lookback_s for rule in self.rules), default=0.0)

    def rule(self, name: str) -> RuleBase | None:
        return next((rule for rule in self.rules if rule.name == name), None)


EMPTY_RULE_SET: Final = RuleSet(rules=(), tier=DEFAULT_TIER)


def build_rule_set(rule_file: RuleFile, tier: str | None = None, tiers_dir: str | Path | None = None) -> RuleSet:
    """Resolve every rule of the file for `tier` (else the file's tier, else DEFAULT_TIER)."""
    name = tier or rule_file.tier or DEFAULT_TIER
    errors = resolution_errors(rule_file, name, tiers_dir)
    if errors:
        raise RuleFileError(errors)
    profile = tier_profile(name, tiers_dir)
    return RuleSet(
        rules=tuple(resolve_rule(rule, profile) for rule in rule_file.rules),
        tier=name,
        source=rule_file.source,
        model=rule_file.model,
        fingerprint=rule_file.fingerprint,
    )


def load_rule_set(path: str | Path, tier: str | None = None, tiers_dir: str | Path | None = None) -> RuleSet:
    """Load and resolve a rule file; raises RuleFileError with located errors."""
    return build_rule_set(load_rule_file(path), tier, tiers_dir)


def reload_rule_set(
    path: str | Path,
    current: RuleSet,
    tier: str | None = None,
    tiers_dir: str | Path | None = None,
) -> tuple[RuleSet, list[RuleError]]:
    """Hot reload: the new rule set, or `current` unchanged plus the errors when the file is broken."""
    try:
        return load_rule_set(path, tier, tiers_dir), []
    except RuleFileError as exc:
        return current, exc.errors
