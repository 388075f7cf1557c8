"""KL divergence with smoothing, mean and std."""

from __future__ import annotations

import math

import pytest

from agent.triggers.stats import kl_divergence, kl_from_distribution, mean_and_std, reference_distribution


def test_kl_of_identical_distributions_is_zero_and_counts_are_normalized() -> None:
    assert kl_divergence([0.2, 0.8], [20, 80], epsilon=1e-4) == pytest.approx(0.0)


def test_kl_known_value() -> None:
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence([0.5, 0.5], [25, 75], epsilon=1e-4) == pytest.approx(expected)


def test_empty_current_bins_are_floored_so_kl_stays_finite() -> None:
    kl = kl_divergence([0.5, 0.5], [100, 0], epsilon=1e-4)
    assert math.isfinite(kl) and kl > 3
    assert kl_divergence([0.5, 0.5], [100, 0], epsilon=1e-4, laplace=True) < kl


def test_cached_reference_distribution_gives_the_same_kl() -> None:
    p = reference_distribution((1.0, 3.0, 0.0), 1e-4)
    assert sum(p) == pytest.approx(1.0)
    assert kl_from_distribution(p, [10, 20, 5], epsilon=1e-4) == pytest.approx(
        kl_divergence([1.0, 3.0, 0.0], [10, 20, 5], epsilon=1e-4)
    )
    with pytest.raises(ValueError, match="bins"):
        kl_from_distribution(p, [1, 2], epsilon=1e-4)


def test_mean_and_std() -> None:
    assert mean_and_std([2.0, 4.0, 6.0]) == (4.0, 2.0)
    assert mean_and_std([5.0]) == (5.0, 0.0)
