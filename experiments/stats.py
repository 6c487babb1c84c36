"""Error bars and paired tests for test accuracies: the seeds' spread plus the test set's own noise.

A test accuracy measured on n images is a binomial proportion, so even a perfectly reproducible
model carries a sampling error of sqrt(p(1 - p) / n); on 1,000 images at p = 0.95 that is 0.7
points (1 standard error). Seeds add their own spread on top. Every interval here is 95%.
Arrays of per-example correctness are `correct: bool[seeds, n]` (one row per trained model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

Z95 = float(scipy_stats.norm.ppf(0.975))  # 1.95996...: two-sided 95% normal quantile
RESAMPLES = 2000


class Interval(NamedTuple):
    """A mean accuracy (a fraction) and its 95% interval [low, high]."""

    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def percent(self, digits: int = 2) -> str:
        """ "95.20 [94.31, 96.09]" in percent."""
        mean, low, high = (f"{100 * v:.{digits}f}" for v in self)
        return f"{mean} [{low}, {high}]"


class Comparison(NamedTuple):
    """A minus B: the mean accuracy difference (a fraction), its 95% interval, a two-sided p."""

    difference: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def percent(self) -> str:
        """ "+0.62 [+0.10, +1.14] points, p = 0.020" """
        return (
            f"{100 * self.difference:+.2f} [{100 * self.low:+.2f}, {100 * self.high:+.2f}] points, "
            f"p {format_p(self.p_value)}"
        )


class McNemar(NamedTuple):
    """McNemar's test on two models' per-example correctness over the same test images."""

    a_only: int  # images A gets right and B gets wrong
    b_only: int  # images B gets right and A gets wrong
    p_value: float


def format_p(p: float) -> str:
    """ "< 0.001" or "= 0.043" """
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def noise_floor(n: int, accuracy: float) -> float:
    """Half-width of the 95% interval of ONE model's accuracy on n test images (binomial, normal
    approximation): differences much smaller than this are a few images, not a finding."""
    return Z95 * math.sqrt(accuracy * (1 - accuracy) / n)


def accuracy_interval(accuracies: Sequence[float], n: int) -> Interval:
    """Mean over seeds with a 95% normal interval that adds the seeds' spread to the test noise.

    Var(mean) = var_seeds / k + p (1 - p) / n: the seeds' sample variance (ddof=1) shrinks with
    their number k, but all seeds are scored on the same n images, so the test set's binomial
    error does not. The ends are clipped to [0, 1]. Non-finite accuracies (diverged seeds) must
    be handled by the caller.
    """
    values = np.asarray(accuracies, np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"need finite accuracies, got {list(values)}")
    mean = float(values.mean())
    seed_var = float(values.var(ddof=1)) if values.size > 1 else 0.0
    se = math.sqrt(seed_var / values.size + mean * (1 - mean) / n)
    return Interval(mean, max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se))  # an accuracy


def _resampled_accuracies(
    correct: np.ndarray, image_counts: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """float[resamples]: mean accuracy of a bootstrap draw of seeds, on reweighted images."""
    per_seed = image_counts @ correct.T.astype(np.float64) / correct.shape[1]  # [R, k]
    seeds = rng.integers(0, correct.shape[0], size=(image_counts.shape[0], correct.shape[0]))
    return np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)


def _image_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """float[resamples, n]: how often each test image appears in each bootstrap draw."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def bootstrap_interval(correct: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """95% percentile interval of the mean accuracy, resampling both seeds and test images.

    correct: bool[k, n]. Each draw picks k seeds with replacement and n images with replacement.
    """
    correct = np.atleast_2d(np.asarray(correct, bool))
    rng = np.random.default_rng(seed)
    draws = _resampled_accuracies(correct, _image_counts(correct.shape[1], resamples, rng), rng)
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(float(correct.mean()), float(low), float(high))


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> Comparison:
    """Does A beat B on the same test images? Mean accuracy of A minus B, with a paired bootstrap.

    correct_a: bool[k_a, n], correct_b: bool[k_b, n], the same n images in the same order. Each
    draw reweights the images identically for A and B (the pairing: an easy image is easy for
    both) and resamples each side's seeds. The two-sided p-value is twice the smaller tail of
    the draws around 0 (at least 1 / resamples).
    """
    correct_a = np.atleast_2d(np.asarray(correct_a, bool))
    correct_b = np.atleast_2d(np.asarray(correct_b, bool))
    if correct_a.shape[1] != correct_b.shape[1]:
        raise ValueError(
            f"A and B must be scored on the same images: {correct_a.shape[1]} != "
            f"{correct_b.shape[1]}"
        )
    rng = np.random.default_rng(seed)
    counts = _image_counts(correct_a.shape[1], resamples, rng)
    draws = _resampled_accuracies(correct_a, counts, rng) - _resampled_accuracies(
        correct_b, counts, rng
    )
    low, high = np.percentile(draws, [2.5, 97.5])
    tail = min(np.mean(draws <= 0), np.mean(draws >= 0))
    p_value = min(1.0, max(2 * tail, 1 / resamples))
    difference = float(correct_a.mean() - correct_b.mean())
    return Comparison(difference, float(low), float(high), float(p_value))


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, exact: bool = True) -> McNemar:
    """McNemar's test of two models on the same images: only the images they disagree on count.

    exact: the two-sided binomial test of a_only against Binomial(a_only + b_only, 1/2);
    otherwise the chi-squared version with continuity correction, (|a - b| - 1)^2 / (a + b).
    """
    correct_a, correct_b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1:
        raise ValueError(f"need two bool[n] of one shape, got {correct_a.shape}, {correct_b.shape}")
    a_only = int(np.sum(correct_a & ~correct_b))
    b_only = int(np.sum(~correct_a & correct_b))
    discordant = a_only + b_only
    if discordant == 0:
        return McNemar(a_only, b_only, 1.0)
    if exact:
        p_value = scipy_stats.binomtest(a_only, discordant, 0.5).pvalue
    else:
        statistic = (abs(a_only - b_only) - 1) ** 2 / discordant
        p_value = scipy_stats.chi2.sf(statistic, df=1)
    return McNemar(a_only, b_only, float(p_value))


def seedwise_mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> list[McNemar]:
    """McNemar's exact test for each seed pair (seed i of A against seed i of B)."""
    return [mcnemar(a, b) for a, b in zip(correct_a, correct_b, strict=True)]


def accuracy_cell(accuracies: Sequence[float], n: int, digits: int = 2) -> str:
    """A table cell: "mean [low, high]" over the seeds, and any diverged seeds named, not dropped.

    Diverged seeds (NaN accuracy) make the mean undefined: the cell then reads "diverged j/k" and
    gives the survivors' numbers separately.
    """
    values = np.asarray(accuracies, np.float64)
    finite = values[np.isfinite(values)]
    diverged = values.size - finite.size
    if diverged == 0:
        return accuracy_interval(finite, n).percent(digits)
    if finite.size == 0:
        return f"diverged {diverged}/{values.size}"
    survivors = ", ".join(f"{100 * v:.{digits}f}" for v in finite)
    return f"diverged {diverged}/{values.size} (survivors: {survivors})"
