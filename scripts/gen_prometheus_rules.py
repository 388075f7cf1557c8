"""Generate the Prometheus rules users load into their own Prometheus, from ONE source: the data in this file.

Outputs (all committed; `--check` exits 1 when one of them is stale):

- rules/prometheus/model-rollback.rules.yml: a plain Prometheus rule file (recording + alerting groups);
- rules/prometheus/prometheusrule.yaml: the same groups in a monitoring.coreos.com/v1 PrometheusRule;
- the generated alert reference and runbooks in docs/metrics.md (between the GENERATED markers).

Every alert carries `severity` (critical | warning | info), `action` (rollback | hold | alert: the agent's webhook
routing uses it), `model`/`version` where meaningful, and the annotations summary, description and runbook_url.

Usage:
    python scripts/gen_prometheus_rules.py            # rewrite the outputs
    python scripts/gen_prometheus_rules.py --check    # exit 1 if the committed outputs are stale
    python scripts/gen_prometheus_rules.py --output-dir DIR --runbook-base-url https://wiki.example/rollback
        # a customised copy (runbook links to your wiki) written to DIR; docs/metrics.md untouched
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

ROOT: Final = Path(__file__).resolve().parent.parent
RULES_DIR: Final = ROOT / "rules" / "prometheus"
RULES_FILE: Final = "model-rollback.rules.yml"
MANIFEST_FILE: Final = "prometheusrule.yaml"
DOCS_FILE: Final = ROOT / "docs" / "metrics.md"
DOCS_BEGIN: Final = "<!-- BEGIN GENERATED: alerts (scripts/gen_prometheus_rules.py; do not edit by hand) -->"
DOCS_END: Final = "<!-- END GENERATED: alerts -->"
# Relative to the repository root: run with --runbook-base-url to point runbook_url at your own copy of the docs.
DEFAULT_RUNBOOK_BASE_URL: Final = "docs/metrics.md"

Severity = Literal["critical", "warning", "info"]
Action = Literal["rollback", "hold", "alert"]
Tier = Literal["critical", "experimental"]
SEVERITIES: Final = ("critical", "warning", "info")
ACTIONS: Final = ("rollback", "hold", "alert")

# ---- the knobs ---------------------------------------------------------------------------------------------------

SLO_TARGET: Final = "99.9%"
ERROR_BUDGET: Final = "0.001"  # 1 - 99.9 %
DEFAULT_LATENCY_SLA_SECONDS: Final = "0.5"  # a bucket edge of model_inference_latency_seconds
ERROR_RATIO_WINDOWS: Final = ("1m", "5m", "30m", "1h", "6h", "3d")
WINDOW_SECONDS: Final = {"1m": 60, "5m": 300, "30m": 1800, "1h": 3600, "6h": 21600, "3d": 259200}

# Recording rule names (level:metric:operations).
REQ_RATE: Final = "model_version:model_inference_requests:rate{w}"
ERR_RATIO: Final = "model_version:model_inference_errors:ratio_rate{w}"
P99: Final = "model_version:model_inference_latency_seconds:p99_rate5m"
OUTCOMES_RATE: Final = "model_version:model_outcomes:rate5m"
ACCURACY: Final = "model_version:model_accuracy:ratio_rate5m"
PREDICTIONS_RATE: Final = "model_version:model_predictions:rate5m"
CONFIDENCE_MEAN: Final = "model_version:model_prediction_confidence:mean_rate5m"
FEATURE_OBS_RATE: Final = "model_version_feature:model_feature_observations:rate5m"
FEATURE_MISSING_RATIO: Final = "model_version_feature:model_feature_missing:ratio_rate5m"
TIER_INFO: Final = "model:rollback_agent_tier:info"
STABLE_INFO: Final = "model_version:rollback_agent_stable:info"
SERVING_INFO: Final = "model_version:rollback_agent_serving:info"
STABLE_CONFIDENCE: Final = "model:model_prediction_confidence:stable_mean_rate5m"
MISSING_BASELINE: Final = "model_feature:model_feature_missing:baseline_ratio_rate5m"
SLA_OVERRIDE: Final = "model:rollback_latency_p99_sla_seconds:override"
SLA_EFFECTIVE: Final = "model:rollback_latency_p99_sla_seconds:effective"
ACCURACY_OVERRIDE: Final = "model:rollback_accuracy_slo:override"
ACCURACY_EFFECTIVE: Final = "model:rollback_accuracy_slo:effective"
SERVED_SHARE: Final = "instance:rollback_agent_route_weight:served_share"
MAJORITY_PODS: Final = "model_version:rollback_agent_majority_pods:count"
AGENT_MODEL: Final = "instance:rollback_agent_model:info"


MLSERVER_FAILURES: Final = "model_infer_request_failure_total"
MLSERVER_SUCCESSES: Final = "model_infer_request_success_total"


def req_rate(window: str) -> str:
    return REQ_RATE.format(w=window)


def err_ratio(window: str) -> str:
    return ERR_RATIO.format(w=window)


# ---- the rule model ----------------------------------------------------------------------------------------------


def _expr(text: str) -> str:
    return textwrap.dedent(text).strip()


@dataclass(frozen=True)
class Record:
    record: str
    expr: str

    def to_yaml(self) -> dict[str, Any]:
        return {"record": self.record, "expr": _expr(self.expr)}


@dataclass(frozen=True)
class Alert:
    alert: str
    expr: str
    for_: str
    severity: Severity
    action: Action
    summary: str
    description: str
    condition: str  # one line for the docs' alert table
    labels: Mapping[str, str] = field(default_factory=dict)  # static labels besides severity and action
    carries: str = "model, version"  # for the docs: the labels the alert takes from its series

    def to_yaml(self, runbook_base_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {"alert": self.alert, "expr": _expr(self.expr)}
        if self.for_ != "0s":
            out["for"] = self.for_
        out["labels"] = {"severity": self.severity, "action": self.action, **self.labels}
        out["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{runbook_base_url}#{self.alert.lower()}",
        }
        return out


@dataclass(frozen=True)
class Group:
    name: str
    rules: Sequence[Record | Alert]

    def to_yaml(self, runbook_base_url: str) -> dict[str, Any]:
        rules = [r.to_yaml(runbook_base_url) if isinstance(r, Alert) else r.to_yaml() for r in self.rules]
        return {"name": self.name, "rules": rules}


@dataclass(frozen=True)
class Runbook:
    meaning: str
    steps: str


# ---- expression helpers ------------------------------------------------------------------------------------------


def in_tier(tier: Tier) -> str:
    return f'and on (model) {TIER_INFO}{{tier="{tier}"}}'


def with_model(expr: str, *labels: str) -> str:
    """Adds the `model` label to an agent series that has none, from the same target's model (AGENT_MODEL), value
    unchanged; keeps the series without `model` when the target reports no single model. `labels`: the series'
    own labels besides the target's (the join matches on the target's labels only)."""
    ignored = ", ".join(("model", *labels))
    return f"""
        (
          {expr}
        )
          + ignoring ({ignored}) group_left (model)
            (0 * {AGENT_MODEL})
        or ignoring (model)
        (
          {expr}
        )"""


MV = "{{ $labels.model }}/{{ $labels.version }}"


# ---- recording rules ---------------------------------------------------------------------------------------------


def model_records() -> list[Record]:
    rules: list[Record] = []
    # Request and error figures of the model_metrics contract, or else of MLServer's counters (docs/servers.md;
    # MLServer labels `version` "None": the scrape must set it to the version tag, as the PodMonitor example there).
    for w in ERROR_RATIO_WINDOWS:
        rules.append(
            Record(
                req_rate(w),
                f"""
                sum by (model, version) (rate(model_inference_requests_total[{w}]))
                or
                (
                  sum by (model, version) (rate({MLSERVER_SUCCESSES}[{w}]))
                  + (sum by (model, version) (rate({MLSERVER_FAILURES}[{w}]))
                     or 0 * sum by (model, version) (rate({MLSERVER_SUCCESSES}[{w}])))
                )
                or
                sum by (model, version) (rate({MLSERVER_FAILURES}[{w}]))""",
            )
        )
        rules.append(
            Record(
                err_ratio(w),
                f"""
                (
                  sum by (model, version) (rate(model_inference_errors_total[{w}]))
                  or
                  sum by (model, version) (rate({MLSERVER_FAILURES}[{w}]))
                )
                  / {req_rate(w)}""",
            )
        )
    rules += [
        Record(
            P99,
            """
            histogram_quantile(0.99,
              sum by (model, version, le) (rate(model_inference_latency_seconds_bucket[5m]))
            )""",
        ),
        Record(OUTCOMES_RATE, "sum by (model, version) (rate(model_outcomes_total[5m]))"),
        Record(
            ACCURACY,
            f"""
            sum by (model, version) (rate(model_outcomes_total{{result="correct"}}[5m]))
              / {OUTCOMES_RATE}""",
        ),
        Record(PREDICTIONS_RATE, "sum by (model, version) (rate(model_prediction_confidence_count[5m]))"),
        Record(
            CONFIDENCE_MEAN,
            f"""
            sum by (model, version) (rate(model_prediction_confidence_sum[5m]))
              / {PREDICTIONS_RATE}""",
        ),
        Record(
            FEATURE_OBS_RATE,
            "sum by (model, version, feature) (rate(model_feature_observations_total[5m]))",
        ),
        Record(
            FEATURE_MISSING_RATIO,
            f"""
            sum by (model, version, feature) (rate(model_feature_missing_total[5m]))
              / {FEATURE_OBS_RATE}""",
        ),
    ]
    return rules


def agent_records() -> list[Record]:
    return [
        # One tier per model across the fleet; if agents disagree (a config change rolling out), critical wins.
        # last_over_time keeps the tier through an agent restart, so tiered alerts do not blink.
        Record(
            TIER_INFO,
            """
            max by (model, tier) (last_over_time(rollback_agent_model_info{tier="critical"}[10m]))
            or on (model)
            max by (model, tier) (last_over_time(rollback_agent_model_info{tier="experimental"}[10m]))""",
        ),
        Record(STABLE_INFO, 'max by (model, version) (rollback_agent_version_status{status="stable"} == 1)'),
        Record(SERVING_INFO, "max by (model, version) (rollback_agent_serving_info)"),
        # The stable version's mean confidence, only with enough predictions behind it.
        Record(
            STABLE_CONFIDENCE,
            f"""
            max by (model) (
              {CONFIDENCE_MEAN}
                and on (model, version) {STABLE_INFO}
                and on (model, version) {PREDICTIONS_RATE} * 300 >= 50
            )""",
        ),
        # Missing-feature baseline: the stable version's ratio (with >= 100 observations in 5m); 0 for a model
        # with no known stable version; none (no alert) when the stable version lacks evidence.
        Record(
            MISSING_BASELINE,
            f"""
            max by (model, feature) (
              {FEATURE_MISSING_RATIO}
                and on (model, version) {STABLE_INFO}
                and on (model, version, feature) {FEATURE_OBS_RATE} * 300 >= 100
            )
            or on (model, feature)
            0 * max by (model, feature) (
              ({FEATURE_MISSING_RATIO} >= 0) unless on (model) {STABLE_INFO}
            )""",
        ),
        # Per-model thresholds: users override them with their own recording rules, e.g.
        #   - record: model:rollback_latency_p99_sla_seconds:override
        #     labels: {model: credit}
        #     expr: vector(0.25)
        Record(
            SLA_EFFECTIVE,
            f"""
            max by (model) ({SLA_OVERRIDE})
            or on (model)
            {DEFAULT_LATENCY_SLA_SECONDS} * group by (model) (model_loaded)""",
        ),
        # No fleet-wide default: accuracy SLOs are model-specific. Models without an override are not judged.
        Record(ACCURACY_EFFECTIVE, f"max by (model) ({ACCURACY_OVERRIDE})"),
        # Per agent target: its model, for agent series that have no `model` label. Targets that report several
        # models are left out (a join on them would be ambiguous and fail the whole rule).
        Record(
            AGENT_MODEL,
            """
            max without (tier) (rollback_agent_model_info)
            unless ignoring (model)
            count without (model) (max without (tier) (rollback_agent_model_info)) > 1""",
        ),
        # Per agent (pod): each version's share of the served route.
        Record(
            SERVED_SHARE,
            """
            rollback_agent_route_weight{state="served"}
              / ignoring (version) group_left ()
            sum without (version) (rollback_agent_route_weight{state="served"})""",
        ),
        # Per version: how many pods serve it to a strict majority of their traffic.
        Record(MAJORITY_PODS, f"count by (model, version) ({SERVED_SHARE} > 0.5)"),
    ]


# ---- alerting rules: model versions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierParams:
    tier: Tier
    severity: Severity


CRITICAL: Final = TierParams("critical", "critical")
EXPERIMENTAL: Final = TierParams("experimental", "warning")


def high_error_rate() -> list[Alert]:
    out = []
    for t, window, for_ in ((CRITICAL, "1m", "30s"), (EXPERIMENTAL, "5m", "2m")):
        secs = WINDOW_SECONDS[window]
        out.append(
            Alert(
                "ModelVersionHighErrorRate",
                f"""
                {err_ratio(window)} > 0.05
                and on (model, version) {req_rate(window)} * {secs} >= 50
                {in_tier(t.tier)}""",
                for_,
                t.severity,
                "rollback",
                f"{MV}: {{{{ $value | humanizePercentage }}}} of requests failing",
                f"Error ratio of {MV} over {window} is {{{{ $value | humanizePercentage }}}} "
                f"(threshold 5%, at least 50 requests in {window}; tier {t.tier}).",
                f"error ratio over {window} > 5% with >= 50 requests",
                {"tier": t.tier},
            )
        )
    return out


# (tier, severity, action, long window, short window, burn rate, for)
BURN_PAIRS: Final[tuple[tuple[TierParams, Action, str, str, str, str], ...]] = (
    (CRITICAL, "rollback", "1h", "5m", "14.4", "2m"),
    (CRITICAL, "rollback", "6h", "30m", "6", "15m"),
    (EXPERIMENTAL, "hold", "6h", "30m", "6", "15m"),
    (EXPERIMENTAL, "hold", "3d", "6h", "1", "1h"),
)


def error_budget_burn() -> list[Alert]:
    out = []
    for t, action, long_w, short_w, rate, for_ in BURN_PAIRS:
        level = "page" if t.tier == "critical" else "ticket"
        out.append(
            Alert(
                "ModelVersionErrorBudgetBurn",
                f"""
                {err_ratio(long_w)} > ({rate} * {ERROR_BUDGET})
                and on (model, version) {err_ratio(short_w)} > ({rate} * {ERROR_BUDGET})
                and on (model, version) {req_rate(long_w)} * {WINDOW_SECONDS[long_w]} >= 100
                {in_tier(t.tier)}""",
                for_,
                t.severity,
                action,
                f"{MV} burns its {SLO_TARGET} error budget at >= {rate}x over {long_w} and {short_w}",
                f"Error ratio of {MV} is {{{{ $value | humanizePercentage }}}} over {long_w} and above "
                f"{rate} x {ERROR_BUDGET} over {short_w} too ({level} for a {SLO_TARGET} SLO, tier {t.tier}).",
                f"error ratio > {rate} x {ERROR_BUDGET} over both {long_w} and {short_w}, >= 100 requests in {long_w}",
                {"tier": t.tier, "window": f"{long_w}/{short_w}", "burn_rate": rate},
            )
        )
    return out


def high_latency() -> list[Alert]:
    sla_query = (
        f'{{{{ with printf "{SLA_EFFECTIVE}{{model=%q}}" $labels.model | query }}}}'
        "{{ . | first | value | humanizeDuration }}{{ end }}"
    )
    return [
        Alert(
            "ModelVersionHighLatency",
            f"""
            {P99} > on (model) group_left () {SLA_EFFECTIVE}
            and on (model, version) {req_rate("5m")} * 300 >= 50
            {in_tier(t.tier)}""",
            for_,
            t.severity,
            "rollback",
            f"{MV}: p99 latency {{{{ $value | humanizeDuration }}}} over the SLA",
            f"p99 latency of {MV} over 5m is {{{{ $value | humanizeDuration }}}}, above the SLA of {sla_query} "
            f"for {for_} (at least 50 requests in 5m; tier {t.tier}).",
            f"p99 over 5m > the model's SLA (default {DEFAULT_LATENCY_SLA_SECONDS}s) with >= 50 requests",
            {"tier": t.tier},
        )
        for t, for_ in ((CRITICAL, "5m"), (EXPERIMENTAL, "15m"))
    ]


def low_accuracy() -> list[Alert]:
    slo_query = (
        f'{{{{ with printf "{ACCURACY_EFFECTIVE}{{model=%q}}" $labels.model | query }}}}'
        "{{ . | first | value | humanizePercentage }}{{ end }}"
    )
    return [
        Alert(
            "ModelVersionLowAccuracy",
            f"""
            {ACCURACY} < on (model) group_left () {ACCURACY_EFFECTIVE}
            and on (model, version) {OUTCOMES_RATE} * 60 >= 10
            {in_tier(t.tier)}""",
            for_,
            t.severity,
            "rollback",
            f"{MV}: accuracy {{{{ $value | humanizePercentage }}}} below the SLO",
            f"Accuracy of {MV} over 5m is {{{{ $value | humanizePercentage }}}}, below the SLO of {slo_query} "
            f"for {for_} (at least 10 labelled outcomes per minute; tier {t.tier}).",
            "accuracy over 5m < the model's SLO (no default) with >= 10 labels/min",
            {"tier": t.tier},
        )
        for t, for_ in ((CRITICAL, "10m"), (EXPERIMENTAL, "30m"))
    ]


def confidence_drop() -> list[Alert]:
    stable_query = (
        f'{{{{ with printf "{STABLE_CONFIDENCE}{{model=%q}}" $labels.model | query }}}}'
        '{{ . | first | value | printf "%.3f" }}{{ end }}'
    )
    return [
        Alert(
            "ModelVersionConfidenceDrop",
            f"""
            {CONFIDENCE_MEAN}
              < on (model) group_left () ((1 - {drop}) * {STABLE_CONFIDENCE})
            and on (model, version) {PREDICTIONS_RATE} * 300 >= 50
            {in_tier(t.tier)}""",
            for_,
            t.severity,
            "rollback",
            f"{MV}: mean confidence dropped more than {pct} below the stable version",
            f'Mean prediction confidence of {MV} over 5m is {{{{ $value | printf "%.3f" }}}}, more than {pct} '
            f"below the stable version's {stable_query}, for {for_} (at least 50 predictions in 5m on each; "
            f"tier {t.tier}).",
            f"mean confidence over 5m < (1 - {drop}) x the stable version's, >= 50 predictions each",
            {"tier": t.tier},
        )
        for t, drop, pct, for_ in ((CRITICAL, "0.15", "15%", "5m"), (EXPERIMENTAL, "0.25", "25%", "15m"))
    ]


def missing_features() -> list[Alert]:
    base_query = (
        f'{{{{ with printf "{MISSING_BASELINE}{{model=%q,feature=%q}}" $labels.model $labels.feature | query }}}}'
        "{{ . | first | value | humanizePercentage }}{{ end }}"
    )
    return [
        Alert(
            "ModelVersionMissingFeatures",
            f"""
            {FEATURE_MISSING_RATIO}
              > on (model, feature) group_left () ({MISSING_BASELINE} + {excess})
            and on (model, version, feature) {FEATURE_OBS_RATE} * 300 >= 100
            {in_tier(t.tier)}""",
            for_,
            t.severity,
            "rollback",
            f"{MV}: feature {{{{ $labels.feature }}}} missing in {{{{ $value | humanizePercentage }}}} of rows",
            f"Feature {{{{ $labels.feature }}}} is missing in {{{{ $value | humanizePercentage }}}} of the rows "
            f"of {MV} over 5m, more than {pct} above the baseline of {base_query} (stable version; 0 when no "
            f"version is stable), for {for_} (at least 100 rows in 5m; tier {t.tier}).",
            f"missing ratio over 5m > baseline (stable version's) + {pct}, >= 100 rows",
            {"tier": t.tier},
            "model, version, feature",
        )
        for t, excess, pct, for_ in ((CRITICAL, "0.02", "2%", "5m"), (EXPERIMENTAL, "0.05", "5%", "15m"))
    ]


def not_loaded() -> list[Alert]:
    return [
        Alert(
            "ModelVersionNotLoaded",
            f"""
            model_loaded == 0
            and on (model, version) {SERVING_INFO}
            {in_tier(t.tier)}""",
            for_,
            t.severity,
            "rollback",
            f"{MV} is not loaded on {{{{ $labels.instance }}}} while receiving traffic",
            f"model_loaded is 0 for {MV} on {{{{ $labels.instance }}}} for {for_}, while the agents route "
            f"traffic to it (tier {t.tier}).",
            "model_loaded == 0 on a pod while the version receives traffic",
            {"tier": t.tier},
            "model, version, instance (+ target labels)",
        )
        for t, for_ in ((CRITICAL, "1m"), (EXPERIMENTAL, "5m"))
    ]


def restarts() -> list[Alert]:
    return [
        Alert(
            "ModelVersionRestarts",
            f"""
            sum by (model, version) (resets(model_inference_requests_total[30m])) {cmp}
            unless on (model, version) {STABLE_INFO}
            {in_tier(t.tier)}""",
            "0s",
            t.severity,
            "rollback",
            f"{MV} restarted {{{{ $value }}}} time(s) in 30m",
            f"The request counters of {MV} reset {{{{ $value }}}} time(s) in 30m across the fleet (process "
            f"restarts: crash or OOM kill); threshold {text} (tier {t.tier}; the stable version is excluded).",
            f"request-counter resets (restarts) in 30m {cmp}, stable version excluded",
            {"tier": t.tier},
        )
        for t, cmp, text in ((CRITICAL, ">= 1", "1 restart"), (EXPERIMENTAL, "> 2", "more than 2"))
    ]


def oom_killed() -> list[Alert]:
    return [
        Alert(
            "ModelVersionOOMKilled",
            # kube-state-metrics: restarts in 30m of containers whose last termination was an OOM kill. The version
            # comes from the model server's own series in the same container (model_loaded, kept an hour through
            # the restart); the scrape of the model servers must carry the namespace / pod / container target
            # labels (ServiceMonitor and PodMonitor do).
            f"""
            sum by (model, version) (
              group by (namespace, pod, container, model, version) (last_over_time(model_loaded[1h]))
              * on (namespace, pod, container) group_left ()
              (
                max by (namespace, pod, container) (
                  max_over_time(kube_pod_container_status_restarts_total[30m])
                    - min_over_time(kube_pod_container_status_restarts_total[30m])
                )
                and on (namespace, pod, container)
                max by (namespace, pod, container) (
                  kube_pod_container_status_last_terminated_reason{{reason="OOMKilled"}}
                ) == 1
              )
            ) {cmp}
            unless on (model, version) {STABLE_INFO}
            {in_tier(t.tier)}""",
            "0s",
            t.severity,
            "rollback",
            f"{MV} was OOM-killed {{{{ $value }}}} time(s) in 30m",
            f"Containers serving {MV} restarted {{{{ $value }}}} time(s) in 30m with OOMKilled as their last "
            f"termination reason (kube-state-metrics); threshold {text} (tier {t.tier}; the stable version is "
            "excluded).",
            f"OOMKilled container restarts in 30m {cmp} (kube-state-metrics), stable version excluded",
            {"tier": t.tier},
        )
        for t, cmp, text in ((CRITICAL, ">= 1", "1 OOM kill"), (EXPERIMENTAL, "> 2", "more than 2"))
    ]


def metrics_absent() -> Alert:
    return Alert(
        "ModelVersionMetricsAbsent",
        f"{SERVING_INFO} unless on (model, version) model_loaded",
        "5m",
        "warning",
        "alert",
        f"{MV} receives traffic but Prometheus has none of its metrics",
        f"The agents route traffic to {MV} but no model_loaded series of it is scraped: the model servers are "
        "down, not scraped, or do not export the model_metrics contract. Fleet rules cannot judge this version.",
        "a version receives traffic but no model_loaded series exists for it",
    )


# ---- alerting rules: fleet ---------------------------------------------------------------------------------------


def version_skew() -> Alert:
    return Alert(
        "ModelFleetVersionSkew",
        f"""
        {MAJORITY_PODS}
        and on (model) (count by (model) ({MAJORITY_PODS}) > 1)""",
        "15m",
        "warning",
        "alert",
        "Replicas of model {{ $labels.model }} serve different versions",
        "{{ $value }} pod(s) of {{ $labels.model }} send most of their traffic to version {{ $labels.version }} "
        "while other pods send most of theirs to another version, for 15m.",
        "pods of one model disagree on the version with most of the served weight",
        carries="model, version (one alert per majority version; value: its pods)",
    )


def agent_absent() -> Alert:
    return Alert(
        "RollbackAgentAbsent",
        f"group by (model) (model_loaded) unless on (model) {TIER_INFO}",
        "10m",
        "warning",
        "alert",
        "No rollback agent reports model {{ $labels.model }}",
        "Model servers export metrics for {{ $labels.model }} but no rollback agent reports it with tier critical "
        "or experimental (rollback_agent_model_info): it has no automatic rollback, and the tiered alerts do not "
        "evaluate for it.",
        "model_loaded exists for a model with no rollback_agent_model_info (critical/experimental) in 10m",
        carries="model",
    )


# ---- alerting rules: the agent itself ----------------------------------------------------------------------------

AGENT = "{{ $labels.instance }}"
TARGET = "instance (+ target labels)"


def agent_alerts() -> list[Alert]:
    return [
        Alert(
            "RollbackAgentXdsDisconnected",
            with_model("rollback_agent_xds_connected_envoys == 0"),
            "1m",
            "critical",
            "alert",
            f"Rollback agent {AGENT} has no Envoy connected",
            f"No Envoy holds an ADS stream to the agent on {AGENT}"
            "{{ with $labels.model }} (model {{ . }}){{ end }} for 1m: the agent cannot move traffic, and Envoy "
            "keeps serving its last route.",
            "rollback_agent_xds_connected_envoys == 0",
            carries=TARGET + ", model if the agent exports rollback_agent_model_info",
        ),
        Alert(
            "RollbackAgentXdsNacks",
            with_model("increase(rollback_agent_xds_nacks_total[5m]) > 0", "type"),
            "0s",
            "warning",
            "alert",
            f"Envoy rejects {{{{ $labels.type }}}} config from the agent on {AGENT}",
            f"Envoy NACKed {{{{ $value | humanize }}}} {{{{ $labels.type }}}} responses from the agent on {AGENT} "
            "in 5m: it keeps serving the previous config.",
            "increase(rollback_agent_xds_nacks_total[5m]) > 0",
            carries=TARGET + ", type, model (as above)",
        ),
        Alert(
            "RollbackAgentNotReady",
            with_model("rollback_agent_ready == 0"),
            "2m",
            "warning",
            "alert",
            f"Rollback agent {AGENT} is not ready",
            f"Not every connected Envoy has ACKed the agent's current config on {AGENT} for 2m: the served route "
            "differs from the desired one.",
            "rollback_agent_ready == 0",
            carries=TARGET + ", model (as above)",
        ),
        Alert(
            "RollbackAgentTrafficChangeFailed",
            'increase(rollback_agent_traffic_changes_total{outcome=~"rejected|timeout"}[10m]) > 0',
            "0s",
            "warning",
            "alert",
            f"Traffic changes of {{{{ $labels.model }}}} fail on {AGENT} ({{{{ $labels.outcome }}}})",
            f"{{{{ $value | humanize }}}} traffic changes of {{{{ $labels.model }}}} ended "
            f'"{{{{ $labels.outcome }}}}" on {AGENT} in 10m.',
            "increase(traffic_changes_total{outcome=~rejected|timeout}[10m]) > 0",
            carries=TARGET + ", model, outcome",
        ),
        Alert(
            "RollbackAgentRollbackFailed",
            "increase(rollback_agent_rollbacks_total"
            '{outcome=~"verification_failed|no_eligible_target|switch_failed"}[15m]) > 0',
            "0s",
            "critical",
            "alert",
            f"A rollback of {{{{ $labels.model }}}} failed on {AGENT}: {{{{ $labels.outcome }}}}",
            f'A rollback of {{{{ $labels.model }}}} (cause {{{{ $labels.cause }}}}) ended "{{{{ $labels.outcome }}}}" '
            f"on {AGENT} in the last 15m: the degraded version may still receive traffic.",
            "increase(rollbacks_total{outcome=~verification_failed|no_eligible_target|switch_failed}[15m]) > 0",
            carries=TARGET + ", model, cause, outcome",
        ),
        Alert(
            "RollbackAgentEscalation",
            "increase(rollback_agent_escalations_total[15m]) > 0",
            "0s",
            "critical",
            "alert",
            "The rollback agent escalates {{ $labels.model }} to a human ({{ $labels.reason }})",
            f'The agent on {AGENT} escalated {{{{ $labels.model }}}} with reason "{{{{ $labels.reason }}}}" in the '
            "last 15m: it will not resolve the situation by itself.",
            "increase(rollback_agent_escalations_total[15m]) > 0",
            carries=TARGET + ", model, reason",
        ),
        Alert(
            "RollbackAgentRuleReloadFailed",
            "rollback_agent_rules_last_reload_success == 0",
            "1m",
            "warning",
            "alert",
            f"Rollback rules of {{{{ $labels.model }}}} failed to reload on {AGENT}",
            f"The last rule reload of {{{{ $labels.model }}}} on {AGENT} failed: the agent still evaluates the "
            "previous rules.",
            "rollback_agent_rules_last_reload_success == 0",
            carries=TARGET + ", model",
        ),
        Alert(
            "RollbackAgentSignalScrapeErrors",
            """
            sum without (outcome) (rate(rollback_agent_signal_scrapes_total{outcome="error"}[5m]))
              / sum without (outcome) (rate(rollback_agent_signal_scrapes_total[5m]))
            > 0.5""",
            "5m",
            "warning",
            "alert",
            f"The agent on {AGENT} cannot read {{{{ $labels.source }}}} signals of {{{{ $labels.model }}}}",
            f"{{{{ $value | humanizePercentage }}}} of the agent's {{{{ $labels.source }}}} scrapes of "
            f"{{{{ $labels.model }}}} on {AGENT} failed over 5m: its rules lack evidence.",
            "failed / all rollback_agent_signal_scrapes_total over 5m > 50%",
            carries=TARGET + ", model, source",
        ),
        Alert(
            "RollbackRuleInsufficientEvidence",
            f"""
            rollback_agent_rule_state{{state="insufficient_evidence"}} == 1
            and on (model, version) {SERVING_INFO}
            unless on (model, version) {STABLE_INFO}""",
            "30m",
            "info",
            "alert",
            f"Rule {{{{ $labels.rule }}}} cannot judge {MV} for lack of evidence",
            f'Rule {{{{ $labels.rule }}}} of the agent on {AGENT} has been "insufficient_evidence" for {MV} for '
            "30m while the version receives traffic: the analysis is stuck (low traffic or missing signals).",
            "rule_state{state=insufficient_evidence} of a serving non-stable version",
            carries=TARGET + ", model, version, rule, state",
        ),
        Alert(
            "RollbackAutomationPaused",
            "rollback_agent_automation_paused == 1",
            "2h",
            "warning",
            "alert",
            f"Automatic rollback of {{{{ $labels.model }}}} has been paused for 2h on {AGENT}",
            f"An operator paused automatic rollback of {{{{ $labels.model }}}} on {AGENT} over 2h ago: degraded "
            "versions are not rolled back until it is resumed.",
            "rollback_agent_automation_paused == 1",
            carries=TARGET + ", model",
        ),
        Alert(
            "RollbackAgentAlertmanagerDown",
            with_model("rollback_agent_alertmanager_up == 0", "url"),
            "5m",
            "warning",
            "alert",
            f"The agent on {AGENT} cannot reach Alertmanager {{{{ $labels.url }}}}",
            f"The agent on {AGENT} has failed to poll {{{{ $labels.url }}}} for 5m: fleet alerts whose webhook "
            "reached another replica do not reach this one.",
            "rollback_agent_alertmanager_up == 0",
            carries=TARGET + ", url, model (as above)",
        ),
        Alert(
            "RollbackAgentWebhookErrors",
            with_model('increase(rollback_agent_webhook_alerts_total{outcome=~"rejected|failed"}[10m]) > 0', "outcome"),
            "0s",
            "warning",
            "alert",
            f"The agent on {AGENT} cannot take Alertmanager webhooks ({{{{ $labels.outcome }}}})",
            f"{{{{ $value | humanize }}}} webhook alerts ended {{{{ $labels.outcome }}}} on the agent on {AGENT} "
            "in 10m (rejected: authentication, size or schema, check the receiver's http_config; failed: the agent "
            "could not act on them, Alertmanager retries).",
            'increase(rollback_agent_webhook_alerts_total{outcome=~"rejected|failed"}[10m]) > 0',
            carries=TARGET + ", outcome, model (as above)",
        ),
    ]


# ---- the source of truth -----------------------------------------------------------------------------------------


def groups() -> list[Group]:
    return [
        Group("model-rollback.records.model", model_records()),
        Group("model-rollback.records.agent", agent_records()),
        Group(
            "model-rollback.alerts.model-versions",
            [
                *high_error_rate(),
                *error_budget_burn(),
                *high_latency(),
                *low_accuracy(),
                *confidence_drop(),
                *missing_features(),
                *not_loaded(),
                *restarts(),
                *oom_killed(),
                metrics_absent(),
            ],
        ),
        Group("model-rollback.alerts.fleet", [version_skew(), agent_absent()]),
        Group("model-rollback.alerts.agent", agent_alerts()),
    ]


RUNBOOKS: Final[Mapping[str, Runbook]] = {
    "ModelVersionHighErrorRate": Runbook(
        "A version fails more than 5% of its requests (fleet-wide, per version).",
        "The agents roll it back (action=rollback). Confirm traffic moved (`rollback_agent_route_weight"
        '{state="served"}`), then read the model server logs of that version for the failing requests.',
    ),
    "ModelVersionErrorBudgetBurn": Runbook(
        "A version consumes the 99.9% SLO's error budget too fast (SRE workbook multi-window burn rates).",
        "Critical tier pages and rolls back; experimental tier opens a ticket and holds the rollout "
        "(action=hold). Compare the error ratio of the version with the stable one before promoting again.",
    ),
    "ModelVersionHighLatency": Runbook(
        "The version's p99 latency is above the model's SLA (`model:rollback_latency_p99_sla_seconds:effective`).",
        "Check the version's resources (CPU throttling, batch size) and the latency histogram per pod. Set the "
        "SLA per model with a `model:rollback_latency_p99_sla_seconds:override` recording rule.",
    ),
    "ModelVersionLowAccuracy": Runbook(
        "Labelled outcomes show an accuracy below the model's SLO (`model:rollback_accuracy_slo:override`).",
        "Check the labelling pipeline first (delayed or skewed labels), then the version's training data.",
    ),
    "ModelVersionConfidenceDrop": Runbook(
        "The version's mean prediction confidence is well below the stable version's on the same traffic.",
        "Compare the confidence histograms of both versions; look for feature drift or a preprocessing change.",
    ),
    "ModelVersionMissingFeatures": Runbook(
        "A feature is missing in more rows for this version than for the stable version (or than 0 when no "
        "version is stable).",
        "Check the feature pipeline the version reads from (renamed columns, new feature store view).",
    ),
    "ModelVersionNotLoaded": Runbook(
        "A pod reports `model_loaded 0` for a version that still receives traffic.",
        "Look at the pod's logs for load errors (missing artefact, OOM while loading).",
    ),
    "ModelVersionRestarts": Runbook(
        "The version's processes restarted (request counters reset): crash or OOM kill.",
        "`kubectl describe pod` for OOMKilled / exit code 137; compare memory limits with the version's needs.",
    ),
    "ModelVersionOOMKilled": Runbook(
        "Kubernetes killed a container of the version for exceeding its memory limit (OOMKilled), seen through "
        "kube-state-metrics and joined to the version by the container's model_loaded series.",
        "The agents roll it back (action=rollback). Compare the version's memory use with the container's limit "
        "(`process_resident_memory_bytes`, the agent's `near_oom` rule) before raising the limit or fixing a leak.",
    ),
    "ModelVersionMetricsAbsent": Runbook(
        "Traffic goes to a version Prometheus sees no metrics for; fleet rules cannot judge it.",
        "Check the scrape config and that the server exports the model_metrics contract for this version tag.",
    ),
    "ModelFleetVersionSkew": Runbook(
        "Pods of one model send most of their traffic to different versions for 15m.",
        'Compare `rollback_agent_route_weight{state="served"}` per pod; a pod may have rolled back alone, or '
        "an operator change reached only some pods.",
    ),
    "RollbackAgentAbsent": Runbook(
        "A model exports metrics but no agent reports it with a known tier.",
        "Check that the agent sidecar runs and is scraped, and that its tier is critical or experimental.",
    ),
    "RollbackAgentXdsDisconnected": Runbook(
        "No Envoy is connected to the agent: the agent cannot change routes.",
        "Check the Envoy sidecar's logs and its bootstrap's ADS cluster (address and port of the agent).",
    ),
    "RollbackAgentXdsNacks": Runbook(
        "Envoy rejected config pushed by the agent.",
        "`rollback-agent status` shows the recent NACKs with Envoy's error message.",
    ),
    "RollbackAgentNotReady": Runbook(
        "Some connected Envoy has not ACKed the current config.",
        "Check the xDS NACKs and push-to-ACK latency of the agent.",
    ),
    "RollbackAgentTrafficChangeFailed": Runbook(
        "Traffic changes end rejected (NACK) or timed out before every Envoy ACKed them.",
        "Check the Envoy sidecars' health and `rollback_agent_decision_to_ack_seconds`.",
    ),
    "RollbackAgentRollbackFailed": Runbook(
        "A rollback did not recover the model (verification failed, no eligible target or the switch failed).",
        "Move traffic by hand with the control API if needed; read the agent's audit record of the rollback.",
    ),
    "RollbackAgentEscalation": Runbook(
        "The agent handed the situation to a human.",
        "Read the escalation's reason and the agent's audit log; decide on the version by hand.",
    ),
    "RollbackAgentRuleReloadFailed": Runbook(
        "The agent kept its previous rules because the new rule file is invalid.",
        "`rollback-agent rules check FILE` names the invalid rule, file and line; fix the file and reload.",
    ),
    "RollbackAgentSignalScrapeErrors": Runbook(
        "The agent fails to read most of its signals (Envoy stats, model metrics or health) for a source.",
        "Check the endpoints in the agent's config and the model server's /metrics.",
    ),
    "RollbackRuleInsufficientEvidence": Runbook(
        "A rule has lacked evidence for 30m for a serving candidate version: the analysis is stuck.",
        "Raise the candidate's weight, lower the rule's min_evidence, or check that signals arrive.",
    ),
    "RollbackAutomationPaused": Runbook(
        "Automatic rollback has been paused by an operator for over 2h.",
        "Resume automation once the incident is over (`rollback-agent resume`).",
    ),
    "RollbackAgentAlertmanagerDown": Runbook(
        "The agent cannot poll Alertmanager's API v2.",
        "Check the Alertmanager URL and network policies between the agent and Alertmanager.",
    ),
    "RollbackAgentWebhookErrors": Runbook(
        "The agent refuses webhook posts (rejected: bad token, too large, invalid payload) or fails to act on "
        "them (failed).",
        "For rejected, compare the token in Alertmanager's receiver http_config with the agent's webhook auth; "
        "for failed, read the agent's log.",
    ),
}


# ---- validation --------------------------------------------------------------------------------------------------


def iter_alerts(gs: Sequence[Group]) -> Iterator[Alert]:
    for g in gs:
        for r in g.rules:
            if isinstance(r, Alert):
                yield r


def validate(gs: Sequence[Group]) -> list[str]:
    problems: list[str] = []
    records = [r.record for g in gs for r in g.rules if isinstance(r, Record)]
    dup_records = {r for r in records if records.count(r) > 1}
    if dup_records:
        problems.append(f"duplicate recording rules: {sorted(dup_records)}")
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for a in iter_alerts(gs):
        if a.severity not in SEVERITIES:
            problems.append(f"{a.alert}: severity {a.severity!r} not in {SEVERITIES}")
        if a.action not in ACTIONS:
            problems.append(f"{a.alert}: action {a.action!r} not in {ACTIONS}")
        if not re.fullmatch(r"\d+[smhd]", a.for_):
            problems.append(f"{a.alert}: bad for {a.for_!r}")
        if {"severity", "action"} & set(a.labels):
            problems.append(f"{a.alert}: severity/action go in their own fields")
        if a.alert not in RUNBOOKS:
            problems.append(f"{a.alert}: no runbook entry")
        key = (a.alert, tuple(sorted(a.labels.items())))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            problems.append(f"{a.alert}: two rules with the same static labels {dict(a.labels)}")
    unused = set(RUNBOOKS) - {a.alert for a in iter_alerts(gs)}
    if unused:
        problems.append(f"runbooks for unknown alerts: {sorted(unused)}")
    return problems


# ---- rendering ---------------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100_000, allow_unicode=True, default_flow_style=False)


HEADER: Final = (
    "# GENERATED by scripts/gen_prometheus_rules.py: do not edit. Change the script, then run\n"
    "#   python scripts/gen_prometheus_rules.py\n"
)


def render_rules(gs: Sequence[Group], runbook_base_url: str) -> str:
    return HEADER + _dump({"groups": [g.to_yaml(runbook_base_url) for g in gs]})


def render_manifest(gs: Sequence[Group], runbook_base_url: str) -> str:
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "model-rollback",
            "labels": {
                "app.kubernetes.io/name": "model-rollback-agent",
                "app.kubernetes.io/component": "prometheus-rules",
            },
        },
        "spec": {"groups": [g.to_yaml(runbook_base_url) for g in gs]},
    }
    return HEADER + _dump(manifest)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_docs_section(gs: Sequence[Group]) -> str:
    lines = [
        DOCS_BEGIN,
        "",
        "| alert | static labels | labels from the series | condition | for | severity | action |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in iter_alerts(gs):
        extra = ", ".join(f"{k}={v}" for k, v in a.labels.items()) or "-"
        lines.append(
            f"| [{a.alert}](#{a.alert.lower()}) | {_md(extra)} | {a.carries} | {_md(a.condition)} | {a.for_} "
            f"| {a.severity} "
            f"| {a.action} |"
        )
    lines += ["", "### Runbooks", ""]
    for name in dict.fromkeys(a.alert for a in iter_alerts(gs)):
        rb = RUNBOOKS[name]
        lines += [f"#### {name}", "", f"{rb.meaning} {rb.steps}", ""]
    lines.append(DOCS_END)
    return "\n".join(lines)


def splice_docs(current: str, section: str) -> str:
    start, end = current.find(DOCS_BEGIN), current.find(DOCS_END)
    if start < 0 or end < start:
        raise SystemExit(f"{DOCS_FILE}: the markers {DOCS_BEGIN!r} ... {DOCS_END!r} are missing")
    return current[:start] + section + current[end + len(DOCS_END) :]


def outputs(out_dir: Path, runbook_base_url: str, with_docs: bool) -> dict[Path, str]:
    gs = groups()
    problems = validate(gs)
    if problems:
        raise SystemExit("invalid rule source:\n  " + "\n  ".join(problems))
    files = {
        out_dir / RULES_FILE: render_rules(gs, runbook_base_url),
        out_dir / MANIFEST_FILE: render_manifest(gs, runbook_base_url),
    }
    if with_docs:
        current = DOCS_FILE.read_text() if DOCS_FILE.exists() else ""
        files[DOCS_FILE] = splice_docs(current, render_docs_section(gs))
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed outputs are stale")
    parser.add_argument("--output-dir", type=Path, help=f"write the two rule files here (default {RULES_DIR})")
    parser.add_argument("--runbook-base-url", default=DEFAULT_RUNBOOK_BASE_URL, help="base of runbook_url")
    args = parser.parse_args(argv)
    custom = args.output_dir is not None or args.runbook_base_url != DEFAULT_RUNBOOK_BASE_URL
    if args.check and custom:
        parser.error("--check compares the committed files: it takes no --output-dir / --runbook-base-url")
    out_dir: Path = args.output_dir or RULES_DIR
    files = outputs(out_dir, args.runbook_base_url, with_docs=not custom)
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
            print(f"stale: {names}; run `python scripts/gen_prometheus_rules.py`", file=sys.stderr)
            return 1
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
