"""Convergence statistics against textbook truths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.metrics.sampling_statistics import (
    SizeSummary,
    bootstrap_mean_ci,
    cubes_needed,
    recommend,
    summarise_sizes,
)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 300
    for i in range(trials):
        sample = rng.normal(3.0, 0.5, size=40)
        low, high = bootstrap_mean_ci(sample, 0.95, n_resamples=800, seed=i)
        hits += low <= 3.0 <= high
    assert 0.90 <= hits / trials <= 0.98


def test_cubes_needed_follows_the_normal_sample_size_rule():
    values = np.array([99.0, 101.0] * 10)  # mean 100, sd ~1.026
    sd = values.std(ddof=1)
    expected = math.ceil((1.959964 * sd / 1.0) ** 2)
    assert cubes_needed(values, 0.95, 0.01) == expected
    assert cubes_needed(values, 0.95, 0.001) > 100 * cubes_needed(values, 0.95, 0.01) - 100
    with pytest.raises(ValueError, match="confidence"):
        cubes_needed(values, 1.5, 0.01)


def test_bias_is_measured_against_the_largest_size_and_recommend_picks_the_cheapest_unbiased():
    rng = np.random.default_rng(0)
    by_size = {
        16: rng.normal(2.4, 0.5, 60),    # biased low by 20 %: must not be recommended
        32: rng.normal(2.99, 0.2, 60),   # within 1 % of the largest, cheap
        64: rng.normal(3.0, 0.05, 60),
    }
    summaries = summarise_sizes(by_size, 0.95, 0.01, n_resamples=500)
    assert [s.cube_voxels for s in summaries] == [16, 32, 64]
    assert summaries[-1].bias_vs_largest == 0.0
    assert summaries[0].bias_vs_largest < -0.1
    cost = {16: 0.01, 32: 0.1, 64: 1.0}
    size, count, total = recommend(summaries, cost, 0.01)
    expected_32 = summaries[1].cubes_needed * 0.1
    expected_64 = summaries[2].cubes_needed * 1.0
    assert size == (32 if expected_32 < expected_64 else 64)
    assert total == pytest.approx(min(expected_32, expected_64))
    assert count == summaries[[16, 32, 64].index(size)].cubes_needed


def test_recommend_returns_none_without_usable_sizes():
    bad = SizeSummary(32, 1, 1.0, math.nan, 1.0, 1.0, math.nan, -1, math.nan)
    assert recommend([bad], {32: 1.0}) is None
