"""Multi-fidelity BO: the optimiser chooses each evaluation's fidelity level, with its cost.

A campaign declares fidelity *levels*, cheapest first, the last one the top (target) fidelity,
each with its relative cost. This back-end proposes (design, level) pairs:

- the level is a coordinate ``s`` of the GP's input, placed so that the cost is exactly affine in
  it: ``s_l = (c_l - c_0) / (c_top - c_0)`` (the cheapest level at 0, the top one at 1). BoTorch's
  ``AffineFidelityCostModel`` then *is* the declared cost, with no fitting;
- the model is ``SingleTaskMultiFidelityGP`` (a Matern kernel over the design times a linear
  truncated fidelity kernel over ``s``): low-fidelity values inform the top-fidelity posterior
  as far as the data say they correlate, and their bias is learnt, not assumed away;
- the acquisition is ``qMultiFidelityKnowledgeGradient`` with ``InverseCostWeightedUtility``: the
  expected gain in the *top-fidelity* maximum of the posterior mean, per unit cost (Wu et al.
  2019, "Practical multi-fidelity Bayesian optimization for hyperparameter tuning"), maximised
  over the discrete levels with ``optimize_acqf_mixed`` and with ``X_pending`` (points still
  running, at their levels);
- or (``acquisition = "two_step"``, cheaper by one to two orders of magnitude per ask) a
  cost-aware two-step rule: the *design* by ``qLogNoisyExpectedImprovement`` of the top-fidelity
  slice of the same GP (``X_pending`` at the top), then the *level* that buys the largest
  reduction of the top-fidelity posterior variance at that design per unit cost,
  ``Cov(f(x,1), f(x,s))^2 / (Var f(x,s) + noise_s) / c_s`` (the information-per-cost choice of
  BOCA/MF-GP-UCB, Kandasamy et al. 2016/2017, with EI's design step). Why: qMFKG's one-shot
  L-BFGS over fantasies is nearly all of its ask (docs/optimisers.md); this rule needs one
  qLogNEI optimisation in the design space and a 2x2 posterior covariance per level;
- ``recommend()`` is the design with the highest top-fidelity lower bound, posterior mean less
  ``recommend_sd`` (1) sd (over the observed designs, the mean's numerical maximum and a
  quasi-random set; 0 gives the posterior mean's maximum): the campaign re-evaluates it at the
  top level before it reports it (hpc/campaign/controller.py), so a recommendation never rests
  on cheap data alone.

Points carry their level under ``FIDELITY_KEY`` ("fidelity_level", an int): ``ask`` returns it,
``tell`` and ``pending`` need it. ``best()`` considers top-level observations only (a low-level
value is not the campaign's objective). Infeasible designs are not modelled here (no feasibility
GP): they are kept away from like failures (``failure_radius``). The initial design is
``n_initial`` scrambled-Sobol points, one in three at the top level and the others cycling through
the lower ones, so the cross-fidelity correlation can be fitted from the start.
Every random step is seeded from (seed, history size, ask counter), as in the other back-ends.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bayes import quasirandom
from bayes.optimizer import Observation, Optimizer, check_integer_options
from bayes.space import Space

#: The key of a point's fidelity level (index into the declared levels, 0 = cheapest).
FIDELITY_KEY = "fidelity_level"


def fidelity_coordinates(costs: Sequence[float]) -> np.ndarray:
    """The GP's fidelity coordinate of each level: cost affine in it, cheapest 0, top 1."""
    costs = np.asarray(costs, dtype=float)
    return (costs - costs[0]) / (costs[-1] - costs[0])


def check_costs(costs: object) -> list[float]:
    """Relative costs of the levels: at least two, finite, > 0, strictly increasing."""
    if not isinstance(costs, list | tuple) or len(costs) < 2:
        raise ValueError("option fidelity_costs must be a list of >= 2 relative costs, cheapest "
                         f"level first and the top (target) fidelity last; got {costs!r}")
    out = []
    for i, cost in enumerate(costs):
        if isinstance(cost, bool) or not isinstance(cost, int | float) or not (
            math.isfinite(cost) and cost > 0
        ):
            raise ValueError(f"fidelity_costs[{i}] must be a finite number > 0; got {cost!r}")
        out.append(float(cost))
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError("fidelity_costs must increase strictly from the cheapest level to the top "
                         f"one (a dearer level must be a higher fidelity); got {out}")
    return out


class MultiFidelityOptimizer(Optimizer):
    """GP Bayesian optimisation over (design, fidelity level) with a cost-aware knowledge gradient."""

    backend = "multi_fidelity"
    OPTIONS: ClassVar[dict[str, Any]] = {
        "fidelity_costs": None,  # required: relative cost of one evaluation per level, cheapest first
        # "mfkg" (qMultiFidelityKnowledgeGradient) or "two_step" (qLogNEI at the top, then the
        # level by variance reduction per cost): see the module docstring
        "acquisition": "mfkg",
        "n_initial": None,  # default: max(6, 2 * dim)
        # small by default: one ask costs ~7 CPU-s in 2-d at these values (docs/optimisers.md)
        "num_fantasies": 16,
        "num_restarts": 2,
        "raw_samples": 64,
        "maxiter": 100,
        # one-shot KG's own inner maximisation of the top-fidelity posterior mean (its initial
        # conditions), per level: BoTorch's defaults. 2 / 64 cut one ask by 1.3x but not the
        # Branin benchmark's optimiser CPU (226 vs 232 CPU-s) and raised its regret (0.17 vs
        # 0.010, seed 0): docs/optimisers.md
        "num_inner_restarts": 20,
        "raw_inner_samples": 1024,
        # the two-step rule's qLogNEI (the `botorch` back-end's trust-region values: one ask
        # is a few CPU-s in 7-d)
        "nei_num_restarts": 10,
        "nei_raw_samples": 512,
        "mc_samples": 128,
        # the recommendation's lower bound, mean - recommend_sd * sd at the top level (0: the
        # posterior mean's maximum); 1 as Huang et al. 2006 (docs/optimisers.md#multi-fidelity)
        "recommend_sd": 1.0,
        # what the campaign's last evaluations confirm at the top level: "recommendation" (one
        # point, recommend(); the behaviour before 2026-12-02) or "recommendation_and_best_cheap"
        # (also the best design seen at a cheaper level only: on cs3's energy cell the lower
        # bound landed near the box corner the cheap level had found, docs/optimisers.md)
        "confirm": "recommendation_and_best_cheap",
    }
    ACQUISITIONS: ClassVar[tuple[str, ...]] = ("mfkg", "two_step")
    CONFIRMS: ClassVar[tuple[str, ...]] = ("recommendation", "recommendation_and_best_cheap")

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.costs = check_costs(self.options["fidelity_costs"])
        self.options["fidelity_costs"] = list(self.costs)
        self.s = fidelity_coordinates(self.costs)
        if self.options["n_initial"] is None:
            self.options["n_initial"] = max(6, 2 * space.dim)
        check_integer_options(self.options, [("n_initial", 1), ("num_fantasies", 1),
                                             ("num_restarts", 1), ("raw_samples", 2),
                                             ("maxiter", 1), ("num_inner_restarts", 1),
                                             ("raw_inner_samples", 2),
                                             ("nei_num_restarts", 1), ("nei_raw_samples", 2),
                                             ("mc_samples", 1)])
        sd = self.options["recommend_sd"]
        if isinstance(sd, bool) or not isinstance(sd, int | float) or not (
            math.isfinite(sd) and sd >= 0
        ):
            raise ValueError(f"option recommend_sd must be a finite number >= 0 (posterior sd "
                             f"below the mean the recommendation is scored at); got {sd!r}")
        self.options["recommend_sd"] = float(sd)
        if self.options["acquisition"] not in self.ACQUISITIONS:
            raise ValueError(f"option acquisition must be one of {list(self.ACQUISITIONS)}; "
                             f"got {self.options['acquisition']!r}")
        if self.options["confirm"] not in self.CONFIRMS:
            raise ValueError(f"option confirm must be one of {list(self.CONFIRMS)}; "
                             f"got {self.options['confirm']!r}")
        self.levels: list[int] = []  # level of each observation, aligned with self.observations
        self.design_position = 0
        self.last_ask_method = ""

    @property
    def top_level(self) -> int:
        return len(self.costs) - 1

    # ------------------------------------------------------------------ the face
    def _split(self, point: Mapping[str, float], what: str) -> tuple[dict[str, float], int]:
        if not isinstance(point, Mapping) or FIDELITY_KEY not in point:
            raise ValueError(f"{what} needs its fidelity level under {FIDELITY_KEY!r} (an integer "
                             f"0..{self.top_level}, as ask() returns it); got {point!r}")
        level = point[FIDELITY_KEY]
        if isinstance(level, bool) or not float(level).is_integer() or not (
            0 <= int(level) <= self.top_level
        ):
            raise ValueError(f"{what}: {FIDELITY_KEY} must be an integer 0..{self.top_level}; "
                             f"got {level!r}")
        return {k: v for k, v in point.items() if k != FIDELITY_KEY}, int(level)

    def ask(self, n: int = 1, pending: Sequence[Mapping[str, float]] | None = None) -> list[dict]:
        """``n`` (design, level) points: each dict holds the design and ``FIDELITY_KEY``."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        split = [self._split(p, f"pending[{i}]") for i, p in enumerate(pending or [])]
        pending_unit = self._validated_units([p for p, _ in split], "pending")
        pending_levels = np.asarray([lv for _, lv in split], dtype=int)
        unit, levels = self._propose_levels(int(n), pending_unit, pending_levels)
        self.n_asks += 1
        points = []
        for point, level in zip(self.space.from_unit_many(unit), levels, strict=True):
            self.space.validate(point)
            points.append({**point, FIDELITY_KEY: int(level)})
        return points

    def tell(self, points, values, noise_var=None, feasible=True) -> None:
        """As ``Optimizer.tell``; every point carries its ``FIDELITY_KEY``."""
        single = isinstance(points, Mapping)
        listed = [points] if single else list(points)
        split = [self._split(p, f"points[{i}]") for i, p in enumerate(listed)]
        before = len(self.observations)
        super().tell(split[0][0] if single else [p for p, _ in split], values, noise_var, feasible)
        self.levels.extend(lv for _, lv in split[: len(self.observations) - before])

    def tell_failed(self, points, reasons=None) -> None:
        """Failed evaluations (their level, if given, is irrelevant: the design is avoided)."""
        super().tell_failed([{k: v for k, v in p.items() if k != FIDELITY_KEY} for p in points],
                            reasons)

    def best(self) -> tuple[dict[str, float], float]:
        """The best feasible observation at the top level (low levels are not the objective)."""
        top = [o for o, lv in zip(self.observations, self.levels, strict=True)
               if o.feasible and lv == self.top_level]
        if not top:
            raise ValueError("best() needs a feasible observation at the top fidelity level "
                             f"{self.top_level}; {len(self.observations)} told")
        seen = max(top, key=lambda o: o.value)
        return {**seen.point, FIDELITY_KEY: self.top_level}, seen.value

    def recommend(self) -> dict[str, float]:
        """The design the model believes best at the top fidelity, with ``FIDELITY_KEY`` = top:
        the highest lower bound ``mean - recommend_sd * sd`` of its top-fidelity posterior over
        the designs seen (at any level), the posterior mean's numerical maximum and 1024
        quasi-random designs.

        Why not ``best()``: with cheap data the top level may hold few (or no) observations,
        while the model's top-fidelity posterior uses them all. Why a lower bound and not the
        mean: where only a biased cheap level has looked, the top-level mean can be high and
        very uncertain (the bench's Branin corner x = (10, 0): mean -1.1 +- 6.9, true -11.0,
        chosen over a top-level -0.6 and -5.8 in 2 of 5 seeds); the confirmation is one evaluation, so
        it goes where the model is sure (Huang et al. 2006's "effective best solution" for
        multi-fidelity kriging). The campaign re-evaluates this point at the top level."""
        X, Y, _, _ = self._training_data()
        if len(X) == 1 or (len(X) and np.ptp(Y) == 0.0):   # no model to fit: the one seen
            return {**self.space.from_unit(X[0, :-1]), FIDELITY_KEY: self.top_level}
        if len(X) < 2:
            raise ValueError("recommend() needs a feasible observation; none told")
        import torch

        torch.manual_seed(self._step_seed(7))
        model = self._fit()
        _, optimum = self._top_mean_max(model)
        candidates = np.concatenate([
            X[:, :-1], self._repair(optimum[None, :]),
            quasirandom.candidate_set(self.space, 1024, self._step_seed(8),
                                      self._avoid_regions(np.zeros((0, self.space.dim)))),
        ])
        with torch.no_grad():
            posterior = model.posterior(_tensor(_with_s(candidates, 1.0)))
            mean = posterior.mean.reshape(-1).numpy()
            sd = posterior.variance.clamp_min(0.0).sqrt().reshape(-1).numpy()
        unit = candidates[int(np.argmax(mean - self.options["recommend_sd"] * sd))]
        point = self.space.from_unit(self._repair(unit[None, :])[0])
        return {**point, FIDELITY_KEY: self.top_level}

    @property
    def n_confirmations(self) -> int:
        """How many top-level evaluations a campaign keeps at its end for ``confirmations()``."""
        return 1 if self.options["confirm"] == "recommendation" else 2

    def confirmations(self) -> list[dict[str, float]]:
        """The top-level points a campaign evaluates last: ``recommend()``, then (option
        ``confirm = "recommendation_and_best_cheap"``) the best feasible design observed at a
        cheaper level only, if it differs from the recommendation.

        Why both: the recommendation maximises a lower bound, which keeps it where the top
        level is known; the best cheap value is where the cheap level says the optimum is
        (on cs3's energy cell its bias is ~1 Wh/L and it found the box corner in every seed
        while the lower bound stopped short of it). One extra top-level evaluation decides
        between them with a measured value, and ``best()`` keeps the better one. Designs
        already evaluated at the top level are not repeated (their value is known)."""
        points = [self.recommend()]
        if self.options["confirm"] == "recommendation":
            return points
        top_units = [o.unit for o, lv in zip(self.observations, self.levels, strict=True)
                     if lv == self.top_level]
        recommended = self.space.to_unit({k: v for k, v in points[0].items()
                                          if k != FIDELITY_KEY})
        cheap = sorted((o for o, lv in zip(self.observations, self.levels, strict=True)
                        if o.feasible and lv != self.top_level), key=lambda o: -o.value)
        for obs in cheap:
            if any(np.allclose(obs.unit, u, rtol=0.0, atol=1e-9)
                   for u in [*top_units, recommended]):
                continue
            return [*points, {**obs.point, FIDELITY_KEY: self.top_level}]
        return points

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = super().state_dict()
        for row, level in zip(state["observations"], self.levels, strict=True):
            row["point"] = {**row["point"], FIDELITY_KEY: level}
        return state

    def _extra_state(self) -> dict:
        return {"design_position": self.design_position}

    def _load_extra_state(self, counters: Mapping) -> None:
        self.design_position = int(counters.get("design_position", 0))

    # ------------------------------------------------------------------ proposals
    def _training_data(self):
        """GP inputs (design unit coordinates + s), values, variances (None unless all known)."""
        rows = [(o, lv) for o, lv in zip(self.observations, self.levels, strict=True) if o.feasible]
        if not rows:
            return np.zeros((0, self.space.dim + 1)), np.zeros((0, 1)), None, np.zeros(0, int)
        X = np.stack([np.append(o.unit, self.s[lv]) for o, lv in rows])
        Y = np.asarray([o.value for o, _ in rows], dtype=float).reshape(-1, 1)
        noise = [o.noise_var for o, _ in rows]
        # known noise only when every value has it: a level without it (one cube: no spread)
        # would otherwise borrow the other levels' noise, which differs by design
        Yvar = None if any(v is None for v in noise) else np.asarray(noise).reshape(-1, 1)
        return X, Y, Yvar, np.asarray([lv for _, lv in rows], dtype=int)

    def _avoid_regions(self, pending_unit: np.ndarray) -> list[tuple[np.ndarray, float]]:
        infeasible = [o.unit for o in self.observations if not o.feasible]
        bad = np.concatenate([self._failed_unit(), np.stack(infeasible)]) if infeasible \
            else self._failed_unit()
        return [(bad, self.options["failure_radius"])]

    def _initial_levels(self, start: int, n: int) -> list[int]:
        lower = list(range(self.top_level)) or [0]
        levels = []
        for i in range(start, start + n):
            if i % 3 == 2:
                levels.append(self.top_level)
            else:
                levels.append(lower[(i - i // 3) % len(lower)])  # i - i//3: lower slots so far
        return levels

    def _propose_levels(self, n: int, pending_unit: np.ndarray, pending_levels: np.ndarray):
        X, Y, Yvar, levels = self._training_data()
        used = self.n_observations + len(self.failures) + len(pending_unit)
        if len(Y) < 2 or np.ptp(Y) == 0.0:
            n_design = n
        else:
            n_design = min(n, max(0, self.options["n_initial"] - used))
        units, chosen, methods = [], [], []
        if n_design:
            design, self.design_position = quasirandom.draw_stream(
                self.space, "sobol", self.seed, self.design_position, n_design,
                self._avoid_regions(pending_unit), separation=self.options["duplicate_radius"],
            )
            units.append(design)
            chosen.extend(self._initial_levels(used, n_design))
            methods.append("sobol")
        rest = n - n_design
        if rest:
            taken = np.concatenate([pending_unit, *units]) if units else pending_unit
            taken_levels = np.concatenate([pending_levels, np.asarray(chosen, dtype=int)])
            if self.options["acquisition"] == "two_step":
                unit, lv = self._two_step(rest, taken, taken_levels)
            else:
                unit, lv = self._knowledge_gradient(rest, taken, taken_levels)
            units.append(unit)
            chosen.extend(lv)
            methods.append(self.options["acquisition"])
        self.last_ask_method = "+".join(methods)
        return np.concatenate(units), chosen

    def _fit(self):
        """The multi-fidelity GP on the feasible observations (max likelihood)."""
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskMultiFidelityGP
        from gpytorch.mlls import ExactMarginalLogLikelihood

        X, Y, Yvar, _ = self._training_data()
        kwargs = {} if Yvar is None else {"train_Yvar": _tensor(np.maximum(Yvar, 1e-10))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = SingleTaskMultiFidelityGP(_tensor(X), _tensor(Y),
                                              data_fidelities=[self.space.dim], **kwargs)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        model.eval()
        return model

    def _top_mean_max(self, model) -> tuple[float, np.ndarray]:
        """max over designs of the top-fidelity posterior mean, and where."""
        from botorch.acquisition import PosteriorMean
        from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
        from botorch.optim import optimize_acqf

        d = self.space.dim
        acqf = FixedFeatureAcquisitionFunction(PosteriorMean(model), d + 1, [d], [1.0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, value = optimize_acqf(
                acqf, bounds=_unit_bounds(d), q=1, num_restarts=self.options["num_restarts"],
                raw_samples=self.options["raw_samples"],
                inequality_constraints=self._botorch_constraints() or None,
                options={"batch_limit": 8, "maxiter": self.options["maxiter"],
                         "seed": self._step_seed(3)},
            )
        return float(value), x.detach().numpy().reshape(-1)

    def _knowledge_gradient(self, n: int, pending: np.ndarray, pending_levels: np.ndarray):
        import torch
        from botorch.acquisition.cost_aware import InverseCostWeightedUtility
        from botorch.acquisition.knowledge_gradient import qMultiFidelityKnowledgeGradient
        from botorch.acquisition.utils import project_to_target_fidelity
        from botorch.models.cost import AffineFidelityCostModel
        from botorch.optim import optimize_acqf_mixed

        d = self.space.dim
        seed = self._step_seed()
        torch.manual_seed(seed)
        model = self._fit()
        current_value, _ = self._top_mean_max(model)
        cost_model = AffineFidelityCostModel(
            fidelity_weights={d: self.costs[-1] - self.costs[0]}, fixed_cost=self.costs[0]
        )
        X_pending = _tensor(np.column_stack([pending, self.s[pending_levels]])) \
            if len(pending) else None
        acqf = qMultiFidelityKnowledgeGradient(
            model=model,
            num_fantasies=self.options["num_fantasies"],
            current_value=torch.as_tensor(current_value, dtype=torch.float64),
            cost_aware_utility=InverseCostWeightedUtility(cost_model=cost_model),
            project=lambda X: project_to_target_fidelity(X=X, target_fidelities={d: 1.0}, d=d + 1),
            X_pending=X_pending,
        )
        bounds = _unit_bounds(d + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidates, _ = optimize_acqf_mixed(
                acqf, bounds=bounds, q=n,
                fixed_features_list=[{d: float(s)} for s in self.s],
                num_restarts=self.options["num_restarts"],
                raw_samples=self.options["raw_samples"],
                inequality_constraints=self._botorch_constraints() or None,
                options={"batch_limit": 4, "maxiter": self.options["maxiter"], "seed": seed,
                         "num_inner_restarts": self.options["num_inner_restarts"],
                         "raw_inner_samples": self.options["raw_inner_samples"]},
            )
        candidates = candidates.detach().numpy().reshape(n, d + 1)
        unit = self._repair(candidates[:, :d])
        levels = [int(np.argmin(np.abs(self.s - s))) for s in candidates[:, d]]
        return self._away_from_excluded(unit, levels, pending, pending_levels, seed), levels

    def _two_step(self, n: int, pending: np.ndarray, pending_levels: np.ndarray):
        """Designs by qLogNEI at the top fidelity, then each design's level by the reduction of
        the top-fidelity posterior variance there per unit cost (module docstring)."""
        import torch
        from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.optim import optimize_acqf
        from botorch.sampling.normal import SobolQMCNormalSampler

        d = self.space.dim
        seed = self._step_seed()
        torch.manual_seed(seed)
        model = self._fit()
        X, _, _, _ = self._training_data()
        # the improvement is over the top-fidelity values of the designs seen (at any level);
        # a pending point, at whatever level, is a design already being looked at
        acqf = qLogNoisyExpectedImprovement(
            model=model,
            X_baseline=_tensor(_with_s(np.unique(X[:, :d], axis=0), 1.0)),
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([self.options["mc_samples"]]),
                                          seed=seed),
            X_pending=_tensor(_with_s(pending, 1.0)) if len(pending) else None,
            prune_baseline=True,
        )
        top = FixedFeatureAcquisitionFunction(acqf, d + 1, [d], [1.0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidates, _ = optimize_acqf(
                top, bounds=_unit_bounds(d), q=n, sequential=True,
                num_restarts=self.options["nei_num_restarts"],
                raw_samples=self.options["nei_raw_samples"],
                inequality_constraints=self._botorch_constraints() or None,
                options={"batch_limit": 8, "maxiter": self.options["maxiter"], "seed": seed},
            )
        unit = self._repair(candidates.detach().numpy().reshape(n, d))
        levels = [int(np.argmax(self.variance_reduction_per_cost(model, x))) for x in unit]
        return self._away_from_excluded(unit, levels, pending, pending_levels, seed), levels

    def level_noise(self, model) -> np.ndarray:
        """Observation noise variance per level, in the objective's units: the median measured
        variance of that level's values when every value has one (the GP's train_Yvar), else
        the GP's inferred (shared) noise."""
        import torch

        _, _, Yvar, levels = self._training_data()
        if Yvar is None:
            probe = _tensor(np.zeros((1, self.space.dim + 1)))
            with torch.no_grad():
                noisy = model.posterior(probe, observation_noise=True).variance
                clean = model.posterior(probe).variance
            return np.full(len(self.costs), float((noisy - clean).reshape(-1)[0]))
        out = np.full(len(self.costs), float(np.median(Yvar)))
        for level in range(len(self.costs)):
            if (levels == level).any():
                out[level] = float(np.median(Yvar[levels == level]))
        return out

    def variance_reduction_per_cost(self, model, unit_design: np.ndarray) -> np.ndarray:
        """For each level s: how much one evaluation at (x, s) reduces Var f(x, top), per unit
        cost: Cov(f(x,1), f(x,s))^2 / (Var f(x,s) + noise_s) / c_s (Gaussian conditioning)."""
        import torch

        noise = self.level_noise(model)
        out = np.zeros(len(self.costs))
        for level, s in enumerate(self.s):
            pair = _tensor(np.stack([np.append(unit_design, 1.0), np.append(unit_design, s)]))
            with torch.no_grad():
                cov = model.posterior(pair).distribution.covariance_matrix.numpy()
            out[level] = cov[0, 1] ** 2 / (cov[1, 1] + noise[level]) / self.costs[level]
        return out

    def _away_from_excluded(self, unit, levels, pending, pending_levels, seed) -> np.ndarray:
        """A proposal repeating an evaluated or pending (design, level), or near a failed or
        infeasible design, is replaced by the nearest allowed point of a small box around it."""
        out = []
        done = [(o.unit, lv) for o, lv in zip(self.observations, self.levels, strict=True)]
        done += list(zip(pending, pending_levels, strict=True))
        for i, (point, level) in enumerate(zip(unit, levels, strict=True)):
            same = [u for u, lv in done if lv == level] + [p for p, lv in out if lv == level]
            avoid = [*self._avoid_regions(np.zeros((0, self.space.dim))),
                     (np.stack(same) if same else np.zeros((0, self.space.dim)),
                      self.options["duplicate_radius"])]
            if not quasirandom.allowed(self.space, point[None, :], avoid)[0]:
                half = max(20 * self.options["duplicate_radius"], 1e-3)
                box = quasirandom.local_box(self.space, point, half, 256, seed + i + 1, avoid)
                if not len(box):
                    box = quasirandom.candidate_set(self.space, 256, seed + i + 1, avoid)
                point = box[int(np.argmin(np.linalg.norm(box - point, axis=1)))]
            out.append((point, level))
        return np.stack([p for p, _ in out])

    # ------------------------------------------------------------------ helpers
    def _botorch_constraints(self) -> list:
        from bayes.botorch_backend import BoTorchOptimizer

        return BoTorchOptimizer._botorch_constraints(self)

    def _repair(self, unit: np.ndarray) -> np.ndarray:
        unit = np.clip(unit, 0.0, 1.0)
        bad = ~self.space.feasible_unit(unit)
        if bad.any():
            unit[bad] = self.space.project_unit(unit[bad])
        return unit


def _with_s(designs: np.ndarray, s: float) -> np.ndarray:
    return np.column_stack([designs, np.full(len(designs), s)])


def _unit_bounds(dim: int):
    import torch

    return torch.stack([torch.zeros(dim), torch.ones(dim)]).to(torch.float64)


def _tensor(array: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(array, dtype=np.float64))


__all__ = ["FIDELITY_KEY", "MultiFidelityOptimizer", "Observation", "check_costs",
           "fidelity_coordinates"]
