"""One set of physical ranges: what the campaign file accepts, every stage accepts.

The corner test builds a campaign at every corner of the ranges the file accepts and passes the
design through each stage's own validator (spec, simulator, trained generator, cell model)
without generating anything; where the file refuses a corner for its thickness, the cell model
must refuse it too. The thickness bound at the box's corners is checked against points inside.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc.campaign.config import PHYSICAL_RANGES, ConfigError, parse_campaign
from jobs.contract.spec import EvaluationSpec, validate_params
from kernels.cell import ranges
from kernels.cell.design import (
    RANGES,
    ElectrodeDesign,
    check_range,
    thickness_from_mass_loading_um,
    thickness_range_um,
)
from kernels.structure import procedural
from kernels.structure.procedural import ManufacturingParams, target_phase_fractions

AM, POR, ADH, LOAD = (ranges.AM_WT_FRAC, ranges.POROSITY, ranges.BINDER_ADHESION,
                      ranges.MASS_LOADING_MG_CM2)


def test_a_range_error_names_the_field_both_bounds_and_the_unit():
    with pytest.raises(ValueError) as info:
        ranges.C_RATE.check(30.0, "objective.c_rate")
    assert "objective.c_rate" in str(info.value) and "[0.01, 20.0] 1/h" in str(info.value)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="finite"):
            ranges.POROSITY.check(bad)
    with pytest.raises(ValueError, match=r"porosity must be a finite number in \[0.2, 0.55\]"):
        ranges.POROSITY.check(True)
    with pytest.raises(ValueError, match=r"an integer in \[16, 1024\] voxels"):
        ranges.CUBE_VOXELS.check(32.0)
    assert ranges.CUBE_VOXELS.check(32) == 32 and ranges.POROSITY.check(0.3) == 0.3


def test_the_stages_read_the_same_numbers():
    """No stage keeps its own copy: the simulator, the cell model and the campaign file."""
    assert procedural.AM_WT_FRAC_RANGE == AM.bounds and procedural.POROSITY_RANGE == POR.bounds
    assert procedural.MEAN_DIAMETER_UM_RANGE == ranges.MEAN_DIAMETER_UM.bounds
    assert PHYSICAL_RANGES == {n: r.bounds for n, r in ranges.DESIGN_PARAMETERS.items()}
    assert RANGES == {n: r.bounds for n, r in ranges.CELL_MODEL_RANGES.items()}


def test_every_recipe_of_the_design_space_has_fractions_the_cell_model_accepts():
    """The corners bound phi_AM (it rises with am_wt_frac and falls with porosity); the phase
    counts of a generated cube round to whole voxels, at most half a voxel off at 16^3."""
    half_voxel = 0.5 / ranges.CUBE_VOXELS.low ** 3
    for w, p in itertools.product(AM.bounds, POR.bounds):
        fractions = target_phase_fractions(w, p)
        for shift in (-half_voxel, 0.0, half_voxel):
            assert ranges.MEASURED_POROSITY.contains(fractions["pore"] + shift), (w, p)
            assert ranges.MEASURED_AM_VOLUME_FRACTION.contains(fractions["am"] + shift), (w, p)


def _campaign(w: float, p: float, loading: float | None, thickness: float | None,
              operating_point: dict, fidelity: dict, generator: dict) -> dict:
    space = {"am_wt_frac": w, "porosity": p, "binder_adhesion": list(ADH.bounds)}
    if loading is not None:
        space["mass_loading_mg_cm2"] = loading
    data = {"space": space, "objective": operating_point, "fidelity": fidelity,
            "generator": {"kind": "procedural", **generator}}
    if thickness is not None:
        data["cell"] = {"thickness_um": thickness}
    return data


OPERATING_POINTS = (
    [{"kind": "energy_density_Wh_L", "power_W": v} for v in ranges.POWER_W.bounds]
    + [{"kind": "energy_density_Wh_L", "c_rate": v} for v in ranges.C_RATE.bounds]
    + [{"kind": "capacity_mAh_g", "half_cell": True, "c_rate": v} for v in ranges.C_RATE.bounds]
)
FIDELITY_CORNERS = [{"cube_voxels": n, "voxel_um": v}
                    for n, v in itertools.product(ranges.CUBE_VOXELS.bounds, ranges.VOXEL_UM.bounds)]
GENERATOR_CORNERS = [{"mean_diameter_um": d, "diameter_spread": s}
                     for d, s in zip(ranges.MEAN_DIAMETER_UM.bounds, ranges.DIAMETER_SPREAD.bounds,
                                     strict=True)]


def test_every_corner_the_campaign_file_accepts_passes_every_stage():
    from kernels.generator.model import params_to_dict

    accepted = refused = 0
    design_corners = itertools.product(
        AM.bounds, POR.bounds,
        [(m, None) for m in (None, *LOAD.bounds)] + [(None, t) for t in ranges.THICKNESS_UM.bounds])
    for (w, p, (loading, thickness)), point, fidelity, generator in itertools.product(
            design_corners, OPERATING_POINTS, FIDELITY_CORNERS[:1] + FIDELITY_CORNERS[-1:],
            GENERATOR_CORNERS):
        data = _campaign(w, p, loading, thickness, point, fidelity, generator)
        try:
            config = parse_campaign(data)
        except ConfigError as error:
            # only the loading's thickness may refuse a corner, and the cell model agrees
            assert "space.mass_loading_mg_cm2" in str(error), (data, str(error))
            am = target_phase_fractions(w, p)["am"]
            assert not ranges.THICKNESS_UM.contains(thickness_from_mass_loading_um(loading, am))
            refused += 1
            continue
        accepted += 1
        spec = EvaluationSpec.from_dict(config.to_spec_dict())
        for b in ADH.bounds:
            params = {"am_wt_frac": w, "porosity": p, "binder_adhesion": b}
            if loading is not None:
                params["mass_loading_mg_cm2"] = loading
            assert validate_params(params, spec) == params
            ManufacturingParams(w, p, b, spec.generator.mean_diameter_um,
                                spec.generator.diameter_spread).validate()
            params_to_dict({**params, "mean_diameter_um": spec.generator.mean_diameter_um,
                            "diameter_spread": spec.generator.diameter_spread})
        fractions = target_phase_fractions(w, p)
        cathode_um = (spec.cell.thickness_um if loading is None
                      else thickness_from_mass_loading_um(loading, fractions["am"]))
        ElectrodeDesign(porosity=fractions["pore"], am_volume_fraction=fractions["am"],
                        thickness_um=cathode_um, tortuosity_factor=2.0,
                        specific_surface_area_per_um=1.0, effective_conductivity_S_m=1.0,
                        cbd_coverage=0.5)
        for name in ("power_W", "c_rate"):
            if getattr(spec.objective, name) is not None:
                check_range(name, getattr(spec.objective, name))
    assert accepted > 0 and refused > 0


@settings(max_examples=200, deadline=None)
@given(st.tuples(*(st.floats(0, 1),) * 6), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_the_corner_thickness_bounds_every_design_of_the_box(box, u, v, t):
    """L = m / (phi_AM rho_AM) inside a box lies between the values at its corners."""
    def interval(r, a, b):
        lo, hi = sorted((r.low + a * (r.high - r.low), r.low + b * (r.high - r.low)))
        return lo, hi
    am, por, load = interval(AM, *box[0:2]), interval(POR, *box[2:4]), interval(LOAD, *box[4:6])
    thinnest, thickest = thickness_range_um(am, por, load)
    w, p, m = (lo + x * (hi - lo) for (lo, hi), x in ((am, u), (por, v), (load, t)))
    inside = thickness_from_mass_loading_um(m, target_phase_fractions(w, p)["am"])
    assert thinnest * (1 - 1e-12) <= inside <= thickest * (1 + 1e-12)
