"""Warm start across fidelities: a multi-fidelity campaign models earlier observations made at one
of its levels (fidelity is an input of its GP) instead of refusing or mixing them; a campaign
takes a multi-fidelity source's observations made at its own fidelity only."""

from __future__ import annotations

import json

from bayes.multi_fidelity import FIDELITY_KEY
from hpc.campaign.config import load_campaign
from hpc.campaign.controller import Campaign
from hpc.campaign.journal import read_journal
from hpc.campaign.warm_start import OBSERVATIONS_SCHEMA, campaign_context, warm_start_observations
from tests.test_campaign import tiny_campaign

LEVELS = [{"n_cubes": 1, "cube_voxels": 16}, {"n_cubes": 2, "cube_voxels": 24}]


def _multi(path, **sections):
    out = tiny_campaign(path, fidelity={"levels": LEVELS, "voxel_um": 1.0},
                        optimizer={"backend": "multi_fidelity", "n_initial": 3, "budget": 5},
                        **sections)
    out.write_text(out.read_text().replace('n_cubes = 2\ncube_voxels = 24\n', ""))
    return out


def _file(path, context, rows):
    observations = [{"trial_id": i, "params": params, "value": value, "noise_var": None,
                     "feasible": True, "reason": "", **extra}
                    for i, (params, value, extra) in enumerate(rows)]
    path.write_text(json.dumps({"schema_version": OBSERVATIONS_SCHEMA, "context": context,
                                "observations": observations}))
    return path


def _design(am):
    return {"am_wt_frac": am, "porosity": 0.35, "binder_adhesion": 0.5, "mass_loading_mg_cm2": 15.0}


def test_single_fidelity_observations_at_a_level_become_that_levels(tmp_path):
    low = load_campaign(tiny_campaign(tmp_path / "low.toml",
                                      fidelity={"n_cubes": 1, "cube_voxels": 16}))
    obs = _file(tmp_path / "low.json", campaign_context(low),
                [(_design(0.90), 410.0, {}), (_design(0.92), 420.0, {})])
    config = load_campaign(_multi(tmp_path / "mf.toml", warm_start={"from_file": [str(obs)]}))
    seen, why = warm_start_observations(obs, config, config.space.to_bayes_space())
    assert why == "" and [s.fidelity_level for s in seen] == [0, 0]
    # told to the multi-fidelity optimiser at level 0, not as top-level values
    campaign = Campaign.create(config, tmp_path / "run")
    campaign.close()
    assert campaign.optimizer.levels == [0, 0]
    state = campaign.optimizer.state_dict()
    assert [o["point"][FIDELITY_KEY] for o in state["observations"]] == [0, 0]
    # a fidelity that is none of the levels: refused with the reason
    other = load_campaign(tiny_campaign(tmp_path / "other.toml",
                                        fidelity={"n_cubes": 1, "cube_voxels": 32}))
    bad = _file(tmp_path / "other.json", campaign_context(other), [(_design(0.9), 400.0, {})])
    seen, why = warm_start_observations(bad, config, config.space.to_bayes_space())
    assert seen == [] and "fidelity levels" in why


def test_a_multi_fidelity_source_gives_a_single_fidelity_campaign_its_own_fidelity_only(tmp_path):
    source = load_campaign(_multi(tmp_path / "mf.toml"))
    obs = _file(tmp_path / "mf.json", campaign_context(source), [
        (_design(0.90), 300.0, {"fidelity_level": 0}),
        (_design(0.91), 410.0, {"fidelity_level": 1}),
        (_design(0.92), 320.0, {"fidelity_level": 0}),
    ])
    top = load_campaign(tiny_campaign(tmp_path / "top.toml"))   # 2 cubes of 24^3 = the top level
    seen, why = warm_start_observations(obs, top, top.space.to_bayes_space())
    assert why == "" and [s.value for s in seen] == [410.0]
    assert seen[0].fidelity_level is None
    elsewhere = tiny_campaign(tmp_path / "big.toml", fidelity={"cube_voxels": 32},
                              warm_start={"from_file": [str(obs)]})
    campaign = Campaign.create(load_campaign(elsewhere), tmp_path / "big")
    campaign.close()
    assert campaign.optimizer.n_observations == 0
    (event,) = [e for e in read_journal(tmp_path / "big") if e["event"] == "warm_start"]
    assert "fidelity differs" in event["skipped_reason"]


def test_observations_made_with_flattened_particles_are_refused_by_a_rearranging_campaign(
        tmp_path):
    # the calendering model changes every structure, so the values too: a campaign with the
    # default (round particles) or [generator] calendering = "rearrange" must not take
    # observations of flattened particles (the default until 2026-12-03)
    flat = load_campaign(tiny_campaign(tmp_path / "flat.toml",
                                       generator={"calendering": "flatten"}))
    obs = _file(tmp_path / "flat.json", campaign_context(flat), [(_design(0.9), 400.0, {})])
    for name, generator in (("default", {}), ("round", {"calendering": "rearrange"})):
        rearranged = load_campaign(tiny_campaign(tmp_path / f"{name}.toml", generator=generator))
        seen, why = warm_start_observations(obs, rearranged, rearranged.space.to_bayes_space())
        assert seen == [] and "calendering" in why
    seen, why = warm_start_observations(obs, flat, flat.space.to_bayes_space())
    assert why == "" and len(seen) == 1
