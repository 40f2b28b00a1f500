"""Per-design spread of an objective over repeated generated samples (different seeds).

A generated microstructure is one draw from the generator's distribution for a design, so an
objective computed from n samples is a noisy estimate. The optimiser can take the variance of
the mean as known observation noise (`noise_var` of `bayes` `tell`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ObjectiveSpread:
    mean: float
    std: float          # sample standard deviation over the n values (ddof = 1; 0 for n = 1)
    n: int
    noise_var: float    # variance of the mean, std^2 / n: the optimiser's known noise
    rel_std: float      # std / |mean| (inf when the mean is 0 and std > 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not math.isfinite(d["rel_std"]):
            d["rel_std"] = None
        return d


def objective_spread(values: Sequence[float], min_noise_var: float = 0.0) -> ObjectiveSpread:
    """Mean, spread and noise variance of objective values from independent samples of a design.

    `min_noise_var` floors the noise (a single sample has no measured spread; pass a prior).
    Non-finite values are an error: a failed evaluation is not a sample.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("values must hold at least one objective value")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"values must be finite, got {xs}")
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    noise_var = max(std * std / n, float(min_noise_var))
    rel = std / abs(mean) if mean != 0 else (0.0 if std == 0 else math.inf)
    return ObjectiveSpread(mean=mean, std=std, n=n, noise_var=noise_var, rel_std=rel)


def pooled_noise_var(spreads: Sequence[ObjectiveSpread]) -> float:
    """One noise variance for designs measured with too few samples: the pooled within-design
    variance divided by the typical sample count."""
    dof = sum(s.n - 1 for s in spreads)
    if dof <= 0:
        raise ValueError("need at least one design with two or more samples")
    pooled = sum((s.n - 1) * s.std ** 2 for s in spreads) / dof
    n_typ = sum(s.n for s in spreads) / len(spreads)
    return pooled / n_typ
