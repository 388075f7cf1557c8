"""The agent's own Prometheus metrics, in a registry of its own (served on /metrics).

Names follow Prometheus conventions: `rollback_agent_` prefix, base units, `_total` for counters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily

from agent import __version__

# Push -> ACK of one xDS response on the loopback: sub-millisecond to tens of milliseconds.
_ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class AgentMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
        self.route_weight = Gauge(
            "rollback_agent_route_weight",
            "Weight of each version in the route every connected Envoy ACKed (served), or in the policy (desired).",
            ["model", "version", "state"],
            registry=r,
        )
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
            "The value each rule measured for each version at the last tick.",
            ["model", "rule", "version"],
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

    def set_audit_head(self, seq: int, digest: bytes, key_id: str) -> None:
        self.audit_head_seq.labels(self.model).set(seq)
        self.audit_head_info.clear()
        self.audit_head_info.labels(self.model, str(seq), digest.hex(), key_id).set(1)

    def set_weights(self, state: str, weights: tuple[tuple[str, int], ...]) -> None:
        for version, weight in weights:
            self.route_weight.labels(self.model, version, state).set(weight)


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
