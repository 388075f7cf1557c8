"""primary_metric, confidence_drop, feature_drift, missing_features: breach, ok, insufficient evidence."""

from __future__ import annotations

import pytest
from triggers_testkit import CONFIDENCE_BOUNDS, FEATURE_BOUNDS, Stream, judge, make_rule

from agent.domain.signals import Baseline, BaselineKey, ReferenceBins, Signal
from agent.triggers import VerdictStatus

BREACH, OK, INSUFFICIENT = VerdictStatus.BREACH, VerdictStatus.OK, VerdictStatus.INSUFFICIENT_EVIDENCE
CORRECT, INCORRECT = Signal.MODEL_OUTCOMES_CORRECT, Signal.MODEL_OUTCOMES_INCORRECT
CONFIDENCE = Signal.MODEL_CONFIDENCE


def outcomes(minutes: int, accuracy: float, labels_per_minute: int, stream: Stream | None = None) -> Stream:
    stream = stream or Stream()
    for _ in range(minutes):
        correct = round(labels_per_minute * accuracy)
        stream.step(inc={CORRECT: correct, INCORRECT: labels_per_minute - correct})
        stream.run(59)
    return stream


class TestPrimaryMetric:
    def test_breach_after_n_consecutive_bad_minutes(self) -> None:
        verdict = judge(make_rule("primary_metric", min_accuracy=0.9), outcomes(11, 0.8, 60))
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(0.8, abs=0.01)
        assert "in each of the last 10 buckets of 1m" in verdict.reason

    def test_one_good_minute_breaks_the_streak(self) -> None:
        stream = outcomes(6, 0.8, 60)
        outcomes(1, 0.95, 60, stream)
        outcomes(4, 0.8, 60, stream)
        assert judge(make_rule("primary_metric", min_accuracy=0.9), stream).status is OK

    def test_too_few_labels_per_minute_is_insufficient(self) -> None:
        verdict = judge(make_rule("primary_metric", min_accuracy=0.9), outcomes(11, 0.5, 5))
        assert verdict.status is INSUFFICIENT
        assert "< 20 labels" in verdict.reason

    def test_history_shorter_than_the_streak_is_insufficient(self) -> None:
        assert judge(make_rule("primary_metric", min_accuracy=0.9), outcomes(4, 0.5, 60)).status is INSUFFICIENT


def confidence_stream(level: float, per_second: int = 5, seconds: int = 400) -> Stream:
    stream = Stream().histogram(CONFIDENCE, CONFIDENCE_BOUNDS)
    stream.run(seconds, observe={CONFIDENCE: [level] * per_second})
    return stream


class TestConfidenceDrop:
    registry = Baseline({BaselineKey.CONFIDENCE_MEAN: 0.8})

    def test_breach_against_the_registry_baseline(self) -> None:
        verdict = judge(make_rule("confidence_drop"), confidence_stream(0.6), baseline=self.registry)
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(0.25)
        assert "25.0% below baseline 0.800 (registry)" in verdict.reason

    def test_ok_for_a_small_drop(self) -> None:
        assert judge(make_rule("confidence_drop"), confidence_stream(0.75), baseline=self.registry).status is OK

    def test_without_registry_number_compares_with_the_stable_version_live(self) -> None:
        verdict = judge(make_rule("confidence_drop"), confidence_stream(0.5), stable=confidence_stream(0.9))
        assert verdict.status is BREACH
        assert "stable v1, live" in verdict.reason

    def test_few_predictions_is_insufficient(self) -> None:
        stream = confidence_stream(0.1, per_second=0)
        stream.run(10, observe={CONFIDENCE: [0.1]})
        verdict = judge(make_rule("confidence_drop"), stream, baseline=self.registry)
        assert verdict.status is INSUFFICIENT
        assert "10 predictions of v2 < 100 minimum" in verdict.reason

    def test_no_baseline_anywhere_is_insufficient(self) -> None:
        assert judge(make_rule("confidence_drop"), confidence_stream(0.1)).status is INSUFFICIENT


REFERENCE = (0.05, 0.15, 0.3, 0.3, 0.15, 0.05)  # per bucket of FEATURE_BOUNDS
SHIFTED = (0.0, 0.02, 0.08, 0.2, 0.4, 0.3)


def feature_stream(
    shape: tuple[float, ...] | dict[str, tuple[float, ...]], per_second: int = 10, seconds: int = 400
) -> Stream:
    """Observations of one feature ("age") with `shape`, or of several features by name."""
    shapes = shape if isinstance(shape, dict) else {"age": shape}
    stream = Stream()
    for feature in shapes:
        stream.histogram(Signal.feature(feature), FEATURE_BOUNDS)
    for _ in range(seconds):
        for feature, fractions in shapes.items():
            stream.observe_buckets(Signal.feature(feature), [per_second * p for p in fractions])
        stream.step()
    return stream


class TestFeatureDrift:
    baseline = Baseline(reference_bins={"age": ReferenceBins(FEATURE_BOUNDS, REFERENCE)})

    def test_breach_when_the_distribution_moves(self) -> None:
        verdict = judge(make_rule("feature_drift"), feature_stream(SHIFTED), baseline=self.baseline)
        assert verdict.status is BREACH
        assert verdict.value is not None and verdict.value > 0.1
        assert "on feature 'age' vs the registry reference" in verdict.reason

    def test_ok_when_it_matches_the_reference(self) -> None:
        verdict = judge(make_rule("feature_drift"), feature_stream(REFERENCE), baseline=self.baseline)
        assert verdict.status is OK
        assert verdict.value == pytest.approx(0.0, abs=1e-6)

    def test_fewer_than_min_samples_is_insufficient(self) -> None:
        stream = feature_stream(SHIFTED, per_second=1)  # 300 samples in 5 min < 1,000
        verdict = judge(make_rule("feature_drift"), stream, baseline=self.baseline)
        assert verdict.status is INSUFFICIENT
        assert "samples < 1,000 minimum" in verdict.reason

    def test_inline_reference_and_stable_reference(self) -> None:
        inline = make_rule("feature_drift", reference_bins={"age": list(REFERENCE)})
        assert judge(inline, feature_stream(SHIFTED)).status is BREACH
        live = judge(make_rule("feature_drift"), feature_stream(SHIFTED), stable=feature_stream(REFERENCE))
        assert live.status is BREACH
        assert "vs stable v1" in live.reason

    def test_reference_bins_must_match_the_bucket_edges(self) -> None:
        wrong = Baseline(reference_bins={"age": ReferenceBins((0.0, 1.0, float("inf")), (0.5, 0.3, 0.2))})
        verdict = judge(make_rule("feature_drift"), feature_stream(SHIFTED), baseline=wrong)
        assert verdict.status is INSUFFICIENT
        assert "do not match" in verdict.reason

    def test_reports_the_worst_of_many_features(self) -> None:
        candidate = feature_stream({"a": REFERENCE, "b": SHIFTED, "c": REFERENCE})
        stable = feature_stream({"a": REFERENCE, "b": REFERENCE, "c": REFERENCE})
        verdict = judge(make_rule("feature_drift", reference="stable"), candidate, stable=stable)
        assert verdict.status is BREACH
        assert "feature 'b'" in verdict.reason and "1 of 3 features above" in verdict.reason


def missing_stream(missing_share: float, rows_per_second: int = 10, seconds: int = 120) -> Stream:
    stream = Stream()
    missing = rows_per_second * missing_share
    stream.run(
        seconds,
        inc={
            Signal.feature_seen("age"): rows_per_second,
            Signal.feature_missing("age"): missing,
            Signal.feature_seen("income"): rows_per_second,
            Signal.feature_missing("income"): 0,
        },
    )
    return stream


class TestMissingFeatures:
    def test_breach_above_the_reference_rate(self) -> None:
        verdict = judge(make_rule("missing_features"), missing_stream(0.1))
        assert verdict.status is BREACH
        assert verdict.value == pytest.approx(0.1)
        assert "feature 'age' missing in 10.0% of rows vs reference 0.0%" in verdict.reason

    def test_reference_missing_rate_is_subtracted(self) -> None:
        baseline = Baseline({BaselineKey.missing_rate("age"): 0.09})
        assert judge(make_rule("missing_features"), missing_stream(0.1), baseline=baseline).status is OK

    def test_few_rows_is_insufficient(self) -> None:
        verdict = judge(make_rule("missing_features"), missing_stream(0.5, rows_per_second=1))
        assert verdict.status is INSUFFICIENT
        assert "rows < 100 minimum" in verdict.reason

    def test_ok_when_nothing_is_missing(self) -> None:
        assert judge(make_rule("missing_features"), missing_stream(0.0)).status is OK
