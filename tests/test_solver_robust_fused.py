"""The robust preconditioner's cluster corrections on the clusters' boundary faces
(``native.SPARSE_ISLANDS``) compute what the dense stencil passes compute.

Both corrections of the cluster coarse space need ``A Z c`` or ``Zᵀ A z``; the sparse form reads
them from a list of the faces leaving the clusters and their electrode links, built once per
solve. A face left out, a link forgotten or a cluster mislabelled shows up here against the
dense stencil (``native._apply``), against the dense preconditioner, as a preconditioner that
is no longer symmetric positive definite, or as a solve away from a sparse LU solve.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from kernels.metrics.solvers import native, solve, spanning_cluster
from kernels.structure.procedural import ManufacturingParams, generate_structure
from tests.test_solver_contrast import assert_preconditioner_spd, direct_sigma_eff
from tests.test_solver_fused import _field, small_electrode

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                reason="numba is not installed")


@pytest.fixture(scope="module")
def electrode() -> np.ndarray:
    return small_electrode()

# loop default 1e-2/116.55 S/m (1.2e4), 1e3, 1e6
CONTRASTS = [(0.01, 116.55), (0.1, 100.0), (0.001, 1000.0)]


@pytest.fixture(autouse=True)
def _fused_on_small_grids(monkeypatch):
    """The fused kernels (and so the sparse corrections) run from FUSED_MIN_CELLS up."""
    monkeypatch.setattr(native, "FUSED_MIN_CELLS", 0)


def _robust_levels(field: np.ndarray) -> tuple[list[native._Level], torch.Tensor]:
    """The robust method's float64 hierarchy (masked) of ``field``, as ``native._run`` builds it."""
    sigma = torch.from_numpy(np.where(spanning_cluster(field > 0), field, 0) / field.max())
    sigma = sigma.to(torch.float64)
    fine, _ = native._fine_level(sigma)
    levels = native._hierarchy_from(fine)
    for level in levels:
        level.active_mask = native._coupled(level).to(torch.float64)
    return levels, sigma


def _islands(monkeypatch, levels, sigma, sparse: bool) -> native._Islands:
    monkeypatch.setattr(native, "SPARSE_ISLANDS", sparse)
    islands = native._islands(levels, sigma)
    assert islands is not None and (islands.boundary is not None) == sparse
    return islands


@pytest.mark.parametrize("floating", [False, True])
@pytest.mark.parametrize("am, cbd", CONTRASTS)
def test_boundary_faces_give_the_dense_cluster_operator(monkeypatch, electrode, am, cbd,
                                                        floating):
    """A Z c from the face list equals the dense stencil applied to Z c; Zᵀ A z summed over
    the faces equals the cluster sums of the dense A z; Zᵀ A Z equals the dense form's. With
    every cluster (FLOATING_ISLANDS_ONLY False) the electrode links are listed; with only
    the floating ones there are none to list."""
    monkeypatch.setattr(native, "FLOATING_ISLANDS_ONLY", floating)
    levels, sigma = _robust_levels(_field(electrode, am, cbd))
    fine = levels[0]
    dense = _islands(monkeypatch, levels, sigma, False)
    sparse = _islands(monkeypatch, levels, sigma, True)
    assert torch.equal(dense.cells, sparse.cells) and torch.equal(dense.labels, sparse.labels)
    faces = sparse.boundary
    k = sparse.inverse_diag.numel()
    assert k > 3 and faces.g.size > 0
    assert (faces.other < 0).any() != floating  # electrode links: only of touching clusters
    # the same sums in another order: at contrast 1e6 the clusters' diagonals lose ~1e-11 of
    # their value to rounding (measured on the default round-particle electrode: 3.9e-11)
    np.testing.assert_allclose(faces.diag[1:], 1.0 / dense.inverse_diag.numpy()[1:], rtol=1e-9)

    rng = np.random.default_rng(3)
    coef = rng.standard_normal(k)
    coef[0] = 0.0
    zc = torch.zeros(fine.shape, dtype=torch.float64)
    zc.view(-1)[sparse.cells] = torch.from_numpy(coef)[sparse.labels]
    expected = native._apply(fine, zc, torch.empty_like(zc)).view(-1).numpy()
    from_faces = np.zeros(zc.numel())
    values = faces.g * coef[faces.label]
    np.add.at(from_faces, faces.cell, values)
    inner = faces.other >= 0
    np.add.at(from_faces, faces.other[inner], -values[inner])
    # the dense form cancels the faces inside a cluster (up to ~2 of conductance per cell):
    # its rounding is relative to those, not to the weak links that leave a floating cluster
    scale = max(np.abs(expected).max(), 1e-4 * np.abs(coef).max() * float(fine.diag.max()))
    np.testing.assert_allclose(from_faces, expected, rtol=0, atol=1e-12 * scale)
    assert set(np.flatnonzero(np.abs(expected) > 1e-9 * scale)) <= set(faces.touched)

    z = torch.from_numpy(rng.standard_normal(fine.shape))
    az = native._apply(fine, z, torch.empty_like(z)).view(-1).numpy()
    cluster_sums = np.bincount(sparse.labels.numpy(), weights=az[sparse.cells.numpy()],
                               minlength=k)
    zf = z.view(-1).numpy()
    outside = np.where(inner, zf[np.maximum(faces.other, 0)], 0.0)
    face_sums = np.bincount(faces.label, weights=faces.g * (zf[faces.cell] - outside),
                            minlength=k)
    np.testing.assert_allclose(face_sums, cluster_sums, rtol=0,
                               atol=1e-10 * np.abs(az).max())


@pytest.mark.parametrize("am, cbd", CONTRASTS)
@pytest.mark.parametrize("cycle_dtype", [torch.float64, torch.float32])
def test_sparse_preconditioner_equals_the_dense_one(monkeypatch, electrode, am, cbd,
                                                    cycle_dtype):
    """out = B res with the face-list corrections and with the dense stencil passes: the same
    linear map, equal to rounding (float64 cycle ~1e-13; a float32 cycle rounds its
    right-hand side, computed in a different order, to float32 ~1e-7)."""
    levels, sigma = _robust_levels(_field(electrode, am, cbd))
    cycle_levels = levels
    if cycle_dtype != torch.float64:
        cycle_levels = [native._cast_level(level, cycle_dtype) for level in levels]
    res = torch.from_numpy(np.random.default_rng(5).random(levels[0].shape))
    outs = []
    for sparse in (False, True):
        islands = _islands(monkeypatch, levels, sigma, sparse)
        out = torch.full_like(res, np.nan)
        native._precondition(levels[:1], cycle_levels, res, out, native.ROBUST, islands)
        outs.append(out)
    dense, sparse_out = outs
    assert torch.isfinite(sparse_out).all()
    tol = 1e-9 if cycle_dtype == torch.float64 else 1e-5   # rounding: 9.4e-11 measured at 1e6
    assert float((sparse_out - dense).abs().max()) <= tol * float(dense.abs().max())


@pytest.mark.parametrize("floating, offset", [(False, 0), (True, 6)])
def test_sparse_preconditioner_is_symmetric_positive_definite(monkeypatch, electrode, floating,
                                                              offset):
    """As tests/test_solver_contrast.py's dense check: B assembled column by column on a 12³
    crop at 1e6 (float64 cycle), symmetric, eigenvalues against A in (0, 2]; with every
    cluster (their electrode links too) and with only the floating ones (the crop at 6, 6, 6
    holds two)."""
    monkeypatch.setattr(native, "FLOATING_ISLANDS_ONLY", floating)
    crop = slice(offset, offset + 12)
    field = _field(electrode[crop, crop, crop], 0.001, 1000.0)
    levels, sigma = _robust_levels(field)
    islands = _islands(monkeypatch, levels, sigma, True)
    method = dataclasses.replace(native.ROBUST, cycle_dtype=None)
    fine = levels[0]
    cells = torch.from_numpy(np.flatnonzero(fine.active_mask.view(-1).numpy()))
    assert_preconditioner_spd(levels, cells, method, islands)


@pytest.mark.parametrize("am, cbd", CONTRASTS)
def test_sparse_islands_solve_matches_a_direct_solve(monkeypatch, electrode, am, cbd):
    """Converged, within rel_tol of sparse LU, and within rounding of the dense path."""
    field = _field(electrode, am, cbd)
    exact = direct_sigma_eff(field) / field.max()
    results = {}
    for sparse in (False, True):
        monkeypatch.setattr(native, "SPARSE_ISLANDS", sparse)
        results[sparse] = solve(field, rel_tol=1e-3)
    new, old = results[True], results[False]
    assert new.converged and new.method == f"native {native.ROBUST.name}"
    assert new.relative_conductance == pytest.approx(exact, rel=1e-3)
    assert abs(new.iterations - old.iterations) <= 1
    if new.iterations == old.iterations:
        assert new.relative_conductance == pytest.approx(old.relative_conductance, rel=1e-6)


def test_sparse_islands_where_the_cbd_percolates(monkeypatch):
    """A CBD network carrying the current (0.90 wt%, 32³ at 1 µm) at contrast 1e6."""
    labels = generate_structure(ManufacturingParams(0.90, 0.30, 0.5), 32, 1.0, seed=1)
    field = _field(labels, 0.001, 1000.0)
    monkeypatch.setattr(native, "SPARSE_ISLANDS", True)
    result = solve(field, rel_tol=1e-3)
    assert result.converged and "float64" in result.method
    assert result.relative_conductance * field.max() == pytest.approx(direct_sigma_eff(field),
                                                                      rel=1e-3)


@pytest.mark.parametrize("am, cbd", CONTRASTS)
def test_fused_cg_steps_match_the_torch_ones(monkeypatch, electrode, am, cbd):
    """Flexible CG's dots and updates in numba passes (FUSED_CG, no stored old residual):
    the same iterations as the torch operations, the value equal to rounding, within rel_tol
    of sparse LU."""
    field = _field(electrode, am, cbd)
    results = {}
    for fused in (False, True):
        monkeypatch.setattr(native, "FUSED_CG", fused)
        results[fused] = solve(field, rel_tol=1e-3)
    new, old = results[True], results[False]
    assert new.converged and new.iterations == old.iterations
    assert new.relative_conductance == pytest.approx(old.relative_conductance, rel=1e-8)
    assert new.residual == pytest.approx(old.residual, rel=1e-6)
    assert new.relative_conductance == pytest.approx(direct_sigma_eff(field) / field.max(),
                                                     rel=1e-3)


@pytest.mark.parametrize("am, cbd", CONTRASTS)
def test_the_cluster_space_holds_only_the_floating_clusters(monkeypatch, electrode, am, cbd):
    """The coarse space keeps exactly the clusters that touch neither electrode layer (their
    cells in the same order as with every cluster); the solve with it stays within rel_tol of
    sparse LU in as many iterations (± 1) as with every cluster."""
    field = _field(electrode, am, cbd)
    levels, sigma = _robust_levels(field)
    fine = levels[0]
    monkeypatch.setattr(native, "FLOATING_ISLANDS_ONLY", False)
    every = _islands(monkeypatch, levels, sigma, True)
    monkeypatch.setattr(native, "FLOATING_ISLANDS_ONLY", True)
    floating = _islands(monkeypatch, levels, sigma, True)
    cells, labels = every.cells.numpy(), every.labels.numpy()
    layer = cells // (fine.shape[1] * fine.shape[2])
    touching = np.zeros(every.inverse_diag.numel(), dtype=bool)
    touching[labels[(layer == 0) | (layer == fine.hi)]] = True
    assert touching[1:].any() and not touching[1:].all()  # both kinds present
    assert np.array_equal(floating.cells.numpy(), cells[~touching[labels]])
    assert floating.inverse_diag.numel() - 1 == int((~touching[1:]).sum())

    exact = direct_sigma_eff(field) / field.max()
    results = {}
    for only in (False, True):
        monkeypatch.setattr(native, "FLOATING_ISLANDS_ONLY", only)
        results[only] = solve(field, rel_tol=1e-3)
        assert results[only].converged
        assert results[only].relative_conductance == pytest.approx(exact, rel=1e-3)
    assert abs(results[True].iterations - results[False].iterations) <= 1


@pytest.mark.parametrize("am, cbd", CONTRASTS)
def test_float32_faces_move_the_conductance_by_at_most_their_rounding(monkeypatch, electrode,
                                                                      am, cbd):
    """ROBUST_FLOAT32_FACES: the finest level holds one set of float32 faces, read by the
    cycle and by CG's float64 operator alike. Each face is its float64 value within 2^-24,
    so the conductance (the minimum of the dissipated power) is within 1 ± 2^-24 of the
    float64-faces one: solved both ways to rel_tol 1e-10, they agree to that bound."""
    seen = []
    run = native._pcg

    def recording(levels, *args, **kwargs):
        cycle = kwargs.get("cycle_levels") or args[4]
        seen.append((levels[0].gx.dtype, cycle[0].gx is levels[0].gx))
        return run(levels, *args, **kwargs)

    monkeypatch.setattr(native, "_pcg", recording)
    field = _field(electrode, am, cbd)
    values = {}
    for float32_faces in (False, True):
        monkeypatch.setattr(native, "ROBUST_FLOAT32_FACES", float32_faces)
        seen.clear()
        result = solve(field, rel_tol=1e-10)
        assert result.converged and "float64" in result.method
        assert seen == [(torch.float32, True) if float32_faces else (torch.float64, False)]
        values[float32_faces] = result.relative_conductance
    assert abs(values[True] / values[False] - 1) <= 2.0**-24 + 1e-9
    assert values[True] == pytest.approx(direct_sigma_eff(field) / field.max(), rel=1e-6)


def test_a_robust_solve_without_floating_clusters_has_no_cluster_space(monkeypatch, electrode):
    """Every well-conducting cluster of the 12³ corner touches an electrode layer: the coarse
    space is empty (the cycle alone preconditions) and the solve still matches sparse LU."""
    field = _field(electrode[:12, :12, :12], 0.001, 1000.0)
    levels, sigma = _robust_levels(field)
    assert native._islands(levels, sigma) is None
    monkeypatch.setattr(native, "FLOATING_ISLANDS_ONLY", False)
    assert native._islands(levels, sigma) is not None  # there are clusters, all touching
    monkeypatch.setattr(native, "FLOATING_ISLANDS_ONLY", True)
    result = solve(field, rel_tol=1e-3)
    assert result.converged and "float64" in result.method
    assert result.relative_conductance == pytest.approx(direct_sigma_eff(field) / field.max(),
                                                        rel=1e-3)
