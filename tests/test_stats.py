"""experiments/stats.py against hand-computed cases."""

import math

import numpy as np
import pytest

from experiments import stats


def _pair(a_only: int, b_only: int, both: int = 50, neither: int = 5):
    """Two models' correctness with the given discordant counts."""
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_is_the_two_sided_binomial_tail_of_the_discordant_pairs():
    a, b = _pair(10, 2)
    result = stats.mcnemar(a, b)
    # P(X <= 2) for X ~ Binomial(12, 1/2), doubled: 2 (1 + 12 + 66) / 2^12.
    assert (result.a_only, result.b_only) == (10, 2)
    assert result.p_value == pytest.approx(2 * (1 + 12 + 66) / 2**12)
    assert stats.mcnemar(b, a).p_value == pytest.approx(result.p_value)  # symmetric


def test_mcnemar_chi2_uses_the_continuity_correction():
    a, b = _pair(10, 2)
    statistic = (abs(10 - 2) - 1) ** 2 / 12  # 49 / 12
    expected = math.erfc(math.sqrt(statistic / 2))  # chi2(1) survival function
    assert stats.mcnemar(a, b, exact=False).p_value == pytest.approx(expected)


def test_mcnemar_ignores_images_both_get_right_or_wrong():
    assert stats.mcnemar(*_pair(3, 3, both=10)).p_value == pytest.approx(1.0)
    assert stats.mcnemar(*_pair(0, 0)).p_value == 1.0
    assert stats.mcnemar(*_pair(7, 1, both=10)).p_value == stats.mcnemar(*_pair(7, 1, both=900))[2]


def test_noise_floor_is_the_binomial_half_width():
    # 1,000 images at 95%: 1.96 * sqrt(0.95 * 0.05 / 1000) = 1.35 points.
    assert stats.noise_floor(1000, 0.95) == pytest.approx(1.959964 * math.sqrt(0.0475 / 1000))
    assert stats.noise_floor(10_000, 0.95) < stats.noise_floor(1000, 0.95)


def test_accuracy_interval_adds_seed_variance_over_k_to_the_test_noise():
    accuracies = [0.90, 0.92, 0.94]  # mean 0.92, sample var 4e-4
    interval = stats.accuracy_interval(accuracies, n=1000)
    se = math.sqrt(4e-4 / 3 + 0.92 * 0.08 / 1000)
    assert interval.mean == pytest.approx(0.92)
    assert interval.half_width == pytest.approx(1.959964 * se, rel=1e-5)
    # One seed: the test set's noise alone.
    single = stats.accuracy_interval([0.9], n=1000)
    assert single.half_width == pytest.approx(stats.noise_floor(1000, 0.9))
    with pytest.raises(ValueError):
        stats.accuracy_interval([0.9, float("nan")], n=1000)


def test_bootstrap_interval_matches_the_binomial_interval_for_one_model():
    correct = np.random.default_rng(1).random((1, 4000)) < 0.9
    interval = stats.bootstrap_interval(correct)
    assert interval.low < correct.mean() < interval.high
    expected = stats.noise_floor(4000, correct.mean())
    assert interval.half_width == pytest.approx(expected, rel=0.15)


def test_bootstrap_interval_widens_with_the_seeds_spread():
    rng = np.random.default_rng(2)
    agreeing = np.repeat(rng.random((1, 2000)) < 0.9, 5, axis=0)
    spread = np.stack([rng.random(2000) < p for p in (0.80, 0.85, 0.90, 0.95, 0.99)])
    assert (
        stats.bootstrap_interval(spread).half_width
        > 2 * stats.bootstrap_interval(agreeing).half_width
    )


def test_paired_bootstrap_finds_no_difference_between_a_model_and_itself():
    correct = np.random.default_rng(3).random((5, 1000)) < 0.9
    comparison = stats.paired_bootstrap(correct, correct)
    assert comparison.difference == 0.0
    assert comparison.low <= 0.0 <= comparison.high
    assert not comparison.significant


def test_paired_bootstrap_detects_a_consistent_gain_that_an_unpaired_view_would_blur():
    # B is A with 20 extra errors out of 1,000 (2 points) in every seed: paired, that is certain.
    rng = np.random.default_rng(4)
    a = np.repeat(rng.random((1, 1000)) < 0.9, 5, axis=0)
    b = a.copy()
    b[:, np.flatnonzero(a[0])[:20]] = False
    comparison = stats.paired_bootstrap(a, b)
    assert comparison.difference == pytest.approx(0.02)
    assert comparison.low > 0.0 and comparison.significant
    assert stats.paired_bootstrap(b, a).high < 0.0


def test_paired_bootstrap_needs_the_same_images():
    with pytest.raises(ValueError, match="same images"):
        stats.paired_bootstrap(np.ones((2, 10), bool), np.ones((2, 11), bool))


def test_accuracy_cell_names_diverged_seeds_instead_of_dropping_them():
    assert stats.accuracy_cell([0.9, float("nan"), 0.92], n=1000) == (
        "diverged 1/3 (survivors: 90.00, 92.00)"
    )
    assert stats.accuracy_cell([float("nan")] * 2, n=1000) == "diverged 2/2"
    assert stats.accuracy_cell([0.9], n=1000).startswith("90.00 [88.")
