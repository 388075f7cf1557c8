"""One module per rule kind: its pydantic model and its evaluation."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from agent.triggers.kinds.burn_rate import BurnRateRule
from agent.triggers.kinds.business_metric import BusinessMetricRule
from agent.triggers.kinds.confidence import ConfidenceDropRule
from agent.triggers.kinds.crash import CrashRule
from agent.triggers.kinds.error_rate import ErrorRateRule
from agent.triggers.kinds.error_rate_sequential import ErrorRateSequentialRule
from agent.triggers.kinds.feature_drift import FeatureDriftRule
from agent.triggers.kinds.golden import GoldenRule
from agent.triggers.kinds.latency import LatencyRule
from agent.triggers.kinds.latency_sequential import LatencySequentialRule
from agent.triggers.kinds.missing_features import MissingFeaturesRule
from agent.triggers.kinds.near_oom import NearOomRule
from agent.triggers.kinds.primary_metric import PrimaryMetricRule
from agent.triggers.kinds.throughput import ThroughputAnomalyRule
from agent.triggers.rule import RuleBase

Rule = Annotated[
    ErrorRateRule
    | LatencyRule
    | PrimaryMetricRule
    | ConfidenceDropRule
    | FeatureDriftRule
    | MissingFeaturesRule
    | CrashRule
    | NearOomRule
    | ThroughputAnomalyRule
    | BusinessMetricRule
    | BurnRateRule
    | ErrorRateSequentialRule
    | LatencySequentialRule
    | GoldenRule,
    Field(discriminator="kind"),
]

RULE_TYPES: Final[dict[str, type[RuleBase]]] = {
    "error_rate": ErrorRateRule,
    "latency_p99": LatencyRule,
    "primary_metric": PrimaryMetricRule,
    "confidence_drop": ConfidenceDropRule,
    "feature_drift": FeatureDriftRule,
    "missing_features": MissingFeaturesRule,
    "crash": CrashRule,
    "near_oom": NearOomRule,
    "throughput_anomaly": ThroughputAnomalyRule,
    "business_metric": BusinessMetricRule,
    "burn_rate": BurnRateRule,
    "error_rate_sequential": ErrorRateSequentialRule,
    "latency_p99_sequential": LatencySequentialRule,
    "golden": GoldenRule,
}

__all__ = [
    "RULE_TYPES",
    "BurnRateRule",
    "BusinessMetricRule",
    "ConfidenceDropRule",
    "CrashRule",
    "ErrorRateRule",
    "ErrorRateSequentialRule",
    "FeatureDriftRule",
    "GoldenRule",
    "LatencyRule",
    "LatencySequentialRule",
    "MissingFeaturesRule",
    "NearOomRule",
    "PrimaryMetricRule",
    "Rule",
    "ThroughputAnomalyRule",
]
