"""Transport and rate capability against numbers nobody here chose (issue 15).

- Pore tortuosity (kernels.metrics.volume.tortuosity_factor) of a random dispersion of
  non-overlapping insulating spheres against Maxwell's closed form D_eff / D = 2 eps / (3 - eps),
  i.e. tau = (3 - eps) / 2, exact to first order in the solid fraction; the same expression is
  the Hashin-Shtrikman upper bound on D_eff of any isotropic two-phase structure, so every
  isotropic volume must give tau >= (3 - eps) / 2.
- The carbon-binder domain's share of the pore tortuosity of procedural NMC cathodes against the
  published factor 1.35-1.81 between the tortuosity with the CBD and that of the active-material
  skeleton alone (calendered electrodes, Usseglio-Viretta et al., J. Electrochem. Soc. 165, A3403,
  2018, abstract).
- Rate capability of the design -> inputs -> DFN path against a measured cell: the Ecker et al.
  (2015) Kokam 7.5 A h cell at 1C and 5C (tests/data/ecker2015, digitised curves), and the
  Chen2020 (LG M50) cell against its own measured discharges at C/10, C/2, 1C and 1.5C (Chen et
  al. 2020's validation records, Zenodo 4032561; tests/data/chen2020_lgm50).
- Rate capability of a high-loading NMC811 half cell: the water-processed NMC811 electrodes of
  Batteries 2024, 10(3), 100 (AIT Austrian Institute of Technology; DOI 10.3390/batteries10030100,
  abstract: areal capacity >= 4 mAh/cm^2, 3 wt% binder, 150 mAh/g at 1C), the one NMC811 half-cell
  rate number with its electrode's loading that could be traced here (docs/cell-model.md).
- Absolute pore tortuosity of procedural cathodes against measured NMC electrodes: the NMC811
  cathodes of Shojaei et al. (J. Mater. Chem. A, 2025, DOI 10.1039/D5TA05257B, abstract: X-ray
  CT, porosities 0.46-0.85, tortuosity factors 1.24-2.74) at the band's porosity 0.46, and the
  Kokam cathode of Ecker et al. 2015 (tau = eps / B = 1.94 at porosity 0.296 with its
  permeability factor B = 0.1526, PyBaMM's Ecker2015 Bruggeman exponent 1.544), the latter in
  the continuum: at the paper profile's 1 um voxels the default (round) particles sit on the edge
  of its tolerance (1.95-2.0x), the old flattened ones were beyond it (2.4-2.7x).
- What decides that comparison: the voxel staircase, removed by the named option
  kernels.metrics.resolution.extrapolated_tortuosity_factor (checked against Maxwell's closed
  form and for first-order convergence on a dense cathode), and the calendering anisotropy
  (through-plane more tortuous than in-plane, as measured for compressed electrodes by
  Forouzan et al., J. Electrochem. Soc. 164, A3117, 2017, abstract).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from kernels.metrics.volume import tortuosity_factor
from kernels.structure import procedural

if TYPE_CHECKING:
    from kernels.cell.model import CellModelOptions, ElectrodeDesign

DATA = Path(__file__).parent / "data" / "ecker2015"
# Usseglio-Viretta et al. 2018: tortuosity with the CBD / tortuosity of the AM skeleton only,
# for calendered electrodes
PUBLISHED_CBD_TAU_FACTOR = (1.35, 1.81)
# Shojaei et al. 2025 (abstract): NMC811 cathodes by X-ray CT, porosity 0.46-0.85
SHOJAEI_NMC811_TAU = (1.24, 2.74)
SHOJAEI_NMC811_MIN_POROSITY = 0.46
# Ecker et al. 2015, Kokam cathode: porosity 0.296 and permeability factor B = eps / tau = 0.1526,
# the number PyBaMM's first Ecker2015 parameter file solved its Bruggeman exponent 1.544 from
# ("Solve for permeability factor B=0.1526=eps^b", PyBaMM commit fcd29e1, issue #729). B is an
# effective (flux-based) transport ratio, the quantity this project's diffusion solve returns as
# D_eff / D; how Ecker et al. measured it is not traced (docs/cell-model.md).
ECKER_KOKAM_POROSITY = 0.296
ECKER_KOKAM_PERMEABILITY_FACTOR = 0.1526
ECKER_KOKAM_TAU = ECKER_KOKAM_POROSITY / ECKER_KOKAM_PERMEABILITY_FACTOR
# Pietsch et al., Sustainable Energy Fuels 2018, DOI 10.1039/C7SE00498B, abstract: the binarisation of a
# tomogram alone moves the tortuosity of low-porosity electrodes by more than a factor of two
TOMOGRAPHY_TAU_FACTOR = 2.0
# Batteries 2024, 10(3), 100 (DOI 10.3390/batteries10030100), abstract: water-based NMC811 electrodes,
# areal capacity >= 4 mAh/cm^2, 3 wt% binder; the best with bare Al foil (CMC:PAA:SBR) gives
# 150 mAh/g at 1C; the abstract states water-based high-loading NMC electrodes typically perform
# worse than NMP-based ones.
AIT2024_NMC811_1C_MAH_G = 150.0
AIT2024_AREAL_CAPACITY_MAH_CM2 = 4.0
# NMC811 half cells at C/10 (tests/test_cell_physics.py, docs/cell-model.md)
NMC811_C10_BAND_MAH_G = (185.0, 215.0)


def sphere_dispersion(size: int, radius_voxels: float, solid_fraction: float,
                      seed: int) -> np.ndarray:
    """Periodic box (1 = sphere, 0 = pore) of non-overlapping spheres placed by random
    sequential addition: a statistically isotropic random dispersion."""
    rng = np.random.default_rng(seed)
    n_spheres = round(solid_fraction * size**3 / (4.0 / 3.0 * math.pi * radius_voxels**3))
    centres = np.empty((0, 3))
    while len(centres) < n_spheres:
        candidate = rng.random(3) * size
        delta = centres - candidate
        delta -= size * np.round(delta / size)
        if not (np.einsum("ij,ij->i", delta, delta) < (2.0 * radius_voxels) ** 2).any():
            centres = np.vstack([centres, candidate])
    volume = np.zeros((size,) * 3, dtype=np.uint8)
    reach = np.arange(-math.ceil(radius_voxels) - 1, math.ceil(radius_voxels) + 2)
    for centre in centres:
        base = np.floor(centre).astype(int)
        index = np.ix_(*[np.mod(base[a] + reach, size) for a in range(3)])
        d2 = [((base[a] + reach + 0.5) - centre[a]) ** 2 for a in range(3)]
        inside = d2[0][:, None, None] + d2[1][None, :, None] + d2[2][None, None, :]
        block = volume[index]
        block[inside <= radius_voxels**2] = 1
        volume[index] = block
    return volume


def _excess_over_maxwell(volume: np.ndarray) -> float:
    """(tau - 1) / (tau_Maxwell - 1), averaged over the three axes."""
    eps = float((volume == 0).mean())
    taus = [tortuosity_factor(volume, axis=axis)[0] for axis in range(3)]
    return float(np.mean(taus) - 1.0) / ((3.0 - eps) / 2.0 - 1.0)


@pytest.mark.slow
def test_dilute_sphere_dispersion_converges_to_maxwell():
    # At 10 % spheres the discrete solve overshoots Maxwell's tau - 1 by a staircase term that
    # falls as 1 / (radius in voxels): measured 1.59 / 1.42 / 1.33 / 1.24 at r = 4 / 6 / 8 / 12
    # voxels. Extrapolated to r -> inf it must recover Maxwell (the exact random-sphere value at
    # 10 % lies ~4 % above Maxwell's tau - 1: second order in the solid fraction).
    coarse = _excess_over_maxwell(sphere_dispersion(96, 6.0, 0.10, seed=1))
    fine = _excess_over_maxwell(sphere_dispersion(128, 12.0, 0.10, seed=1))
    assert 1.0 < fine < coarse
    extrapolated = 2.0 * fine - coarse          # E(r) = E_inf + c / r at r = 6 and 12
    assert extrapolated == pytest.approx(1.0, abs=0.12)


@pytest.mark.parametrize("solid_fraction", [0.05, 0.20, 0.35])
def test_isotropic_dispersions_respect_the_hashin_shtrikman_bound(solid_fraction):
    volume = sphere_dispersion(64, 4.0, solid_fraction, seed=2)
    eps = float((volume == 0).mean())
    for axis in range(3):
        tau, percolating = tortuosity_factor(volume, axis=axis)
        assert percolating
        assert tau >= (3.0 - eps) / 2.0


def test_uncalendered_procedural_cathode_respects_the_hashin_shtrikman_bound():
    # porosity 0.55 is the uncalendered coating (no compression): statistically isotropic
    params = procedural.ManufacturingParams(0.90, 0.55, 0.5)
    volume = procedural.generate_structure(params, 48, 1.0, seed=0)
    eps = float((volume == procedural.PORE).mean())
    for axis in range(3):
        assert tortuosity_factor(volume, axis=axis)[0] >= (3.0 - eps) / 2.0


@pytest.mark.parametrize("porosity", [0.35, 0.40])
def test_cbd_raises_the_pore_tortuosity_by_the_published_factor(porosity):
    # 90 wt% NMC (the usual 90/5/5 laboratory recipe), calendered; three 64 um cubes at 1 um.
    # Measured (geometric mean of three cubes, round particles): 1.59 at eps 0.35 and 1.48 at
    # 0.40; 0.5 um voxels give 1.63 / 1.50 (flattened particles: 1.64 / 1.64, 1.74 / 1.49). At
    # eps 0.30 the simulator's CBD chokes the pores harder (1.87-1.92; flattened 2.1-2.5): not
    # claimed.
    ratios = []
    for seed in (0, 1, 2):
        volume = procedural.generate_structure(
            procedural.ManufacturingParams(0.90, porosity, 0.5), 64, 1.0, seed=seed)
        with_cbd = tortuosity_factor(volume)[0]
        skeleton = np.where(volume == procedural.CBD, procedural.PORE, volume).astype(np.uint8)
        ratios.append(with_cbd / tortuosity_factor(skeleton)[0])
    low, high = PUBLISHED_CBD_TAU_FACTOR
    assert low <= math.exp(np.mean(np.log(ratios))) <= high


def _axis_taus(am_wt_frac: float, porosity: float, seeds=(0, 1, 2),
               calendering: str = "flatten") -> list[float]:
    """Geometric means over 64 um cubes at 1 um of the pore tortuosity along axes 0, 1, 2
    (axis 0 is the calendering direction)."""
    logs = np.zeros(3)
    for seed in seeds:
        volume = procedural.generate_structure(
            procedural.ManufacturingParams(am_wt_frac, porosity, 0.5), 64, 1.0, seed=seed,
            calendering=calendering)
        logs += [math.log(tortuosity_factor(volume, axis=axis)[0]) for axis in range(3)]
    return [math.exp(v / len(seeds)) for v in logs]


def test_calendering_makes_the_through_plane_direction_the_most_tortuous():
    # Calendered to porosity 0.30 (thickness factor 0.75) the generator's particles are oblate
    # along axis 0: the through-plane tau must exceed both in-plane values, as measured for
    # compressed electrodes (Forouzan et al. 2017). Measured (three 64^3 cubes at 1 um, 96 wt%):
    # 4.71 through-plane against 3.35 / 3.39 in-plane. The uncalendered coating (porosity 0.55,
    # no compression) must show no such preference. This anisotropy is one of the measured
    # causes of the Kokam gap (docs/cell-model.md).
    # Forouzan et al., J. Electrochem. Soc. 164, A3117 (2017), abstract: in compressed composite
    # electrodes the tortuosity orthogonal to the compression (in-plane) is lower than the one
    # parallel to it (through-plane, the direction the DFN's ions travel).
    through, in_y, in_z = _axis_taus(0.96, 0.30)
    assert through > 1.2 * max(in_y, in_z)
    through, in_y, in_z = _axis_taus(0.96, 0.55)
    assert through / math.sqrt(in_y * in_z) == pytest.approx(1.0, abs=0.12)


def test_calendering_by_rearrangement_leaves_the_pore_space_isotropic():
    # Hard NMC secondary particles are not flattened by the calender, they rearrange (or crack):
    # with calendering="rearrange" the same electrode (porosity 0.30, 96 wt%) has round
    # particles, so no direction is preferred and the through-plane tau falls below the
    # flattened one. Measured (three 64^3 cubes at 1 um): 3.89 through-plane against 3.94 / 3.81
    # in-plane (flatten: 4.71 against 3.35 / 3.39).
    through, in_y, in_z = _axis_taus(0.96, 0.30, calendering="rearrange")
    assert through / math.sqrt(in_y * in_z) == pytest.approx(1.0, abs=0.08)
    flat_through, _, _ = _axis_taus(0.96, 0.30)
    assert through < flat_through / 1.1


def _procedural_taus(am_wt_frac: float, porosity: float) -> tuple[float, float]:
    """Geometric means over three 64 um cubes at 1 um (the paper profile's voxel) of the pore
    tortuosity with the solid CBD (the default) and of the AM skeleton alone (the CBD counted as
    pore, as a tomogram without CBD contrast sees it)."""
    full, skeleton = [], []
    for seed in (0, 1, 2):
        volume = procedural.generate_structure(
            procedural.ManufacturingParams(am_wt_frac, porosity, 0.5), 64, 1.0, seed=seed)
        full.append(tortuosity_factor(volume)[0])
        bare = np.where(volume == procedural.CBD, procedural.PORE, volume).astype(np.uint8)
        skeleton.append(tortuosity_factor(bare)[0])
    return math.exp(np.mean(np.log(full))), math.exp(np.mean(np.log(skeleton)))


@pytest.mark.slow
@pytest.mark.parametrize("am_wt_frac", [0.90, 0.96])
def test_tortuosity_inside_the_measured_nmc811_band(am_wt_frac):
    # Shojaei et al. 2025 measured NMC811 cathodes by X-ray CT at porosities 0.46-0.85 and found
    # tau 1.24-2.74. At the band's lowest porosity a procedural cathode, with its CBD or without
    # (whether the CT resolved the CBD is not in the abstract), must lie inside the band. Measured
    # (three 64^3 cubes at 1 um, round particles): 90 wt% 2.14 with CBD / 1.58 skeleton; 96 wt%
    # 2.11 / 1.80 (flattened particles: 2.28 / 1.65 and 2.27 / 1.92; at 0.5 um voxels 2.12 / 1.52
    # and 2.09 / 1.70). The band itself is the tolerance: the binarisation of
    # one tomogram alone moves tau by up to 2x (Pietsch et al. 2018), so no claim narrower than
    # "inside the measured range" is supported by one abstract.
    full, skeleton = _procedural_taus(am_wt_frac, SHOJAEI_NMC811_MIN_POROSITY)
    low, high = SHOJAEI_NMC811_TAU
    assert low <= skeleton <= full <= high


def _recipe_at(am_wt_frac: float, porosity: float, adhesion: float, seed: int,
               side_um: float = 64.0):
    """A procedural cathode as a function of the voxel size: the same particles (um) in the
    same box at any voxel, as extrapolated_tortuosity_factor needs."""
    params = procedural.ManufacturingParams(am_wt_frac, porosity, adhesion)
    return lambda voxel_um: procedural.generate_structure(
        params, round(side_um / voxel_um), voxel_um, seed=seed)


def test_extrapolated_tortuosity_recovers_maxwell_for_dilute_spheres():
    # The option removes the voxel staircase: 10 % insulating spheres of radius 4, 8 and 12
    # voxels (the same dispersion in a 48, 96 and 144 voxel box) over-count Maxwell's tau - 1 by
    # ~60 / 33 / 24 %; 3 tau(h/3) - 2 tau(h/2) must land on Maxwell's closed form (exact to first
    # order in the solid fraction; the exact random-sphere value is ~4 % above it at 10 %).
    # Tight solves: the three values differ by ~1e-2 and the first-order check needs their
    # differences.
    from kernels.metrics.resolution import extrapolated_tortuosity_factor

    def dispersion_at(voxel: float) -> np.ndarray:
        return sphere_dispersion(round(48 / voxel), 4.0 / voxel, 0.10, seed=1)

    eps = float((dispersion_at(1.0) == 0).mean())
    maxwell = (3.0 - eps) / 2.0 - 1.0
    results = [extrapolated_tortuosity_factor(dispersion_at, 1.0, axis=axis, rel_tol=1e-5)
               for axis in range(3)]
    assert all(r.percolating for r in results)
    coarse = float(np.mean([r.tortuosity_coarse - 1.0 for r in results]))
    extrapolated = float(np.mean([r.tortuosity_factor - 1.0 for r in results]))
    assert coarse / maxwell > 1.3
    assert extrapolated / maxwell == pytest.approx(1.0, abs=0.12)


def test_extrapolated_tortuosity_refuses_voxels_outside_the_first_order_range():
    from kernels.metrics.resolution import (
        ResolutionNotAsymptotic,
        extrapolated_tortuosity_factor,
    )

    # finer voxels that render a MORE tortuous structure
    def rising(voxel: float) -> np.ndarray:
        size = round(32 / voxel)
        if voxel == 1.0:
            return np.zeros((size,) * 3, dtype=np.uint8)              # open box, tau = 1
        return sphere_dispersion(size, 4.0 / voxel, 0.2, seed=3)
    with pytest.raises(ResolutionNotAsymptotic, match="too coarse"):
        extrapolated_tortuosity_factor(rising, 1.0)
    # a dense cube (48 um, porosity 0.25, CBD films) whose throats open between 1 and 0.5 um:
    # tau 8.12 / 5.15 / 4.46 at 1 / 0.5 / 0.33 um, difference ratio 4.3 instead of 3 (the
    # 1 -> 0.5 um pair alone would extrapolate to 2.19, the 0.5 -> 0.33 um pair to 3.07)
    dense = _recipe_at(0.97, 0.25, 1.0, seed=2, side_um=48.0)
    with pytest.raises(ResolutionNotAsymptotic, match="difference ratio"):
        extrapolated_tortuosity_factor(dense, 1.0)
    # a volume_at that does not keep the physical box
    with pytest.raises(ValueError, match="times the voxels"):
        extrapolated_tortuosity_factor(lambda voxel: np.zeros((16,) * 3, np.uint8), 1.0)
    # an open box is rendered exactly at any voxel: tau 1 is its continuum value
    exact = extrapolated_tortuosity_factor(
        lambda voxel: np.zeros((round(16 / voxel),) * 3, np.uint8), 1.0)
    assert exact.tortuosity_factor == pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("am_wt_frac", [0.90, 0.96])
def test_tortuosity_at_the_kokam_cathodes_porosity(am_wt_frac):
    # Ecker et al. 2015: tau = 0.296 / 0.1526 = 1.94 (PyBaMM's Ecker2015 Bruggeman exponent).
    # Tolerance: the factor of two by which the binarisation of one tomogram moves tau at low
    # porosity (Pietsch et al. 2018). Compared in the continuum: at ε 0.30 (64 um cubes, seeds
    # 0-2, the default round particles, solid CBD) tau falls from 3.89 / 3.78 (96 / 90 wt%, 1 um)
    # to 3.35 / 3.38 (0.5 um) and 3.16 / 3.25 (0.33 um), first order in the voxel size
    # (difference ratio ~3), so the option accepts the three and gives 2.80 / 2.99: inside
    # 1.94 x 2 = 3.88, and still > 1.3x the Kokam's (the CBD in the necks; docs/cell-model.md).
    # With the flattened particles of the old default the continuum was 3.31 / 3.94 (90 wt%
    # outside), and at 1 um 4.71 / 5.25: then the gap was beyond the tomography factor.
    from kernels.metrics.resolution import extrapolated_tortuosity_factor

    results = [extrapolated_tortuosity_factor(_recipe_at(am_wt_frac, 0.30, 0.5, seed), 1.0)
               for seed in (0, 1, 2)]
    assert all(r.percolating for r in results)
    tau0 = math.exp(np.mean([math.log(r.tortuosity_factor) for r in results]))
    tau1 = math.exp(np.mean([math.log(r.tortuosity_coarse) for r in results]))
    assert tau0 < 0.8 * tau1   # the 1 um voxels' staircase is a real part of the 1 um value
    assert ECKER_KOKAM_TAU / TOMOGRAPHY_TAU_FACTOR <= tau0 <= (
        ECKER_KOKAM_TAU * TOMOGRAPHY_TAU_FACTOR)
    assert tau0 > 1.3 * ECKER_KOKAM_TAU   # the voxels are not the whole excess over 1.94


def test_the_kokam_exponent_is_the_sources_permeability_factor():
    """The Kokam tau of the tortuosity test (eps / B with the source's B) and the one the rate test
    takes from the installed PyBaMM (eps^(1 - b)) must be the same number: a PyBaMM release that
    changes the exponent away from B = 0.1526 would make the two tests compare different cells."""
    import pybamm

    values = pybamm.ParameterValues("Ecker2015")
    eps = values["Positive electrode porosity"]
    b = values["Positive electrode Bruggeman coefficient (electrolyte)"]
    assert eps == pytest.approx(ECKER_KOKAM_POROSITY, abs=1e-9)
    assert eps ** b == pytest.approx(ECKER_KOKAM_PERMEABILITY_FACTOR, rel=1e-3)
    assert eps ** (1.0 - b) == pytest.approx(ECKER_KOKAM_TAU, rel=1e-3)


@pytest.mark.slow
def test_rate_capability_of_the_measured_kokam_cell():
    """The Ecker 2015 Kokam cathode as an ElectrodeDesign (its porosity, AM fraction, thickness,
    tortuosity 1.94 from its Bruggeman exponent, particle radius, conductivity), its own anode,
    its own c_max, discharged at the measured cell's 1C and 5C current densities: the capacity
    per electrode area must match the measured 7.75 / 7.37 A h of the 48-layer cell within 3 %,
    and the 5C / 1C retention within 3 points."""
    import pybamm

    from kernels.cell.model import (
        CellModel,
        CellModelOptions,
        Packaging4680,
        published_cathode_design,
    )

    values = pybamm.ParameterValues("Ecker2015")
    design = published_cathode_design("Ecker2015")
    model = CellModel("Ecker2015", packaging=Packaging4680(np_ratio=None),
                      options=CellModelOptions(capacity_basis="parameter_set"))
    layer_area_m2 = values["Electrode height [m]"] * values["Electrode width [m]"]
    layers = 7.5 / values["Nominal cell capacity [A.h]"]          # 48 layers of 0.156 A h
    measured_Ah_m2 = {c: pd.read_csv(DATA / f"ecker2015_kokam_{c}C.csv")
                      ["discharged_capacity_Ah"].iloc[-1] / layers / layer_area_m2 for c in (1, 5)}
    roll_area_m2 = model.jelly_roll(design).electrode_area_m2
    # the model's C-rate is of its own nominal capacity: scale it to the measured 1C current
    one_c = (values["Nominal cell capacity [A.h]"] / layer_area_m2
             / (model.nominal_capacity_Ah(design) / roll_area_m2))
    model_Ah_m2 = {}
    for c in (1, 5):
        result = model.discharge_c_rate(design, c * one_c)
        assert result.feasible, result.reason
        model_Ah_m2[c] = result.capacity_Ah / roll_area_m2
    for c in (1, 5):
        assert model_Ah_m2[c] == pytest.approx(measured_Ah_m2[c], rel=0.03)
    retention = model_Ah_m2[5] / model_Ah_m2[1]
    assert retention == pytest.approx(measured_Ah_m2[5] / measured_Ah_m2[1], abs=0.03)


@pytest.mark.slow
def test_high_loading_nmc811_half_cell_at_1c():
    """A procedural 95 wt% NMC811 cathode (3 wt% binder as the source, 2 wt% carbon assumed;
    porosity 0.35 assumed: the abstract gives none) characterised by the project's metrics,
    mapped by design_from_metrics at the source's 4 mAh/cm^2, discharged in the default half cell.
    C/10 must lie in NMC811's measured band; 1C must not fall below the water-processed
    measurement (an NMC electrode without aqueous-processing damage cannot do worse by the
    abstract's own account), and stays within 1.3x of it: the documented gap (the model gives
    1.19-1.29x over porosity 0.30-0.40 and radius 3-5 um; docs/cell-model.md). A steeper
    rate fade (larger particles, the legacy radius rule on a covered volume) fails the first."""
    from kernels.cell.model import (
        design_from_metrics,
        get_cell_model,
        thickness_from_mass_loading_um,
    )
    from kernels.metrics.volume import characterise_volume

    volume = procedural.generate_structure(procedural.ManufacturingParams(0.95, 0.35, 0.5),
                                           64, 1.0, seed=0)
    metrics = characterise_volume(volume, 1.0).to_dict()
    half = get_cell_model("Chen2020", half_cell=True)
    phi = metrics["volume_fraction"]["am"]
    # the loading whose C/10 capacity is the source's 4 mAh/cm^2 (mAh/g barely moves with L)
    c10_probe = half.discharge_c_rate(design_from_metrics(metrics, 80.0), 0.1).capacity_mAh_g
    loading_mg_cm2 = AIT2024_AREAL_CAPACITY_MAH_CM2 / c10_probe * 1e3
    design = design_from_metrics(metrics, thickness_from_mass_loading_um(loading_mg_cm2, phi))
    capacity = {c: half.discharge_c_rate(design, c) for c in (0.1, 1.0)}
    assert all(r.feasible for r in capacity.values()), [r.reason for r in capacity.values()]
    c10, c1 = capacity[0.1].capacity_mAh_g, capacity[1.0].capacity_mAh_g
    low, high = NMC811_C10_BAND_MAH_G
    assert low < c10 < high
    assert AIT2024_NMC811_1C_MAH_G <= c1 < c10
    assert c1 / AIT2024_NMC811_1C_MAH_G <= 1.3


LGM50_DATA = Path(__file__).parent / "data" / "chen2020_lgm50"
# The documented gaps at the LG M50's measured rates (docs/cell-model.md); the test turns red if
# either widens. 1.5C / C/10 retention against the measured 0.985: 0.955 with the parameter set's
# c_max (3.1 points under: an isothermal DFN whose transport has no temperature dependence,
# against cells ending 24-27 K above the chamber), 0.82 with c_max from the AM density (the
# cathode's whole window from its charged state is less than the cells deliver at C/10).
LGM50_OWN_BASIS_RETENTION_GAP = 0.04
LGM50_DEFAULT_BASIS_MIN_RETENTION = 0.80


def _lgm50_model_capacities(options: CellModelOptions, design: ElectrodeDesign,
                            current_density_A_m2: dict[float, float]
                            ) -> tuple[dict[float, float], float]:
    """Capacity (A h per m^2) of the Chen2020 cell at each measured current (A) of the M50,
    given as its current density (A/m^2), and the cathode's capacity from its charged state."""
    from kernels.cell.model import CellModel, Packaging4680

    model = CellModel("Chen2020", packaging=Packaging4680(np_ratio=None), options=options)
    roll_area_m2 = model.jelly_roll(design).electrode_area_m2
    q_nominal_Ah_m2 = model.nominal_capacity_Ah_m2(design)
    capacities = {}
    for current_A, density in current_density_A_m2.items():
        result = model.discharge_c_rate(design, density / q_nominal_Ah_m2)
        assert result.feasible, result.reason
        capacities[current_A] = result.capacity_Ah / roll_area_m2
    return capacities, model.cathode_capacity_Ah_m2(design)


def test_rate_capability_of_the_measured_lg_m50():
    """The Chen2020 cathode as an ElectrodeDesign with its own anode, through design -> inputs ->
    DFN at the current densities of the measured LG M50 discharges at C/10, C/2, 1C and 1.5C
    (Chen et al. 2020's validation records, two cells; tests/data/chen2020_lgm50).

    With the parameter set's own c_max every capacity must lie within 3 % of the measurement;
    the 1.5C / C/10 retention (0.955 against 0.985) misses 3 points by 0.1 and is guarded as
    the documented gap. With the default c_max from the AM density the C/10 capacity lies within
    3 % too, but the cathode can take back only 4.93 A h on the M50's area from its charged
    state, less than the 5.00 A h both cells deliver at C/10, so it is driven to its end and the
    capacity falls with rate (retention 0.82): the measured mismatch, guarded so it cannot
    widen. Tolerance: not the measurement's (the two cells agree within 0.2 %, their retentions
    within 0.1 point) but the model's: isothermal at 25 °C against cells 1-2 K above a 26.8 °C
    chamber at C/10 and 24-27 K above it at the end of 1.5C; 3 % as the C/20 and Kokam tests.
    """
    import pybamm

    from kernels.cell.model import CellModelOptions, published_cathode_design

    values = pybamm.ParameterValues("Chen2020")
    design = published_cathode_design("Chen2020")
    m50_area_m2 = values["Electrode height [m]"] * values["Electrode width [m]"]
    records = pd.read_csv(LGM50_DATA / "lgm50_rate_discharges.csv")
    # the cells agree within 0.2 %: their mean per current is the measurement
    measured_Ah_m2 = (records.groupby("current_A")["capacity_Ah"].mean() / m50_area_m2).to_dict()
    assert sorted(measured_Ah_m2) == [0.5, 2.5, 5.0, 7.5]
    density = {current_A: current_A / m50_area_m2 for current_A in measured_Ah_m2}
    low, high = min(measured_Ah_m2), max(measured_Ah_m2)
    measured_retention = measured_Ah_m2[high] / measured_Ah_m2[low]

    own, _ = _lgm50_model_capacities(CellModelOptions(capacity_basis="parameter_set"), design,
                                     density)
    for current_A, capacity in own.items():
        assert capacity == pytest.approx(measured_Ah_m2[current_A], rel=0.03), current_A
    assert (measured_retention - LGM50_OWN_BASIS_RETENTION_GAP <= own[high] / own[low]
            <= measured_retention + 0.03)

    default, cathode_Ah_m2 = _lgm50_model_capacities(CellModelOptions(), design, density)
    assert default[low] == pytest.approx(measured_Ah_m2[low], rel=0.03)
    assert cathode_Ah_m2 < measured_Ah_m2[low]      # why the default basis fades
    assert all(default[c] <= measured_Ah_m2[c] * 1.03 for c in default)
    assert (LGM50_DEFAULT_BASIS_MIN_RETENTION <= default[high] / default[low]
            <= measured_retention + 0.03)
