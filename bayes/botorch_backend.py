"""BoTorch back-end: GP + qLogNEI with pending points; Thompson sampling for large batches.

Why these pieces (measured, see docs/optimisers.md):
- an initial scrambled-Sobol design of ``n_initial`` points (pending and failed points count
  towards it, so 8 asynchronous workers do not all start on Sobol points after it is spent);
- ``SingleTaskGP`` on the unit cube with a standardised outcome, fitted on the *feasible*
  observations only, with ``train_Yvar`` when any observation came with a noise variance (known
  noise; a missing variance is filled with the median of the known ones rather than switching
  known noise off for every point), an inferred noise level when none did;
- once a design was told infeasible, a second ``SingleTaskGP`` on a +1/-1 feasibility label of
  every observation; with the objective GP it forms a ``ModelListGP`` and enters qLogNEI as the
  outcome constraint ``-g(x) <= 0`` (a feasibility-weighted improvement, as in Gardner et al. 2014),
  and Thompson sampling takes the best objective draw among candidates whose feasibility draw
  is > 0 (as in SCBO, Eriksson & Poloczek 2021); both search only where the feasibility GP
  (zero prior mean) gives P(feasible) >= ``min_feasibility_probability`` (0.5) when any
  candidate does (Gelbart et al. 2014). No infeasible design: exactly the single GP;
- ``qLogNoisyExpectedImprovement`` with ``X_pending`` (the points still running), maximised by
  ``optimize_acqf`` under the space's linear constraints, sequential greedy over the batch;
- a proposal within ``duplicate_radius`` of an evaluated or pending point (or of another point of
  its batch) is replaced by the best allowed candidate under the acquisition, drawn from a small
  box around it and from the whole space;
- when ``n`` plus the number pending (the batch in flight) reaches ``thompson_threshold`` (64),
  sequential qLogNEI costs one acquisition optimisation per point (minutes at q = 128), so the
  batch is drawn by Thompson sampling over trust-region candidates filtered by the constraints,
  after conditioning the GP on the pending points at their posterior mean (kriging believer),
  which is cheap and keeps the batch away from them.
Every random step is seeded from (seed, history size, ask counter): same history, same points.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from bayes import quasirandom
from bayes.optimizer import Optimizer, check_integer_options
from bayes.space import Space
from bayes.surrogate import (
    BACKGROUND_REFIT,
    DaemonThreadExecutor,
    HyperCache,
    PendingRefit,
    hyperparameters_of,
    load_hyperparameters,
    local_subset,
    trust_region_candidates,
    trust_regions,
)

#: Unit-cube slack kept from each linear constraint so optimiser round-off stays feasible.
CONSTRAINT_MARGIN = 1e-7
#: Half-width of the box searched around a rejected duplicate, in duplicate radii.
LOCAL_BOX_RADII = 20.0
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
        # once a design was infeasible: propose only where the feasibility model gives at least
        # this probability of feasibility (when any candidate reaches it)
        "min_feasibility_probability": 0.5,
        # refit the GP hyper-parameters (warm-started from the kept ones) only when the
        # observations grew by this fraction since the last fit; 0: a cold fit at every ask
        "refit_fraction": 0.1,
        # below this many observations every ask fits cold (cheap there, and the most accurate)
        "cache_from": 128,
        # beyond this many observations the GP is a local model on this many (bounded cost)
        "max_train": 1000,
        # Thompson candidates: trust regions around this many incumbents, each as wide as the
        # spread of the best elite_fraction of observations; global_share of them space-wide
        "n_trust_regions": 4,
        "elite_fraction": 0.05,
        "global_share": 0.2,
        # from this many pending points on, qLogNEI believes them at the GP's posterior mean
        # (kriging believer) instead of carrying them in its joint posterior: its cost grows
        # with q + pending (25 CPU-s for ask(8, 56 pending) at 250 observations)
        "believer_from": 16,
        # the local model's search (beyond max_train observations): restarts and raw samples
        # inside its trust region, a box of at most +-0.2 per coordinate. 2048 raw samples and
        # 20 restarts there were 36 % and 59 % of ask(8, 56 pending) at 1000 observations
        # (docs/optimisers.md); 512 in a box of side <= 0.4 are still denser than 2048 over the
        # whole cube from 2 dimensions on. L-BFGS from the restarts was still 2/3 of that ask
        # with 10 (cProfile, 2026-12-01): in the small box they end on the same few optima, and
        # 5 gave the same batch best at 0.76-0.93 of the CPU (bench_bo_ask.py, one state, two runs)
        "local_raw_samples": 512,
        "local_num_restarts": 5,
        # the global model's search: the full budget up to this many training points (default
        # max_train // 2), then shrinking as (full_search_until / n)^2 to the local budget (see
        # _search_budget): 2048 raw / 20 restarts at exactly 1000 observations made that ask
        # cost 2.6x the local model's at 1008 (docs/optimisers.md)
        "full_search_until": None,
        # where a due refit runs (bayes.surrogate.BACKGROUND_REFIT): "off" inside the ask (36.4
        # of ask(8, 56 pending)'s CPU-s at 1000 observations, docs/optimisers.md);
        # "next_ask": in a background thread started by the ask that found it due (that ask
        # keeps the previous hyper-parameters), the next ask waits for it and uses the new
        # ones (same history, same points); "when_ready": the next ask uses the new ones only
        # if the refit is done, and never waits (the async controller's choice)
        "background_refit": "next_ask",
    }

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        if self.options["n_initial"] is None:
            self.options["n_initial"] = max(6, 2 * space.dim)
        if self.options["full_search_until"] is None and isinstance(
                self.options["max_train"], int) and not isinstance(self.options["max_train"], bool):
            self.options["full_search_until"] = max(1, self.options["max_train"] // 2)
        check_integer_options(self.options, [
            ("n_initial", 1), ("thompson_threshold", 1), ("n_candidates", 16),
            ("num_restarts", 1), ("raw_samples", 1), ("mc_samples", 1),
            ("max_train", 16), ("n_trust_regions", 1), ("cache_from", 0),
            ("believer_from", 1), ("local_raw_samples", 1), ("local_num_restarts", 1),
            ("full_search_until", 1),
        ])
        threshold = self.options["min_feasibility_probability"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
            0.0 <= threshold < 1.0
        ):
            raise ValueError(
                f"option min_feasibility_probability must be a number in [0, 1); got {threshold!r}"
            )
        self.options["min_feasibility_probability"] = float(threshold)
        for name, low, high in [("refit_fraction", 0.0, 10.0), ("elite_fraction", 0.0, 1.0),
                                ("global_share", 0.0, 1.0)]:
            value = self.options[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low <= value <= high
            ):
                raise ValueError(f"option {name} must be a number in [{low}, {high}]; got {value!r}")
            self.options[name] = float(value)
        if self.options["background_refit"] not in BACKGROUND_REFIT:
            raise ValueError(
                f"option background_refit must be one of {', '.join(BACKGROUND_REFIT)}; "
                f"got {self.options['background_refit']!r}"
            )
        #: runs background refits (``submit(fn) -> concurrent.futures.Future``); a daemon
        #: thread per refit unless replaced (the utilisation benchmark puts a virtual clock here)
        self.refit_executor = DaemonThreadExecutor()
        #: refits running in the background, per GP kind
        self.refits: dict[str, PendingRefit] = {}
        #: kept hyper-parameters of the objective and feasibility GPs (see bayes.surrogate)
        self.hyper = {"objective": HyperCache({}), "feasibility": HyperCache({})}
        #: CPU seconds (of its own thread) of the last background refit adopted
        self.last_background_refit_cpu_s = 0.0
        #: whether the last model-based ask refit the objective GP's hyper-parameters
        self.last_refit = False
        #: how many points the last objective GP was trained on
        self.last_train_size = 0
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
        return {"design_position": self.design_position,
                "hyper": {k: v.to_dict() for k, v in self.hyper.items()}}

    def _load_extra_state(self, counters: Mapping) -> None:
        self.design_position = int(counters.get("design_position", 0))
        hyper = counters.get("hyper") or {}
        self.hyper = {k: HyperCache.from_dict(hyper.get(k))
                      for k in {"objective", "feasibility", *hyper}}

    # ------------------------------------------------------------------ proposals
    def _evaluated_unit(self) -> np.ndarray:
        """Observations and prior observations: no proposal repeats either."""
        units = [u for _, u, _, _ in self.priors] + [o.unit for o in self.observations]
        return np.stack(units) if units else np.zeros((0, self.space.dim))

    def _training_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Inputs, values and variances of the objective GP: feasible observations only."""
        feasible = self.feasible_observations
        units = [u for _, u, _, _ in self.priors] + [o.unit for o in feasible]
        values = [v for _, _, v, _ in self.priors] + [o.value for o in feasible]
        noise = [var for _, _, _, var in self.priors] + [o.noise_var for o in feasible]
        X = np.stack(units) if units else np.zeros((0, self.space.dim))
        Y = np.asarray(values, dtype=float).reshape(-1, 1)
        return X, Y, fill_missing_variances(noise)

    def _feasibility_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Inputs and +1 (feasible) / -1 (infeasible) labels of every observation and prior;
        None while no design was infeasible (then there is nothing to learn)."""
        if not self.n_infeasible:
            return None
        units = [u for _, u, _, _ in self.priors] + [o.unit for o in self.observations]
        labels = [1.0] * len(self.priors) + [1.0 if o.feasible else -1.0 for o in self.observations]
        return np.stack(units), np.asarray(labels, dtype=float).reshape(-1, 1)

    def _propose(self, n: int, pending_unit: np.ndarray) -> np.ndarray:
        X, Y, Yvar = self._training_data()
        avoid = self._avoid(pending_unit)
        n_train = len(Y)
        used = len(self.priors) + self.n_observations + len(self.failures) + len(pending_unit)
        if n_train < 2 or np.ptp(Y, axis=0).min() == 0.0:
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
            # the batch in flight once this ask is running: the pending points and this batch.
            # Sequential greedy qLogNEI costs one acquisition optimisation per point, Thompson
            # sampling about the same for any batch: from thompson_threshold points in flight
            # a campaign's asks are Thompson draws (with 62 pending, ask(4) was qLogNEI and
            # 64 workers at 5000 observations were 89 % busy, docs/optimisers.md)
            thompson = rest + len(taken) >= self.options["thompson_threshold"]
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
        import torch

        seed = self._step_seed()
        torch.manual_seed(seed)
        with gp_numerics():
            n_seen = len(Y)
            subset = local_subset(X, Y, self.options["max_train"])
            local = len(subset) < len(Y)
            X, Y = X[subset], Y[subset]
            Yvar = None if Yvar is None else Yvar[subset]
            model, self.last_refit = self._cached_fit(
                "objective", n_seen,
                lambda start, optimise: self._fit_objective(X, Y, Yvar, start, optimise),
                "fixed" if Yvar is not None else "inferred")
            self.last_train_size = len(Y)
            feasibility, feasibility_model = self._fit_feasibility()
            regions = trust_regions(X, Y, self.options["n_trust_regions"],
                                    self.options["elite_fraction"],
                                    10 * self.options["duplicate_radius"])
            if thompson:
                return self._thompson(model, feasibility_model, n, pending, seed, regions)
            baseline = X if feasibility is None else feasibility[0]
            # a local model is searched inside the trust region it was fitted around
            region = regions[0] if local else None
            return self._qlognei(model, feasibility_model, baseline, n, pending, seed, region)

    def _fit_objective(self, X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None,
                       start: dict | None, optimise: bool):
        """The objective GP (a hook: bayes/transfer.py gives it an earlier campaign's prior mean)."""
        return fit_gp(X, Y, Yvar, start, optimise)

    def _fit_feasibility(self):
        """The feasibility GP's data (bounded by max_train) and model; (None, None) while no
        design was infeasible."""
        feasibility = self._feasibility_data()
        if feasibility is None:
            return None, None
        fX, flabels = feasibility
        keep = local_subset(fX, flabels, self.options["max_train"])
        fX, flabels = fX[keep], flabels[keep]
        model, _ = self._cached_fit(
            "feasibility", len(self.priors) + self.n_observations,
            lambda start, optimise: fit_feasibility_gp(fX, flabels, start, optimise), "inferred")
        return (fX, flabels), model

    def _cached_fit(self, kind: str, n_seen: int, fit, likelihood: str):
        """The GP with kept hyper-parameters, refit (warm-started) only when due; with
        ``background_refit`` a due refit runs off the ask (see the option)."""
        fraction = self.options["refit_fraction"]
        if fraction == 0.0 or n_seen < self.options["cache_from"]:
            return fit(None, True), True
        mode = self.options["background_refit"]
        self._adopt_refit(kind, wait=mode == "next_ask")
        cache = self.hyper.get(kind, HyperCache({}))
        running = kind in self.refits
        if running or not cache.due(n_seen, likelihood, fraction):
            model = fit(cache.values, False)
            if model is not None:
                return model, False
        elif mode != "off" and cache.likelihood == likelihood:
            model = fit(cache.values, False)
            if model is not None:  # the kept values fit this model: refit in the background
                start = cache.values
                self.refits[kind] = PendingRefit(
                    self.refit_executor.submit(lambda: _refit_job(fit, start)), n_seen, likelihood)
                return model, False
        model = fit(cache.values or None, True)
        self.hyper[kind] = HyperCache(hyperparameters_of(model), n_seen, likelihood)
        return model, True

    def _adopt_refit(self, kind: str, wait: bool) -> None:
        """The background refit's hyper-parameters become the kept ones once it is done
        (waiting for it when ``wait``); a refit that raised is raised here, named."""
        pending = self.refits.get(kind)
        if pending is None or not (wait or pending.future.done()):
            return
        del self.refits[kind]
        try:
            values, cpu_s = pending.future.result()
        except Exception as error:
            raise RuntimeError(
                f"the background refit of the {kind} GP at {pending.n_observations} observations "
                f"raised {type(error).__name__}: {error}"
            ) from error
        self.hyper[kind] = HyperCache(values, pending.n_observations, pending.likelihood)
        self.last_background_refit_cpu_s = cpu_s

    def _search_budget(self, n_train: int | None) -> tuple[int, int]:
        """Raw samples and restarts of each greedy qLogNEI step on a GP of ``n_train`` points
        (None: the local model beyond ``max_train``, searched in its trust region).

        Each acquisition evaluation multiplies test-train covariances by the GP's cached
        inverse root, O(n_train^2), and raw samples plus L-BFGS evaluations from the restarts
        are what an ask does: up to ``full_search_until`` points the full budget, beyond it the
        budget shrinks as (full_search_until / n_train)^2, so an ask costs no more than at
        ``full_search_until``, down to the local model's budget, which the defaults reach at
        ``max_train`` (2048 / 4 = 512 raw, 20 / 4 = 5 restarts): the cost is continuous across
        the switch to the local model instead of a jump from 2048 raw / 20 restarts at 1000
        observations to 512 / 5 at 1001."""
        raw, restarts = self.options["raw_samples"], self.options["num_restarts"]
        local_raw, local_restarts = (self.options["local_raw_samples"],
                                     self.options["local_num_restarts"])
        if n_train is None:
            return local_raw, local_restarts
        scale = min(1.0, (self.options["full_search_until"] / max(1, n_train)) ** 2)
        return (min(raw, max(local_raw, round(raw * scale))),
                min(restarts, max(local_restarts, round(restarts * scale))))

    def _qlognei(
        self, model, feasibility_model, X: np.ndarray, n: int, pending: np.ndarray, seed: int,
        region=None,
    ) -> np.ndarray:
        import torch
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.optim import optimize_acqf
        from botorch.optim.initializers import initialize_q_batch
        from botorch.sampling.normal import SobolQMCNormalSampler

        dim = self.space.dim
        believed = len(pending) >= self.options["believer_from"]
        if believed:
            model = _condition_on_mean(model, pending)
        # pending points the acquisition carries jointly (the rest are believed in the model)
        joint = np.zeros((0, dim)) if believed else pending
        X_pending = _tensor(joint) if len(joint) else None
        extra: dict[str, Any] = {}
        if feasibility_model is not None:
            from botorch.acquisition.objective import GenericMCObjective
            from botorch.models import ModelListGP

            # outcome 0: objective; outcome 1: feasibility g(x) in [-1, 1], feasible when > 0
            model = ModelListGP(model, feasibility_model)
            extra["objective"] = GenericMCObjective(lambda Z, X=None: Z[..., 0])
            extra["constraints"] = [lambda Z: -Z[..., 1]]
        acqf = qLogNoisyExpectedImprovement(
            model=model,
            X_baseline=_tensor(X),
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([self.options["mc_samples"]]),
                                          seed=seed),
            X_pending=X_pending,
            prune_baseline=True,
            **extra,
        )
        bounds = torch.stack([torch.zeros(dim), torch.ones(dim)]).to(torch.float64)
        if region is not None:
            bounds = _tensor(np.stack([region.lower, region.upper]))
        constraints = self._botorch_constraints() or None
        threshold = self.options["min_feasibility_probability"]
        chosen: list[np.ndarray] = []
        raw_samples, num_restarts = self._search_budget(
            self.last_train_size if region is None else None)
        # Sequential greedy: one point at a time, each added to X_pending for the next.
        # Starting points come from feasible Sobol points (BoTorch's own polytope sampler for
        # constrained starts costs seconds per point).
        for step in range(n):
            taken = np.concatenate([pending, np.stack(chosen)]) if chosen else pending
            carried = np.concatenate([joint, np.stack(chosen)]) if chosen else joint
            acqf.set_X_pending(_tensor(carried) if len(carried) else None)
            if region is None:
                raw = quasirandom.candidate_set(
                    self.space, raw_samples, seed + step, self._avoid(taken)
                )
            else:
                raw = trust_region_candidates(self.space, [region], raw_samples,
                                              seed + step, self._avoid(taken), 0.0)
            likely = None
            if feasibility_model is not None:
                # Search where a feasible design is likely (Gelbart et al. 2014's probabilistic
                # constraint): the constrained acquisition alone still sends proposals deep into
                # unexplored infeasible regions, where the objective GP knows nothing
                probable = feasibility_probability(feasibility_model, raw) >= threshold
                if probable.any():
                    raw, likely = raw[probable], True
            raw_t = _tensor(raw).unsqueeze(1)
            with torch.no_grad():
                raw_values = torch.cat([acqf(chunk) for chunk in raw_t.split(256)])
            starts, _ = initialize_q_batch(
                raw_t, raw_values, n=min(num_restarts, len(raw))
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
            point = self._repair(candidate.detach().cpu().numpy())[0]
            if likely and feasibility_probability(feasibility_model, point[None, :])[0] < threshold:
                # the optimiser walked out of the likely-feasible region: best start inside it
                point = raw[int(torch.argmax(raw_values))]
            chosen.append(point)
        candidates = np.stack(chosen)
        return self._replace_excluded(candidates, pending, acqf, seed, feasibility_model,
                                      carried=joint)

    def _thompson(
        self, model, feasibility_model, n: int, pending: np.ndarray, seed: int, regions=()
    ) -> np.ndarray:
        import torch

        avoid = self._avoid(pending)
        size = max(self.options["n_candidates"], 4 * n)
        # candidates follow the data: trust regions around the incumbents plus a global share
        cands = trust_region_candidates(self.space, list(regions), size, seed, avoid,
                                        self.options["global_share"])
        if len(cands) < n:
            raise RuntimeError(
                f"only {len(cands)} allowed candidates for a batch of {n}: raise n_candidates"
            )
        if feasibility_model is not None:
            # as for qLogNEI: draw where a feasible design is likely, when enough candidates are
            probable = (
                feasibility_probability(feasibility_model, cands)
                >= self.options["min_feasibility_probability"]
            )
            if probable.sum() >= n:
                cands = cands[probable]
        sampler_model = model
        if len(pending):
            sampler_model = _condition_on_mean(model, pending)
        cands_t = _tensor(cands)
        with torch.no_grad():
            posterior = sampler_model.posterior(cands_t)
            samples = posterior.rsample(torch.Size([n])).reshape(n, -1).cpu().numpy()
            if feasibility_model is not None:
                feasible_draws = feasibility_model.posterior(cands_t).rsample(torch.Size([n]))
                feasible_draws = feasible_draws.reshape(n, -1).cpu().numpy()
        chosen: list[int] = []
        taken = np.zeros(len(cands), dtype=bool)
        for i, row in enumerate(samples):
            row = np.where(taken, -np.inf, row)
            if feasibility_model is not None:
                g = np.where(taken, -np.inf, feasible_draws[i])
                # best objective draw among candidates drawn feasible; if none, the most
                # feasible-looking one (SCBO's rule)
                row = np.where(g > 0.0, row, -np.inf) if (g > 0.0).any() else g
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

    def _replace_excluded(
        self, proposal: np.ndarray, pending: np.ndarray, acqf, seed: int, feasibility_model=None,
        carried: np.ndarray | None = None,
    ):
        """Swap proposals that fall near evaluated, pending or failed points (or each other) for
        the best allowed candidate under the acquisition, so none is proposed twice.

        The candidates are a small box around the rejected point (the acquisition was highest
        there, so its best allowed neighbour is usually the next best point) and Sobol points
        over the whole space."""
        import torch

        accepted: list[np.ndarray] = []
        for point in proposal:
            others = np.concatenate([pending, np.stack(accepted)]) if accepted else pending
            avoid = self._avoid(others)
            if quasirandom.allowed(self.space, point[None, :], avoid)[0]:
                accepted.append(point)
                continue
            step_seed = seed + len(accepted) + 1
            half_width = max(LOCAL_BOX_RADII * self.options["duplicate_radius"], 1e-3)
            local = quasirandom.local_box(self.space, point, half_width, 256, step_seed, avoid)
            cands = quasirandom.candidate_set(self.space, 1024, step_seed, avoid)
            cands = np.concatenate([local, cands])
            if feasibility_model is not None:
                probable = (
                    feasibility_probability(feasibility_model, cands)
                    >= self.options["min_feasibility_probability"]
                )
                if probable.any():
                    cands = cands[probable]
            joint = others if carried is None else (
                np.concatenate([carried, np.stack(accepted)]) if accepted else carried)
            acqf.set_X_pending(_tensor(joint) if len(joint) else None)
            with torch.no_grad():
                scores = acqf(_tensor(cands).unsqueeze(1)).cpu().numpy()
            accepted.append(cands[int(np.argmax(scores))])
        return np.stack(accepted)


_NUMERICS_LOCK = threading.Lock()
_numerics_users = 0
_numerics_stack: contextlib.ExitStack | None = None


@contextlib.contextmanager
def gp_numerics():
    """Exact GP linear algebra up to MAX_CHOLESKY_SIZE points (gpytorch would switch to
    iterative approximations at 800) and no jitter / not-p.d. warnings: the settings every
    model-based ask of the BoTorch back-ends runs under.

    gpytorch's settings are process-wide, not per thread, so an ask and a background refit
    share one entry: the first thread in sets them, the last one out restores them (two plain
    nested contexts would restore them under the thread still running)."""
    global _numerics_users, _numerics_stack
    import gpytorch

    with _NUMERICS_LOCK:
        if _numerics_users == 0:
            stack = contextlib.ExitStack()
            stack.enter_context(gpytorch.settings.max_cholesky_size(MAX_CHOLESKY_SIZE))
            stack.enter_context(gpytorch.settings.fast_computations(
                covar_root_decomposition=False, log_prob=False, solves=False))
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message=".*(jitter|not p.d.|NumericalWarning).*")
            _numerics_stack = stack
        _numerics_users += 1
    try:
        yield
    finally:
        with _NUMERICS_LOCK:
            _numerics_users -= 1
            if _numerics_users == 0 and _numerics_stack is not None:
                _numerics_stack.close()
                _numerics_stack = None


def _refit_job(fit, start: dict) -> tuple[dict, float]:
    """A background refit: ``fit`` (a GP builder on fixed data) warm-started from ``start``;
    its hyper-parameters and the CPU seconds of the thread that ran it."""
    cpu = time.thread_time()
    with gp_numerics():
        model = fit(start, True)
    return hyperparameters_of(model), time.thread_time() - cpu


def _tensor(array: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(array, dtype=np.float64))


def feasibility_probability(feasibility_model, unit: np.ndarray) -> np.ndarray:
    """P(g(x) > 0) under the feasibility GP's posterior at each row of ``unit``."""
    import torch

    with torch.no_grad():
        posterior = feasibility_model.posterior(_tensor(unit))
        mean = posterior.mean.reshape(-1)
        sd = posterior.variance.clamp_min(1e-18).sqrt().reshape(-1)
        return torch.distributions.Normal(0.0, 1.0).cdf(mean / sd).cpu().numpy()


def fill_missing_variances(noise: list[float | None]) -> np.ndarray | None:
    """Per-point variances for ``train_Yvar``: a missing one takes the median of the known ones.

    One observation without a variance (a warm-start point, a design evaluated on one cube) must
    not switch known noise off for every other point; the median is the typical noise of this
    campaign's evaluations. None when no variance is known (the GP then infers one level).
    """
    known = [v for v in noise if v is not None]
    if not known:
        return None
    fill = float(np.median(known))
    return np.asarray([fill if v is None else v for v in noise], dtype=float).reshape(-1, 1)


def fit_gp(X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None, start: dict | None = None,
           optimise: bool = True):
    """A SingleTaskGP on unit-cube inputs, standardised outputs, fitted by max likelihood.

    ``start``: hyper-parameters to begin from (``bayes.surrogate.hyperparameters_of``); with
    ``optimise=False`` they are used as they are (None when they do not fit this model)."""
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize

    train_X, train_Y = _tensor(X), _tensor(Y)
    kwargs = {}
    if Yvar is not None:
        kwargs["train_Yvar"] = _tensor(np.maximum(Yvar, 1e-10))
    model = SingleTaskGP(train_X, train_Y, outcome_transform=Standardize(m=1), **kwargs)
    return _fit_from(model, start, optimise)


def _fit_from(model, start: dict | None, optimise: bool):
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    loaded = bool(start) and load_hyperparameters(model, start)
    if not optimise:
        if not loaded:
            return None
        model.eval()
        return model
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    model.eval()
    return model


def fit_feasibility_gp(X: np.ndarray, labels: np.ndarray, start: dict | None = None,
                       optimise: bool = True):
    """A GP regression on +1 (feasible) / -1 (infeasible) labels: g(x) > 0 means feasible.

    Zero prior mean and no standardisation: far from every observation P(g > 0) returns to 1/2
    ("no opinion") instead of the share of feasible designs so far, so a few infeasible designs
    do not close unexplored regions. The noise level is inferred: it smooths the step between
    the classes.
    """
    from botorch.models import SingleTaskGP
    from gpytorch.means import ZeroMean

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # labels are +/-1 by design, not "unstandardised" data
        model = SingleTaskGP(_tensor(X), _tensor(labels), outcome_transform=None,
                             mean_module=ZeroMean())
        return _fit_from(model, start, optimise)


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



