"""The pure decision core: rule models and files, tier profiles, verdicts and the stateful rule engine.

No I/O beyond reading rule files on request, no asyncio: the engine layer feeds histories and the clock in.
"""

from agent.domain.actions import Action
from agent.triggers.context import VersionContext
from agent.triggers.engine import Decision, EngineInput, RuleEngine, RuleState, RuleStatus, TickResult, Transition
from agent.triggers.errors import RuleError, RuleFileError
from agent.triggers.kinds import (
    RULE_TYPES,
    BurnRateRule,
    BusinessMetricRule,
    ConfidenceDropRule,
    CrashRule,
    ErrorRateRule,
    FeatureDriftRule,
    LatencyRule,
    MissingFeaturesRule,
    PrimaryMetricRule,
    Rule,
    ThroughputAnomalyRule,
)
from agent.triggers.loader import RuleFile, check_rule_files, load_rule_file, load_rules
from agent.triggers.rule import RuleBase
from agent.triggers.ruleset import (
    DEFAULT_TIER,
    EMPTY_RULE_SET,
    RuleSet,
    build_rule_set,
    load_rule_set,
    reload_rule_set,
)
from agent.triggers.tiers import (
    SHIPPED_TIERS,
    RuleResolutionError,
    TierProfile,
    load_tier_profile,
    resolve_rule,
    tier_profile,
)
from agent.triggers.verdict import Verdict, VerdictStatus

__all__ = [
    "DEFAULT_TIER",
    "EMPTY_RULE_SET",
    "RULE_TYPES",
    "SHIPPED_TIERS",
    "Action",
    "BurnRateRule",
    "BusinessMetricRule",
    "ConfidenceDropRule",
    "CrashRule",
    "Decision",
    "EngineInput",
    "ErrorRateRule",
    "FeatureDriftRule",
    "LatencyRule",
    "MissingFeaturesRule",
    "PrimaryMetricRule",
    "Rule",
    "RuleBase",
    "RuleEngine",
    "RuleError",
    "RuleFile",
    "RuleFileError",
    "RuleResolutionError",
    "RuleSet",
    "RuleState",
    "RuleStatus",
    "ThroughputAnomalyRule",
    "TickResult",
    "TierProfile",
    "Transition",
    "Verdict",
    "VerdictStatus",
    "VersionContext",
    "build_rule_set",
    "check_rule_files",
    "load_rule_file",
    "load_rule_set",
    "load_rules",
    "load_tier_profile",
    "reload_rule_set",
    "resolve_rule",
    "tier_profile",
]
