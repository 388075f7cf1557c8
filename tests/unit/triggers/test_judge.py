"""The canary judge (Mann-Whitney U) against scipy's reference implementation and on known distributions."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from agent.triggers.judge import Outcome, judge, mann_whitney

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)

samples = st.lists(st.integers(-20, 20).map(float), min_size=2, max_size=80)  # small integers: many ties


@FUZZ
@given(samples, samples, st.booleans())
def test_statistic_and_p_value_match_scipy(candidate: list[float], stable: list[float], higher: bool) -> None:
    if len(set(candidate + stable)) == 1:
        assert mann_whitney(candidate, stable, higher_is_worse=higher).p_value == 1.0
        return
    ours = mann_whitney(candidate, stable, higher_is_worse=higher)
    reference = mannwhitneyu(
        candidate, stable, alternative="greater" if higher else "less", method="asymptotic", use_continuity=True
    )
    assert ours.u == pytest.approx(reference.statistic)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-12)


def test_a_slower_candidate_fails_with_the_statistic_in_the_reason() -> None:
    rng = random.Random(7)
    stable = [rng.lognormvariate(3.0, 0.3) for _ in range(200)]  # median ~20 ms
    candidate = [rng.lognormvariate(3.0, 0.3) * 1.5 for _ in range(200)]
    verdict = judge(candidate, stable, signal="latency_ms")
    assert verdict.outcome is Outcome.FAIL
    assert verdict.test is not None and verdict.test.p_value < 1e-6
    assert "Mann-Whitney U: latency_ms candidate median" in verdict.reason
    assert "one-sided p" in verdict.reason and "< 0.02" in verdict.reason


def test_the_same_distribution_passes_nearly_always_at_98_percent() -> None:
    rng = random.Random(11)
    failures = 0
    for _ in range(200):
        stable = [rng.gauss(100, 10) for _ in range(60)]
        candidate = [rng.gauss(100, 10) for _ in range(60)]
        failures += judge(candidate, stable).outcome is Outcome.FAIL
    assert failures <= 10  # ~2 % expected (4 of 200); a broken test would fail about half


def test_direction_lower_is_worse_for_confidence() -> None:
    rng = random.Random(3)
    stable = [rng.betavariate(8, 2) for _ in range(100)]
    lower = [rng.betavariate(4, 4) for _ in range(100)]
    assert judge(lower, stable, higher_is_worse=False, signal="confidence").outcome is Outcome.FAIL
    assert judge(lower, stable, higher_is_worse=True).outcome is Outcome.PASS  # better in that direction


def test_too_few_points_is_not_enough_data_never_pass_or_fail() -> None:
    verdict = judge([1.0] * 49, [0.0] * 500, min_points=50, signal="errors")
    assert verdict.outcome is Outcome.NOT_ENOUGH_DATA
    assert verdict.reason == "not enough data: errors has 49 candidate and 500 stable points, 50 needed on each side"
    assert judge([], [], min_points=1).outcome is Outcome.NOT_ENOUGH_DATA


def test_a_significant_but_immaterial_difference_passes_with_a_tolerance() -> None:
    rng = random.Random(5)
    stable = [rng.gauss(100, 1) for _ in range(5000)]
    candidate = [x + 1.0 for x in (rng.gauss(100, 1) for _ in range(5000))]  # 1 % slower, hugely significant
    assert judge(candidate, stable).outcome is Outcome.FAIL
    lenient = judge(candidate, stable, tolerance=0.05)
    assert (
        lenient.outcome is Outcome.PASS
        and "tolerance 0.05" in lenient.reason
        and "within the allowed" in lenient.reason
    )


def test_a_shift_under_min_shift_is_immaterial_however_large_relative_to_stable() -> None:
    rng = random.Random(7)
    stable = [rng.gauss(0.3, 0.02) for _ in range(400)]  # a 0.3 ms stable
    candidate = [rng.gauss(0.7, 0.05) for _ in range(60)]  # more than twice as slow, 0.4 ms more
    assert judge(candidate, stable, tolerance=1.0).outcome is Outcome.FAIL
    tolerant = judge(candidate, stable, tolerance=1.0, min_shift=2.0)
    assert tolerant.outcome is Outcome.PASS and "min_shift 2" in tolerant.reason, tolerant.reason
    slow = [x + 3.0 for x in candidate]  # 3.4 ms more: material under both
    assert judge(slow, stable, tolerance=1.0, min_shift=2.0).outcome is Outcome.FAIL


def test_error_indicators_compare_rates() -> None:
    stable = [0.0] * 990 + [1.0] * 10  # 1 %
    candidate = [0.0] * 450 + [1.0] * 50  # 10 %
    verdict = judge(candidate, stable, signal="error")
    assert verdict.outcome is Outcome.FAIL
    same = judge([0.0] * 495 + [1.0] * 5, stable, signal="error")
    assert same.outcome is Outcome.PASS


def test_bad_confidence_is_refused() -> None:
    with pytest.raises(ValueError, match="confidence"):
        judge([1.0], [1.0], confidence=1.0)
