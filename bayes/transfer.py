"""Transfer that models the difference: an earlier campaign's surrogate as the prior mean of this
campaign's GP, with a learned scale and offset (back-end ``botorch_transfer``).

Why not tell a source's values as if they were this campaign's (``[warm_start] allow``): a
campaign at 10 W and one at 200 W are different functions. On cs3 the five designs both
campaigns evaluated score 555 / 600 / 488 / 652 / 586 Wh/L at 10 W and 160 / 55 / 352 / 65 /
177 at 200 W: the thick electrodes that win at 10 W lose at 200 W, a *negative* relation.
Believing the 10 W values sent a 200 W campaign to thick electrodes for ten evaluations.

Why not BoTorch's ``MultiTaskGP`` (0.18): its task kernel is a ``PositiveIndexKernel`` with a
Beta prior on the correlation, so a negatively related source can at best be ignored; and it
needs the source's raw observations, where an imported ``microloop.surrogate/1`` carries a
fitted model whose posterior should be used as it is.

The model here: this campaign's objective ``f`` is a GP whose prior mean is

    m(x) = c + sum_k a_k z_k(x),

``z_k`` the k-th source's posterior mean in its own standardised units (fixed: the source is
fitted once, or loaded from its surrogate record with no refitting), ``a_k`` and ``c`` learned
with the kernel's hyper-parameters by maximum likelihood on this campaign's observations (in
its standardised units; ``a_k`` has a Normal(0, ``scale_prior_sd``) prior). So a source that
tracks the target (any sign, any scale, any offset) gives the GP its shape where the target has
no data; an unrelated one gets ``a_k`` ≈ 0 and the GP is the cold one (a constant mean); the
residual ``f - m`` keeps its own length scales, so the target may differ from the source in
shape too. The source's posterior mean is evaluated in *its* unit cube (a different box maps
through the parameter values), at its top fidelity for a multi-fidelity surrogate.

The first proposals: with no observation of its own the campaign cannot learn ``a_k``, so its
initial design (``n_initial``, 2 by default) starts at each source's best design (the best guess
when the source is related, the most informative point about the sign of ``a_k`` when it is
not) and continues with Sobol points; after it, qLogNEI on this GP, as in ``botorch``.

Sources (option ``sources``, JSON-safe, kept in the optimiser state so a resumed campaign does
not re-read them): a list of ``{"name": str, "observations": [[point, value], ...]}`` (a GP is
fitted on them in this campaign's unit cube) or ``{"name": str, "surrogate": record}`` (a
``microloop.surrogate/1`` record, hpc/campaign/surrogate.py; docs/formats.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bayes import quasirandom
from bayes.botorch_backend import BoTorchOptimizer, _fit_from, _tensor, fit_gp
from bayes.space import Space

SURROGATE_SCHEMA = "microloop.surrogate/1"
#: model classes a surrogate record may hold
SURROGATE_MODELS = ("SingleTaskGP", "SingleTaskMultiFidelityGP")


# ---------------------------------------------------------------------- surrogate records
def build_gp(model_name: str, X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None,
             fidelity_column: int | None):
    """An unfitted BoTorch GP of a surrogate record's kind, on its training data."""
    import torch
    from botorch.models import SingleTaskGP, SingleTaskMultiFidelityGP
    from botorch.models.transforms.outcome import Standardize

    train_X = torch.as_tensor(X, dtype=torch.float64)
    train_Y = torch.as_tensor(Y, dtype=torch.float64)
    kwargs: dict[str, Any] = {"outcome_transform": Standardize(m=1)}
    if Yvar is not None:
        kwargs["train_Yvar"] = torch.as_tensor(np.maximum(Yvar, 1e-10), dtype=torch.float64)
    if model_name == "SingleTaskMultiFidelityGP":
        return SingleTaskMultiFidelityGP(train_X, train_Y, data_fidelities=[fidelity_column],
                                         **kwargs)
    return SingleTaskGP(train_X, train_Y, **kwargs)


def load_surrogate(data: Mapping[str, Any]):
    """The fitted model of a ``microloop.surrogate/1`` record, rebuilt without fitting (eval
    mode); ValueError naming the key that is wrong."""
    import torch

    if not isinstance(data, Mapping):
        raise ValueError(f"a surrogate record is a JSON object; got {type(data).__name__}")
    if data.get("schema_version") != SURROGATE_SCHEMA:
        raise ValueError(f"surrogate schema_version {data.get('schema_version')!r}; accepted: "
                         f"{SURROGATE_SCHEMA!r}")
    if data.get("model") not in SURROGATE_MODELS:
        raise ValueError(f"surrogate model {data.get('model')!r}; accepted: "
                         f"{list(SURROGATE_MODELS)}")
    X = np.asarray(data["train_X_unit"], dtype=float)
    Y = np.asarray(data["train_Y"], dtype=float).reshape(-1, 1)
    Yvar = None if data["train_Yvar"] is None else \
        np.asarray(data["train_Yvar"], dtype=float).reshape(-1, 1)
    fidelity_column = X.shape[1] - 1 if data["model"] == "SingleTaskMultiFidelityGP" else None
    model = build_gp(data["model"], X, Y, Yvar, fidelity_column)
    state = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in data["state_dict"].items()}
    model.load_state_dict(state)
    model.eval()
    return model


# ---------------------------------------------------------------------- one source
class UnitMap:
    """This campaign's unit cube -> a source's unit cube, through the parameter values (a
    source may have other bounds or log scales for the same named parameters)."""

    def __init__(self, here: Space, there: Space) -> None:
        if list(here.free_names) != list(there.free_names):
            raise ValueError(f"the source varies {list(there.free_names)}, this campaign "
                             f"varies {list(here.free_names)}")
        self.here, self.there = here, there
        self.identity = here.bounds == there.bounds and here.log_scale == there.log_scale

    def __call__(self, x):
        """Torch map of unit coordinates (..., d), differentiable (the acquisition needs it)."""
        if self.identity:
            return x
        import torch

        columns = []
        for i, name in enumerate(self.here.free_names):
            u = x[..., i]
            lo, hi = self.here.bounds[name]
            if name in self.here.log_scale:
                value_log = math.log(lo) + u * (math.log(hi) - math.log(lo))
            else:
                value = lo + u * (hi - lo)
            lo_s, hi_s = self.there.bounds[name]
            if name in self.there.log_scale:
                if name not in self.here.log_scale:
                    value_log = torch.log(torch.clamp(value, min=1e-300))
                columns.append((value_log - math.log(lo_s)) / (math.log(hi_s) - math.log(lo_s)))
            else:
                if name in self.here.log_scale:
                    value = torch.exp(value_log)
                columns.append((value - lo_s) / (hi_s - lo_s))
        return torch.stack(columns, dim=-1)

    def back(self, unit_there: np.ndarray) -> np.ndarray | None:
        """A source unit point in this cube; None when it lies outside this campaign's box."""
        point = self.there.from_unit(unit_there)
        inside = {n: point[n] for n in self.here.free_names}
        if not self.here.is_valid({**self.here.fixed, **inside}):
            return None
        return self.here.to_unit({**self.here.fixed, **inside})


class SourceTask:
    """One earlier campaign as a fixed function of this campaign's unit coordinates: its
    posterior mean in its own standardised units (mean 0, sd 1 over its training values)."""

    def __init__(self, space: Space, description: Mapping[str, Any], index: int) -> None:
        what = f"sources[{index}]"
        if not isinstance(description, Mapping):
            raise ValueError(f"{what} must be a mapping with 'observations' or 'surrogate'; "
                             f"got {description!r}")
        self.name = str(description.get("name", f"source {index}"))
        has_obs, has_model = "observations" in description, "surrogate" in description
        if has_obs == has_model:
            raise ValueError(f"{what} needs exactly one of 'observations' (a list of [point, "
                             f"value] pairs) and 'surrogate' (a {SURROGATE_SCHEMA} record); got "
                             f"keys {sorted(description)}")
        self.fidelity_column: int | None = None
        if has_model:
            try:
                self.model = load_surrogate(description["surrogate"])
                record = description["surrogate"]
                there = Space.from_dict(record["space"])
            except (KeyError, TypeError, ValueError, RuntimeError) as error:
                raise ValueError(f"{what}.surrogate does not load: {error}") from None
            self.map = UnitMap(space, there)
            if record["model"] == "SingleTaskMultiFidelityGP":
                self.fidelity_column = there.dim
            train = np.asarray(record["train_X_unit"], dtype=float)[:, :there.dim]
            values = np.asarray(record["train_Y"], dtype=float)
            mapped = [self.map.back(u) for u in train]
            best = [(v, u) for v, u in zip(values, mapped, strict=True) if u is not None]
            self.best_unit = max(best, key=lambda b: b[0])[1] if best else None
            self.n_observations = len(values)
        else:
            X, Y = self._observations(space, description["observations"], what)
            self.map = UnitMap(space, space)
            self.model = fit_gp(X, Y, None)
            self.best_unit = X[int(np.argmax(Y))]
            self.n_observations = len(Y)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @staticmethod
    def _observations(space: Space, rows: object, what: str):
        if not isinstance(rows, list | tuple):
            raise ValueError(f"{what}.observations must be a list of [point, value] pairs")
        units, values = [], []
        for i, row in enumerate(rows):
            if not isinstance(row, list | tuple) or len(row) < 2:
                raise ValueError(f"{what}.observations[{i}] must be [point, value]; got {row!r}")
            try:
                unit = space.to_unit({**space.fixed, **row[0]})
                value = float(row[1])
            except (TypeError, ValueError) as error:
                raise ValueError(f"{what}.observations[{i}]: {error}") from None
            if not math.isfinite(value):
                raise ValueError(f"{what}.observations[{i}]: value {value} is not finite")
            units.append(unit)
            values.append(value)
        if len(values) < 2 or np.ptp(values) == 0.0:
            raise ValueError(f"{what} needs at least two different feasible values to model; "
                             f"got {len(values)}")
        return np.stack(units), np.asarray(values, dtype=float).reshape(-1, 1)

    def standardised_mean(self, x):
        """z(x): the source's posterior mean, standardised by its training values. Its
        Standardize outcome transform was fitted on exactly those values, so the model's
        untransformed output *is* z: no constant of ours enters."""
        import torch

        u = self.map(x)
        if self.fidelity_column is not None:
            u = torch.cat([u, torch.ones_like(u[..., :1])], dim=-1)
        return self.model(u).mean


def source_prior_mean(sources: Sequence[SourceTask], scale_prior_sd: float):
    """The gpytorch mean ``c + sum_k a_k z_k(x)``; the sources are held outside the module's
    parameters (fixed: never trained by this campaign's likelihood)."""
    import torch
    from gpytorch.means import Mean
    from gpytorch.priors import NormalPrior

    class SourcePriorMean(Mean):
        def __init__(self) -> None:
            super().__init__()
            self.register_parameter("constant", torch.nn.Parameter(torch.zeros(1)))
            self.register_parameter("scale", torch.nn.Parameter(torch.zeros(len(sources))))
            self.register_prior("scale_prior", NormalPrior(0.0, scale_prior_sd), "scale")
            self.__dict__["sources"] = tuple(sources)   # not a sub-module: not trained

        def forward(self, x):
            z = torch.stack([s.standardised_mean(x) for s in self.sources], dim=-1)
            return self.constant + (z * self.scale).sum(-1)

    return SourcePriorMean().to(torch.float64)


# ---------------------------------------------------------------------- the back-end
class TransferOptimizer(BoTorchOptimizer):
    """``botorch`` with earlier campaigns as the prior mean of its GP (see the module doc)."""

    backend = "botorch_transfer"
    OPTIONS: ClassVar[dict[str, Any]] = {
        **BoTorchOptimizer.OPTIONS,
        "n_initial": 2,
        "sources": [],
        "scale_prior_sd": 1.0,
    }

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        raw = self.options["sources"]
        if not isinstance(raw, list | tuple):
            raise ValueError(f"option sources must be a list; got {type(raw).__name__}")
        sd = self.options["scale_prior_sd"]
        if isinstance(sd, bool) or not isinstance(sd, int | float) or not (
            math.isfinite(sd) and sd > 0
        ):
            raise ValueError(f"option scale_prior_sd must be a finite number > 0; got {sd!r}")
        self.options["scale_prior_sd"] = float(sd)
        self.options["sources"] = list(raw)
        self._tasks: list[SourceTask] | None = None   # built on first use (fitting costs)
        #: the learned (offset, scales) of the last fit, in standardised units
        self.last_mean: dict[str, Any] = {}

    @property
    def tasks(self) -> list[SourceTask]:
        if self._tasks is None:
            import torch

            with torch.random.fork_rng():   # a fit's random fallback: same seed, same sources
                torch.manual_seed(self.seed)
                self._tasks = [SourceTask(self.space, s, i)
                               for i, s in enumerate(self.options["sources"])]
        return self._tasks

    def _propose(self, n: int, pending_unit: np.ndarray) -> np.ndarray:
        if not self.options["sources"]:
            return super()._propose(n, pending_unit)
        used = len(self.priors) + self.n_observations + len(self.failures) + len(pending_unit)
        chosen: list[np.ndarray] = []
        for task in self.tasks:
            if len(chosen) >= min(n, self.options["n_initial"] - used):
                break
            if task.best_unit is None:
                continue
            taken = np.concatenate([pending_unit, np.stack(chosen)]) if chosen else pending_unit
            if quasirandom.allowed(self.space, task.best_unit[None, :], self._avoid(taken))[0]:
                chosen.append(np.asarray(task.best_unit, dtype=float))
        if len(chosen) == n:
            self.last_ask_method = "source_best"
            return np.stack(chosen)
        taken = np.concatenate([pending_unit, np.stack(chosen)]) if chosen else pending_unit
        rest = super()._propose(n - len(chosen), taken)
        if chosen:
            self.last_ask_method = "source_best+" + self.last_ask_method
            return np.concatenate([np.stack(chosen), rest])
        return rest

    def _fit_objective(self, X, Y, Yvar, start, optimise):
        """The objective GP with the sources' prior mean (the hook of BoTorchOptimizer)."""
        if not self.options["sources"]:
            return super()._fit_objective(X, Y, Yvar, start, optimise)
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize

        kwargs = {} if Yvar is None else {"train_Yvar": _tensor(np.maximum(Yvar, 1e-10))}
        model = SingleTaskGP(_tensor(X), _tensor(Y), outcome_transform=Standardize(m=1),
                             mean_module=source_prior_mean(self.tasks,
                                                           self.options["scale_prior_sd"]),
                             **kwargs)
        model = _fit_from(model, start, optimise)
        if model is not None:
            mean = model.mean_module
            self.last_mean = {"offset": float(mean.constant.detach()[0]),
                              "scales": dict(zip([t.name for t in self.tasks],
                                                 mean.scale.detach().tolist(), strict=True))}
        return model


__all__ = ["SURROGATE_MODELS", "SURROGATE_SCHEMA", "SourceTask", "TransferOptimizer",
           "build_gp", "load_surrogate", "source_prior_mean"]
