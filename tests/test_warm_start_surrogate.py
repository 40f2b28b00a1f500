"""The exported surrogate (microloop.surrogate/1): the fitted GP travels as JSON and comes back as
the same model, without refitting; its readable hyper-parameters mean what they say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hpc.campaign.config import load_campaign
from hpc.campaign.surrogate import (
    SURROGATE_SCHEMA,
    fit_surrogate,
    fit_surrogate_model,
    load_surrogate,
)
from tests.test_campaign import tiny_campaign
from tests.test_warm_start_fidelity import _multi


def _rows(config, n: int, level=None):
    """Observations of a function of am_wt_frac only (porosity does not matter)."""
    space = config.space.to_bayes_space()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        unit = rng.random(space.dim)
        params = space.from_unit(unit)
        value = 400.0 + 50.0 * np.sin(6.0 * unit[space.free_names.index("am_wt_frac")])
        row = {"params": params, "value": float(value), "noise_var": None, "feasible": True,
               "reason": ""}
        if level is not None:
            row["fidelity_level"] = level(i)
        rows.append(row)
    rows.append({**rows[0], "value": None, "feasible": False, "reason": "cannot deliver"})
    return rows


def _same_posterior(a, b, dim):
    X = torch.rand(64, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pa, pb = a.posterior(X), b.posterior(X)
        torch.testing.assert_close(pa.mean, pb.mean, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(pa.variance, pb.variance, rtol=1e-9, atol=1e-9)


def test_the_surrogate_round_trips_through_json_and_its_length_scales_mean_what_they_say(
        tmp_path):
    config = load_campaign(tiny_campaign(tmp_path / "c.toml"))
    fitted, record = fit_surrogate_model(config, _rows(config, 20))
    record = json.loads(json.dumps(record))
    assert record["schema_version"] == SURROGATE_SCHEMA and record["model"] == "SingleTaskGP"
    assert len(record["train_Y"]) == 20          # the infeasible one is not a training value
    scales = record["hyperparameters"]["lengthscale_unit_cube"]
    # the values do not depend on porosity: ARD makes its length scale far longer
    assert scales["porosity"] > 5 * scales["am_wt_frac"]
    # the model rebuilt from the JSON, with no fitting, is the fitted one
    _same_posterior(load_surrogate(record), fitted, 2)
    model = load_surrogate(record)
    X = torch.as_tensor(record["train_X_unit"], dtype=torch.float64)
    Y = torch.as_tensor(record["train_Y"], dtype=torch.float64).reshape(-1, 1)
    # and the posterior interpolates the training data (standardised noise is small)
    with torch.no_grad():
        mean = model.posterior(X).mean.reshape(-1)
    assert torch.max(torch.abs(mean - Y.reshape(-1))) < 5.0


def test_a_multi_fidelity_surrogate_keeps_its_fidelity_input(tmp_path):
    config = load_campaign(_multi(tmp_path / "mf.toml"))
    fitted, record = fit_surrogate_model(config, _rows(config, 12, level=lambda i: i % 2))
    assert record["model"] == "SingleTaskMultiFidelityGP"
    assert record["inputs"][-1] == "fidelity_s"
    assert sorted({row[-1] for row in record["train_X_unit"]}) == [0.0, 1.0]
    _same_posterior(load_surrogate(json.loads(json.dumps(record))), fitted, 3)


def test_a_bad_surrogate_is_refused_by_name(tmp_path):
    config = load_campaign(tiny_campaign(tmp_path / "c.toml"))
    record = fit_surrogate(config, _rows(config, 6))
    with pytest.raises(ValueError, match="schema_version"):
        load_surrogate({**record, "schema_version": "microloop.surrogate/9"})
    with pytest.raises(ValueError, match="model"):
        load_surrogate({**record, "model": "DeepGP"})
    with pytest.raises(ValueError, match="at least two feasible"):
        fit_surrogate(config, _rows(config, 1))
