"""Transfer that models the difference (`[warm_start] mode = "prior_mean"`, bayes/transfer.py): an
earlier campaign's surrogate is the prior mean of this campaign's GP with a learned scale and
offset. Checked on a known function (a bump of height 1 at XS): a related source helps, an
anti-related one (the cs3 10 W -> 200 W situation) helps too and is learnt with a negative scale,
an unrelated one costs little against cold; an imported surrogate moves the first model-based
proposals towards the source optimum; the campaign file chooses the mode, validated."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from bayes.optimizer import make_optimizer, optimizer_from_state
from bayes.space import Space
from hpc.campaign.config import ConfigError, load_campaign
from hpc.campaign.controller import Campaign
from hpc.campaign.journal import read_journal
from hpc.campaign.surrogate import fit_surrogate
from hpc.campaign.warm_start import campaign_context
from tests.test_campaign import tiny_campaign
from tests.test_warm_start_fidelity import _file

SPACE = Space(bounds={"x1": (0.0, 1.0), "x2": (0.0, 1.0)})
XS = np.array([0.72, 0.28])   # the target's known optimum (value 1)
FAST = {"num_restarts": 4, "raw_samples": 256}
N_EVALUATIONS = 8
SEEDS = (0, 1, 2)


def target(u: np.ndarray) -> float:
    return float(np.exp(-8.0 * np.sum((u - XS) ** 2)))


SOURCES = {
    # another scale and offset, optimum shifted by 0.05 per coordinate
    "related": lambda u: 300.0 + 50.0 * np.exp(-8.0 * np.sum((u - XS - 0.05) ** 2)),
    # the target upside down (high where the target is low)
    "anti": lambda u: 10.0 - 4.0 * np.exp(-8.0 * np.sum((u - XS) ** 2)),
    # nothing to do with the target
    "unrelated": lambda u: float(np.sin(9.0 * u[0]) * np.cos(7.0 * u[1])),
}


def _source_observations(kind: str) -> list:
    X = np.random.default_rng(5).random((15, 2))
    return [[{"x1": a, "x2": b}, float(SOURCES[kind](np.array([a, b])))] for a, b in X]


@functools.cache
def _run(arm: str, seed: int) -> tuple[float, tuple, dict]:
    """(final regret, proposals, learned prior mean) after N_EVALUATIONS of one arm."""
    if arm == "cold":
        opt = make_optimizer(SPACE, "botorch", seed=seed, n_initial=2, **FAST)
    else:
        opt = make_optimizer(SPACE, "botorch_transfer", seed=seed, n_initial=2, **FAST,
                             sources=[{"name": arm, "observations": _source_observations(arm)}])
    best, proposals = -np.inf, []
    for _ in range(N_EVALUATIONS):
        [point] = opt.ask(1)
        unit = np.array([point["x1"], point["x2"]])
        value = target(unit)
        opt.tell(point, value)
        best = max(best, value)
        proposals.append(tuple(unit))
    return 1.0 - best, tuple(proposals), getattr(opt, "last_mean", {})


def _mean_regret(arm: str) -> float:
    return float(np.mean([_run(arm, seed)[0] for seed in SEEDS]))


def test_a_related_source_helps():
    assert _mean_regret("related") < 0.5 * _mean_regret("cold")
    assert all(_run("related", s)[2]["scales"]["related"] > 0 for s in SEEDS)


def test_an_anti_related_source_helps_with_a_negative_scale():
    # what BoTorch's MultiTaskGP (positive task correlations) cannot learn
    assert _mean_regret("anti") < 0.5 * _mean_regret("cold")
    assert all(_run("anti", s)[2]["scales"]["anti"] < 0 for s in SEEDS)


def test_an_unrelated_source_costs_little_against_cold():
    # 0.05 = 5 % of the target's range, over 3 seeds of 8 evaluations
    assert _mean_regret("unrelated") <= _mean_regret("cold") + 0.05


def test_the_first_proposal_is_the_source_best_then_the_state_round_trips():
    opt = make_optimizer(SPACE, "botorch_transfer", seed=0, n_initial=2, **FAST,
                         sources=[{"name": "s", "observations": _source_observations("related")}])
    observations = _source_observations("related")
    best = max(observations, key=lambda row: row[1])[0]
    [first] = opt.ask(1)
    assert first == pytest.approx(best)
    assert opt.last_ask_method == "source_best"
    for point in [first, *opt.ask(1)]:
        opt.tell(point, target(np.array([point["x1"], point["x2"]])))
    again = optimizer_from_state(SPACE, json.loads(json.dumps(opt.state_dict())))
    assert again.backend == "botorch_transfer"
    assert again.ask(1) == opt.ask(1)   # a resumed campaign proposes what it would have


def test_bad_sources_are_refused_by_name():
    with pytest.raises(ValueError, match="exactly one of 'observations'"):
        make_optimizer(SPACE, "botorch_transfer", sources=[{"name": "x"}]).ask(1)
    with pytest.raises(ValueError, match="at least two different"):
        make_optimizer(SPACE, "botorch_transfer",
                       sources=[{"observations": [[{"x1": 0.5, "x2": 0.5}, 1.0]]}]).ask(1)
    with pytest.raises(ValueError, match="scale_prior_sd"):
        make_optimizer(SPACE, "botorch_transfer", scale_prior_sd=0.0)


# ---------------------------------------------------------------------- imported surrogate
def _design_value(params: dict, optimum: tuple[float, float]) -> float:
    """A known function of the campaign's two varied parameters (in their units)."""
    return 400.0 - 2e4 * ((params["am_wt_frac"] - optimum[0]) ** 2
                          + 0.5 * (params["porosity"] - optimum[1]) ** 2)


def _exported(tmp_path, optimum, bounds=None):
    """An observations file of a 10 W campaign with its fitted surrogate."""
    space = {"am_wt_frac": [0.86, 0.96], "porosity": [0.28, 0.42], "binder_adhesion": 0.5,
             "mass_loading_mg_cm2": 15.0, **(bounds or {})}
    config = load_campaign(tiny_campaign(tmp_path / "source.toml", space=space))
    bayes_space = config.space.to_bayes_space()
    rows = []
    for unit in np.random.default_rng(2).random((16, 2)):
        params = bayes_space.from_unit(unit)
        rows.append((params, _design_value(params, optimum), {}))
    path = _file(tmp_path / "obs.json", campaign_context(config), rows)
    data = json.loads(path.read_text())
    data["surrogate"] = fit_surrogate(config, data["observations"])
    path.write_text(json.dumps(data))
    return path


def test_an_imported_surrogate_moves_the_first_proposals_towards_the_source_optimum(tmp_path):
    optimum = (0.945, 0.30)   # the source's and the target's (a corner of the box)
    # the source on a wider box: its surrogate is evaluated through the parameter values
    path = _exported(tmp_path, optimum, {"am_wt_frac": [0.80, 0.97], "porosity": [0.25, 0.45]})
    here = load_campaign(tiny_campaign(
        tmp_path / "here.toml", objective={"power_W": 200.0},
        warm_start={"from_file": str(path), "mode": "prior_mean"}))
    warm = Campaign.create(here, tmp_path / "warm")
    warm.close()
    assert warm.optimizer.backend == "botorch_transfer"
    assert "surrogate" in warm.optimizer.options["sources"][0]
    (event,) = [e for e in read_journal(tmp_path / "warm") if e["event"] == "warm_start"]
    assert event["modelled"].startswith("source task (its surrogate") and not event[
        "skipped_reason"]
    space = here.space.to_bayes_space()
    target_optimum = space.to_unit({**space.fixed, "am_wt_frac": optimum[0],
                                    "porosity": optimum[1]})

    def distances(opt) -> list[float]:
        out = []
        for _ in range(5):
            [point] = opt.ask(1)
            opt.tell(point, _design_value(point, optimum) - 300.0)   # 200 W: another offset
            out.append(float(np.linalg.norm(space.to_unit(point) - target_optimum)))
        return out[2:]   # the model-based proposals, after the initial design of 2

    transfer = distances(make_optimizer(space, "botorch_transfer", seed=0, n_initial=2,
                                        sources=warm.optimizer.options["sources"], **FAST))
    cold = distances(make_optimizer(space, "botorch", seed=0, n_initial=2, **FAST))
    assert np.mean(transfer) < 0.5 * np.mean(cold), (transfer, cold)


def test_the_mode_is_chosen_in_the_campaign_file_and_validated(tmp_path):
    path = _exported(tmp_path, (0.9, 0.35))
    refused = Campaign.create(load_campaign(tiny_campaign(
        tmp_path / "r.toml", objective={"power_W": 200.0},
        warm_start={"from_file": str(path)})), tmp_path / "refused")
    refused.close()
    assert refused.optimizer.backend == "botorch"   # the default stays: refuse, with the reason
    (event,) = [e for e in read_journal(tmp_path / "refused") if e["event"] == "warm_start"]
    assert "power differs" in event["skipped_reason"] and not event["modelled"]
    with pytest.raises(ConfigError, match=r"warm_start\.mode"):
        load_campaign(tiny_campaign(tmp_path / "bad.toml", warm_start={"mode": "believe"}))
    with pytest.raises(ConfigError, match="needs optimizer.backend = 'botorch'"):
        load_campaign(tiny_campaign(tmp_path / "sobol.toml", optimizer={"backend": "sobol"},
                                    warm_start={"mode": "prior_mean"}))
    # the cell is never negotiable, modelled or not
    other_cell = Campaign.create(load_campaign(tiny_campaign(
        tmp_path / "c.toml", cell={"parameter_set": "Ecker2015"},
        warm_start={"from_file": str(path), "mode": "prior_mean"})), tmp_path / "cell")
    other_cell.close()
    assert other_cell.optimizer.backend == "botorch"
    (event,) = [e for e in read_journal(tmp_path / "cell") if e["event"] == "warm_start"]
    assert "the cell" in event["skipped_reason"]
