"""ModelMetrics: the per-(model, version) handle a model server uses to export the agent's metric contract."""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from model_metrics import names
from model_metrics.features import FeatureCollector, FeatureSeries

_MV = (names.LABEL_MODEL, names.LABEL_VERSION)


@dataclass(frozen=True)
class _Families:
    """The metric families of one registry, shared by every ModelMetrics bound to it."""

    requests: Counter
    errors: Counter
    latency: Histogram
    confidence: Histogram
    outcomes: Counter
    business: Gauge
    loaded: Gauge
    features: FeatureCollector

    @classmethod
    def register(cls, registry: CollectorRegistry) -> _Families:
        families = cls(
            requests=Counter(names.REQUESTS_TOTAL, "Inference requests received", _MV, registry=None),
            errors=Counter(names.ERRORS_TOTAL, "Inference requests that failed", _MV, registry=None),
            latency=Histogram(
                names.LATENCY_SECONDS,
                "Inference request latency in seconds, failed requests included",
                _MV,
                buckets=names.LATENCY_BUCKETS,
                registry=None,
            ),
            confidence=Histogram(
                names.PREDICTION_CONFIDENCE,
                "Confidence of each prediction (probability of the predicted class)",
                _MV,
                buckets=names.CONFIDENCE_BUCKETS,
                registry=None,
            ),
            outcomes=Counter(
                names.OUTCOMES_TOTAL,
                "Labelled prediction outcomes, counted when the ground truth arrives",
                (*_MV, names.LABEL_RESULT),
                registry=None,
            ),
            business=Gauge(
                names.BUSINESS_METRIC,
                "Business metrics reported by the model server",
                (*_MV, names.LABEL_NAME),
                registry=None,
            ),
            loaded=Gauge(names.LOADED, "1 when the model version is loaded and serving, else 0", _MV, registry=None),
            features=FeatureCollector(),
        )
        collectors: list[Collector] = [
            families.requests,
            families.errors,
            families.latency,
            families.confidence,
            families.outcomes,
            families.business,
            families.loaded,
            families.features,
        ]
        done: list[Collector] = []
        try:
            for collector in collectors:
                registry.register(collector)
                done.append(collector)
        except ValueError:
            for collector in done:
                registry.unregister(collector)
            raise
        return families


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_FAMILIES_LOCK = threading.Lock()


def _families_for(registry: CollectorRegistry) -> _Families:
    with _FAMILIES_LOCK:
        families = _FAMILIES.get(registry)
        if families is None:
            families = _Families.register(registry)
            _FAMILIES[registry] = families
        return families


def _finite(what: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def _feature_value(value: float | None) -> float | None:
    """None for a missing value (None, NaN, +-Inf); the value as float otherwise."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class ModelMetrics:
    """Exports the agent's metric contract for one model version.

    All series of this (model, version) exist from construction on, at 0, so rates and ratios are defined
    before the first request. Several ModelMetrics (other models or versions) may share a registry.
    Thread-safe.

    `registry=None` means prometheus_client's global default REGISTRY (what `start_http_server` serves).
    `feature_edges` maps each expected feature to its frozen reference bucket edges (finite, strictly
    increasing upper bounds; +Inf is implicit), e.g. computed once from training data with `reference_edges`.
    """

    def __init__(
        self,
        model: str,
        version: str,
        *,
        feature_edges: Mapping[str, Sequence[float]] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not model or not version:
            raise ValueError("model and version must be non-empty")
        self._model = model
        self._version = version
        self._families = _families_for(REGISTRY if registry is None else registry)
        f = self._families
        self._requests = f.requests.labels(model, version)
        self._errors = f.errors.labels(model, version)
        self._latency = f.latency.labels(model, version)
        self._confidence = f.confidence.labels(model, version)
        self._correct = f.outcomes.labels(model, version, names.RESULT_CORRECT)
        self._incorrect = f.outcomes.labels(model, version, names.RESULT_INCORRECT)
        self._loaded = f.loaded.labels(model, version)
        self._loaded.set(0)
        self._features: dict[str, FeatureSeries] = {
            feature: f.features.declare(model, version, feature, edges)
            for feature, edges in (feature_edges or {}).items()
        }

    @property
    def model(self) -> str:
        return self._model

    @property
    def version(self) -> str:
        return self._version

    @property
    def feature_edges(self) -> dict[str, list[float]]:
        """The frozen bucket edges of every declared feature."""
        return {feature: list(series.edges) for feature, series in self._features.items()}

    def observe_request(self, latency_s: float, ok: bool = True) -> None:
        """Count one inference request (and an error if not ok) and observe its latency in seconds."""
        latency = _finite("latency_s", latency_s)
        self._requests.inc()
        if not ok:
            self._errors.inc()
        self._latency.observe(latency)

    @contextmanager
    def track_request(self) -> Iterator[None]:
        """Time the block as one request; it counts as an error if the block raises."""
        start = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.observe_request(time.perf_counter() - start, ok=ok)

    def observe_prediction(self, confidence: float) -> None:
        """Observe the confidence (probability of the predicted class, in [0, 1]) of one prediction."""
        self._confidence.observe(_finite("confidence", confidence))

    def observe_features(self, values: Mapping[str, float | None]) -> None:
        """Observe one input row. Every declared feature counts one observation; a declared feature whose key
        is absent or whose value is None, NaN or infinite counts as missing and is not bucketed. Keys that
        are not declared features are ignored."""
        updates = [(s, _feature_value(values.get(feature))) for feature, s in self._features.items()]
        self._families.features.observe(updates)

    def observe_outcome(self, correct: bool, count: int = 1) -> None:
        """Count `count` labelled outcomes (ground truth that arrived, usually late) as (in)correct."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        (self._correct if correct else self._incorrect).inc(count)

    def set_business_metric(self, name: str, value: float) -> None:
        """Set the business metric gauge `name` (e.g. "approval_rate") of this version."""
        self._families.business.labels(self._model, self._version, name).set(value)

    def set_loaded(self, loaded: bool) -> None:
        """Report whether this version is loaded and serving (model_loaded 1/0)."""
        self._loaded.set(1 if loaded else 0)

    def remove(self) -> None:
        """Stop exporting every series of this (model, version), e.g. when the version is retired."""
        f = self._families
        mv = (self._model, self._version)
        for family in (f.requests, f.errors, f.latency, f.confidence, f.loaded):
            family.remove(*mv)
        for result in (names.RESULT_CORRECT, names.RESULT_INCORRECT):
            f.outcomes.remove(*mv, result)
        f.business.remove_by_labels({names.LABEL_MODEL: self._model, names.LABEL_VERSION: self._version})
        f.features.remove(*mv)
