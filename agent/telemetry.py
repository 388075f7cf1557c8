"""The agent's own Prometheus metrics, in a registry of its own (served on /metrics).

Names follow Prometheus conventions: `rollback_agent_` prefix, base units, `_total` for counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

from agent import __version__

# Push -> ACK of one xDS response on the loopback: sub-millisecond to tens of milliseconds.
_ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Label values known before anything happens: their counters are exported at 0 from the start, so that rate() and
# increase() see the first event instead of a series appearing out of nothing.
XDS_TYPES: Final = ("Listener", "Cluster", "RouteConfiguration")
TRAFFIC_OUTCOMES: Final = ("acked", "unchanged", "rejected", "timeout", "invalid", "refused", "unavailable")
ROLLBACK_CAUSES: Final = ("rule", "alert", "operator")
ROLLBACK_OUTCOMES: Final = (
    "recovered",
    "inconclusive",
    "verification_failed",
    "no_eligible_target",
    "switch_failed",
    "suppressed",
)
VERIFICATION_OUTCOMES: Final = ("passed", "failed", "inconclusive")
ESCALATION_REASONS: Final = ("no_eligible_target", "switch_failed", "verification_failed", "internal_error")
RELOAD_OUTCOMES: Final = ("ok", "failed")
SIGNAL_SOURCES: Final = ("envoy", "model", "health", "stream")
SCRAPE_OUTCOMES: Final = ("ok", "error")
BACKGROUND_TASKS: Final = ("verify", "archive", "rule-decision", "monitor-tick", "monitor-stream-tick")

# Rule kinds whose verdicts measure in milliseconds (the unit their rule files are written in); the metrics export
# them in seconds, as Prometheus' base unit.
_MILLISECOND_KINDS: Final = frozenset({"latency_p99"})


class AgentMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_* (CPU, memory, open fds, start time) of the agent itself
        self.build_info = Info("rollback_agent_build", "The agent's build.", registry=r)
        self.build_info.info({"version": __version__})
        self.xds_responses = Counter(
            "rollback_agent_xds_responses_total", "xDS responses pushed to Envoy.", ["type"], registry=r
        )
        self.xds_acks = Counter("rollback_agent_xds_acks_total", "xDS responses Envoy ACKed.", ["type"], registry=r)
        self.xds_nacks = Counter(
            "rollback_agent_xds_nacks_total", "xDS responses Envoy rejected (NACK).", ["type"], registry=r
        )
        self.xds_push_to_ack = Histogram(
            "rollback_agent_xds_push_to_ack_seconds",
            "From an xDS response sent to its ACK.",
            ["type"],
            buckets=_ACK_BUCKETS,
            registry=r,
        )
        self.xds_connected = Gauge("rollback_agent_xds_connected_envoys", "Envoys with an open ADS stream.", registry=r)
        self.background_failures = Counter(
            "rollback_agent_background_failures_total",
            "Background work (verification after a switch, a rule decision) that raised instead of finishing.",
            ["task"],
            registry=r,
        )
        self.traffic_changes = Counter(
            "rollback_agent_traffic_changes_total",
            "Traffic changes by outcome (acked, rejected, timeout, invalid, unchanged).",
            ["model", "outcome"],
            registry=r,
        )
        self.decision_to_ack = Histogram(
            "rollback_agent_decision_to_ack_seconds",
            "From a traffic decision entering the agent to every connected Envoy ACKing it.",
            ["model"],
            buckets=_ACK_BUCKETS,
            registry=r,
        )
        self.route_weights = RouteWeightCollector(model)
        r.register(self.route_weights)
        self.automation_paused = Gauge(
            "rollback_agent_automation_paused",
            "1 while automatic rollback is paused by an operator.",
            ["model"],
            registry=r,
        )
        self.ready = Gauge(
            "rollback_agent_ready", "1 when every connected Envoy serves the current config.", registry=r
        )

        self.model_info = Gauge(
            "rollback_agent_model_info", "The model this agent routes, with its tier.", ["model", "tier"], registry=r
        )
        self.rollbacks = Counter(
            "rollback_agent_rollbacks_total",
            "Rollbacks by cause (rule, alert, operator) and outcome.",
            ["model", "cause", "outcome"],
            registry=r,
        )
        self.rollback_phase = Histogram(
            "rollback_agent_rollback_phase_seconds",
            "Duration of each rollback phase (detect, select, validate, warm, switch, ack, confirm, verify, archive).",
            ["model", "phase"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.verifications = Counter(
            "rollback_agent_verifications_total",
            "Post-rollback verifications by outcome (passed, failed, inconclusive).",
            ["model", "outcome"],
            registry=r,
        )
        self.escalations = Counter(
            "rollback_agent_escalations_total",
            "Escalations: no eligible target, switch failed, verification failed.",
            ["model", "reason"],
            registry=r,
        )

        self.signal_scrapes = Counter(
            "rollback_agent_signal_scrapes_total",
            "Signal source reads by source (envoy, model, health) and outcome (ok, error).",
            ["model", "source", "outcome"],
            registry=r,
        )
        self.model_metrics_read_errors = Counter(
            "rollback_agent_model_metrics_read_errors_total",
            "Failed reads of a version's model metrics by reason (http_status, connect, timeout, unparsable, error).",
            ["model", "version", "reason"],
            registry=r,
        )
        self.model_metric_missing = Gauge(
            "rollback_agent_model_metric_missing",
            "1 while a metric name the version's server profile expects is absent from its scrape.",
            ["model", "version", "name"],
            registry=r,
        )
        self.signal_source_live = Gauge(
            "rollback_agent_signal_source_live",
            "1 for the source Envoy's per-version request figures come from (stream: the access-log stream; "
            "envoy: Envoy's stats, the fallback), 0 for the other.",
            ["model", "source"],
            registry=r,
        )
        self.rule_state = Gauge(
            "rollback_agent_rule_state",
            "1 for the current state of each rule and version (ok, pending, firing, insufficient_evidence).",
            ["model", "rule", "version", "state"],
            registry=r,
        )
        self.rule_value = Gauge(
            "rollback_agent_rule_value",
            "The value each rule measured for each version at the last tick, in base units (latency in seconds).",
            ["model", "rule", "kind", "version"],
            registry=r,
        )
        self.rule_threshold = Gauge(
            "rollback_agent_rule_threshold",
            "The threshold each rule compared its value with at the last tick (the clear threshold while firing), "
            "in the value's unit.",
            ["model", "rule", "kind", "version"],
            registry=r,
        )
        self.rules_loaded = Gauge("rollback_agent_rules_loaded", "Rules in force.", ["model"], registry=r)
        self.rule_reloads = Counter(
            "rollback_agent_rule_reloads_total",
            "Rule file reloads by outcome (ok, failed).",
            ["model", "outcome"],
            registry=r,
        )
        self.rules_last_reload_ok = Gauge(
            "rollback_agent_rules_last_reload_success",
            "1 if the last rule file reload was accepted.",
            ["model"],
            registry=r,
        )
        # The audit chain's head, anchored outside the pod: Prometheus keeps the history of (seq, hash) pairs, so
        # a trail later truncated or re-sealed no longer matches what was scraped (`audit verify --anchor`).
        self.audit_head_seq = Gauge(
            "rollback_agent_audit_head_seq", "Sequence number of the newest audit record.", ["model"], registry=r
        )
        self.audit_head_info = Gauge(
            "rollback_agent_audit_head_info",
            "1 for the newest audit record: its sequence number, hash (hex) and signing key id.",
            ["model", "seq", "hash", "key_id"],
            registry=r,
        )

        self._start_known_counters()

    def _start_known_counters(self) -> None:
        for kind in XDS_TYPES:
            for counter in (self.xds_responses, self.xds_acks, self.xds_nacks):
                counter.labels(kind)
        for task in BACKGROUND_TASKS:
            self.background_failures.labels(task)
        for outcome in TRAFFIC_OUTCOMES:
            self.traffic_changes.labels(self.model, outcome)
        for cause in ROLLBACK_CAUSES:
            for outcome in ROLLBACK_OUTCOMES:
                self.rollbacks.labels(self.model, cause, outcome)
        for outcome in VERIFICATION_OUTCOMES:
            self.verifications.labels(self.model, outcome)
        for reason in ESCALATION_REASONS:
            self.escalations.labels(self.model, reason)
        for outcome in RELOAD_OUTCOMES:
            self.rule_reloads.labels(self.model, outcome)
        for source in SIGNAL_SOURCES:
            for outcome in SCRAPE_OUTCOMES:
                self.signal_scrapes.labels(self.model, source, outcome)

    def set_rule_verdicts(self, verdicts: Iterable[RuleVerdictSample]) -> None:
        """Replace the exported rule values and thresholds with this tick's (a rule or version gone is dropped)."""
        self.rule_value.clear()
        self.rule_threshold.clear()
        for rule, kind, version, value, threshold in verdicts:
            scale = 0.001 if kind in _MILLISECOND_KINDS else 1.0
            if value is not None:
                self.rule_value.labels(self.model, rule, kind, version).set(value * scale)
            if threshold is not None:
                self.rule_threshold.labels(self.model, rule, kind, version).set(threshold * scale)

    def set_audit_head(self, seq: int, digest: bytes, key_id: str) -> None:
        self.audit_head_seq.labels(self.model).set(seq)
        self.audit_head_info.clear()
        self.audit_head_info.labels(self.model, str(seq), digest.hex(), key_id).set(1)

    def set_weights(self, state: str, weights: tuple[tuple[str, int], ...]) -> None:
        if state == "desired":
            self.route_weights.desired = weights
        else:
            self.route_weights.served_last = weights


# (rule, kind, version, value, threshold), value and threshold in the rule's own unit.
RuleVerdictSample = tuple[str, str, str, float | None, float | None]


class RouteWeightCollector:
    """`rollback_agent_route_weight`: the policy's weights (desired) and those every connected Envoy ACKed (served).

    The served split is read at scrape time from `served_source` (the route sink) once the runtime binds it, so it
    is there as soon as Envoy ACKed the start-up route, not only after the first change.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self.desired: tuple[tuple[str, int], ...] = ()
        self.served_last: tuple[tuple[str, int], ...] = ()
        self.served_source: Callable[[], tuple[tuple[str, int], ...] | None] | None = None

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "rollback_agent_route_weight",
            "Weight of each version in the route every connected Envoy ACKed (served), or in the policy (desired).",
            labels=["model", "version", "state"],
        )
        for version, weight in self.desired:
            family.add_metric([self._model, version, "desired"], float(weight))
        served = self.served_source() if self.served_source is not None else self.served_last
        for version, weight in served or ():
            family.add_metric([self._model, version, "served"], float(weight))
        return [family]


class ServedVersionsCollector:
    """`rollback_agent_serving_info`: 1 for each version currently receiving traffic (served split)."""

    def __init__(self, model: str, served: object) -> None:
        self._model = model
        self._served = served

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "rollback_agent_serving_info",
            "Versions receiving traffic in the served route.",
            labels=["model", "version"],
        )
        weights = self._served() if callable(self._served) else None
        for version, weight in weights or ():
            if weight > 0:
                family.add_metric([self._model, version], 1.0)
        return [family]


class VersionStatusCollector:
    """`rollback_agent_version_status`: 1 for each version's registry status (candidate, verified, failed...)."""

    def __init__(self, model: str, statuses: Callable[[], Mapping[str, str]]) -> None:
        self._model = model
        self._statuses = statuses

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "rollback_agent_version_status", "Registry status of each version.", labels=["model", "version", "status"]
        )
        for version, status in sorted(self._statuses().items()):
            family.add_metric([self._model, version, status], 1.0)
        return [family]


@dataclass(frozen=True, slots=True)
class RolloutSample:
    """The rollout as the metrics show it (agent.http.rollout_api.rollout_sample reads it from the driver)."""

    candidate: str
    stage: str
    stage_index: int
    status: str  # running | paused | completed | rolled_back | aborted
    candidate_weight: int
    in_stage_s: float
    gates: tuple[tuple[str, str], ...]  # (gate, outcome) of the current stage's last judgement


class RolloutCollector:
    """`rollback_agent_rollout_*`, read at scrape time: the rollout's stage (index, name, status), the candidate's
    share, the time in the stage and each gate's last outcome; no series before a rollout was started."""

    def __init__(self, model: str, sample: Callable[[], RolloutSample | None]) -> None:
        self._model = model
        self._sample = sample

    def collect(self) -> list[GaugeMetricFamily]:
        stage = GaugeMetricFamily(
            "rollback_agent_rollout_stage",
            "Index of the rollout's current stage (0: the first), labelled with its name and the rollout's status.",
            labels=["model", "candidate", "stage", "status"],
        )
        weight = GaugeMetricFamily(
            "rollback_agent_rollout_candidate_weight",
            "Share of live traffic (%) the rollout's stage gives the candidate (0 once it ended on stable).",
            labels=["model", "candidate"],
        )
        in_stage = GaugeMetricFamily(
            "rollback_agent_rollout_in_stage_seconds",
            "Time the rollout has spent in its current stage (counted while running).",
            labels=["model", "candidate"],
        )
        gates = GaugeMetricFamily(
            "rollback_agent_rollout_gate_outcome",
            "1 for each gate of the current stage with its last outcome (pass, fail, insufficient_evidence).",
            labels=["model", "candidate", "gate", "outcome"],
        )
        sample = self._sample()
        if sample is not None:
            stage.add_metric([self._model, sample.candidate, sample.stage, sample.status], float(sample.stage_index))
            weight.add_metric([self._model, sample.candidate], float(sample.candidate_weight))
            in_stage.add_metric([self._model, sample.candidate], sample.in_stage_s)
            for gate, outcome in sample.gates:
                gates.add_metric([self._model, sample.candidate, gate, outcome], 1.0)
        return [stage, weight, in_stage, gates]
