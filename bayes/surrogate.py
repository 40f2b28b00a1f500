"""GP surrogates whose cost stays bounded as a campaign grows, and candidate sets that follow the data.

Why (measured, docs/optimisers.md): a cold maximum-likelihood fit of an exact GP costs 31 CPU-s
at 1000 observations and 70-75 at 2000, and Thompson sampling over one global Sobol set put its
batch no closer to the optimum than the data already were. Three pieces fix that:

- :class:`HyperCache`: the fitted hyper-parameters are kept (JSON-safe, in the optimiser state)
  and re-used; a maximum-likelihood refit, started from the kept values (warm start), runs only
  when the number of observations has grown by ``refit_fraction`` since the last fit. In
  between, the GP is conditioned on all current data with the kept hyper-parameters: one
  Cholesky, no optimisation. A due refit runs off the ask (:data:`BACKGROUND_REFIT`,
  :class:`DaemonThreadExecutor`): the ask that finds it due proposes with the kept values.
- :func:`local_subset`: beyond ``max_train`` observations the GP is trained on a bounded subset
  (the best quarter of the budget by value, then the observations nearest the incumbent), a local
  model as in TuRBO (Eriksson et al., NeurIPS 2019): exact inference on at most ``max_train``
  points, used inside the trust region it describes.
- :func:`trust_regions` / :func:`trust_region_candidates`: boxes around the best few distinct
  observations, each as wide as the spread of the elite observations (the best
  ``elite_fraction``) around it, at most ±0.2 (TuRBO's initial box is ±0.4), and candidates
  drawn in those boxes perturbing a random subset of coordinates (TuRBO's rule for many
  dimensions), plus a global Sobol share so exploration never stops. The boxes move and shrink with the data; nothing is a fixed grid.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from bayes import quasirandom
from bayes.space import Space

#: Smallest and largest trust-region half-width, in unit-cube coordinates.
MIN_HALF_WIDTH = 0.01
MAX_HALF_WIDTH = 0.2
#: Elite spread times this factor is the trust region's half-width.
SPREAD_FACTOR = 1.0


#: Where a due refit runs: "off" (inside the ask), "next_ask" (in the background, the next ask
#: waits for it), "when_ready" (in the background, used by the first ask after it is done).
BACKGROUND_REFIT = ("off", "next_ask", "when_ready")


@dataclass(frozen=True)
class PendingRefit:
    """A refit running off the ask: its future gives ``(hyper-parameters, CPU s)``; it was
    started at ``n_observations`` with this likelihood (what the kept values will say)."""

    future: Future
    n_observations: int
    likelihood: str


class DaemonThreadExecutor:
    """``submit(fn) -> Future``, each call in its own daemon thread.

    Why not ``ThreadPoolExecutor``: its threads are joined at interpreter exit, so a campaign
    that ends during a refit would wait for a result nobody uses (tens of CPU-s at 1000
    observations)."""

    def submit(self, fn) -> Future:
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as error:  # handed to whoever takes the result
                future.set_exception(error)

        threading.Thread(target=run, name="microloop-refit", daemon=True).start()
        return future


class DeferredExecutor:
    """``submit(fn) -> Future`` that runs nothing until ``run_next()``: refits under the
    caller's control (a simulation on a virtual clock decides when one is done; a test decides
    what an ask finds still running)."""

    def __init__(self) -> None:
        self.queued: list[tuple] = []

    def submit(self, fn) -> Future:
        future: Future = Future()
        self.queued.append((fn, future))
        return future

    def run_next(self) -> Future:
        """Run the oldest queued refit now, in this thread; its future holds what it gave."""
        fn, future = self.queued.pop(0)
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn())
        except BaseException as error:  # handed to whoever takes the result
            future.set_exception(error)
        return future


@dataclass
class HyperCache:
    """Hyper-parameters of one GP (name -> nested list of floats) and the data size they were
    fitted at. Empty ``values``: never fitted."""

    values: dict
    fitted_at: int = 0
    #: "fixed" (known noise) or "inferred": a change of likelihood forces a refit
    likelihood: str = ""

    def due(self, n_observations: int, likelihood: str, refit_fraction: float) -> bool:
        """Refit when never fitted, the likelihood changed, or the data grew enough."""
        if not self.values or likelihood != self.likelihood:
            return True
        grown = n_observations - self.fitted_at
        return grown >= max(1, math.ceil(refit_fraction * self.fitted_at))

    def to_dict(self) -> dict:
        return {"values": self.values, "fitted_at": self.fitted_at, "likelihood": self.likelihood}

    @classmethod
    def from_dict(cls, data: dict | None) -> HyperCache:
        if not data:
            return cls({})
        return cls(dict(data.get("values", {})), int(data.get("fitted_at", 0)),
                    str(data.get("likelihood", "")))


def hyperparameters_of(model) -> dict:
    """The GP's trainable hyper-parameters (raw values), without the outcome transform's
    buffers (those belong to the data, not the model)."""
    return {
        name: parameter.detach().cpu().tolist()
        for name, parameter in model.named_parameters()
        if not name.startswith(("outcome_transform", "input_transform"))
    }


def load_hyperparameters(model, values: dict) -> bool:
    """Copy kept hyper-parameters into a freshly built GP; False when their names or shapes do
    not match (then the caller refits)."""
    import torch

    own = dict(model.named_parameters())
    own = {k: v for k, v in own.items() if not k.startswith(("outcome_transform", "input_transform"))}
    if set(own) != set(values):
        return False
    with torch.no_grad():
        for name, parameter in own.items():
            value = torch.as_tensor(values[name], dtype=parameter.dtype)
            if value.shape != parameter.shape:
                return False
            parameter.copy_(value)
    return True


def local_subset(X: np.ndarray, Y: np.ndarray, max_train: int) -> np.ndarray:
    """Indices of at most ``max_train`` training points: the best ``max_train // 4`` by value,
    then the nearest to the incumbent (the best observation). All indices when there are no
    more than ``max_train`` points."""
    n = len(Y)
    if n <= max_train:
        return np.arange(n)
    values = np.asarray(Y, dtype=float).reshape(-1)
    order = np.argsort(-values, kind="stable")
    top = order[: max_train // 4]
    incumbent = X[order[0]]
    distance = np.linalg.norm(X - incumbent, axis=1)
    distance[top] = -1.0  # already in
    near = np.argsort(distance, kind="stable")[:max_train]
    return np.sort(near)


@dataclass(frozen=True)
class TrustRegion:
    """A box ``centre ± half_width`` (per coordinate, unit cube) around one incumbent."""

    centre: np.ndarray
    half_width: np.ndarray

    @property
    def lower(self) -> np.ndarray:
        return np.clip(self.centre - self.half_width, 0.0, 1.0)

    @property
    def upper(self) -> np.ndarray:
        return np.clip(self.centre + self.half_width, 0.0, 1.0)

    def contains(self, unit: np.ndarray) -> np.ndarray:
        unit = np.atleast_2d(unit)
        return np.all((unit >= self.lower - 1e-12) & (unit <= self.upper + 1e-12), axis=1)


def trust_regions(
    X: np.ndarray,
    Y: np.ndarray,
    n_regions: int,
    elite_fraction: float,
    separation: float,
) -> list[TrustRegion]:
    """Boxes around up to ``n_regions`` incumbents: the best observations that lie more than
    ``separation`` (unit cube) apart. Each box's half-width per coordinate is ``SPREAD_FACTOR``
    times the root-mean-square distance of the elite observations (the best ``elite_fraction``,
    at least 2·dim) from its centre, within [MIN_HALF_WIDTH, MAX_HALF_WIDTH]: the box is wide
    while good designs are spread out and shrinks as they concentrate."""
    values = np.asarray(Y, dtype=float).reshape(-1)
    n, dim = X.shape
    order = np.argsort(-values, kind="stable")
    n_elite = min(n, max(2 * dim, int(math.ceil(elite_fraction * n))))
    elite = X[order[:n_elite]]
    centres: list[np.ndarray] = []
    for index in order:
        if len(centres) == n_regions:
            break
        if all(np.linalg.norm(X[index] - c) > separation for c in centres):
            centres.append(X[index])
    regions = []
    for centre in centres:
        spread = np.sqrt(np.mean((elite - centre) ** 2, axis=0))
        half = np.clip(SPREAD_FACTOR * spread, MIN_HALF_WIDTH, MAX_HALF_WIDTH)
        regions.append(TrustRegion(np.asarray(centre, dtype=float), half))
    return regions


def trust_region_candidates(
    space: Space,
    regions: list[TrustRegion],
    n: int,
    seed: int,
    avoid: list[tuple[np.ndarray, float]],
    global_share: float,
) -> np.ndarray:
    """About ``n`` allowed candidates: ``global_share`` of them scrambled-Sobol over the whole
    space, the rest split over the regions. In a region each candidate is the centre with a random
    subset of coordinates (each with probability min(1, 20/dim), at least one) moved to a Sobol
    point of the box (TuRBO's perturbation rule)."""
    dim = space.dim
    n_global = int(round(global_share * n)) if regions else n
    parts = []
    if n_global:
        parts.append(quasirandom.candidate_set(space, n_global, quasirandom.derived_seed(seed, 1),
                                               avoid))
    per_region = (n - n_global) // max(1, len(regions)) if regions else 0
    rng = np.random.default_rng(quasirandom.derived_seed(seed, 2))
    probability = min(1.0, 20.0 / dim)
    for k, region in enumerate(regions):
        if per_region < 1:
            break
        raw = quasirandom._raw_stream("sobol", dim, quasirandom.derived_seed(seed, 3, k), 0,
                                      per_region)
        box = region.lower + raw * (region.upper - region.lower)
        mask = rng.random((per_region, dim)) < probability
        mask[np.arange(per_region), rng.integers(dim, size=per_region)] = True
        cands = np.where(mask, box, region.centre)
        parts.append(cands[quasirandom.allowed(space, cands, avoid)])
    cands = np.concatenate(parts) if parts else np.zeros((0, dim))
    if not len(cands):
        raise RuntimeError(
            "no allowed candidate in the trust regions or the space: the constraints and "
            "excluded points leave no room"
        )
    return cands
