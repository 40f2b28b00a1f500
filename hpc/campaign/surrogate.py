"""The fitted surrogate of a campaign as plain JSON: its GP's hyper-parameters and training data.

Why: an observations file (warm_start.py) lets another site refit a GP; the surrogate lets it use
(or inspect) the *same* model without refitting, and without voxels or generator weights. The
record holds the training inputs in the unit cube of the campaign's free parameters (with the
space, so they map back to units), the outcomes and noise variances, and BoTorch's own
``state_dict`` of the fitted model (raw parameters, transforms included), plus the readable
hyper-parameters (a length scale per named parameter, output scale, noise). ``load_surrogate``
(bayes/transfer.py) rebuilds the model from it with no fitting; its posterior equals the exported
one, and `[warm_start] mode = "prior_mean"` uses that posterior as a source task.
Format ``microloop.surrogate/1`` (docs/formats.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bayes.transfer import SURROGATE_MODELS as MODELS  # noqa: F401 (the format's names)
from bayes.transfer import SURROGATE_SCHEMA, load_surrogate  # noqa: F401
from bayes.transfer import build_gp as _build


def _training(config: Any, observations: list[Mapping[str, Any]]):
    """Unit-cube inputs (+ fidelity coordinate for a multi-fidelity campaign), values and
    variances of the feasible observations, as the campaign's back-end models them."""
    from bayes.multi_fidelity import fidelity_coordinates

    space = config.space.to_bayes_space()
    rows = [o for o in observations if o["feasible"] and space.is_valid(o["params"])]
    if len(rows) < 2:
        raise ValueError(f"a surrogate needs at least two feasible observations; got {len(rows)}")
    X = np.stack([space.to_unit(o["params"]) for o in rows])
    levels = config.fidelity.levels
    if levels:
        s = fidelity_coordinates(config.fidelity.level_costs)
        X = np.column_stack([X, [s[int(o["fidelity_level"])] for o in rows]])
    Y = np.asarray([float(o["value"]) for o in rows]).reshape(-1, 1)
    noise = [o["noise_var"] for o in rows]
    Yvar = None if any(v is None for v in noise) else np.asarray(noise, float).reshape(-1, 1)
    return space, X, Y, Yvar


def fit_surrogate(config: Any, observations: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Fit the campaign's GP (max likelihood) on its observations and describe it as JSON."""
    return fit_surrogate_model(config, observations)[1]


def fit_surrogate_model(config: Any, observations: list[Mapping[str, Any]]) -> tuple[Any, dict]:
    """The fitted GP and its JSON description."""
    import warnings

    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    space, X, Y, Yvar = _training(config, observations)
    name = "SingleTaskMultiFidelityGP" if config.fidelity.levels else "SingleTaskGP"
    fidelity_column = space.dim if config.fidelity.levels else None
    model = _build(name, X, Y, Yvar, fidelity_column)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return model, describe(model, name, space, X, Y, Yvar, fidelity_column)


def describe(model, name: str, space: Any, X, Y, Yvar, fidelity_column: int | None) -> dict:
    state = {k: v.detach().cpu().tolist() for k, v in model.state_dict().items()}
    readable: dict[str, Any] = {}
    covar = model.covar_module
    base = getattr(covar, "base_kernel", None)
    lengthscale = getattr(base if base is not None else covar, "lengthscale", None)
    if lengthscale is not None and name == "SingleTaskGP":
        values = lengthscale.detach().reshape(-1).tolist()
        readable["lengthscale_unit_cube"] = dict(zip(space.free_names, values, strict=True))
    if base is not None and hasattr(covar, "outputscale"):
        readable["outputscale"] = float(covar.outputscale.detach().reshape(-1)[0])
    noise = getattr(model.likelihood, "noise", None)
    if noise is not None and Yvar is None:
        readable["noise_standardised"] = float(noise.detach().reshape(-1)[0])
    return {
        "schema_version": SURROGATE_SCHEMA,
        "model": name,
        "space": space.to_dict(),
        "inputs": [*space.free_names, *(["fidelity_s"] if fidelity_column is not None else [])],
        "train_X_unit": X.tolist(),
        "train_Y": Y.reshape(-1).tolist(),
        "train_Yvar": None if Yvar is None else Yvar.reshape(-1).tolist(),
        "hyperparameters": readable,
        "state_dict": state,
    }
