"""Instrumentation helper: export the metric names the rollback agent's rules expect, in a few lines.

    from model_metrics import ModelMetrics, reference_edges

    m = ModelMetrics("credit", "v2", feature_edges={"age": reference_edges(train_ages)})
    m.set_loaded(True)
    m.observe_request(latency_s=0.012, ok=True)
    m.observe_prediction(confidence=0.93)
    m.observe_features({"age": 31.0})
    m.observe_outcome(correct=True)
    m.set_business_metric("approval_rate", 0.41)

The metric contract is documented in README.md next to this file.
"""

from model_metrics import names
from model_metrics.edges import reference_edges
from model_metrics.features import FeatureCollector
from model_metrics.metrics import ModelMetrics

__all__ = ["FeatureCollector", "ModelMetrics", "names", "reference_edges"]
