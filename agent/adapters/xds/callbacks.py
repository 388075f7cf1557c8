"""xDS callbacks that feed the agent's metrics and log."""

from __future__ import annotations

import logging

from agent.adapters.xds.cache import XdsCallbacks
from agent.adapters.xds.stream_state import RequestKind, RequestOutcome, Response, StreamState
from agent.telemetry import AgentMetrics

log = logging.getLogger(__name__)


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


class MetricsCallbacks(XdsCallbacks):
    def __init__(self, metrics: AgentMetrics) -> None:
        self._m = metrics
        self._open = 0

    def stream_opened(self, stream: StreamState) -> None:
        self._open += 1
        self._m.xds_connected.set(self._open)

    def stream_closed(self, stream: StreamState) -> None:
        self._open -= 1
        self._m.xds_connected.set(self._open)

    def response_sent(self, stream: StreamState, response: Response) -> None:
        self._m.xds_responses.labels(_short(response.type_url)).inc()
        log.debug(
            "xds: -> %s %s v=%s nonce=%s", stream.node_id, _short(response.type_url), response.version, response.nonce
        )

    def request_handled(self, stream: StreamState, outcome: RequestOutcome, now: float) -> None:
        kind = _short(outcome.type_url)
        if outcome.kind is RequestKind.ACK:
            self._m.xds_acks.labels(kind).inc()
            self._m.xds_push_to_ack.labels(kind).observe(max(0.0, now - outcome.sent_at))
        elif outcome.kind is RequestKind.NACK:
            self._m.xds_nacks.labels(kind).inc()
