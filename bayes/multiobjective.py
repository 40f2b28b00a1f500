"""Multi-objective BoTorch back-end (``botorch_pareto``): a Pareto front under outcome constraints
(or one objective under outcome constraints).

Each told value is a vector: ``n_objectives`` objectives (all maximised), then one outcome per
entry of ``outcome_constraints`` (``[">=", 250.0]`` or ``["<=", x]``), e.g. Wh/L at 10 W, Wh/L
at 200 W, then Wh/kg at 10 W with ``[">=", 250]``. A physically infeasible design is told with
``feasible=False`` and no value, as for the single-objective back-end (it trains the feasibility
GP, never a vector of zeros).

Why these pieces:
- one ``SingleTaskGP`` per outcome (independent, each standardised; a told noise variance is
  the *first* objective's, the others infer theirs), in a ``ModelListGP``; hyper-parameters
  kept and refit on the same cadence as the single-objective back-end;
- small batches: qLogNEHVI (Daulton et al. 2021; Ament et al. 2023) with ``X_pending``, the
  outcome constraints and the feasibility GP as constraints, sequential greedy like qLogNEI; the
  reference point is ``reference_point`` or BoTorch's ``infer_reference_point`` of the observed
  front (its nadir minus 10 % of the range);
- large batches (``n`` + pending >= ``thompson_threshold``): qNEHVI's cost grows with q, so each
  point is a Thompson draw scalarised by its own random augmented-Chebyshev weights (ParEGO's
  scalarisation, Knowles 2006), among candidates whose constraint draws are satisfied, over
  trust-region candidates around the front plus a global share.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from bayes import quasirandom
from bayes.botorch_backend import (
    BoTorchOptimizer,
    _condition_on_mean,
    _tensor,
    fill_missing_variances,
    fit_gp,
    gp_numerics,
)
from bayes.space import Space
from bayes.surrogate import trust_region_candidates, trust_regions

ACCEPTED_OPERATORS = (">=", "<=")
#: Weight of the linear term of the augmented Chebyshev scalarisation (ParEGO's 0.05).
AUGMENTATION = 0.05


def non_dominated(Y: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``Y`` (maximised) that no other row dominates."""
    Y = np.asarray(Y, dtype=float)
    mask = np.ones(len(Y), dtype=bool)
    for i in range(len(Y)):
        if mask[i]:
            dominated = np.all(Y <= Y[i], axis=1) & np.any(Y < Y[i], axis=1)
            mask &= ~dominated
    return mask


def hypervolume(Y: np.ndarray, reference: Sequence[float]) -> float:
    """The hypervolume (maximisation) of the points of ``Y`` dominating ``reference``
    (BoTorch's exact box decomposition)."""
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    Y = np.asarray(Y, dtype=float)
    ref = np.asarray(reference, dtype=float)
    Y = Y[np.all(Y > ref, axis=1)] if len(Y) else Y
    if not len(Y):
        return 0.0
    front = torch.as_tensor(Y[non_dominated(Y)])
    return float(Hypervolume(ref_point=torch.as_tensor(ref)).compute(front))


class ParetoOptimizer(BoTorchOptimizer):
    """GP Bayesian optimisation of several objectives under outcome constraints."""

    backend = "botorch_pareto"
    OPTIONS: ClassVar[dict[str, Any]] = {
        **BoTorchOptimizer.OPTIONS,
        "n_objectives": 2,
        # one [operator, threshold] per constrained outcome told after the objectives
        "outcome_constraints": [],
        # a point every useful design beats in every objective; None: inferred from the data
        "reference_point": None,
    }

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        m = self.options["n_objectives"]
        constraints = self.options["outcome_constraints"]
        least = 1 if constraints else 2
        if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < least:
            raise ValueError(f"option n_objectives must be an integer >= 2 (>= 1 with "
                             f"outcome_constraints); got {m!r}")
        self.options["n_objectives"] = int(m)
        if not isinstance(constraints, list | tuple):
            raise ValueError("option outcome_constraints must be a list of [operator, threshold]")
        parsed = []
        for i, item in enumerate(constraints):
            if (not isinstance(item, list | tuple) or len(item) != 2
                    or item[0] not in ACCEPTED_OPERATORS):
                raise ValueError(f"outcome_constraints[{i}] must be [operator, threshold] with "
                                 f"operator one of {list(ACCEPTED_OPERATORS)}; got {item!r}")
            threshold = float(item[1])
            if not np.isfinite(threshold):
                raise ValueError(f"outcome_constraints[{i}]: threshold must be finite")
            parsed.append([str(item[0]), threshold])
        self.options["outcome_constraints"] = parsed
        reference = self.options["reference_point"]
        if reference is not None:
            reference = [float(v) for v in reference]
            if len(reference) != m or not all(np.isfinite(reference)):
                raise ValueError(f"option reference_point must be {m} finite numbers; got "
                                 f"{self.options['reference_point']!r}")
            self.options["reference_point"] = reference
        if self.priors:
            raise ValueError("prior_observations are single-objective; the botorch_pareto "
                             "back-end takes none")

    # ------------------------------------------------------------------ values
    @property
    def n_outcomes(self) -> int:
        return self.options["n_objectives"] + len(self.options["outcome_constraints"])

    def _check_value(self, value: object, what: str) -> list[float]:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise ValueError(f"{what} must be a list of {self.n_outcomes} numbers (the "
                             f"{self.options['n_objectives']} objectives, then the constrained "
                             f"outcomes); got {value!r}")
        value = list(value)
        if len(value) != self.n_outcomes:
            raise ValueError(f"{what} has {len(value)} numbers; expected {self.n_outcomes}")
        return [super(ParetoOptimizer, self)._check_value(v, f"{what}[{j}]")
                for j, v in enumerate(value)]

    def satisfies_constraints(self, value: Sequence[float]) -> bool:
        """Whether a told vector meets every outcome constraint."""
        m = self.options["n_objectives"]
        for (operator, threshold), v in zip(self.options["outcome_constraints"], value[m:],
                                            strict=True):
            if (operator == ">=" and v < threshold) or (operator == "<=" and v > threshold):
                return False
        return True

    def pareto_front(self) -> list[tuple[dict[str, float], list[float]]]:
        """The feasible, constraint-satisfying observations no other one dominates, with their
        objective vectors."""
        m = self.options["n_objectives"]
        good = [o for o in self.feasible_observations if self.satisfies_constraints(o.value)]
        if not good:
            return []
        mask = non_dominated(np.array([o.value[:m] for o in good]))
        return [(dict(o.point), list(o.value[:m])) for o, keep in zip(good, mask, strict=True)
                if keep]

    def best(self) -> tuple[dict[str, float], float]:
        """The constraint-satisfying observation best in the first objective (the front is
        ``pareto_front()``)."""
        good = [o for o in self.feasible_observations if self.satisfies_constraints(o.value)]
        if not good:
            raise ValueError("best() needs a feasible observation meeting the outcome "
                             f"constraints; {len(self.observations)} told, none does")
        top = max(good, key=lambda o: o.value[0])
        return dict(top.point), top.value[0]

    def _training_data(self):
        feasible = self.feasible_observations
        X = (np.stack([o.unit for o in feasible]) if feasible
             else np.zeros((0, self.space.dim)))
        Y = np.asarray([o.value for o in feasible], dtype=float).reshape(-1, self.n_outcomes)
        return X, Y, fill_missing_variances([o.noise_var for o in feasible])

    # ------------------------------------------------------------------ proposals
    def _model_based(self, n, X, Y, Yvar, pending, thompson):
        import torch

        seed = self._step_seed()
        torch.manual_seed(seed)
        with gp_numerics():
            models = []
            refits = []
            for j in range(self.n_outcomes):
                var = Yvar if j == 0 else None
                y = Y[:, j:j + 1]
                model, refit = self._cached_fit(
                    f"outcome{j}", len(Y),
                    lambda start, optimise, y=y, var=var: fit_gp(X, y, var, start, optimise),
                    "fixed" if var is not None else "inferred")
                models.append(model)
                refits.append(refit)
            self.last_refit = any(refits)
            self.last_train_size = len(Y)
            feasibility, feasibility_model = self._fit_feasibility()
            score = self._scores(Y)
            regions = trust_regions(X, score, self.options["n_trust_regions"],
                                    self.options["elite_fraction"],
                                    10 * self.options["duplicate_radius"])
            if thompson:
                return self._pareto_thompson(models, feasibility_model, Y, n, pending, seed,
                                             regions)
            baseline = X if feasibility is None else feasibility[0]
            return self._nehvi(models, feasibility_model, Y, baseline, n, pending, seed)

    def _scores(self, Y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Augmented Chebyshev scalarisation of the objectives normalised to the observed range
        (equal weights by default), minus the normalised constraint violation."""
        m = self.options["n_objectives"]
        low, high = Y.min(axis=0), Y.max(axis=0)
        scale = np.where(high > low, high - low, 1.0)
        Z = (Y - low) / scale
        w = np.full(m, 1.0 / m) if weights is None else weights
        score = np.min(w * Z[..., :m], axis=-1) + AUGMENTATION * np.sum(w * Z[..., :m], axis=-1)
        return score - self._violation(Y, low, scale)

    def _violation(self, Y: np.ndarray, low: np.ndarray, scale: np.ndarray) -> np.ndarray:
        m = self.options["n_objectives"]
        total = np.zeros(Y.shape[:-1])
        for k, (operator, threshold) in enumerate(self.options["outcome_constraints"]):
            j = m + k
            gap = (threshold - Y[..., j]) if operator == ">=" else (Y[..., j] - threshold)
            total = total + np.maximum(gap, 0.0) / scale[j]
        return total

    def _constraint_callables(self):
        """BoTorch constraints on the model-list outcomes (feasible where <= 0)."""
        m = self.options["n_objectives"]
        constraints = []
        for k, (operator, threshold) in enumerate(self.options["outcome_constraints"]):
            j = m + k
            if operator == ">=":
                constraints.append(lambda Z, j=j, t=threshold: t - Z[..., j])
            else:
                constraints.append(lambda Z, j=j, t=threshold: Z[..., j] - t)
        return constraints

    def _reference_point(self, Y: np.ndarray) -> list[float]:
        import torch
        from botorch.utils.multi_objective.hypervolume import infer_reference_point

        if self.options["reference_point"] is not None:
            return list(self.options["reference_point"])
        m = self.options["n_objectives"]
        good = np.array([self.satisfies_constraints(row) for row in Y])
        objectives = Y[good, :m] if good.any() else Y[:, :m]
        front = objectives[non_dominated(objectives)]
        return infer_reference_point(torch.as_tensor(front)).tolist()

    def _nehvi(self, models, feasibility_model, Y, X, n, pending, seed):
        import torch
        from botorch.acquisition.multi_objective.logei import (
            qLogNoisyExpectedHypervolumeImprovement,
        )
        from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
        from botorch.models import ModelListGP
        from botorch.optim import optimize_acqf
        from botorch.optim.initializers import initialize_q_batch
        from botorch.sampling.normal import SobolQMCNormalSampler

        m = self.options["n_objectives"]
        constraints = self._constraint_callables()
        all_models = list(models)
        if feasibility_model is not None:
            all_models.append(feasibility_model)
            feasibility_index = len(all_models) - 1
            constraints.append(lambda Z: -Z[..., feasibility_index])
        common = dict(
            model=ModelListGP(*all_models),
            X_baseline=_tensor(X),
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([self.options["mc_samples"]]),
                                          seed=seed),
            constraints=constraints or None,
            X_pending=_tensor(pending) if len(pending) else None,
            prune_baseline=True,
        )
        if m == 1:  # one objective under outcome constraints: constrained qLogNEI
            from botorch.acquisition.logei import qLogNoisyExpectedImprovement
            from botorch.acquisition.objective import GenericMCObjective

            acqf = qLogNoisyExpectedImprovement(
                objective=GenericMCObjective(lambda Z, X=None: Z[..., 0]), **common)
        else:
            acqf = qLogNoisyExpectedHypervolumeImprovement(
                ref_point=self._reference_point(Y),
                objective=IdentityMCMultiOutputObjective(outcomes=list(range(m))), **common)
        dim = self.space.dim
        bounds = torch.stack([torch.zeros(dim), torch.ones(dim)]).to(torch.float64)
        linear = self._botorch_constraints() or None
        chosen: list[np.ndarray] = []
        for step in range(n):
            taken = np.concatenate([pending, np.stack(chosen)]) if chosen else pending
            acqf.set_X_pending(_tensor(taken) if len(taken) else None)
            raw = quasirandom.candidate_set(self.space, self.options["raw_samples"], seed + step,
                                            self._avoid(taken))
            raw_t = _tensor(raw).unsqueeze(1)
            with torch.no_grad():
                raw_values = torch.cat([acqf(chunk) for chunk in raw_t.split(256)])
            starts, _ = initialize_q_batch(raw_t, raw_values,
                                           n=min(self.options["num_restarts"], len(raw)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                candidate, _ = optimize_acqf(
                    acqf, bounds=bounds, q=1, num_restarts=len(starts),
                    batch_initial_conditions=starts, inequality_constraints=linear,
                    options={"batch_limit": len(starts), "maxiter": 200},
                )
            chosen.append(self._repair(candidate.detach().cpu().numpy())[0])
        return self._replace_excluded(np.stack(chosen), pending, acqf, seed, feasibility_model)

    def _pareto_thompson(self, models, feasibility_model, Y, n, pending, seed, regions):
        import torch

        avoid = self._avoid(pending)
        size = max(self.options["n_candidates"], 4 * n)
        cands = trust_region_candidates(self.space, list(regions), size, seed, avoid,
                                        self.options["global_share"])
        cands_t = _tensor(cands)
        draws = []
        with torch.no_grad():
            for model in models + ([feasibility_model] if feasibility_model is not None else []):
                sampler = _condition_on_mean(model, pending) if len(pending) else model
                draws.append(sampler.posterior(cands_t).rsample(torch.Size([n]))
                             .reshape(n, -1).cpu().numpy())
        outcomes = np.stack(draws[:self.n_outcomes], axis=-1)  # (n, candidates, outcomes)
        g = draws[self.n_outcomes] if feasibility_model is not None else None
        m = self.options["n_objectives"]
        rng = np.random.default_rng(quasirandom.derived_seed(seed, 5))
        low, high = Y.min(axis=0), Y.max(axis=0)
        scale = np.where(high > low, high - low, 1.0)
        taken = np.zeros(len(cands), dtype=bool)
        chosen = []
        for i in range(n):
            w = rng.dirichlet(np.ones(m))
            Z = (outcomes[i] - low) / scale
            score = np.min(w * Z[:, :m], axis=1) + AUGMENTATION * np.sum(w * Z[:, :m], axis=1)
            violation = self._violation(outcomes[i], low, scale)
            ok = violation <= 0.0
            if g is not None:
                ok &= g[i] > 0.0
            ok &= ~taken
            row = np.where(ok, score, -np.inf) if ok.any() else np.where(taken, -np.inf,
                                                                           -violation)
            index = int(np.argmax(row))
            chosen.append(index)
            taken[index] = True
        return cands[chosen]

    def _options_for_state(self) -> dict:
        return dict(self.options)

