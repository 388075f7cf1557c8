"""model_metrics: names, labels and buckets are the agent's contract; read them back as Prometheus would."""

from __future__ import annotations

import itertools
import math
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from model_metrics import ModelMetrics, names, reference_edges

EDGES = {"age": [18.0, 25.0, 35.0, 50.0, 65.0], "income": [1_000.0, 10_000.0, 100_000.0]}


def scrape(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, /, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def buckets(samples: list[Sample], name: str, /, **labels: str) -> dict[float, float]:
    return {
        float(s.labels["le"]): s.value
        for s in samples
        if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items())
    }


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ModelMetrics:
    return ModelMetrics("credit", "v2", feature_edges=EDGES, registry=registry)


def test_every_series_exists_at_zero_from_construction(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    samples = scrape(registry)
    mv = {"model": "credit", "version": "v2"}
    assert value(samples, names.REQUESTS_TOTAL, **mv) == 0
    assert value(samples, names.ERRORS_TOTAL, **mv) == 0
    assert value(samples, f"{names.LATENCY_SECONDS}_count", **mv) == 0
    assert value(samples, f"{names.PREDICTION_CONFIDENCE}_count", **mv) == 0
    assert value(samples, names.LOADED, **mv) == 0
    for result in ("correct", "incorrect"):
        assert value(samples, names.OUTCOMES_TOTAL, result=result, **mv) == 0
    for feature in EDGES:
        assert value(samples, names.FEATURE_OBSERVATIONS_TOTAL, feature=feature, **mv) == 0
        assert value(samples, names.FEATURE_MISSING_TOTAL, feature=feature, **mv) == 0
        assert value(samples, f"{names.FEATURE_VALUE}_count", feature=feature, **mv) == 0


def test_family_types_and_label_names(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    metrics.set_business_metric("approval_rate", 0.4)
    text = generate_latest(registry).decode()
    # The text format parser reports prometheus_client's `_created` samples as separate families: not ours.
    families = {f.name: f for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}
    expected = {
        "model_inference_requests": ("counter", {"model", "version"}),
        "model_inference_errors": ("counter", {"model", "version"}),
        "model_inference_latency_seconds": ("histogram", {"model", "version"}),
        "model_prediction_confidence": ("histogram", {"model", "version"}),
        "model_feature_value": ("histogram", {"model", "version", "feature"}),
        "model_feature_observations": ("counter", {"model", "version", "feature"}),
        "model_feature_missing": ("counter", {"model", "version", "feature"}),
        "model_outcomes": ("counter", {"model", "version", "result"}),
        "model_business_metric": ("gauge", {"model", "version", "name"}),
        "model_loaded": ("gauge", {"model", "version"}),
    }
    assert set(families) == set(expected)
    for name, (kind, labels) in expected.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, sample


def test_requests_errors_latency(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    metrics.observe_request(latency_s=0.012, ok=True)
    metrics.observe_request(latency_s=0.3, ok=False)
    with pytest.raises(RuntimeError), metrics.track_request():
        raise RuntimeError("boom")
    samples = scrape(registry)
    assert value(samples, names.REQUESTS_TOTAL) == 3
    assert value(samples, names.ERRORS_TOTAL) == 2
    latency = buckets(samples, names.LATENCY_SECONDS)
    for le in (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf):
        assert le in latency
    assert latency[0.01] == 1  # the track_request block took well under 10 ms
    assert latency[0.015] == 2
    assert latency[0.25] == 2
    assert latency[0.35] == 3
    assert value(samples, f"{names.LATENCY_SECONDS}_count") == 3


def test_confidence_buckets_step_005(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    metrics.observe_prediction(0.93)
    metrics.observe_prediction(0.5)
    conf = buckets(scrape(registry), names.PREDICTION_CONFIDENCE)
    assert sorted(conf) == [*(round(0.05 * i, 2) for i in range(1, 21)), math.inf]
    assert conf[0.45] == 0
    assert conf[0.5] == 1  # le is inclusive
    assert conf[0.9] == 1
    assert conf[0.95] == 2
    with pytest.raises(ValueError):
        metrics.observe_prediction(math.nan)


def test_each_feature_has_its_own_buckets(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    for age in (17.0, 18.0, 31.0, 70.0):
        metrics.observe_features({"age": age, "income": 5_000.0})
    samples = scrape(registry)
    ages = buckets(samples, names.FEATURE_VALUE, feature="age")
    income = buckets(samples, names.FEATURE_VALUE, feature="income")
    assert sorted(ages) == [18.0, 25.0, 35.0, 50.0, 65.0, math.inf]
    assert sorted(income) == [1_000.0, 10_000.0, 100_000.0, math.inf]
    assert ages == {18.0: 2, 25.0: 2, 35.0: 3, 50.0: 3, 65.0: 3, math.inf: 4}  # cumulative, le inclusive
    assert income == {1_000.0: 0, 10_000.0: 4, 100_000.0: 4, math.inf: 4}
    assert value(samples, f"{names.FEATURE_VALUE}_sum", feature="age") == 136.0
    assert value(samples, f"{names.FEATURE_VALUE}_count", feature="age") == 4


def test_missing_features(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    metrics.observe_features({"age": 31.0, "income": None})
    metrics.observe_features({"age": math.nan})  # income key absent
    metrics.observe_features({"age": math.inf, "income": 2_000.0, "undeclared": 1.0})
    samples = scrape(registry)
    assert value(samples, names.FEATURE_OBSERVATIONS_TOTAL, feature="age") == 3
    assert value(samples, names.FEATURE_MISSING_TOTAL, feature="age") == 2
    assert value(samples, f"{names.FEATURE_VALUE}_count", feature="age") == 1
    assert value(samples, names.FEATURE_OBSERVATIONS_TOTAL, feature="income") == 3
    assert value(samples, names.FEATURE_MISSING_TOTAL, feature="income") == 2
    assert value(samples, f"{names.FEATURE_VALUE}_count", feature="income") == 1
    assert not [s for s in samples if s.labels.get("feature") == "undeclared"]


def test_outcomes_business_loaded(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    metrics.observe_outcome(correct=True)
    metrics.observe_outcome(correct=False, count=3)
    metrics.set_business_metric("approval_rate", 0.41)
    metrics.set_loaded(True)
    samples = scrape(registry)
    assert value(samples, names.OUTCOMES_TOTAL, result="correct") == 1
    assert value(samples, names.OUTCOMES_TOTAL, result="incorrect") == 3
    assert value(samples, names.BUSINESS_METRIC, name="approval_rate") == 0.41
    assert value(samples, names.LOADED) == 1
    metrics.set_loaded(False)
    assert value(scrape(registry), names.LOADED) == 0


def test_versions_share_a_registry_and_remove(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    v1 = ModelMetrics("credit", "v1", feature_edges={"age": [30.0]}, registry=registry)
    v1.observe_request(0.01)
    v1.observe_features({"age": 40.0})
    samples = scrape(registry)
    assert value(samples, names.REQUESTS_TOTAL, version="v1") == 1
    assert value(samples, names.REQUESTS_TOTAL, version="v2") == 0
    assert buckets(samples, names.FEATURE_VALUE, version="v1", feature="age") == {30.0: 0, math.inf: 1}
    assert len(buckets(samples, names.FEATURE_VALUE, version="v2", feature="age")) == 6
    with pytest.raises(ValueError, match="already declared"):
        ModelMetrics("credit", "v1", feature_edges={"age": [31.0]}, registry=registry)
    v1.remove()
    assert not [s for s in scrape(registry) if s.labels.get("version") == "v1"]


@pytest.mark.parametrize("edges", [[], [1.0, 1.0], [2.0, 1.0], [1.0, math.inf]])
def test_invalid_edges_rejected(registry: CollectorRegistry, edges: list[float]) -> None:
    with pytest.raises(ValueError):
        ModelMetrics("m", "v", feature_edges={"f": edges}, registry=registry)


def test_concurrent_observations_keep_counts_consistent(registry: CollectorRegistry, metrics: ModelMetrics) -> None:
    def work() -> None:
        for i in range(2_000):
            metrics.observe_features({"age": float(i % 80), "income": None if i % 4 == 0 else 500.0})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = scrape(registry)
    for feature, missing in (("age", 0), ("income", 2_000)):
        assert value(samples, names.FEATURE_OBSERVATIONS_TOTAL, feature=feature) == 8_000
        assert value(samples, names.FEATURE_MISSING_TOTAL, feature=feature) == missing
        assert value(samples, f"{names.FEATURE_VALUE}_count", feature=feature) == 8_000 - missing


def test_reference_edges_are_quantiles() -> None:
    assert reference_edges(range(1, 101), bins=4) == [25.75, 50.5, 75.25]
    edges = reference_edges([float(v) for v in range(1000)])
    assert len(edges) == 9
    assert all(a < b for a, b in itertools.pairwise(edges))
    # ~1/bins of the reference data per bucket
    counts = [sum(1 for v in range(1000) if lo < v <= hi) for lo, hi in zip([-1.0, *edges], [*edges, 1e9], strict=True)]
    assert all(95 <= c <= 105 for c in counts)


def test_reference_edges_ties_missing_and_errors() -> None:
    assert reference_edges([0.0] * 90 + [1.0] * 10) == [0.0, 0.1]  # ties merge cut points
    assert reference_edges([3.0, None, math.nan]) == [3.0]
    assert reference_edges([1 / 3, 2 / 3], bins=2) == [0.5]
    assert reference_edges([0.123456789, 0.2], bins=2) == [0.161728]  # 6 significant digits
    with pytest.raises(ValueError):
        reference_edges([None, math.nan])
    with pytest.raises(ValueError):
        reference_edges([1.0, 2.0], bins=1)
