"""Metrics of the Alertmanager trigger source, registered on the agent's registry (served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

WEBHOOK_OUTCOMES = ("accepted", "duplicate", "ignored", "rejected", "failed")
PULL_OUTCOMES = ("accepted", "duplicate", "ignored", "failed")


class AlertSourceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhook_alerts = Counter(
            "rollback_agent_webhook_alerts_total",
            "Alerts received on the webhook by outcome: accepted (handed to the decision handler), duplicate, "
            "ignored (no route), failed (the decision handler raised; Alertmanager retries); rejected counts "
            "refused deliveries (authentication, size, schema).",
            ["outcome"],
            registry=registry,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_alerts.labels(outcome)
        self.pulled_alerts = Counter(
            "rollback_agent_alertmanager_pulled_alerts_total",
            "Alert notifications (new firing, resolved) found by the Alertmanager API pull, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in PULL_OUTCOMES:
            self.pulled_alerts.labels(outcome)
        self.alertmanager_up = Gauge(
            "rollback_agent_alertmanager_up",
            "1 if the last pull of GET /api/v2/alerts from this Alertmanager succeeded, 0 if it failed.",
            ["url"],
            registry=registry,
        )
        self.alertmanager_poll_errors = Counter(
            "rollback_agent_alertmanager_poll_errors_total",
            "Failed pulls of GET /api/v2/alerts (connection, timeout, HTTP status, invalid body).",
            ["url"],
            registry=registry,
        )
