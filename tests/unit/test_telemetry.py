"""The agent's /metrics as a scraper sees them: series present from the start, base units, process metrics."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.telemetry import AgentMetrics


def samples(metrics: AgentMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_counters_with_known_labels_are_exported_at_zero_before_anything_happens() -> None:
    m = AgentMetrics("credit")
    assert value(m, "rollback_agent_rollbacks_total", model="credit", cause="rule", outcome="recovered") == 0
    assert value(m, "rollback_agent_rollbacks_total", model="credit", cause="alert", outcome="switch_failed") == 0
    assert value(m, "rollback_agent_traffic_changes_total", model="credit", outcome="acked") == 0
    assert value(m, "rollback_agent_verifications_total", model="credit", outcome="failed") == 0
    assert value(m, "rollback_agent_escalations_total", model="credit", reason="no_eligible_target") == 0
    assert value(m, "rollback_agent_xds_nacks_total", type="RouteConfiguration") == 0
    assert value(m, "rollback_agent_rule_reloads_total", model="credit", outcome="failed") == 0
    assert value(m, "rollback_agent_signal_scrapes_total", model="credit", source="stream", outcome="error") == 0
    m.rollbacks.labels("credit", "rule", "recovered").inc()
    assert value(m, "rollback_agent_rollbacks_total", model="credit", cause="rule", outcome="recovered") == 1


def test_process_metrics_are_on_the_agents_registry() -> None:
    names = {name for name, _ in samples(AgentMetrics("credit"))}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds"} <= names


def test_served_weight_is_read_from_the_route_sink_at_scrape_time() -> None:
    m = AgentMetrics("credit")
    m.set_weights("desired", (("v1", 100), ("v2", 0)))
    served: list[tuple[tuple[str, int], ...] | None] = [None]
    m.route_weights.served_source = lambda: served[0]
    assert value(m, "rollback_agent_route_weight", model="credit", version="v1", state="desired") == 100
    assert value(m, "rollback_agent_route_weight", model="credit", version="v1", state="served") is None
    served[0] = (("v1", 100), ("v2", 0))  # Envoy ACKed the start-up route: no traffic change needed
    assert value(m, "rollback_agent_route_weight", model="credit", version="v1", state="served") == 100
    assert value(m, "rollback_agent_route_weight", model="credit", version="v2", state="served") == 0


def test_rule_values_and_thresholds_are_in_base_units() -> None:
    m = AgentMetrics("credit")
    m.set_rule_verdicts(
        [
            ("p99", "latency_p99", "v2", 212.5, 250.0),  # rules measure latency in ms
            ("errors", "error_rate", "v2", 0.07, 0.05),
            ("quiet", "error_rate", "v1", None, 0.05),
        ]
    )
    assert value(m, "rollback_agent_rule_value", model="credit", rule="p99", kind="latency_p99", version="v2") == 0.2125
    assert (
        value(m, "rollback_agent_rule_threshold", model="credit", rule="p99", kind="latency_p99", version="v2") == 0.25
    )
    assert value(m, "rollback_agent_rule_value", model="credit", rule="errors", kind="error_rate", version="v2") == 0.07
    assert value(m, "rollback_agent_rule_value", model="credit", rule="quiet", kind="error_rate", version="v1") is None
    m.set_rule_verdicts([])
    assert not [k for k in samples(m) if k[0] in {"rollback_agent_rule_value", "rollback_agent_rule_threshold"}]


def test_pre_created_rollback_causes_are_the_engines() -> None:
    from agent.engine.decisions import Cause
    from agent.telemetry import ROLLBACK_CAUSES

    assert set(ROLLBACK_CAUSES) == {cause.value for cause in Cause}


def test_the_rollout_is_read_at_scrape_time_and_absent_before_one_starts() -> None:
    from agent.telemetry import RolloutCollector, RolloutSample

    m = AgentMetrics("credit")
    current: list[RolloutSample | None] = [None]
    m.registry.register(RolloutCollector("credit", lambda: current[0]))
    assert not [k for k in samples(m) if k[0].startswith("rollback_agent_rollout_")]
    gates = (("rule:error-rate", "pass"), ("judge:latency_ms", "insufficient_evidence"))
    current[0] = RolloutSample("v2", "canary-25", 1, "running", 25, 42.5, gates)
    labels = {"model": "credit", "candidate": "v2"}
    assert value(m, "rollback_agent_rollout_stage", **labels, stage="canary-25", status="running") == 1
    assert value(m, "rollback_agent_rollout_candidate_weight", **labels) == 25
    assert value(m, "rollback_agent_rollout_in_stage_seconds", **labels) == 42.5
    assert value(m, "rollback_agent_rollout_gate_outcome", **labels, gate="judge:latency_ms",
                 outcome="insufficient_evidence") == 1  # fmt: skip
