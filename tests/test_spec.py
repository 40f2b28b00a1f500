"""The evaluation spec accepts what the stages accept: its ranges are kernels.cell.ranges', its
values are not coerced, and a trial's params are refused before generation when the cell model
would refuse them (a thickness from the mass loading included)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jobs.contract.spec import EvaluationSpec, validate_params
from kernels.cell.design import ElectrodeDesign

PARAMS = {"am_wt_frac": 0.9, "porosity": 0.35, "binder_adhesion": 0.5}


@pytest.mark.parametrize(("data", "field", "accepted"), [
    ({"objective": {"power_W": None, "c_rate": 30.0}}, "objective.c_rate", "[0.01, 20.0] 1/h"),
    ({"objective": {"power_W": 0.05}}, "objective.power_W", "[0.1, 20000.0] W"),
    ({"cell": {"thickness_um": 400.0}}, "cell.thickness_um", "[20.0, 300.0] um"),
    ({"cell": {"mass_loading_mg_cm2": 60.0}}, "cell.mass_loading_mg_cm2", "[5.0, 50.0] mg/cm2"),
    ({"cell": {"ragone_powers_W": [10.0, 0.0]}}, "cell.ragone_powers_W[1]", "[0.1, 20000.0]"),
    ({"fidelity": {"cube_voxels": 8}}, "fidelity.cube_voxels", "[16, 1024] voxels"),
    ({"fidelity": {"voxel_um": 0.0}}, "fidelity.voxel_um", "[0.01, 10.0] um"),
    ({"generator": {"mean_diameter_um": 0.1}}, "generator.mean_diameter_um", "[0.5, 50.0] um"),
    ({"generator": {"diameter_spread": 2.0}}, "generator.diameter_spread", "[0.0, 1.0]"),
    ({"objective": {"min_percolating_fraction": 1.5}}, "objective.min_percolating_fraction",
     "[0.0, 1.0]"),
])
def test_out_of_range_values_are_refused_with_both_bounds(data, field, accepted):
    with pytest.raises(ValueError) as info:
        EvaluationSpec.from_dict(data)
    assert field in str(info.value) and accepted in str(info.value)


@pytest.mark.parametrize(("data", "field"), [
    ({"fidelity": {"n_cubes": True}}, "fidelity.n_cubes"),
    ({"fidelity": {"cube_voxels": 32.0}}, "fidelity.cube_voxels"),
    ({"fidelity": {"mpi_ranks": True}}, "fidelity.mpi_ranks"),
    ({"objective": {"power_W": "10"}}, "objective.power_W"),
    ({"objective": {"min_percolating_fraction": float("nan")}}, "finite"),
    ({"cell": {"thickness_um": float("inf")}}, "finite"),
    ({"cell": {"calibration": ["not", "a", "table"]}}, "cell.calibration"),
])
def test_values_of_the_wrong_type_or_not_finite_are_refused(data, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        EvaluationSpec.from_dict(data)


def test_the_spec_is_frozen_and_round_trips_with_min_percolating_fraction():
    spec = EvaluationSpec.from_dict({"objective": {"min_percolating_fraction": 0.75},
                                     "cell": {"ragone_powers_W": (5.0, 50.0)}})
    assert spec.objective.min_percolating_fraction == 0.75
    assert EvaluationSpec().objective.min_percolating_fraction == 1.0
    assert EvaluationSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.objective.c_rate = 30.0   # a spec travels to every job: it cannot drift on the way


@pytest.mark.parametrize(("key", "value"), [
    ("am_wt_frac", 0.99), ("porosity", 0.6), ("binder_adhesion", -0.1),
    ("mass_loading_mg_cm2", 60.0), ("porosity", float("nan")), ("am_wt_frac", True),
])
def test_trial_params_outside_the_design_ranges_are_refused_before_generation(key, value):
    with pytest.raises(ValueError) as info:
        validate_params({**PARAMS, key: value})
    assert f"params.{key}" in str(info.value)
    if value == value and not isinstance(value, bool):   # a number out of range: both bounds
        from kernels.cell.ranges import DESIGN_PARAMETERS

        assert DESIGN_PARAMETERS[key].interval_text() in str(info.value)


def test_a_mass_loading_that_makes_a_cathode_the_cell_model_refuses_fails_the_params():
    """50 mg/cm2 at 0.80 wt% / porosity 0.55 (phi_AM 0.271) is a 388 um cathode: the cell model
    (ElectrodeDesign) refuses that thickness, so the trial is refused before any work."""
    from kernels.cell.design import thickness_from_mass_loading_um
    from kernels.structure.procedural import target_phase_fractions

    thick = {"am_wt_frac": 0.80, "porosity": 0.55, "mass_loading_mg_cm2": 50.0}
    fractions = target_phase_fractions(0.80, 0.55)
    thickness_um = thickness_from_mass_loading_um(50.0, fractions["am"])
    with pytest.raises(ValueError, match="thickness_um"):
        ElectrodeDesign(fractions["pore"], fractions["am"], thickness_um, 2.0, 1.0, 1.0)
    with pytest.raises(ValueError) as info:
        validate_params(thick)
    assert "params.mass_loading_mg_cm2" in str(info.value) and "388" in str(info.value)
    assert "[20.0, 300.0]" in str(info.value)
    # the same loading from the spec's [cell] instead of the params
    spec = EvaluationSpec.from_dict({"cell": {"mass_loading_mg_cm2": 50.0}})
    with pytest.raises(ValueError, match="388"):
        validate_params({"am_wt_frac": 0.80, "porosity": 0.55}, spec)
    assert validate_params({**PARAMS, "mass_loading_mg_cm2": 20.0})["mass_loading_mg_cm2"] == 20.0


def _phase_change_ratio(volume: np.ndarray) -> float:
    """AM phase changes per voxel step through the thickness (axis 0) over in-plane (axis 1)."""
    am = volume == 1
    return float(np.mean(am != np.roll(am, 1, axis=0)) / np.mean(am != np.roll(am, 1, axis=1)))


def test_the_campaign_files_calendering_reaches_the_generated_cubes():
    # [generator] calendering = "rearrange" must travel campaign file -> spec -> make_volume: the
    # dense cube then has round particles (as many phase changes through the thickness as in
    # plane) where the default's flattened ones give ~1.5x more through the thickness.
    from hpc.campaign.config import parse_campaign
    from jobs.generate import make_volume

    base = {"name": "calendering", "space": {"am_wt_frac": [0.9, 0.97], "porosity": [0.2, 0.4],
                                             "mass_loading_mg_cm2": 20.0},
            "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
            "fidelity": {"n_cubes": 1, "cube_voxels": 64, "voxel_um": 0.5}}
    ratios = {}
    for calendering in ("flatten", "rearrange"):
        config = parse_campaign({**base, "generator": {"calendering": calendering}})
        spec = EvaluationSpec.from_dict(config.to_spec_dict())
        assert spec.generator.calendering == calendering
        ratios[calendering] = _phase_change_ratio(
            make_volume({"am_wt_frac": 0.95, "porosity": 0.20}, spec, seed=3))
    assert ratios["flatten"] > 1.25
    assert 0.9 < ratios["rearrange"] < 1.1


def test_the_default_structures_have_round_particles():
    # a campaign file and a spec that name no calendering model get the default, round,
    # rearranged particles: as many AM phase changes through the thickness as in plane (the
    # flattened ones of the old default give > 1.25x more through the thickness, above)
    from hpc.campaign.config import parse_campaign
    from jobs.generate import make_volume

    config = parse_campaign({"name": "default", "space": {"am_wt_frac": [0.9, 0.97],
                                                          "porosity": [0.2, 0.4],
                                                          "mass_loading_mg_cm2": 20.0},
                             "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
                             "fidelity": {"n_cubes": 1, "cube_voxels": 64, "voxel_um": 0.5}})
    assert config.generator.calendering == "rearrange"
    for spec in (EvaluationSpec.from_dict(config.to_spec_dict()),
                 EvaluationSpec.from_dict({"fidelity": {"cube_voxels": 64, "voxel_um": 0.5}})):
        ratio = _phase_change_ratio(make_volume({"am_wt_frac": 0.95, "porosity": 0.20}, spec,
                                                seed=3))
        assert 0.9 < ratio < 1.1


def test_calendering_is_refused_by_name():
    with pytest.raises(ValueError) as info:
        EvaluationSpec.from_dict({"generator": {"calendering": "squash"}})
    assert "generator.calendering" in str(info.value)
    assert "one of ['flatten', 'rearrange']" in str(info.value)


def test_the_shipped_generators_sample_the_calendering_they_learnt():
    # the default shipped model learnt the simulator's default round particles; the model of
    # the flattened particles (the shipped one until 2026-12-03) is reached by naming that
    # calendering, and gives the very cubes it gave then; a model file samples what it learnt
    import zlib

    from hpc.campaign.config import parse_campaign
    from jobs.generate import load_generator
    from kernels.generator.model import load_default_model, sample, trained_calendering

    assert trained_calendering(load_default_model()) == "rearrange"
    assert trained_calendering(load_default_model("flatten")) == "flatten"
    with pytest.raises(ValueError, match=r"generator.calendering must be one of \['flatten', "
                                         r"'rearrange'\]"):
        load_default_model("round")
    base = {"name": "trained", "space": {"am_wt_frac": [0.88, 0.92], "porosity": [0.3, 0.4],
                                         "mass_loading_mg_cm2": 20.0},
            "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0}}
    config = parse_campaign({**base, "generator": {"kind": "default"}})
    assert config.generator.calendering == "rearrange"
    assert trained_calendering(load_generator(EvaluationSpec.from_dict(config.to_spec_dict()))) \
        == "rearrange"
    flat = parse_campaign({**base, "generator": {"kind": "default", "calendering": "flatten"}})
    assert flat.generator.calendering == "flatten"
    model = load_generator(EvaluationSpec.from_dict(flat.to_spec_dict()))
    cube = sample({"am_wt_frac": 0.9, "porosity": 0.35, "binder_adhesion": 0.5}, n=1, size=32,
                  seed=0, model=model)[0]
    assert zlib.crc32(cube.tobytes()) == 940785461   # the shipped model's cube before the swap


def test_a_campaign_frozen_with_the_old_shipped_generator_resumes_on_it(tmp_path):
    # a campaign.toml of kind = "default" frozen before the calendering was recorded sampled
    # the flattened particles' model: resumed, it must sample that model again, not the new one
    from hpc.campaign.config import dump_campaign, load_frozen_campaign, parse_campaign
    from jobs.generate import load_generator
    from kernels.generator.model import trained_calendering

    config = parse_campaign({"name": "old", "space": {"am_wt_frac": [0.88, 0.92],
                                                      "porosity": [0.3, 0.4],
                                                      "mass_loading_mg_cm2": 20.0},
                             "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
                             "generator": {"kind": "default"}})
    frozen = tmp_path / "campaign.toml"
    dump_campaign(config, frozen)
    frozen.write_text(frozen.read_text().replace('calendering = "rearrange"\n', ""))
    resumed = load_frozen_campaign(frozen)
    assert resumed.generator.calendering == "flatten"
    model = load_generator(EvaluationSpec.from_dict(resumed.to_spec_dict()))
    assert trained_calendering(model) == "flatten"


def test_a_frozen_campaign_from_before_the_option_resumes_flattened(tmp_path):
    # a campaign.toml frozen before [generator] calendering existed ran the only model there
    # was, "flatten": read as a campaign folder it must stay that, not take today's default
    from hpc.campaign.config import (
        dump_campaign,
        load_campaign,
        load_frozen_campaign,
        parse_campaign,
    )

    config = parse_campaign({"name": "old", "space": {"am_wt_frac": [0.88, 0.92],
                                                      "porosity": [0.3, 0.4],
                                                      "mass_loading_mg_cm2": 20.0},
                             "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0}})
    frozen = tmp_path / "campaign.toml"
    dump_campaign(config, frozen)
    assert 'calendering = "rearrange"' in frozen.read_text()   # recorded from now on
    assert load_frozen_campaign(frozen).generator.calendering == "rearrange"
    frozen.write_text(frozen.read_text().replace('calendering = "rearrange"\n', ""))
    assert load_frozen_campaign(frozen).generator.calendering == "flatten"
    assert load_campaign(frozen).generator.calendering == "rearrange"  # a new campaign file
