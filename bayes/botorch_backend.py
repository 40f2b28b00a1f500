"""BoTorch back-end: GP + qLogNEI with pending points; Thompson sampling for large batches.

Why these pieces (measured, see docs/optimisers.md):
- an initial scrambled-Sobol design of ``n_initial`` points (pending and failed points count
  towards it, so 8 asynchronous workers do not all start on Sobol points after it is spent);
- ``SingleTaskGP`` on the unit cube with a standardised outcome, with ``train_Yvar`` when every
  observation came with a noise variance (known noise), an inferred noise level otherwise;
- ``qLogNoisyExpectedImprovement`` with ``X_pending`` (the points still running), maximised by
  ``optimize_acqf`` under the space's linear constraints, sequential greedy over the batch;
- when ``n`` or the number pending reaches ``thompson_threshold`` (64), qLogNEI's cost grows with
  q + pending (minutes at q = 128), so the batch is drawn by Thompson sampling over a Sobol
  candidate set filtered by the constraints, after conditioning the GP on the pending points at
  their posterior mean (kriging believer), which is cheap and keeps the batch away from them.
Every random step is seeded from (seed, history size, ask counter): same history, same points.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from bayes import quasirandom
from bayes.optimizer import Optimizer
from bayes.space import Space

#: Unit-cube slack kept from each linear constraint so optimiser round-off stays feasible.
CONSTRAINT_MARGIN = 1e-7
#: Exact linear algebra up to this size (gpytorch switches to approximations at 800 by default).
MAX_CHOLESKY_SIZE = 20_000


class BoTorchOptimizer(Optimizer):
    """GP Bayesian optimisation with BoTorch (the default back-end)."""

    backend = "botorch"
    OPTIONS: ClassVar[dict[str, Any]] = {
        "n_initial": None,  # default: max(6, 2 * dim)
        "prior_observations": [],  # [(point, value) or (point, value, noise_var), ...]
        "thompson_threshold": 64,
        "n_candidates": 2048,
        "num_restarts": 20,
        "raw_samples": 2048,
        "mc_samples": 128,
    }

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        if self.options["n_initial"] is None:
            self.options["n_initial"] = max(6, 2 * space.dim)
        for name, minimum in [
            ("n_initial", 1), ("thompson_threshold", 1), ("n_candidates", 16),
            ("num_restarts", 1), ("raw_samples", 1), ("mc_samples", 1),
        ]:
            value = self.options[name]
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
                raise ValueError(f"option {name} must be an integer >= {minimum}; got {value!r}")
            self.options[name] = int(value)
        self.priors = self._parse_priors(self.options["prior_observations"])
        self.options["prior_observations"] = [
            [self._full(p), v] if var is None else [self._full(p), v, var]
            for p, _, v, var in self.priors
        ]
        self.design_position = 0
        #: How the last ask chose its points: "sobol", "qlognei", "thompson" (joined by "+").
        self.last_ask_method = ""

    def _parse_priors(self, raw: object) -> list[tuple[dict, np.ndarray, float, float | None]]:
        if not isinstance(raw, list | tuple):
            raise ValueError("prior_observations must be a list of (point, value) pairs")
        parsed = []
        for i, item in enumerate(raw):
            if not isinstance(item, list | tuple) or len(item) not in (2, 3):
                raise ValueError(
                    f"prior_observations[{i}] must be (point, value) or (point, value, noise_var); "
                    f"got {item!r}"
                )
            point, value = item[0], item[1]
            var = item[2] if len(item) == 3 else None
            try:
                unit = self.space.to_unit(point)
                value = float(value)
                var = None if var is None else float(var)
            except (TypeError, ValueError) as error:
                raise ValueError(f"prior_observations[{i}]: {error}") from None
            if not np.isfinite(value) or (var is not None and not (np.isfinite(var) and var >= 0)):
                raise ValueError(f"prior_observations[{i}]: value and noise_var must be finite")
            parsed.append((point, unit, value, var))
        return parsed

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict:
        return {"design_position": self.design_position}

    def _load_extra_state(self, counters: Mapping) -> None:
        self.design_position = int(counters.get("design_position", 0))

    # ------------------------------------------------------------------ proposals
    def _training_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        units = [u for _, u, _, _ in self.priors] + [o.unit for o in self.observations]
        values = [v for _, _, v, _ in self.priors] + [o.value for o in self.observations]
        noise = [var for _, _, _, var in self.priors] + [o.noise_var for o in self.observations]
        X = np.stack(units) if units else np.zeros((0, self.space.dim))
        Y = np.asarray(values, dtype=float).reshape(-1, 1)
        Yvar = None
        if noise and all(v is not None for v in noise):
            Yvar = np.asarray(noise, dtype=float).reshape(-1, 1)
        return X, Y, Yvar

    def _propose(self, n: int, pending_unit: np.ndarray) -> np.ndarray:
        X, Y, Yvar = self._training_data()
        avoid = self._avoid(pending_unit)
        n_train = len(Y)
        used = n_train + len(self.failures) + len(pending_unit)
        if n_train < 2 or np.ptp(Y) == 0.0:
            n_design = n  # a GP needs two different values to say anything
        else:
            n_design = min(n, max(0, self.options["n_initial"] - used))
        parts = []
        methods = []
        if n_design:
            design, self.design_position = quasirandom.draw_stream(
                self.space, "sobol", self.seed, self.design_position, n_design, avoid,
                separation=self.options["duplicate_radius"],
            )
            parts.append(design)
            methods.append("sobol")
        rest = n - n_design
        if rest:
            taken = np.concatenate([pending_unit, *parts]) if parts else pending_unit
            threshold = self.options["thompson_threshold"]
            thompson = rest >= threshold or len(taken) >= threshold
            methods.append("thompson" if thompson else "qlognei")
            parts.append(self._model_based(rest, X, Y, Yvar, taken, thompson))
        self.last_ask_method = "+".join(methods)
        return np.concatenate(parts)

    def _model_based(
        self,
        n: int,
        X: np.ndarray,
        Y: np.ndarray,
        Yvar: np.ndarray | None,
        pending: np.ndarray,
        thompson: bool,
    ) -> np.ndarray:
        import gpytorch
        import torch

        seed = self._step_seed()
        torch.manual_seed(seed)
        with (
            gpytorch.settings.max_cholesky_size(MAX_CHOLESKY_SIZE),
            gpytorch.settings.fast_computations(
                covar_root_decomposition=False, log_prob=False, solves=False
            ),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message=".*(jitter|not p.d.|NumericalWarning).*")
            model = fit_gp(X, Y, Yvar)
            if thompson:
                return self._thompson(model, n, pending, seed)
            return self._qlognei(model, X, n, pending, seed)

    def _qlognei(self, model, X: np.ndarray, n: int, pending: np.ndarray, seed: int) -> np.ndarray:
        import torch
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.optim import optimize_acqf
        from botorch.optim.initializers import initialize_q_batch
        from botorch.sampling.normal import SobolQMCNormalSampler

        dim = self.space.dim
        X_pending = _tensor(pending) if len(pending) else None
        acqf = qLogNoisyExpectedImprovement(
            model=model,
            X_baseline=_tensor(X),
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([self.options["mc_samples"]]),
                                          seed=seed),
            X_pending=X_pending,
            prune_baseline=True,
        )
        bounds = torch.stack([torch.zeros(dim), torch.ones(dim)]).to(torch.float64)
        constraints = self._botorch_constraints() or None
        chosen: list[np.ndarray] = []
        # Sequential greedy: one point at a time, each added to X_pending for the next.
        # Starting points come from feasible Sobol points (BoTorch's own polytope sampler for
        # constrained starts costs seconds per point).
        for step in range(n):
            taken = np.concatenate([pending, np.stack(chosen)]) if chosen else pending
            acqf.set_X_pending(_tensor(taken) if len(taken) else None)
            raw = quasirandom.candidate_set(
                self.space, self.options["raw_samples"], seed + step, self._avoid(taken)
            )
            raw_t = _tensor(raw).unsqueeze(1)
            with torch.no_grad():
                raw_values = torch.cat([acqf(chunk) for chunk in raw_t.split(256)])
            starts, _ = initialize_q_batch(
                raw_t, raw_values, n=min(self.options["num_restarts"], len(raw))
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                candidate, _ = optimize_acqf(
                    acqf,
                    bounds=bounds,
                    q=1,
                    num_restarts=len(starts),
                    batch_initial_conditions=starts,
                    inequality_constraints=constraints,
                    options={"batch_limit": len(starts), "maxiter": 200},
                )
            chosen.append(self._repair(candidate.detach().cpu().numpy())[0])
        candidates = np.stack(chosen)
        return self._replace_excluded(candidates, pending, acqf, seed)

    def _thompson(self, model, n: int, pending: np.ndarray, seed: int) -> np.ndarray:
        import torch

        avoid = self._avoid(pending)
        size = max(self.options["n_candidates"], 4 * n)
        cands = quasirandom.candidate_set(self.space, size, seed, avoid)
        if len(cands) < n:
            raise RuntimeError(
                f"only {len(cands)} allowed candidates for a batch of {n}: raise n_candidates"
            )
        sampler_model = model
        if len(pending):
            sampler_model = _condition_on_mean(model, pending)
        cands_t = _tensor(cands)
        with torch.no_grad():
            posterior = sampler_model.posterior(cands_t)
            samples = posterior.rsample(torch.Size([n])).reshape(n, -1).cpu().numpy()
        chosen: list[int] = []
        taken = np.zeros(len(cands), dtype=bool)
        for row in samples:
            row = np.where(taken, -np.inf, row)
            index = int(np.argmax(row))
            chosen.append(index)
            taken[index] = True
        return cands[chosen]

    # ------------------------------------------------------------------ helpers
    def _botorch_constraints(self) -> list:
        """The space's ``A u <= b`` as BoTorch's ``sum(coef * x[idx]) >= rhs`` triples."""
        import torch

        A, b = self.space.unit_constraints()
        triples = []
        for row, rhs in zip(A, b, strict=True):
            idx = np.flatnonzero(row)
            if not len(idx):
                continue
            triples.append((
                torch.as_tensor(idx, dtype=torch.long),
                torch.as_tensor(-row[idx], dtype=torch.float64),
                float(-(rhs - CONSTRAINT_MARGIN)),
            ))
        return triples

    def _repair(self, unit: np.ndarray) -> np.ndarray:
        """Clip to the cube and project points off the constraints by round-off back onto them."""
        unit = np.clip(unit, 0.0, 1.0)
        bad = ~self.space.feasible_unit(unit)
        if bad.any():
            unit[bad] = self.space.project_unit(unit[bad])
        return unit

    def _replace_excluded(self, proposal: np.ndarray, pending: np.ndarray, acqf, seed: int):
        """Swap proposals that fall near pending or failed points (or each other) for the best
        allowed Sobol candidate under the acquisition, so none is proposed twice."""
        import torch

        accepted: list[np.ndarray] = []
        for point in proposal:
            others = np.concatenate([pending, np.stack(accepted)]) if accepted else pending
            avoid = self._avoid(others)
            if quasirandom.allowed(self.space, point[None, :], avoid)[0]:
                accepted.append(point)
                continue
            cands = quasirandom.candidate_set(self.space, 1024, seed + len(accepted) + 1, avoid)
            acqf.set_X_pending(_tensor(others) if len(others) else None)
            with torch.no_grad():
                scores = acqf(_tensor(cands).unsqueeze(1)).cpu().numpy()
            accepted.append(cands[int(np.argmax(scores))])
        return np.stack(accepted)


def _tensor(array: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(array, dtype=np.float64))


def fit_gp(X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None):
    """A SingleTaskGP on unit-cube inputs, standardised outputs, fitted by max likelihood."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    train_X, train_Y = _tensor(X), _tensor(Y)
    kwargs = {}
    if Yvar is not None:
        kwargs["train_Yvar"] = _tensor(np.maximum(Yvar, 1e-10))
    model = SingleTaskGP(train_X, train_Y, outcome_transform=Standardize(m=1), **kwargs)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    model.eval()
    return model


def _condition_on_mean(model, pending: np.ndarray):
    """The GP conditioned on the pending points at its posterior mean (kriging believer)."""
    import torch
    from gpytorch.likelihoods import FixedNoiseGaussianLikelihood

    P = _tensor(pending)
    with torch.no_grad():
        mean = model.posterior(P).mean
    kwargs = {}
    if isinstance(model.likelihood, FixedNoiseGaussianLikelihood):
        # Noise is taken as already outcome-transformed: small, as for a believed observation.
        kwargs["noise"] = torch.full_like(mean, 1e-6)
    try:
        return model.condition_on_observations(P, mean, **kwargs)
    except (RuntimeError, ValueError) as error:  # pragma: no cover - numerical corner cases
        warnings.warn(f"Thompson sampling ignores pending points ({error})", stacklevel=2)
        return model
