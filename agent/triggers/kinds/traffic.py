"""Which signals a traffic rule reads, by source: Envoy's per-version cluster stats or the model server's own."""

from __future__ import annotations

from typing import Final, Literal

from agent.domain.signals import Signal

TrafficSource = Literal["envoy", "model"]

REQUESTS: Final[dict[str, str]] = {"envoy": Signal.ENVOY_RQ_TOTAL, "model": Signal.MODEL_REQUESTS}
# 5xx responses at Envoy; failed predictions at the model server. A source that has not reported its error
# counter yet (client libraries often create labelled counters on first increment) counts as zero errors.
ERRORS: Final[dict[str, str]] = {"envoy": Signal.ENVOY_RQ_5XX, "model": Signal.MODEL_ERRORS}
LATENCY: Final[dict[str, str]] = {"envoy": Signal.ENVOY_RQ_TIME_MS, "model": Signal.MODEL_LATENCY_S}
LATENCY_UNIT_MS: Final[dict[str, float]] = {"envoy": 1.0, "model": 1000.0}  # multiply to get milliseconds
