"""The carbon-binder domain as a nanoporous phase of the microstructure, end to end
(issue 15; `[cell] model_options = {cbd_volume = "nanoporous_domain"}`).

The generator places the domain's volume (0.93 g/cm^3 of carbon + binder, half of it
electrolyte-filled nanopores), the electronic solve gives it the domain's conductivity, the
ionic solve lets ions through its nanopores (Bruggeman on the nanoporosity), and the DFN gets
the electrolyte fraction pores + nanopores as its porosity with the tortuosity relative to it.
Checked against closed forms (laminates in series and in parallel), measured NMC cathode
conductivities, physical ordering (more carbon conducts better; a conducting CBD cannot make
ions' paths longer), and through the campaign's jobs. The default (solid CBD) is untouched.
"""

from __future__ import annotations

import numpy as np
import pytest

from jobs.characterise import run_characterise
from jobs.contract.spec import EvaluationSpec
from jobs.generate import generate_samples, make_volume
from jobs.simulate import simulate_design
from kernels.cell.cbd_model import NanoporousCBD
from kernels.cell.options import CellModelOptions
from kernels.metrics.volume import (
    characterise_volume,
    effective_conductivity_S_m,
    tortuosity_factor,
)
from kernels.structure import procedural
from kernels.structure.procedural import AM, CBD, PORE

DOMAIN = NanoporousCBD()
# measured NMC cathodes: 0.18 S/m (LG M50, Chen et al. 2020), 0.85 S/m (O'Regan et al. 2022),
# 68 S/m (Kokam, Ecker et al. 2015)
MEASURED_SIGMA_EFF_S_M = (0.1, 100.0)


def _domain_volume(am_wt: float, porosity: float, size: int, voxel_um: float, seed: int):
    return procedural.generate_structure(procedural.ManufacturingParams(am_wt, porosity, 0.5),
                                         size, voxel_um, seed=seed,
                                         cbd_density_g_cm3=DOMAIN.domain_density_g_cm3)


def test_laminates_give_the_series_and_parallel_closed_forms():
    d_n = DOMAIN.ionic_relative_diffusivity          # 0.5 ** 1.5
    # layers across the flux (axis 0): 8 pore, 4 CBD, 4 pore -> series (harmonic) mean
    series = np.full((16, 6, 6), PORE, dtype=np.uint8)
    series[8:12] = CBD
    eps_e = 12 / 16 + DOMAIN.nanoporosity * 4 / 16
    tau, percolating = tortuosity_factor(series, cbd_domain=DOMAIN)
    assert percolating
    assert tau == pytest.approx(eps_e * (12 / 16 + 4 / 16 / d_n), rel=1e-3)
    # solid CBD blocks the same laminate completely
    assert tortuosity_factor(series) == (float("inf"), False)
    # columns along the flux: pore, CBD and AM side by side -> parallel (arithmetic) mean
    parallel = np.full((12, 8, 8), PORE, dtype=np.uint8)
    parallel[:, :, 4:6] = CBD
    parallel[:, :, 6:] = AM
    f_pore, f_cbd = 4 / 8, 2 / 8
    eps_e = f_pore + DOMAIN.nanoporosity * f_cbd
    tau, _ = tortuosity_factor(parallel, cbd_domain=DOMAIN)
    assert tau == pytest.approx(eps_e / (f_pore + f_cbd * d_n), rel=1e-3)


def test_the_generator_places_the_domain_volume_and_keeps_the_default():
    params = procedural.ManufacturingParams(0.94, 0.30, 0.5)
    solid = procedural.generate_structure(params, 32, 1.0, seed=4)
    assert np.array_equal(solid, procedural.generate_structure(
        params, 32, 1.0, seed=4, cbd_density_g_cm3=procedural.RHO_CBD_G_CM3))
    domain = _domain_volume(0.94, 0.30, 32, 1.0, seed=4)
    target = procedural.target_phase_fractions(0.94, 0.30, DOMAIN.domain_density_g_cm3)
    assert np.mean(domain == CBD) == pytest.approx(target["cbd"], abs=1e-4)
    assert np.mean(domain == PORE) == pytest.approx(0.30, abs=1e-4)
    assert np.mean(domain == CBD) > 1.5 * np.mean(solid == CBD)
    with pytest.raises(ValueError, match="cbd_density_g_cm3"):
        procedural.target_phase_fractions(0.94, 0.30, 5.0)


@pytest.mark.parametrize(("voxel_um", "size", "wts"), [(1.0, 48, (0.90, 0.94)),
                                                       (0.5, 64, (0.90, 0.94, 0.97))])
def test_domain_conductivity_rises_with_carbon_and_meets_measured_cathodes(voxel_um, size, wts):
    # 0.90 / 0.94 / 0.96 / 0.97 wt%, eps 0.30, seed 0: 5.8 / 1.8 / 0.19 / 0.013 S/m at 1 um
    # (a 97 wt% domain, 9.5 vol%, is below the 1 um voxels' percolation threshold) and
    # 7.1 / 3.8 / 0.90 / 0.75 S/m at 0.5 um (32 um cubes); docs/cell-model.md
    sigmas = [effective_conductivity_S_m(_domain_volume(w, 0.30, size, voxel_um, seed=2))
              for w in wts]
    assert sigmas == sorted(sigmas, reverse=True)        # more carbon conducts better
    low, high = MEASURED_SIGMA_EFF_S_M
    assert all(low < s < high for s in sigmas), sigmas


@pytest.mark.parametrize(("am_wt", "porosity"), [(0.90, 0.30), (0.96, 0.30), (0.92, 0.40)])
def test_a_conducting_cbd_never_lengthens_the_ions_path(am_wt, porosity):
    volume = _domain_volume(am_wt, porosity, 48, 1.0, seed=1)
    blocking, _ = tortuosity_factor(volume)                 # relative to the resolved pores
    conducting, percolating = tortuosity_factor(volume, cbd_domain=DOMAIN)  # to pores + nanopores
    assert percolating
    assert 1.0 <= conducting <= blocking


def test_default_metrics_keep_their_keys_and_the_domain_adds_its_own():
    volume = _domain_volume(0.94, 0.35, 32, 1.0, seed=0)
    default = characterise_volume(volume, 1.0).to_dict()
    assert "electrolyte_volume_fraction" not in default and "cbd_nanoporosity" not in default
    with_domain = characterise_volume(volume, 1.0, cbd_domain=DOMAIN).to_dict()
    fractions = with_domain["volume_fraction"]
    assert with_domain["electrolyte_volume_fraction"] == pytest.approx(
        fractions["pore"] + DOMAIN.nanoporosity * fractions["cbd"])
    assert with_domain["cbd_nanoporosity"] == DOMAIN.nanoporosity
    for same in ("volume_fraction", "specific_surface_area_per_um", "effective_conductivity_S_m"):
        assert with_domain[same] == default[same]
    assert CellModelOptions().cbd_domain() is None
    assert CellModelOptions(cbd_volume="nanoporous_domain").cbd_domain() == DOMAIN


def _spec(**model_options) -> EvaluationSpec:
    return EvaluationSpec.from_dict({
        "fidelity": {"n_cubes": 1, "cube_voxels": 32, "voxel_um": 0.5, "mpi_ranks": 1},
        "generator": {"kind": "procedural", "mean_diameter_um": 4.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "cell": {"thickness_um": 70.0, "model_options": model_options},
        "seed": 3,
    })


def test_the_campaign_option_reaches_generation_characterisation_and_the_dfn(tmp_path):
    params = {"am_wt_frac": 0.94, "porosity": 0.35, "binder_adhesion": 0.5}
    summaries = {}
    for name, spec in (("solid", _spec()), ("domain", _spec(cbd_volume="nanoporous_domain"))):
        folder = tmp_path / name
        generate_samples(folder, 0, params, spec)
        summaries[name] = (run_characterise(folder, 0, spec)["mean"], spec)
    solid, domain = summaries["solid"][0], summaries["domain"][0]
    target = procedural.target_phase_fractions(0.94, 0.35, DOMAIN.domain_density_g_cm3)
    assert domain["volume_fraction"]["cbd"] == pytest.approx(target["cbd"], abs=1e-3)
    assert "electrolyte_volume_fraction" not in solid
    eps_e = domain["electrolyte_volume_fraction"]
    assert eps_e == pytest.approx(0.35 + DOMAIN.nanoporosity * target["cbd"], abs=1e-3)
    cell = simulate_design(domain, 70.0, summaries["domain"][1])
    assert cell["feasible"], cell["reason"]
    assert cell["design"]["porosity"] == pytest.approx(eps_e)
    assert simulate_design(solid, 70.0, summaries["solid"][1])["design"]["porosity"] == \
        pytest.approx(solid["volume_fraction"]["pore"])


def test_a_trained_generator_with_the_domain_option_is_refused_naming_it():
    spec = EvaluationSpec.from_dict({**_spec(cbd_volume="nanoporous_domain").to_dict(),
                                     "generator": {"kind": "default"}})
    with pytest.raises(ValueError, match="cbd_volume"):
        make_volume({"am_wt_frac": 0.94, "porosity": 0.35}, spec, 0, model=object())
