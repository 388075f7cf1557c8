"""Which signals a rule reads, so a rule whose signal cannot be measured now (its source's read failed, or the
server does not export it) is inconclusive with the source's reason instead of judging stale or absent values."""

from __future__ import annotations

from collections.abc import Mapping

from agent.domain.signals import Signal
from agent.triggers.context import VersionContext
from agent.triggers.kinds.traffic import ERRORS, LATENCY, REQUESTS
from agent.triggers.rule import RuleBase
from agent.triggers.verdict import Verdict

_TRAFFIC_READS = {
    "error_rate": (REQUESTS, ERRORS),
    "error_rate_sequential": (REQUESTS, ERRORS),
    "burn_rate": (REQUESTS, ERRORS),
    "throughput_anomaly": (REQUESTS,),
    "latency_p99": (LATENCY,),
    "latency_p99_sequential": (LATENCY,),
}


def reads(rule: RuleBase) -> tuple[str, ...]:
    """Signal names (a name ending in "." stands for every signal under it) the rule's verdict depends on."""
    kind = rule.kind
    if kind in _TRAFFIC_READS:
        source = getattr(rule, "source", "envoy")
        return tuple(table[source] for table in _TRAFFIC_READS[kind] if source in table)
    if kind == "confidence_drop":
        return (str(getattr(rule, "signal", Signal.MODEL_CONFIDENCE)),)
    if kind == "primary_metric":
        return (str(getattr(rule, "correct", "")), str(getattr(rule, "incorrect", "")))
    if kind == "feature_drift":
        return (Signal.FEATURE_PREFIX,)
    if kind == "missing_features":
        return (Signal.FEATURE_SEEN_PREFIX, Signal.FEATURE_MISSING_PREFIX)
    if kind == "near_oom":
        return (Signal.MODEL_MEMORY_RATIO,)
    if kind == "business_metric":
        return (Signal.business(str(getattr(rule, "metric", ""))),)
    return ()


def unmeasurable(rule: RuleBase, ctx: VersionContext, unavailable: Mapping[str, str] | None) -> Verdict | None:
    """An insufficient-evidence verdict naming why, when a signal the rule reads cannot be measured now."""
    if not unavailable:
        return None
    for signal in reads(rule):
        for key, why in unavailable.items():
            if signal == key:
                return rule.insufficient(ctx, "{}", (why,))
            if key.endswith(".") and signal.startswith(key) and not _fresh_gauge(ctx, signal):
                # A source that failed marks its whole prefix; another source (a PromQL query) may still have
                # delivered this very signal in this tick.
                return rule.insufficient(ctx, "{}", (why,))
    return None


def _fresh_gauge(ctx: VersionContext, signal: str) -> bool:
    history = ctx.history
    return history is not None and history.latest_gauge(signal, max_age_s=0.0, now=ctx.now) is not None
