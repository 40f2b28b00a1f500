"""The four metrics and the solve() entry, against truths nobody here chose.

Straight channels (tau = 1), slabs in series and in parallel (harmonic and arithmetic means),
volumes that do not percolate, voxelised spheres (4 pi r^2) and an independent scipy sparse
direct solve of the same discrete equations on small random volumes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from kernels.metrics.solvers import TransportSolution, available_backends, solve, spanning_cluster
from kernels.metrics.volume import (
    DEFAULT_CONDUCTIVITY_AM_S_M,
    DEFAULT_CONDUCTIVITY_CBD_S_M,
    VolumeMetrics,
    characterise_volume,
    effective_conductivity_S_m,
    specific_surface_areas,
    tortuosity_factor,
    validate_labels,
    volume_fractions,
)
from kernels.structure.procedural import AM, CBD, PORE, ManufacturingParams, generate_structure

TIGHT = 1e-4  # TauFactor tolerance for comparisons with exact answers


def direct_relative_conductance(conductivity: np.ndarray) -> float:
    """sigma_eff / max(c) along axis 0 by a sparse LU solve, written from the problem statement.

    Unknowns at voxel centres; links: harmonic mean between face neighbours, 2 c to the electrode
    faces (potential 0 before layer 0, 1 after the last layer); no flux through the sides.
    """
    c = np.asarray(conductivity, dtype=float)
    on = c > 0
    index = -np.ones(c.shape, dtype=np.int64)
    index[on] = np.arange(on.sum())
    n = int(on.sum())
    rows, cols, vals = [], [], []
    diagonal = np.zeros(n)
    rhs = np.zeros(n)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        c_lo, c_hi = c[tuple(lo)], c[tuple(hi)]
        both = (c_lo > 0) & (c_hi > 0)
        g = 2 * c_lo[both] * c_hi[both] / (c_lo[both] + c_hi[both])
        i, j = index[tuple(lo)][both], index[tuple(hi)][both]
        rows += [i, j]
        cols += [j, i]
        vals += [-g, -g]
        np.add.at(diagonal, i, g)
        np.add.at(diagonal, j, g)
    first, last = on[0], on[-1]
    g_in = 2 * c[0][first]
    g_out = 2 * c[-1][last]
    np.add.at(diagonal, index[0][first], g_in)
    np.add.at(diagonal, index[-1][last], g_out)
    np.add.at(rhs, index[-1][last], g_out * 1.0)
    diag_index = np.arange(n)
    matrix = sp.csc_matrix(
        (np.concatenate([*vals, diagonal]), (np.concatenate([*rows, diag_index]),
                                             np.concatenate([*cols, diag_index]))),
        shape=(n, n),
    )
    potential = spla.spsolve(matrix, rhs)
    current = float(np.sum(g_in * potential[index[0][first]]))
    return current * c.shape[0] / (c.shape[1] * c.shape[2]) / float(c.max())


def voxel_sphere(radius: float, shape: tuple[int, int, int], centre=None) -> np.ndarray:
    centre = centre if centre is not None else [(n - 1) / 2 + 0.23 for n in shape]
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


# --- solve(): the discrete problem ------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_taufactor_matches_an_independent_sparse_direct_solve(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (20, 18, 16)
    pore = (rng.random(shape) < 0.6).astype(np.float32)
    labels = rng.choice(3, size=shape, p=[0.3, 0.55, 0.15])
    electronic = np.choose(labels, [0.0, 0.18, 10.0]).astype(np.float32)
    for field in (pore, electronic):
        reduced = np.where(spanning_cluster(field > 0), field, 0)
        exact = direct_relative_conductance(reduced)
        result = solve(field, axis=0, rel_tol=TIGHT)
        assert result.converged and result.percolating
        assert result.relative_conductance == pytest.approx(exact, rel=1e-3)


@pytest.mark.parametrize("backend", ["taufactor", "native"])
def test_every_backend_solves_the_same_discrete_problem(backend: str) -> None:
    """The solve() contract: any registered back-end returns sigma_eff / max(c) of this problem."""
    rng = np.random.default_rng(11)
    labels = rng.choice(3, size=(18, 16, 20), p=[0.3, 0.55, 0.15])
    field = np.choose(labels, [0.0, 0.18, 10.0]).astype(np.float32)
    exact = direct_relative_conductance(np.where(spanning_cluster(field > 0), field, 0))
    result = solve(field, axis=0, backend=backend, rel_tol=TIGHT)
    assert result.converged and result.percolating
    assert result.relative_conductance == pytest.approx(exact, rel=1e-3)


def test_other_axes_solve_the_transposed_problem() -> None:
    rng = np.random.default_rng(5)
    field = np.choose(rng.choice(3, size=(14, 16, 18), p=[0.25, 0.6, 0.15]),
                      [0.0, 1.0, 4.0]).astype(np.float32)
    for axis in (1, 2):
        moved = np.moveaxis(field, axis, 0)
        exact = direct_relative_conductance(np.where(spanning_cluster(moved > 0), moved, 0))
        assert solve(field, axis=axis, rel_tol=TIGHT).relative_conductance == pytest.approx(
            exact, rel=1e-3
        )


def test_uniform_field_conducts_exactly_one() -> None:
    assert solve(np.full((12, 10, 8), 3.0, np.float32)).relative_conductance == pytest.approx(
        1.0, rel=1e-4
    )


def test_unknown_backend_lists_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="taufactor") as error:
        solve(np.ones((4, 4, 4), np.float32), backend="magic")
    assert "native" in str(error.value) and "magic" in str(error.value)
    assert {"taufactor", "native"} <= set(available_backends())


def test_non_percolating_field_returns_at_once_without_solving() -> None:
    field = np.ones((16, 16, 16), np.float32)
    field[8] = 0.0  # an insulating layer across the flux
    result = solve(field, axis=0)
    assert isinstance(result, TransportSolution)
    assert result.relative_conductance == 0.0 and not result.percolating
    assert result.iterations == 0 and result.converged
    assert solve(field, axis=1).percolating  # the same layer does not block the other axes


# --- tortuosity factor ------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_straight_pore_channels_have_tortuosity_one(axis: int) -> None:
    volume = np.full((24, 24, 24), AM, np.uint8)
    channels = np.zeros((24, 24), bool)
    channels[2:6, 3:9] = True
    channels[14:20, 12:15] = True
    channels[9, 20] = True  # a single-voxel channel
    slab = np.moveaxis(volume, axis, 0)
    slab[:, channels] = PORE
    tau, percolating = tortuosity_factor(volume, axis=axis, rel_tol=TIGHT)
    assert percolating
    assert tau == pytest.approx(1.0, rel=1e-3)


def test_isolated_pores_count_in_porosity_but_carry_no_flux() -> None:
    volume = np.full((24, 24, 24), AM, np.uint8)
    volume[:, 4:8, 4:8] = PORE  # 16 channels' worth of through-pore
    volume[5:9, 14:18, 14:18] = PORE  # an isolated cavity
    tau, percolating = tortuosity_factor(volume, axis=0, rel_tol=TIGHT)
    channel_fraction = 16 * 24 / volume.size
    porosity = float(np.mean(volume == PORE))
    assert percolating
    assert tau == pytest.approx(porosity / channel_fraction, rel=1e-3)  # > 1 by the cavity


def test_blocked_pores_give_infinite_tortuosity_and_not_percolating() -> None:
    volume = np.zeros((24, 24, 24), np.uint8)
    volume[12] = AM  # a dense layer across the thickness
    tau, percolating = tortuosity_factor(volume, axis=0)
    assert tau == math.inf and not percolating
    metrics = characterise_volume(volume, voxel_um=0.5, axis=0)
    assert metrics.percolating is False
    assert metrics.to_dict()["tortuosity_factor"] is None
    # The blocking layer itself is solid but does not span the thickness: no electronic path.
    assert metrics.effective_conductivity_S_m == 0.0
    assert metrics.solid_percolating is False
    assert metrics.to_dict()["solid_percolating"] is False


def test_percolation_is_reported_per_phase() -> None:
    """Pores through, solid cut by a pore layer: percolating True, solid_percolating False."""
    volume = np.full((24, 24, 24), AM, np.uint8)
    volume[:, 3:7, 3:7] = PORE  # a straight pore channel along axis 0
    volume[12] = PORE  # a pore layer across the flux cuts every solid path
    metrics = characterise_volume(volume, voxel_um=1.0, axis=0)
    assert metrics.percolating and not metrics.solid_percolating
    assert metrics.effective_conductivity_S_m == 0.0
    assert metrics.to_dict()["solid_percolating"] is False
    # Along axis 1 the layer is parallel to the flux: both phases conduct through the box.
    across = characterise_volume(volume, voxel_um=1.0, axis=1)
    assert across.percolating and across.solid_percolating
    assert across.effective_conductivity_S_m > 0.0


# --- effective electronic conductivity --------------------------------------------------------


def test_slabs_in_series_give_the_harmonic_mean() -> None:
    sigma_am, sigma_cbd = 0.5, 20.0
    thickness = [3, 5, 2, 6, 4]  # alternating AM / CBD layers normal to axis 0
    layers = np.concatenate([np.full(t, AM if k % 2 == 0 else CBD) for k, t in
                             enumerate(thickness)]).astype(np.uint8)
    volume = np.broadcast_to(layers[:, None, None], (layers.size, 12, 10)).copy()
    n_am = sum(t for k, t in enumerate(thickness) if k % 2 == 0)
    n_cbd = layers.size - n_am
    exact = layers.size / (n_am / sigma_am + n_cbd / sigma_cbd)
    sigma = effective_conductivity_S_m(volume, axis=0, conductivity_am_S_m=sigma_am,
                                       conductivity_cbd_S_m=sigma_cbd, rel_tol=TIGHT)
    assert sigma == pytest.approx(exact, rel=1e-3)


def test_slabs_in_parallel_give_the_arithmetic_mean() -> None:
    sigma_am, sigma_cbd = 0.5, 20.0
    volume = np.full((20, 16, 16), AM, np.uint8)
    volume[:, :, 11:] = CBD  # 5 of 16 columns of CBD, along the flux
    exact = (11 * sigma_am + 5 * sigma_cbd) / 16
    sigma = effective_conductivity_S_m(volume, axis=0, conductivity_am_S_m=sigma_am,
                                       conductivity_cbd_S_m=sigma_cbd, rel_tol=TIGHT)
    assert sigma == pytest.approx(exact, rel=1e-3)
    # Across the slabs (axis 2) they are in series.
    across = effective_conductivity_S_m(volume, axis=2, conductivity_am_S_m=sigma_am,
                                        conductivity_cbd_S_m=sigma_cbd, rel_tol=TIGHT)
    assert across == pytest.approx(16 / (11 / sigma_am + 5 / sigma_cbd), rel=1e-3)


def test_pores_cut_the_solid_path() -> None:
    volume = np.full((16, 16, 16), AM, np.uint8)
    volume[:, :8] = PORE  # half the cross-section is pore: half the conductance
    sigma = effective_conductivity_S_m(volume, conductivity_am_S_m=2.0, rel_tol=TIGHT)
    assert sigma == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="conductivity_cbd_S_m"):
        effective_conductivity_S_m(volume, conductivity_cbd_S_m=0.0)


# --- surface areas ----------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [3.5, 5.5, 9.0, 14.0, 27.0])
def test_sphere_area_within_five_percent(radius: float) -> None:
    n = int(2 * radius + 10)
    volume = np.where(voxel_sphere(radius, (n, n, n)), AM, PORE).astype(np.uint8)
    voxel_um = 0.4
    ssa, coverage = specific_surface_areas(volume, voxel_um)
    exact = 4 * math.pi * (radius * voxel_um) ** 2 / (volume.size * voxel_um**3)
    assert ssa["am_pore"] == pytest.approx(exact, rel=0.05)
    assert ssa["am_cbd"] == 0.0 and coverage == 0.0
    # Plain face counting, for the record, is far off (the reason for the smoothed surface).
    faces = sum(np.sum(np.diff(volume == AM, axis=a) != 0) for a in range(3))
    assert faces / (4 * math.pi * radius**2) > 1.3


def test_sphere_in_cbd_is_fully_covered_and_half_covered_sphere_half() -> None:
    n, radius = 32, 10.0
    sphere = voxel_sphere(radius, (n, n, n))
    covered = np.where(sphere, AM, CBD).astype(np.uint8)
    ssa, coverage = specific_surface_areas(covered, 1.0)
    assert coverage == pytest.approx(1.0)
    assert ssa["am_cbd"] == pytest.approx(4 * math.pi * radius**2 / n**3, rel=0.05)
    half = np.where(sphere, AM, PORE).astype(np.uint8)
    half[: n // 2][~sphere[: n // 2]] = CBD  # CBD in the upper half-space
    _, coverage = specific_surface_areas(half, 1.0)
    assert coverage == pytest.approx(0.5, abs=0.05)


def test_many_spheres_specific_area_scales_with_voxel_size() -> None:
    rng = np.random.default_rng(3)
    volume = np.zeros((48, 48, 48), np.uint8)
    radius = 5.0
    centres = [(12, 12, 12), (12, 34, 30), (34, 14, 33), (35, 35, 13)]
    for c in centres:
        volume[voxel_sphere(radius, volume.shape, centre=np.array(c) + rng.random(3))] = AM
    exact_voxels = len(centres) * 4 * math.pi * radius**2 / volume.size
    for voxel_um in (0.25, 1.0):
        ssa, _ = specific_surface_areas(volume, voxel_um)
        assert ssa["am_pore"] == pytest.approx(exact_voxels / voxel_um, rel=0.05)


# --- the whole characterisation ---------------------------------------------------------------


def test_characterise_generated_electrode() -> None:
    params = ManufacturingParams(am_wt_frac=0.9, porosity=0.35, binder_adhesion=1.0)
    volume = generate_structure(params, 48, voxel_um=0.5, seed=3)
    metrics = characterise_volume(volume, voxel_um=0.5, axis=0)
    assert isinstance(metrics, VolumeMetrics)
    assert metrics.volume_fraction == pytest.approx(volume_fractions(volume))
    assert sum(metrics.volume_fraction.values()) == pytest.approx(1.0)
    assert metrics.percolating and 1.0 < metrics.tortuosity_factor < 20.0
    assert 0.0 < metrics.cbd_coverage < 1.0
    # Solid conducts better than AM alone (CBD helps) but worse than bulk CBD.
    assert DEFAULT_CONDUCTIVITY_AM_S_M * 0.1 < metrics.effective_conductivity_S_m
    assert metrics.effective_conductivity_S_m < DEFAULT_CONDUCTIVITY_CBD_S_M
    payload = json.loads(json.dumps(metrics.to_dict()))
    assert set(payload) == {"volume_fraction", "specific_surface_area_per_um", "cbd_coverage",
                            "tortuosity_factor", "effective_conductivity_S_m", "percolating",
                            "solid_percolating", "am_particle_radius_um"}
    assert payload["percolating"] is True and payload["solid_percolating"] is True
    # the procedural particles are 8 um across by default: a 3V/S radius of a few um
    assert 2.0 < payload["am_particle_radius_um"] < 5.5
    assert set(payload["volume_fraction"]) == {"pore", "am", "cbd"}
    assert set(payload["specific_surface_area_per_um"]) == {"am_pore", "am_cbd"}


def test_calendered_electrode_is_more_tortuous_through_the_thickness() -> None:
    params = ManufacturingParams(am_wt_frac=0.95, porosity=0.25, binder_adhesion=0.5)
    volume = generate_structure(params, 48, voxel_um=0.5, seed=8)
    through, _ = tortuosity_factor(volume, axis=0)
    in_plane, _ = tortuosity_factor(volume, axis=1)
    assert through > in_plane


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        (np.zeros((8, 8), np.uint8), "3D"),
        (np.zeros((4, 4, 4, 4), np.uint8), "3D"),
        (np.zeros((1, 8, 8), np.uint8), "at least 2 voxels"),
        (np.zeros((8, 8, 8), np.float32), "dtype"),
        (np.zeros((8, 8, 8), bool), "dtype"),
        (np.full((8, 8, 8), 3, np.uint8), r"found \[3\]"),
        ([[[0]]], "numpy array"),
    ],
)
def test_bad_volumes_get_clear_errors(volume, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_labels(volume)


def test_bad_voxel_size_and_axis_are_rejected() -> None:
    volume = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="voxel_um"):
        characterise_volume(volume, voxel_um=-1.0)
    with pytest.raises(ValueError, match="axis"):
        characterise_volume(volume, voxel_um=1.0, axis=3)
