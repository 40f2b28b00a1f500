"""The native solver's fast paths compute what its plain torch path and a direct solve compute.

Two fast paths (docs/solvers.md, "Speed"): fused numba kernels for the stencil, the residual and
the Jacobi sweep on CPU tensors (kernels.metrics.solvers._fused), and the robust method's
multigrid cycle in float32 inside float64 flexible CG. A broken kernel (a wrong neighbour, a
sweep that reads already-updated values) or a preconditioner that lost accuracy shows up here
as a disagreement with the torch operations or with a sparse LU solve of the same equations.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from kernels.metrics.solvers import native, solve, spanning_cluster
from kernels.structure.procedural import ManufacturingParams, generate_structure

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                 reason="numba is not installed")


@pytest.fixture(autouse=True)
def _fused_on_small_grids(monkeypatch):
    """The fused kernels run from FUSED_MIN_CELLS up; these tests use small grids."""
    monkeypatch.setattr(native, "FUSED_MIN_CELLS", 0)


def _kernel_results(level: native._Level, coarse: native._Level, method: native._Method,
                    x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every operation the fused kernels replace, on copies of the level's vectors."""
    z0 = level.z.clone()
    out = {"A x": native._apply(level, x, torch.empty_like(x)).clone()}
    residual = torch.empty_like(x)
    native._residual(level, level.r, x, residual)
    out["r - A x"] = residual
    native._smooth(level)
    native._smooth(level)  # twice: the second sweep starts from a non-trivial z
    out["Jacobi"] = level.z.clone()
    native._smooth_from_zero(level, 2)
    out["two sweeps from 0"] = level.z.clone()
    native._residual_restrict(level, coarse)
    out["restricted residual"] = coarse.r.clone()
    level.z.copy_(z0)
    correction = torch.rand(coarse.shape, generator=torch.Generator().manual_seed(5),
                            dtype=torch.float64).to(x.dtype)
    native._correct_and_smooth(level, correction, coarse, method, 2)
    out["correction + sweeps"] = level.z.clone()
    out["energy"] = torch.tensor(native._energy(level, x))
    return out


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 2, 2), (7, 5, 9), (16, 12, 10), (3, 17, 2)])
@pytest.mark.parametrize("faces", ["stored", "from sigma", "from binary sigma"])
def test_fused_kernels_match_the_torch_operations(monkeypatch, dtype, shape, faces):
    """Stored faces on any level; faces computed from the voxel field on a compact fine level
    (random conductivities, or a 0/1 pore field); the robust method's masked correction."""
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    gen = torch.Generator().manual_seed(1)
    sigma = torch.rand(shape, generator=gen, dtype=torch.float64)
    sigma = torch.where(sigma < 0.3, 0.0, sigma if faces != "from binary sigma" else 1.0)
    sigma = sigma.to(dtype)
    results = {}
    for fused in (False, True):
        monkeypatch.setattr(native, "USE_FUSED", fused)
        monkeypatch.setattr(native, "COMPACT_FINE", faces != "stored")
        levels = native._hierarchy(*native._fine_stencil(sigma))
        level = levels[0]
        if len(levels) == 1:  # too small to coarsen: a coarse level of its own
            levels.append(native._coarsen(level, native._coarsening_factors(level.shape)))
            levels[1].fused = level.fused
        level.active_mask = native._coupled(level).to(dtype)
        if fused and faces != "stored":
            native._compact(level, sigma)
            assert level.gx is None and level.binary == (faces == "from binary sigma")
        gen = torch.Generator().manual_seed(3)  # the same vectors for both paths
        level.r.copy_(torch.rand(level.shape, generator=gen, dtype=torch.float64).to(dtype))
        level.z.copy_(torch.rand(level.shape, generator=gen, dtype=torch.float64).to(dtype))
        x = torch.rand(level.shape, generator=torch.Generator().manual_seed(2),
                       dtype=torch.float64).to(dtype)
        results[fused] = {**_kernel_results(level, levels[1], native.FAST, x),
                          **{f"{k} (masked)": v for k, v in
                             _kernel_results(level, levels[1], native.ROBUST, x).items()}}
        assert bool(level.host) == fused
    for name, a in results[False].items():
        b = results[True][name]
        scale = float(a.abs().max())
        assert float((a - b).abs().max()) <= tol * scale, name


def _direct(conductivity: np.ndarray) -> float:
    """σ_eff / max σ along axis 0: sparse LU of the documented discrete problem."""
    c = np.where(spanning_cluster(conductivity > 0), conductivity, 0).astype(np.float64)
    c /= conductivity.max()
    active = c > 0
    index = -np.ones(c.shape, dtype=np.int64)
    index[active] = np.arange(int(active.sum()))
    n = int(active.sum())
    rows, cols, vals, diag = [], [], [], np.zeros(n)
    for ax in range(3):
        a, ia = np.moveaxis(c, ax, 0), np.moveaxis(index, ax, 0)
        both = (a[:-1] > 0) & (a[1:] > 0)
        lo, hi = a[:-1][both], a[1:][both]
        g = 2 * lo * hi / (lo + hi)
        i, j = ia[:-1][both], ia[1:][both]
        rows += [i, j]
        cols += [j, i]
        vals += [-g, -g]
        np.add.at(diag, i, g)
        np.add.at(diag, j, g)
    rhs = np.zeros(n)
    first, last = c[0] > 0, c[-1] > 0
    np.add.at(diag, index[0][first], 2 * c[0][first])
    np.add.at(diag, index[-1][last], 2 * c[-1][last])
    rhs[index[-1][last]] = 2 * c[-1][last]
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(n, n)) + sp.diags(diag)
    phi = spla.spsolve(matrix.tocsc(), rhs)
    current = float((2 * c[-1][last] * (1 - phi[index[-1][last]])).sum())
    n1, n2, n3 = c.shape
    return current * n1 / (n2 * n3)


def small_electrode() -> np.ndarray:
    """A 28³ procedural electrode at 0.5 um (0.90 wt%, porosity 0.30): CBD islands in AM."""
    params = ManufacturingParams(am_wt_frac=0.90, porosity=0.30, binder_adhesion=0.5)
    return generate_structure(params, 28, 0.5, seed=3)


@pytest.fixture(scope="module")
def electrode() -> np.ndarray:
    return small_electrode()


def _field(labels: np.ndarray, am: float, cbd: float) -> np.ndarray:
    return np.array([0.0, am, cbd], dtype=np.float32)[labels]


@pytest.mark.parametrize("am, cbd", [(None, None), (0.18, 10.0), (0.01, 117.0), (0.001, 1000.0)])
def test_fast_paths_match_the_plain_path_and_a_direct_solve(monkeypatch, electrode, am, cbd):
    """Pore field (fast float32 method) and electronic fields up to contrast 1e6 (robust)."""
    field = (electrode == 0).astype(np.float32) if am is None else _field(electrode, am, cbd)
    reference = _direct(field)
    values = {}
    for fused, cycle_dtype, compact in ((False, None, False), (True, None, False),
                                        (False, torch.float32, False),
                                        (True, torch.float32, False),
                                        (True, torch.float32, True)):
        monkeypatch.setattr(native, "USE_FUSED", fused)
        monkeypatch.setattr(native, "COMPACT_FINE", compact)
        monkeypatch.setattr(native, "ROBUST",
                            dataclasses.replace(native.ROBUST, cycle_dtype=cycle_dtype))
        result = solve(field, rel_tol=1e-3)
        assert result.converged
        values[(fused, cycle_dtype, compact)] = result.relative_conductance
        assert result.relative_conductance == pytest.approx(reference, rel=1e-3)
    plain = values[(False, None, False)]
    for value in values.values():  # the paths differ only by rounding and the stopping step
        assert value == pytest.approx(plain, rel=3e-4)


def test_the_robust_method_runs_its_cycle_in_float32():
    """What the speed section of docs/solvers.md measures; CG stays float64."""
    assert native.ROBUST.dtype == torch.float64
    assert native.ROBUST.cycle_dtype == torch.float32


def test_one_cluster_labelling_per_solve(monkeypatch, electrode):
    """The registry labels the spanning cluster and tells native so (it labelled twice)."""
    from scipy import ndimage

    calls = []
    label = ndimage.label

    def counting(*args, **kwargs):
        calls.append(1)
        return label(*args, **kwargs)

    monkeypatch.setattr(ndimage, "label", counting)
    field = (electrode == 0).astype(np.float32)  # the fast method: no island labelling
    result = solve(field, rel_tol=1e-3)
    assert result.method == f"native {native.FAST.name}"
    assert len(calls) == 1
    assert result.relative_conductance == pytest.approx(_direct(field), rel=1e-3)


def test_native_alone_still_drops_what_does_not_span():
    """Called directly (spanning_only False) native labels the clusters itself."""
    field = np.zeros((8, 6, 6), dtype=np.float32)
    field[:, 1:3, 1:3] = 1.0  # spanning channel, 4 of 36 voxels of the cross-section
    field[2:5, 4, 4] = 1.0  # an isolated blob
    field[0:3, 5, 0] = 1.0  # a dead end on the low face
    assert native.solve(field).relative_conductance == pytest.approx(4 / 36, rel=1e-6)
    with pytest.raises(ValueError, match="spanning_only"):
        native.solve(field, spanning_only="yes")


@needs_numba
def test_warm_up_loads_the_kernels_and_restores_the_threshold():
    threshold = native.FUSED_MIN_CELLS
    assert native.warm_up() >= 0.0
    assert native.FUSED_MIN_CELLS == threshold
    assert native._FUSED_MODULE not in (None, False)


def _robust_setup(field: np.ndarray, compact: bool):
    """The robust method's fine level and island space for ``field``, as ``native._run``
    builds them (float64), optionally with the compact fine level."""
    sigma = torch.from_numpy(np.where(spanning_cluster(field > 0), field, 0) / field.max())
    sigma = sigma.to(torch.float64)
    levels = native._hierarchy(*native._fine_stencil(sigma))
    if compact:
        native._compact(levels[0], sigma)
    return levels[0], native._islands(levels, sigma)


@needs_numba
@pytest.mark.parametrize("compact", [False, True])
def test_fused_island_corrections_equal_the_torch_operations(electrode, compact):
    """The robust method's cluster corrections as numba kernels: the same sums in the same
    order as torch's bincount and index_add_, and the residual summed over the clusters in
    the stencil pass, so the same numbers bit for bit (not merely close)."""
    field = _field(electrode, 0.01, 117.0)  # the loop's default contrast: the robust method
    fine, islands = _robust_setup(field, compact)
    assert islands is not None and islands.fused and islands.inverse_diag.numel() > 3
    plain = dataclasses.replace(islands, fused=False)
    gen = torch.Generator().manual_seed(7)
    res = torch.rand(fine.shape, generator=gen, dtype=torch.float64)
    start = torch.rand(fine.shape, generator=gen, dtype=torch.float64)
    for name in ("correct", "correct_residual"):
        outs = []
        for space in (plain, islands):
            out = start.clone()
            if name == "correct":
                space.correct(res, out)
            else:
                space.correct_residual(fine, res, out)
            outs.append(out)
        assert not torch.equal(outs[0], start), name  # it did something
        assert torch.equal(outs[0], outs[1]), name


@needs_numba
def test_fused_islands_leave_the_robust_solve_unchanged(monkeypatch, electrode):
    """Same value, iterations and residual with and without the island kernels, and the
    direct solve's value (high contrast: 1e6, and the loop's default). The dense corrections
    (SPARSE_ISLANDS off): the sparse ones are tests/test_solver_robust_fused.py's."""
    monkeypatch.setattr(native, "SPARSE_ISLANDS", False)
    for am, cbd in ((0.01, 117.0), (0.001, 1000.0)):
        field = _field(electrode, am, cbd)
        results = []
        for fused in (False, True):
            monkeypatch.setattr(native, "FUSED_ISLANDS", fused)
            results.append(solve(field, rel_tol=1e-3))
        a, b = results
        assert b.method == f"native {native.ROBUST.name}" and b.converged
        assert (a.relative_conductance, a.iterations, a.residual) == (
            b.relative_conductance, b.iterations, b.residual)
        assert b.relative_conductance == pytest.approx(_direct(field), rel=1e-3)


def _set_up_fields(electrode: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    odd = rng.random((7, 5, 9)) * (rng.random((7, 5, 9)) > 0.3)  # odd sizes: padded level
    thin = rng.random((3, 17, 2)) * (rng.random((3, 17, 2)) > 0.2)
    return [(electrode == 0).astype(np.float32), _field(electrode, 0.18, 10.0),
            _field(electrode, 0.01, 117.0), odd.astype(np.float32), thin.astype(np.float32)]


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("which", range(5))
def test_fused_fine_level_equals_the_torch_set_up(monkeypatch, electrode, dtype, which):
    """One numba pass builds the finest level (faces, diagonal, electrode links, initial
    guess) with the same numbers bit for bit as the torch operations: the same solve."""
    field = _set_up_fields(electrode)[which]
    sigma = (torch.from_numpy(field) / float(field.max())).to(dtype)
    built = {}
    for fused in (False, True):
        monkeypatch.setattr(native, "FUSED_SETUP", fused)
        built[fused] = native._fine_level(sigma)
    (old, x_old), (new, x_new) = built[False], built[True]
    assert new.hi == old.hi == field.shape[0] - 1
    for name in ("gx", "gy", "gz", "diag", "b_lo", "b_hi", "r", "z", "t"):
        a, b = getattr(old, name), getattr(new, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), name
    assert torch.equal(x_old, x_new)
    assert bool((new.diag > 0).all())  # 1 on the padding and on insulating cells


@needs_numba
@pytest.mark.parametrize("am, cbd", [(None, None), (0.01, 117.0)])
def test_fused_set_up_leaves_the_solve_unchanged(monkeypatch, electrode, am, cbd):
    """Fast (pore) and robust (contrast 1.2e4) solves: identical value and iterations with
    the fused set-up, and both within rel_tol of a sparse LU solve (the robust faces in
    float64 on both paths: the torch set-up has no float32 form of them)."""
    monkeypatch.setattr(native, "ROBUST_FLOAT32_FACES", False)
    field = (electrode == 0).astype(np.float32) if am is None else _field(electrode, am, cbd)
    results = {}
    for fused in (False, True):
        monkeypatch.setattr(native, "FUSED_SETUP", fused)
        results[fused] = solve(field, rel_tol=1e-3)
    assert results[True].relative_conductance == results[False].relative_conductance
    assert results[True].iterations == results[False].iterations
    assert results[True].relative_conductance == pytest.approx(_direct(field), rel=1e-3)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 3, 3), (17, 9, 13), (1, 5, 7), (6, 1, 4),
                                   (5, 6, 1), (1, 1, 1)])
def test_the_out_of_place_sweep_gives_the_in_place_sweeps_numbers(dtype, shape):
    """`_fused.jacobi_out_of_place` (one loop per row, the cycle's default on stored faces)
    against `_fused.jacobi` (in place, plane buffers): every mode, masked or not, bit for bit
    (the same operations in the same order), boxes down to one cell thick."""
    from kernels.metrics.solvers import _fused

    rng = np.random.default_rng(7)
    factors = tuple(2 if n % 2 == 0 else 1 for n in shape)
    for mode in (_fused.PLAIN, _fused.FROM_ZERO, _fused.PROLONG):
        for masked in (False, True):
            z, r, gx, gy, gz = (rng.random(shape).astype(dtype) for _ in range(5))
            diag = (rng.random(shape) + 6).astype(dtype)
            coarse = rng.random(tuple(n // f for n, f in zip(shape, factors, strict=True)))
            coarse = coarse.astype(dtype)
            mask = (rng.random(shape) > 0.3).astype(dtype)
            extra = ({"coarse": coarse, "scale": 2.0, "factors": factors,
                      "mask": mask if masked else None} if mode == _fused.PROLONG else {})
            stencil = (diag, gx, gy, gz, np.zeros((1, 1, 1), dtype), False, 1e-30)
            in_place = z.copy()
            _fused.jacobi(*stencil, r, in_place, 0.95, mode=mode, **extra)
            src, dst = z.copy(), np.full_like(z, np.nan)
            _fused.jacobi_out_of_place(*stencil, r, src, dst, 0.95, mode=mode, **extra)
            assert np.array_equal(dst, in_place), (mode, masked)


@needs_numba
def test_the_out_of_place_cycle_leaves_the_solves_unchanged(monkeypatch, electrode):
    """Through the whole solve (fast pore method and robust electronic one): the same numbers
    to the last bit with the sweeps out of place or in place."""
    fields = [(electrode == 0).astype(np.float32), _field(electrode, 0.01, 117.0)]
    for field in fields:
        values = []
        for out_of_place in (False, True):
            monkeypatch.setattr(native, "OUT_OF_PLACE_JACOBI", out_of_place)
            result = solve(field, rel_tol=1e-3)
            values.append((result.relative_conductance, result.iterations))
        assert values[0] == values[1]


def _binary_level(shape: tuple[int, int, int], dtype: torch.dtype, seed: int):
    """The fused hierarchy of a random 0/1 field (padded to even sizes by the hierarchy)."""
    gen = torch.Generator().manual_seed(seed)
    sigma = (torch.rand(shape, generator=gen, dtype=torch.float64) > 0.35).to(dtype)
    levels = native._hierarchy(*native._fine_stencil(sigma))
    if len(levels) == 1:  # too small to coarsen: a coarse level of its own
        levels.append(native._coarsen(levels[0], native._coarsening_factors(levels[0].shape)))
        levels[1].fused = levels[0].fused
    levels[0].active_mask = native._coupled(levels[0]).to(dtype)
    return levels


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 2, 2), (7, 5, 9), (16, 12, 10), (3, 17, 2), (1, 6, 5),
                                   (9, 1, 4), (4, 3, 1)])
def test_face_bits_give_the_stored_faces_numbers(dtype, shape):
    """`_fused_bits` (a binary finest level's faces as one byte per cell) against the stored
    faces' kernels: A x, r − A x, sweeps in place, from 0 and after the coarse correction
    (masked and not), the residual's restriction and the energy, equal bit for bit."""
    results = []
    for packed in (False, True):
        levels = _binary_level(shape, dtype, seed=4)
        level = levels[0]
        if packed:
            native._pack_binary(level)
            assert level.bits is not None and level.gx is None
            assert level.bits.dtype == torch.uint8 and level.bits.shape == level.diag.shape
        gen = torch.Generator().manual_seed(3)  # the same vectors for both
        level.r.copy_(torch.rand(level.shape, generator=gen, dtype=torch.float64).to(dtype))
        level.z.copy_(torch.rand(level.shape, generator=gen, dtype=torch.float64).to(dtype))
        x = torch.rand(level.shape, generator=gen, dtype=torch.float64).to(dtype)
        results.append({**_kernel_results(level, levels[1], native.FAST, x),
                        **{f"{k} (masked)": v for k, v in
                           _kernel_results(level, levels[1], native.ROBUST, x).items()}})
    for name, stored in results[0].items():
        assert torch.equal(stored, results[1][name]), name


@needs_numba
def test_face_bits_are_refused_where_a_face_is_neither_0_nor_1():
    """A field with another conductivity keeps its stored faces (the bits could not say it)."""
    from kernels.metrics.solvers import _fused_bits

    gen = torch.Generator().manual_seed(6)
    sigma = (torch.rand((8, 6, 4), generator=gen, dtype=torch.float64) > 0.3).to(torch.float32)
    sigma[3, 2, 1] = sigma[3, 2, 2] = 0.5
    level = native._hierarchy(*native._fine_stencil(sigma))[0]
    faces = tuple(a.numpy() for a in (level.gx, level.gy, level.gz))
    assert _fused_bits.pack(*faces, level.shape) is None
    native._pack_binary(level)
    assert level.bits is None and level.gx is not None


@needs_numba
def test_the_pore_solve_runs_on_face_bits_and_its_numbers_do_not_move(monkeypatch, electrode):
    """The fast method's finest level of a pore field holds one byte of faces per cell (no
    face arrays), the electronic fields keep stored faces, and every value and iteration
    count equals the stored-face solve's."""
    seen = []
    run = native._pcg

    def recording(levels, *args, **kwargs):
        seen.append((levels[0].bits is not None, levels[0].gx is None))
        return run(levels, *args, **kwargs)

    monkeypatch.setattr(native, "_pcg", recording)
    pore = (electrode == 0).astype(np.float32)
    for field, packed in ((pore, True), (_field(electrode, 1.0, 0.1), False),
                          (_field(electrode, 0.01, 117.0), False)):
        values = []
        for bits in (False, True):
            monkeypatch.setattr(native, "BINARY_FACES", bits)
            seen.clear()
            result = solve(field, rel_tol=1e-3)
            values.append((result.relative_conductance, result.iterations))
            assert seen == [(bits and packed, bits and packed)]
        assert values[0] == values[1]
    assert values[0][0] == pytest.approx(_direct(_field(electrode, 0.01, 117.0)), rel=1e-3)


def test_the_fast_hierarchy_ends_at_64_cells_and_the_robust_one_at_1000(monkeypatch, electrode):
    """The fast method's coarsest grid (dense inverse) has at most FAST_COARSEST_MAX_CELLS =
    64 cells, the robust method's (Cholesky factor, needed large at contrast 1e6) at most
    1000; both solves stay within rel_tol of sparse LU."""
    coarsest = []
    run = native._pcg

    def recording(levels, *args, **kwargs):
        cycle_levels = kwargs.get("cycle_levels") or (args[4] if len(args) > 4 else None)
        coarsest.append((cycle_levels or levels)[-1].diag.numel())
        return run(levels, *args, **kwargs)

    monkeypatch.setattr(native, "_pcg", recording)
    electrode = np.concatenate([electrode, electrode[::-1]], axis=0)  # 56 x 28 x 28
    for field, method, cells in (((electrode == 0).astype(np.float32), native.FAST, (1, 64)),
                                 (_field(electrode, 0.01, 117.0), native.ROBUST, (65, 1000))):
        coarsest.clear()
        result = solve(field, rel_tol=1e-3)
        assert result.method == f"native {method.name}"
        assert len(coarsest) == 1 and cells[0] <= coarsest[0] <= cells[1]
        assert result.relative_conductance == pytest.approx(_direct(field), rel=1e-3)
