"""Per-feature value histograms, each feature with its own frozen bucket edges.

prometheus_client's Histogram has a single bucket layout per metric family, but drift detection needs each
feature binned by its own reference edges. FeatureCollector keeps the bucket counts itself and yields one
`model_feature_value` histogram family whose series (one per model, version, feature) carry different `le`
sets, together with the `model_feature_observations_total` and `model_feature_missing_total` counters.
All three are updated under one lock, so a scrape always sees
`observations_total == missing_total + feature_value_count` for every series.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from model_metrics import names

_format_le: Callable[[float], str] = floatToGoString

_LABELS = (names.LABEL_MODEL, names.LABEL_VERSION, names.LABEL_FEATURE)


def validate_edges(feature: str, edges: Sequence[float]) -> tuple[float, ...]:
    """Return `edges` as a tuple, checked finite and strictly increasing (ValueError if not)."""
    values = tuple(float(e) for e in edges)
    if not values:
        raise ValueError(f"feature {feature!r}: bucket edges must not be empty")
    if not all(math.isfinite(e) for e in values):
        raise ValueError(f"feature {feature!r}: bucket edges must be finite (+Inf is implicit)")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"feature {feature!r}: bucket edges must be strictly increasing, got {list(values)}")
    return values


class FeatureSeries:
    """The state of one (model, version, feature) series. Mutated only under its collector's lock."""

    __slots__ = ("_le", "bucket_counts", "edges", "labels", "missing", "observations", "total")

    def __init__(self, labels: tuple[str, str, str], edges: tuple[float, ...]) -> None:
        self.labels = labels
        self.edges = edges
        self._le = [*(_format_le(e) for e in edges), "+Inf"]
        self.bucket_counts = [0] * (len(edges) + 1)  # non-cumulative; last slot is the +Inf bucket
        self.total = 0.0
        self.observations = 0
        self.missing = 0

    def record(self, value: float | None) -> None:
        self.observations += 1
        if value is None:
            self.missing += 1
            return
        # Prometheus buckets are `value <= le`: the first edge >= value is the bucket.
        self.bucket_counts[bisect.bisect_left(self.edges, value)] += 1
        self.total += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float, int, int]:
        cumulative: list[tuple[str, float]] = []
        running = 0
        for le, count in zip(self._le, self.bucket_counts, strict=True):
            running += count
            cumulative.append((le, float(running)))
        return cumulative, self.total, self.observations, self.missing


class FeatureCollector:
    """Collector for model_feature_value / model_feature_observations_total / model_feature_missing_total."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], FeatureSeries] = {}

    def declare(self, model: str, version: str, feature: str, edges: Sequence[float]) -> FeatureSeries:
        """Create (or return the existing) series; its counters are exported at 0 from now on.

        Declaring an existing series again with other edges raises ValueError: a series' buckets are frozen.
        """
        frozen = validate_edges(feature, edges)
        key = (model, version, feature)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = FeatureSeries(key, frozen)
                self._series[key] = series
            elif series.edges != frozen:
                raise ValueError(
                    f"feature {feature!r} of {model}/{version} is already declared with edges "
                    f"{list(series.edges)}, not {list(frozen)}"
                )
            return series

    def remove(self, model: str, version: str) -> None:
        """Stop exporting every feature series of (model, version)."""
        with self._lock:
            for key in [k for k in self._series if k[0] == model and k[1] == version]:
                del self._series[key]

    def observe(self, updates: Iterable[tuple[FeatureSeries, float | None]]) -> None:
        """Record one value (None = missing) per series, atomically with respect to a scrape."""
        with self._lock:
            for series, value in updates:
                series.record(value)

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshots = [(s.labels, s.snapshot()) for s in self._series.values()]
        value, observations, missing = self._families()
        for labels, (buckets, total, observed, missed) in snapshots:
            value.add_metric(labels, buckets, total)
            observations.add_metric(labels, observed)
            missing.add_metric(labels, missed)
        yield from (value, observations, missing)

    @staticmethod
    def _families() -> tuple[HistogramMetricFamily, CounterMetricFamily, CounterMetricFamily]:
        return (
            HistogramMetricFamily(
                names.FEATURE_VALUE,
                "Observed input feature values, bucketed by each feature's frozen reference edges",
                labels=_LABELS,
            ),
            CounterMetricFamily(
                names.FEATURE_OBSERVATIONS_TOTAL,
                "Times a declared feature was expected in an input row, whether present or missing",
                labels=_LABELS,
            ),
            CounterMetricFamily(
                names.FEATURE_MISSING_TOTAL,
                "Times a declared feature was absent, null or non-finite in an input row",
                labels=_LABELS,
            ),
        )
