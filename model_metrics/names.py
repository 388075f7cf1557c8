"""Metric names, label names and bucket layouts: the contract shared with the agent's signal parser and rules.

A model server written in another language must expose exactly these names, label names and bucket bounds
(see README.md next to this file). Changing anything here is a breaking change for the agent and its
Prometheus rules.
"""

from __future__ import annotations

from typing import Final

# Label names.
LABEL_MODEL: Final = "model"
LABEL_VERSION: Final = "version"
LABEL_FEATURE: Final = "feature"
LABEL_RESULT: Final = "result"
LABEL_NAME: Final = "name"

# Metric names, as they appear in the exposition (counters carry their `_total` suffix here).
REQUESTS_TOTAL: Final = "model_inference_requests_total"
ERRORS_TOTAL: Final = "model_inference_errors_total"
LATENCY_SECONDS: Final = "model_inference_latency_seconds"
PREDICTION_CONFIDENCE: Final = "model_prediction_confidence"
FEATURE_VALUE: Final = "model_feature_value"
FEATURE_OBSERVATIONS_TOTAL: Final = "model_feature_observations_total"
FEATURE_MISSING_TOTAL: Final = "model_feature_missing_total"
OUTCOMES_TOTAL: Final = "model_outcomes_total"
BUSINESS_METRIC: Final = "model_business_metric"
LOADED: Final = "model_loaded"

# Values of the `result` label of OUTCOMES_TOTAL.
RESULT_CORRECT: Final = "correct"
RESULT_INCORRECT: Final = "incorrect"

# Upper bounds (le) of the latency histogram, in seconds; +Inf is implicit. Fine-grained between 5 ms and
# 2.5 s, where serving latency SLOs live.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.35,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
)

# Upper bounds of the confidence histogram: 0.05, 0.10, ..., 1.0 (step 0.05); +Inf is implicit.
CONFIDENCE_BUCKETS: Final[tuple[float, ...]] = tuple(round(i * 0.05, 2) for i in range(1, 21))
