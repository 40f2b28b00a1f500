"""How many sub-volumes make a mean trustworthy: bootstrap confidence intervals and sample-size rules.

Pure functions of arrays of per-cube values. Used by the convergence study (jobs/convergence.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class SizeSummary:
    """Statistics of one cube size's per-cube values."""

    cube_voxels: int
    n_cubes: int
    mean: float
    std: float
    ci95_low: float
    ci95_high: float
    relative_half_width: float  # half the CI width divided by |mean|
    cubes_needed: int            # for the requested confidence and tolerance
    bias_vs_largest: float       # (mean - mean at the largest size) / mean at the largest size


def bootstrap_mean_ci(values: np.ndarray, confidence: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (no normality assumed)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (math.nan, math.nan)
    if finite.size == 1:
        return (float(finite[0]), float(finite[0]))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, finite.size, size=(n_resamples, finite.size))
    means = finite[picks].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def cubes_needed(values: np.ndarray, confidence: float = 0.95, relative_tolerance: float = 0.01) -> int:
    """Cubes needed so the CI half-width of the mean is within `relative_tolerance` of the mean.

    n = (z * s / (tol * mean))^2 with z the two-sided normal quantile (the paper's rule: 95 %
    confidence that the mean is within 1 %). Uses the sample standard deviation of `values`.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if relative_tolerance <= 0.0:
        raise ValueError(f"relative_tolerance must be > 0, got {relative_tolerance}")
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        raise ValueError("need at least 2 finite values to estimate a spread")
    mean = float(finite.mean())
    std = float(finite.std(ddof=1))
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    if mean == 0.0:
        return math.inf if std > 0 else 1  # type: ignore[return-value]
    return max(1, math.ceil((z * std / (relative_tolerance * abs(mean))) ** 2))


def summarise_sizes(values_by_size: dict[int, np.ndarray], confidence: float = 0.95,
                    relative_tolerance: float = 0.01, n_resamples: int = 2000,
                    seed: int = 0) -> list[SizeSummary]:
    """One SizeSummary per cube size, the bias measured against the largest size's mean."""
    sizes = sorted(values_by_size)
    if not sizes:
        return []
    largest = np.asarray(values_by_size[sizes[-1]], dtype=float)
    reference = float(np.nanmean(largest[np.isfinite(largest)])) if np.isfinite(largest).any() else math.nan
    summaries = []
    for size in sizes:
        values = np.asarray(values_by_size[size], dtype=float)
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else math.nan
        std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        low, high = bootstrap_mean_ci(finite, confidence, n_resamples, seed)
        half = (high - low) / 2.0
        summaries.append(SizeSummary(
            cube_voxels=int(size), n_cubes=int(finite.size), mean=mean, std=std,
            ci95_low=low, ci95_high=high,
            relative_half_width=half / abs(mean) if finite.size and mean else math.nan,
            cubes_needed=cubes_needed(finite, confidence, relative_tolerance) if finite.size > 1 else -1,
            bias_vs_largest=(mean - reference) / reference if reference else math.nan,
        ))
    return summaries


def recommend(summaries: list[SizeSummary], cost_per_cube_s: dict[int, float],
              relative_tolerance: float = 0.01) -> tuple[int, int, float] | None:
    """The cheapest (cube_voxels, n_cubes, total_cost_s) whose bias against the largest size is
    within the tolerance; the largest size itself always qualifies (its bias is 0 by definition)."""
    best: tuple[int, int, float] | None = None
    for summary in summaries:
        if summary.cubes_needed < 1 or not math.isfinite(summary.bias_vs_largest):
            continue
        if abs(summary.bias_vs_largest) > relative_tolerance:
            continue
        cost = summary.cubes_needed * cost_per_cube_s.get(summary.cube_voxels, math.inf)
        if best is None or cost < best[2]:
            best = (summary.cube_voxels, summary.cubes_needed, cost)
    return best
