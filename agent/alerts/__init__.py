"""Alertmanager as a trigger source: webhook payloads and API v2 alerts, routed to actions, deduplicated.

Pure code: no HTTP framework, no network, no storage. The webhook (agent.http.webhook) and the API poller
(agent.adapters.alertmanager_poller) feed alerts into one `AlertIntake`, so an alert that arrives both ways, or
again on a retry or a re-notification, causes one action.
"""
