"""Native transport back-end: multigrid-preconditioned conjugate gradients, matrix-free in torch.

It solves exactly the discrete problem defined in ``kernels.metrics.solvers`` (the one TauFactor's
binary ``Solver`` solves, and the taufactor back-end's face-Dirichlet ``MultiPhaseSolver``), but
needs tens of iterations where TauFactor's red-black over-relaxation needs hundreds to thousands
of sweeps:

* steady conduction on the voxel grid, flux along ``axis``, no-flux sides, face conductance
  between two voxels = harmonic mean of their conductivities (0 when either is 0);
* potential 0 and 1 on the two end faces of the transport axis, half a voxel from the first and
  last voxel centres (link conductance 2σ), so the length is ``L = N`` voxels;
* only the clusters connected to both end faces are solved (6-connectivity): other clusters carry
  no current at steady state and would make the system singular.

Result: ``relative_conductance = σ_eff / max(conductivity)`` with ``σ_eff = G · L / A``, ``G`` the
conductance of the box for a unit potential drop and ``A`` the cross-section in voxels. For a
binary pore field (conductivity 1) this is TauFactor's ``D_rel`` (τ = ε / D_rel).

Method: the system matrix is a weighted graph Laplacian plus boundary terms, symmetric positive
definite on the percolating cluster. It is preconditioned with one W-cycle of aggregation
multigrid: 2×2×2 blocks (2×2 or 2 in dimensions thinner than 4 cells), Galerkin coarse operators (which for piecewise-constant transfer are
again 7-point stencils whose face conductances are sums of fine face conductances, so coarse
grids keep the exact connectivity of the pore network), damped Jacobi smoothing, an
over-corrected coarse-grid correction, and a dense Cholesky solve on the coarsest grid.

Stopping: CG minimises the dissipated power ``E(φ) = Σ g (Δφ)²`` over the Krylov space, and
``E(φ) ≥ G`` with ``E(φ) − G = ‖φ − φ*‖²_A``: the reported conductance is this upper bound,
whose error is quadratic in the field error. Each CG step lowers ``E`` by exactly ``α ρ``; the
fast method stops when that decrease falls below ``rel_tol / 4`` times the current (with this
preconditioner the error left was at most ~1.5 times the last decrease on procedural
electrodes, see docs/solvers.md); the robust method's stop is described below.

Two methods, one discrete problem. The fast one above runs in float32 with an over-corrected
(×2) coarse correction. At high conductivity contrast (σ_AM/σ_CBD = 1e-3/1e3) it breaks down
after 1–4 steps and, worse, at 1e3–1e4 it stops "converged" 0.05–0.7 % off: float32 cannot
resolve the currents through the weak links, and the unmasked over-correction stops being safe. The
robust method, used above FAST_MAX_CONTRAST or when the fast one did not converge, changes
four things, each needed at contrast 1e6 on procedural electrodes:

* float64 throughout (the finest faces stored rounded to float32: ROBUST_FLOAT32_FACES), and
  triangular solves with the coarsest Cholesky factor instead of an explicit inverse (which is
  wrong in its small components when the operator is ill-conditioned);
* the coarse correction kept off the inactive cells (whose diagonal is a stand-in 1), so that
  every level's cycle is a symmetric iteration whose error propagator has A-norm at most 1 and
  the preconditioner stays positive definite. The correction is over-corrected (×2) as in the
  fast method: with the masking this stays positive definite (measured at contrasts 1e3-1e6)
  and halves the iterations at the loop's default contrast 1.2e4 (24 -> 12 at 128³); the plain
  Galerkin scale 1 it replaced left CG long plateaus on the smooth modes of the CBD network;
* an extra coarse space of one indicator function per floating cluster of the
  well-conducting phase, one touching neither electrode layer (applied before and after the
  cycle, symmetrically): such clusters float at nearly uniform potentials set by weak links,
  modes the 2×2×2 aggregates cannot represent, which otherwise give CG long plateaus (a
  cluster touching an electrode is pinned by its links: FLOATING_ISLANDS_ONLY). Its corrections read a list of the faces leaving the clusters (the
  only cells where A Z c is nonzero) rather than a float64 stencil pass each (SPARSE_ISLANDS);
* a stop on the remaining error extrapolated from the last TAIL_WINDOW decreases as a
  geometric series (× ENERGY_TAIL_SAFETY = 8; never while the decreases are not falling),
  referred to the dissipated power E(x_k) = E(x_0) − Σ α r·p, not to the electrode current:
  stop when the estimate ε < rel_tol × (E − ε). The current converges far more slowly than the
  energy at high contrast (56× the conductance after 11 iterations on a 64³ electrode at
  1e6): referred to it (the rule until 2026-12-03, TAIL_SAFETY = 32) the stop returned values
  5.8 % off at rel_tol 1e-2, and needed the ×32 margin at 1e-3 (×4 stopped 0.81 % off).
  Replayed on 44 recorded solves (40³ against sparse LU, 64³ and 128³ against rel_tol
  1e-11), the largest error is 0.22 / 0.33 / 0.70 × rel_tol at 1e-2 / 1e-3 / 1e-4, in 9 %
  fewer iterations at 1e-3 (24 % on the four 128³ cubes at the loop's default contrast, 38 ->
  29; docs/solvers.md "The robust solve's stop").
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from kernels.metrics.solvers import TransportSolution

# Multigrid parameters (tuned on procedural electrodes 32³–256³, see docs/solvers.md).
JACOBI_DAMPING = 0.95  # < 1 keeps the smoother convergent, hence the cycle SPD
SMOOTHING_SWEEPS = 2  # before and after the coarse correction, on the coarse levels
FINE_SMOOTHING_SWEEPS = 2  # the same on the finest level, where a sweep costs the most
CYCLE_GAMMA = 2  # coarse problems solved by 2 cycles (W-cycle): cheap in 3D, far fewer CG steps
COARSE_CORRECTION_SCALE = 2.0  # over-correction compensating piecewise-constant interpolation
COARSEST_MAX_CELLS = 1000
# ... for the fast method (contrast <= FAST_MAX_CONTRAST): the dense Cholesky inverse of a
# 512-cell coarsest grid and its assembly were ~10 ms of a 128³ electronic solve; one level more
# down to <= 64 cells gave the same iteration counts on the 128³ bench fields (measured
# 2026-12-04, docs/solvers.md). The robust method keeps 1000: at contrast 1e6 a 64³ electrode
# (0.98/0.55/1.0) needed 39 iterations with the small grid against 22.
FAST_COARSEST_MAX_CELLS = 64
MAX_ITERATIONS = 200
# Stop when the last step lowered the dissipated power by less than this fraction of rel_tol:
# on procedural electrodes the remaining error was at most ~1.5x the last decrease.
TOLERANCE_SAFETY = 0.25
# The robust method (float64, masked coarse correction, high-conductivity clusters as an
# extra coarse space): used when the field's conductivity contrast exceeds FAST_MAX_CONTRAST or
# the fast method did not converge. The fast float32 method was measured 3e-5-1.3e-4 from a
# direct solve at contrast 56 (the loop's 0.18/10 S/m), 5e-4-1.2e-3 at 1e3 and 3.5-7e-3 at 1e4
# while claiming convergence: float32 cannot resolve currents through the weak links.
FAST_MAX_CONTRAST = 100.0
# Over-corrected like the fast method: kept off the inactive cells, the cycle stays symmetric
# and the preconditioner positive definite; scale 1 (plain Galerkin, used until 2026-12-02) took
# 24 iterations at the loop's default 1.2e4 contrast on a 128³ cube where 2.0 takes 12.
ROBUST_CORRECTION_SCALE = 2.0
ROBUST_MAX_ITERATIONS = 2000
TAIL_WINDOW = 5  # decreases used to estimate the convergence ratio of the robust method
# The old robust stop ("current") asked for an extrapolated remaining error below rel_tol / 32
# of the electrode current: at 4 a 40³ electrode at contrast 1e6 stopped 0.81 % off (rel_tol
# 1e-3), at 32 every case measured at 1e-3 was within 0.013 % (but not at 1e-2, see below).
TAIL_SAFETY = 32.0
# The robust stop's reference (docs/solvers.md "The robust solve's stop"): "energy" asks for
# ENERGY_TAIL_SAFETY × the tail below rel_tol × (dissipated power − that estimate); "current"
# is the rule until 2026-12-03 (TAIL_SAFETY × the tail below rel_tol × the electrode current).
# Replayed on 44 solves 40³-128³ at contrasts 1e3-1e6 (bench_stop_rule.py), the largest error
# at rel_tol 1e-2 / 1e-3 / 1e-4 was 0.22 / 0.33 / 0.70 × rel_tol ("current" ×32: 5.8 / 0.13 /
# 0.13 ×, the first > 1), in 461 iterations against 506 at 1e-3.
STOP_RULE = "energy"
ENERGY_TAIL_SAFETY = 8.0
# The robust method's finest faces stored once, in the float32 of its cycle, and read by CG's
# float64 operator too (float64 arithmetic, the diagonal their float64 sum): one face array set
# instead of a float64 one plus its float32 copy. The problem solved is then the one with every
# face conductance rounded to float32: each is within 2^-24 of its float64 value, so the
# conductance G (the minimum of the dissipated power) is within a factor 1 ± 2^-24 of the
# float64-faces one (tests/test_solver_robust_fused.py). False: float64 faces (until 2026-12-04).
ROBUST_FLOAT32_FACES = True
# Run the stencil, the residual and the Jacobi sweeps as fused numba kernels on CPU tensors
# (kernels.metrics.solvers._fused) when numba is installed; False forces the torch operations.
USE_FUSED = True
# ... on grids of at least this many cells: loading numba costs ~0.4 CPU-s per process, more
# than the kernels save below ~96³ (measured, docs/solvers.md "Speed").
FUSED_MIN_CELLS = 96**3
# On a fused level with stored faces, run the cycle's Jacobi sweeps out of place in pairs
# through the level's scratch grid (``_fused.jacobi_out_of_place``: the same numbers, one loop
# per row, no plane buffers; 1.6-1.8x faster per sweep, tests/benchmarks/bench_jacobi_forms.py);
# False keeps the in-place kernel.
OUT_OF_PLACE_JACOBI = True
# On a fused fast-method hierarchy of a binary field (every face 0 or 1: the pore solve), keep
# the finest grid's faces as one byte of bits per cell instead of three float32 face arrays
# (``_fused_bits``: the same numbers bit for bit; 17 instead of 28 bytes per cell and sweep).
BINARY_FACES = True
# On a fused hierarchy, compute the finest grid's face conductances from the voxel field in the
# kernels instead of storing three face arrays (less memory, more arithmetic per sweep).
COMPACT_FINE = False
# The robust method's island corrections as numba kernels on a fused fine level (the same
# numbers bit for bit as the torch operations, which False forces).
FUSED_ISLANDS = True
# The cluster coarse space holds only the clusters that float: those touching neither electrode
# layer. A touching cluster's potential is pinned by its electrode links (2σ of the best
# conductor), so its indicator is no near-null mode: dropping those (at 128³ the one CBD
# cluster that spans the box, 99 % of the cluster cells) left every iteration count unchanged
# in 18 measured solves and made each iteration's corrections ~100× smaller (docs/solvers.md,
# "Speed: face bits, floating clusters, float32 robust faces"). False: every cluster (the
# rule until 2026-12-04).
FLOATING_ISLANDS_ONLY = True
# Build the finest level (faces, diagonal, initial guess) in one numba pass on a fused grid
# instead of ~45 torch array passes (same numbers; False forces the torch operations).
FUSED_SETUP = True
# The robust preconditioner's two cluster corrections from a list of the faces leaving the
# clusters (set-up) instead of a float64 stencil pass each, and the cycle's right-hand side
# and output cast in the same passes (same linear map, rounding differs; False: the passes).
SPARSE_ISLANDS = True
# Flexible CG's dot products and updates (the robust method on a fused fine level) in three
# numba passes per step instead of seven torch ones, without the copy of the old residual
# (same iteration, rounding differs; False: the torch operations).
FUSED_CG = True
HARMONIC_GUARD = 1e-30  # 2ab / max(a + b, guard): only guards 0 / 0 (both voxels insulating)
_FUSED_MODULE: object = None  # the kernels module once imported; False when numba is missing
_BITS_MODULE: object = None  # _fused_bits, imported with it


def _fused_kernels():
    """kernels.metrics.solvers._fused, imported on first use; None without numba."""
    global _FUSED_MODULE
    if _FUSED_MODULE is None:
        global _BITS_MODULE
        try:
            from kernels.metrics.solvers import _fused, _fused_bits
        except ImportError:  # numba not installed: the torch operations compute the same
            _FUSED_MODULE = False
        else:
            _FUSED_MODULE, _BITS_MODULE = _fused, _fused_bits
    return _FUSED_MODULE or None


def _kernels(level: _Level):
    """The fused kernels' module for ``level``: _fused_bits on a level of face bits."""
    return _BITS_MODULE if level.bits is not None else _FUSED_MODULE


@dataclass(frozen=True)
class _Method:
    """One way of running the multigrid-CG iteration (precision, coarse correction, stopping)."""

    name: str
    dtype: torch.dtype
    correction_scale: float
    max_iterations: int
    geometric_tail: bool  # stop on the extrapolated remaining error, not on the last step alone
    # Keep the coarse correction off inactive cells (non-conducting, or padding), whose diagonal
    # is a stand-in 1: otherwise the cycle is not Galerkin on them, which at high contrast
    # (active couplings << 1) makes the preconditioner indefinite and CG break down.
    mask_inactive: bool
    deflate_islands: bool  # add the coarse space of high-conductivity clusters (_Islands)
    # Precision of the multigrid cycle (None: ``dtype``). float32 halves the cycle's memory
    # traffic, most of the work; CG, the operator it minimises, the island space and the
    # coarsest Cholesky solve stay in ``dtype``. The float32 cycle is then a slightly
    # nonlinear preconditioner, so CG runs in its flexible form (Polak-Ribiere beta, step
    # length from r.p).
    cycle_dtype: torch.dtype | None = None
    coarsest_max_cells: int = COARSEST_MAX_CELLS  # the hierarchy stops at this many cells


FAST = _Method("mg-cg-float32", torch.float32, COARSE_CORRECTION_SCALE, MAX_ITERATIONS,
               geometric_tail=False, mask_inactive=False, deflate_islands=False,
               coarsest_max_cells=FAST_COARSEST_MAX_CELLS)
ROBUST = _Method("mg-cg-float64", torch.float64, ROBUST_CORRECTION_SCALE,
                 ROBUST_MAX_ITERATIONS, geometric_tail=True, mask_inactive=True,
                 deflate_islands=True, cycle_dtype=torch.float32)


@dataclass
class _Level:
    """One grid of the hierarchy: its 7-point stencil and its work buffers."""

    # conductance of the face between (i, j, k) and (i+1, j, k), etc.; None on a compact fine
    # level, whose faces the fused kernels compute from ``sigma``
    gx: torch.Tensor | None
    gy: torch.Tensor | None
    gz: torch.Tensor | None
    diag: torch.Tensor  # sum of face + boundary conductances; 1 on inactive cells
    b_lo: torch.Tensor  # (n2, n3) conductance to the low Dirichlet boundary, on layer 0
    b_hi: torch.Tensor  # (n2, n3) conductance to the high Dirichlet boundary, on layer `hi`
    hi: int  # layer of the high boundary (the last unpadded layer)
    r: torch.Tensor  # right-hand side of the V-cycle on this level
    z: torch.Tensor  # correction computed by the V-cycle
    t: torch.Tensor  # scratch
    acc: torch.Tensor | None = None  # sum of the W-cycle's corrections (coarse levels)
    rhs: torch.Tensor | None = None  # copy of r kept during a W-cycle (coarse levels)
    inverse: torch.Tensor | None = None  # dense inverse on the active cells (coarsest, float32)
    factor: torch.Tensor | None = None  # its Cholesky factor instead (coarsest, float64)
    active_mask: torch.Tensor | None = None  # 1 on cells with a coupling, 0 elsewhere (robust)
    factors: tuple[int, int, int] = (2, 2, 2)  # block size that made this level from the finer
    active: torch.Tensor | None = None  # flat indices of the active cells (coarsest level only)
    # the stencil as the fused CPU kernels take it, (diag, gx, gy, gz, sig, binary, tiny) as
    # numpy views; () when the torch operations run on this level
    host: tuple | None = None
    fused: bool = False  # run the fused kernels (set for a whole hierarchy by _hierarchy)
    # compact fine level: the normalised voxel conductivities (padded to the level's shape)
    # from which the kernels compute the face conductances; binary: every value is 0 or 1
    sigma: torch.Tensor | None = None
    binary: bool = False
    # finest level of a binary field (BINARY_FACES): which faces of each cell conduct (value
    # 1), one uint8 of bits per cell (_fused_bits.XM ...); gx, gy, gz are then None
    bits: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.diag.shape)  # type: ignore[return-value]


def _wants_fused(cells: int, device: torch.device) -> bool:
    """Fused kernels for a hierarchy whose finest grid has ``cells`` cells on ``device``."""
    return bool(USE_FUSED and cells >= FUSED_MIN_CELLS and device.type == "cpu"
                and _fused_kernels())


def _host(level: _Level) -> tuple | None:
    """The level's stencil as numpy views when the fused CPU kernels run on it (numba
    installed, CPU tensors, a hierarchy big enough to pay for loading numba), else None."""
    if level.host is None:
        if not level.fused:
            level.host = ()
        else:
            diag = level.diag.contiguous().numpy()
            dummy = diag.reshape(-1)[:1].reshape(1, 1, 1)
            if level.bits is not None:  # the _fused_bits kernels take the bits as faces
                bits = level.bits.numpy()
                faces, sig = (bits, bits, bits), dummy
            elif level.sigma is not None:
                faces = (dummy, dummy, dummy)
                sig = level.sigma.contiguous().numpy()
            else:
                faces = tuple(a.contiguous().numpy() for a in (level.gx, level.gy, level.gz))
                sig = dummy
            level.host = (diag, *faces, sig, level.binary, HARMONIC_GUARD)
    return level.host or None


def _compact(level: _Level, sigma: torch.Tensor) -> None:
    """Drop the fine level's stored face conductances: the fused kernels compute them from
    ``sigma`` (one field instead of three face arrays: less memory traffic per sweep)."""
    n1, n2, n3 = sigma.shape
    padded = torch.zeros(level.shape, dtype=level.diag.dtype, device=level.diag.device)
    padded[:n1, :n2, :n3] = sigma
    level.sigma = padded
    level.binary = bool(torch.all((sigma == 0) | (sigma == 1)))
    level.gx = level.gy = level.gz = None
    level.host = None


def _pack_binary(level: _Level) -> None:
    """Replace the fused level's stored faces by face bits when every face is 0 or 1."""
    bits = _BITS_MODULE.pack(*(a.numpy() for a in (level.gx, level.gy, level.gz)), level.shape)
    if bits is not None:
        level.bits = torch.from_numpy(bits)
        level.gx = level.gy = level.gz = None
        level.host = None


def _fusable(*tensors: torch.Tensor) -> bool:
    return all(t.is_contiguous() for t in tensors)


def _apply(level: _Level, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = A x for the 7-point stencil of ``level`` (in place: no allocation)."""
    host = _host(level)
    if host is not None and _fusable(x, out):
        _kernels(level).apply(*host, x.numpy(), out.numpy())
        return out
    torch.mul(level.diag, x, out=out)
    out[:-1].addcmul_(level.gx, x[1:], value=-1.0)
    out[1:].addcmul_(level.gx, x[:-1], value=-1.0)
    out[:, :-1].addcmul_(level.gy, x[:, 1:], value=-1.0)
    out[:, 1:].addcmul_(level.gy, x[:, :-1], value=-1.0)
    out[:, :, :-1].addcmul_(level.gz, x[:, :, 1:], value=-1.0)
    out[:, :, 1:].addcmul_(level.gz, x[:, :, :-1], value=-1.0)
    return out


def _face_sum(gx: torch.Tensor, gy: torch.Tensor, gz: torch.Tensor,
              shape: tuple[int, int, int]) -> torch.Tensor:
    """Sum of the face conductances incident to each cell."""
    s = torch.zeros(shape, dtype=gx.dtype, device=gx.device)
    s[:-1] += gx
    s[1:] += gx
    s[:, :-1] += gy
    s[:, 1:] += gy
    s[:, :, :-1] += gz
    s[:, :, 1:] += gz
    return s


def _pair_sum(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum neighbouring pairs (0+1, 2+3, ...) along ``dim`` (its length must be even)."""
    idx0: list[slice] = [slice(None)] * a.dim()
    idx1: list[slice] = [slice(None)] * a.dim()
    idx0[dim] = slice(0, None, 2)
    idx1[dim] = slice(1, None, 2)
    return a[tuple(idx0)] + a[tuple(idx1)]


def _make_level(gx: torch.Tensor, gy: torch.Tensor, gz: torch.Tensor, b_lo: torch.Tensor,
                b_hi: torch.Tensor, hi: int) -> _Level:
    """Assemble the diagonal and the work buffers; pad to even sizes with inactive cells."""
    shape = (gx.shape[0] + 1, gy.shape[1] + 1, gz.shape[2] + 1)
    pad = (0, shape[2] % 2, 0, shape[1] % 2, 0, shape[0] % 2)
    if any(pad):
        gx, gy, gz = (torch.nn.functional.pad(a, pad) for a in (gx, gy, gz))
        b_lo, b_hi = (torch.nn.functional.pad(a, pad[:4]) for a in (b_lo, b_hi))
        shape = (shape[0] + pad[5], shape[1] + pad[3], shape[2] + pad[1])
    diag = _face_sum(gx, gy, gz, shape)
    diag[0] += b_lo
    diag[hi] += b_hi
    diag[diag == 0] = 1.0
    dev, dt = diag.device, diag.dtype
    return _Level(gx.contiguous(), gy.contiguous(), gz.contiguous(), diag, b_lo, b_hi, hi,
                  r=torch.zeros(shape, dtype=dt, device=dev),
                  z=torch.zeros(shape, dtype=dt, device=dev),
                  t=torch.zeros(shape, dtype=dt, device=dev))


def _coarsening_factors(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Halve every dimension of at least 4 cells; thinner ones are kept (semi-coarsening)."""
    return tuple(2 if n >= 4 else 1 for n in shape)  # type: ignore[return-value]


def _sum_pairs(a: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    for dim in dims:
        a = _pair_sum(a, dim)
    return a


def _coarsen(level: _Level, factors: tuple[int, int, int]) -> _Level:
    """Galerkin coarse level for piecewise-constant aggregation over 2×2×2 (or thinner) blocks.

    With piecewise-constant prolongation P, Pᵀ A P of a weighted graph Laplacian is the
    Laplacian of the quotient graph: a coarse face conductance is the sum of the fine face
    conductances crossing it, faces inside a block cancel, boundary terms add up.
    """
    halved = [d for d in range(3) if factors[d] == 2]
    faces = []
    for d, g in enumerate((level.gx, level.gy, level.gz)):
        if factors[d] == 2:  # only the faces between blocks: cells 2I+1 | 2I+2
            index: list[slice] = [slice(None)] * 3
            index[d] = slice(1, None, 2)
            g = g[tuple(index)]
        g = g.to(level.diag.dtype)  # float32 faces of a float64 level: float64 sums
        faces.append(_sum_pairs(g, tuple(e for e in halved if e != d)).contiguous())
    sides = tuple(e - 1 for e in halved if e > 0)  # b_lo, b_hi are (n2, n3)
    b_lo, b_hi = _sum_pairs(level.b_lo, sides), _sum_pairs(level.b_hi, sides)
    coarse = _make_level(*faces, b_lo, b_hi, level.hi // factors[0])
    coarse.factors = factors
    return coarse


def _coupled(level: _Level) -> torch.Tensor:
    """Cells with at least one coupling (a face or an electrode); the others are stand-ins."""
    raw = _face_sum(level.gx, level.gy, level.gz, level.shape)
    raw[0] += level.b_lo
    raw[level.hi] += level.b_hi
    return raw > 0


def _invert_coarsest(level: _Level) -> None:
    """Dense Cholesky-based inverse of the coarsest operator, restricted to its active cells."""
    n = level.diag.numel()
    dev = level.diag.device
    index = torch.arange(n, device=dev).reshape(level.shape)
    matrix = torch.zeros((n, n), dtype=torch.float64, device=dev)
    matrix.diagonal().copy_(level.diag.reshape(-1))
    for g, lo, hi in (
        (level.gx, index[:-1], index[1:]),
        (level.gy, index[:, :-1], index[:, 1:]),
        (level.gz, index[:, :, :-1], index[:, :, 1:]),
    ):
        matrix[lo.reshape(-1), hi.reshape(-1)] = -g.reshape(-1).double()
        matrix[hi.reshape(-1), lo.reshape(-1)] = -g.reshape(-1).double()
    active = torch.nonzero(_coupled(level).reshape(-1)).reshape(-1)
    level.active = active
    if active.numel():
        factor = torch.linalg.cholesky(matrix[active][:, active])
        if level.diag.dtype == torch.float64:
            # Triangular solves are backward stable: at high contrast (ill-conditioned coarse
            # operator) an explicit inverse is wrong in its small components and makes the
            # preconditioner indefinite (CG breaks down); the factor keeps it positive.
            level.factor = factor
        else:
            # a dense inverse: one small matrix-vector product per visit of the coarsest level
            level.inverse = torch.cholesky_inverse(factor)


def _cast_level(level: _Level, dtype: torch.dtype) -> _Level:
    """A copy of ``level`` in ``dtype`` with its own work buffers, for the multigrid cycle.

    The coarsest Cholesky factor (or inverse) is shared: it stays in its own precision.
    """
    def cast(a: torch.Tensor | None) -> torch.Tensor | None:
        return None if a is None else a.to(dtype).contiguous()

    shape = level.shape
    dev = level.diag.device
    return _Level(cast(level.gx), cast(level.gy), cast(level.gz), cast(level.diag),
                  cast(level.b_lo), cast(level.b_hi), level.hi,
                  r=torch.zeros(shape, dtype=dtype, device=dev),
                  z=torch.zeros(shape, dtype=dtype, device=dev),
                  t=torch.zeros(shape, dtype=dtype, device=dev),
                  inverse=level.inverse, factor=level.factor,
                  active_mask=cast(level.active_mask), factors=level.factors,
                  active=level.active, fused=level.fused, sigma=cast(level.sigma),
                  binary=level.binary)


def _hierarchy(gx: torch.Tensor, gy: torch.Tensor, gz: torch.Tensor, b_lo: torch.Tensor,
               b_hi: torch.Tensor) -> list[_Level]:
    """Fine level plus Galerkin coarse levels down to at most COARSEST_MAX_CELLS cells."""
    return _hierarchy_from(_make_level(gx, gy, gz, b_lo, b_hi, gx.shape[0]))


def _hierarchy_from(fine: _Level, max_cells: int | None = None) -> list[_Level]:
    """``fine`` plus Galerkin coarse levels down to at most ``max_cells`` cells
    (COARSEST_MAX_CELLS by default)."""
    max_cells = COARSEST_MAX_CELLS if max_cells is None else max_cells
    levels = [fine]
    while levels[-1].diag.numel() > max_cells:
        factors = _coarsening_factors(levels[-1].shape)
        if factors == (1, 1, 1):
            break
        levels.append(_coarsen(levels[-1], factors))
    _invert_coarsest(levels[-1])
    fused = _wants_fused(levels[0].diag.numel(), levels[0].diag.device)
    for level in levels:
        level.fused = fused
    return levels


def _restrict(fine: torch.Tensor, coarse: torch.Tensor, factors: tuple[int, int, int]) -> None:
    """coarse ← sum over each block of fine (Pᵀ for piecewise-constant P)."""
    f1, f2, f3 = factors
    n1, n2, n3 = fine.shape
    a = fine
    if f1 == 2:
        v = a.view(n1 // 2, 2, n2, n3)
        a = v[:, 0] + v[:, 1]
    if f2 == 2:
        w = a.view(n1 // f1, n2 // 2, 2, n3)
        a = w[:, :, 0] + w[:, :, 1]
    c1, c2, c3 = n1 // f1, n2 // f2, n3 // f3
    # the coarse level may carry one extra (inactive, zero) layer of padding per dimension
    if f3 == 2:
        u = a.view(c1, c2, c3, 2)
        torch.add(u[..., 0], u[..., 1], out=coarse[:c1, :c2, :c3])
    else:
        coarse[:c1, :c2, :c3].copy_(a)


def _prolong_add(coarse: torch.Tensor, fine: torch.Tensor, scale: float,
                 factors: tuple[int, int, int]) -> None:
    """fine += scale · (coarse value repeated over its block)."""
    f1, f2, f3 = factors
    n1, n2, n3 = fine.shape
    c1, c2, c3 = n1 // f1, n2 // f2, n3 // f3
    coarse = coarse[:c1, :c2, :c3]
    if f3 == 2:  # repeat along the contiguous axis first, then broadcast over the others
        coarse = coarse.unsqueeze(-1).expand(c1, c2, c3, 2).reshape(c1, c2, n3)
    fine.view(c1, f1, c2, f2, n3).add_(coarse.reshape(c1, 1, c2, 1, n3), alpha=scale)


def _residual(lv: _Level, r: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> None:
    """out = r - A x."""
    host = _host(lv)
    if host is not None and _fusable(r, x, out):
        _kernels(lv).residual(*host, r.numpy(), x.numpy(), out.numpy())
        return
    _apply(lv, x, out)
    torch.sub(r, out, out=out)


def _residual_restrict(lv: _Level, coarse: _Level) -> None:
    """coarse.r ← Pᵀ (lv.r − A lv.z): in one pass when fused (no fine residual stored)."""
    host = _host(lv)
    if host is not None and _fusable(lv.r, lv.z, coarse.r):
        _kernels(lv).residual_restrict(*host, lv.r.numpy(), lv.z.numpy(), coarse.r.numpy(),
                                        coarse.factors)
        return
    _residual(lv, lv.r, lv.z, lv.t)
    _restrict(lv.t, coarse.r, coarse.factors)


def _smooth(lv: _Level) -> None:
    """One damped Jacobi sweep on lv.z for the right-hand side lv.r."""
    host = _host(lv)
    if host is not None and _fusable(lv.r, lv.z):
        _kernels(lv).jacobi(*host, lv.r.numpy(), lv.z.numpy(), JACOBI_DAMPING)
        return
    _apply(lv, lv.z, lv.t)
    torch.sub(lv.r, lv.t, out=lv.t)
    lv.z.addcdiv_(lv.t, lv.diag, value=JACOBI_DAMPING)


def _out_of_place(lv: _Level, host: tuple | None) -> bool:
    """Whether the level's fused sweeps may run out of place through lv.t (stored faces)."""
    return (OUT_OF_PLACE_JACOBI and host is not None and host[4].size == 1
            and _fusable(lv.r, lv.z, lv.t))


def _smooth_from_zero(lv: _Level, sweeps: int) -> None:
    """lv.z ← ``sweeps`` damped Jacobi sweeps from z = 0 (the first is ω r / diag)."""
    host = _host(lv)
    if sweeps >= 2 and _out_of_place(lv, host):   # ω r / diag into lv.t, the sweep into lv.z
        _kernels(lv).jacobi_out_of_place(*host, lv.r.numpy(), lv.t.numpy(), lv.z.numpy(),
                                         JACOBI_DAMPING, mode=_FUSED_MODULE.FROM_ZERO)
        sweeps -= 2
    elif host is not None and sweeps >= 2 and _fusable(lv.r, lv.z):
        _kernels(lv).jacobi(*host, lv.r.numpy(), lv.z.numpy(), JACOBI_DAMPING,
                            mode=_FUSED_MODULE.FROM_ZERO)
        sweeps -= 2
    else:
        torch.div(lv.r, lv.diag, out=lv.z).mul_(JACOBI_DAMPING)
        sweeps -= 1
    for _ in range(sweeps):
        _smooth(lv)


def _correct_and_smooth(lv: _Level, correction: torch.Tensor, coarse: _Level,
                        method: _Method, sweeps: int) -> None:
    """lv.z += scale · P correction (kept off the inactive cells by the robust method), then
    ``sweeps`` Jacobi sweeps; fused, the correction is added inside the first sweep."""
    host = _host(lv)
    mask = lv.active_mask if method.mask_inactive else None
    if (sweeps >= 2 and _out_of_place(lv, host)
            and _fusable(correction, *(() if mask is None else (mask,)))):
        # the corrected z into lv.t, and the second sweep back into lv.z
        kernels = _kernels(lv)
        kernels.jacobi_out_of_place(*host, lv.r.numpy(), lv.z.numpy(), lv.t.numpy(),
                                    JACOBI_DAMPING, mode=_FUSED_MODULE.PROLONG,
                                    coarse=correction.numpy(), scale=method.correction_scale,
                                    factors=coarse.factors,
                                    mask=None if mask is None else mask.numpy())
        kernels.jacobi_out_of_place(*host, lv.r.numpy(), lv.t.numpy(), lv.z.numpy(),
                                    JACOBI_DAMPING)
        sweeps -= 2
    elif (host is not None and sweeps >= 1
            and _fusable(lv.r, lv.z, correction, *(() if mask is None else (mask,)))):
        _kernels(lv).jacobi(*host, lv.r.numpy(), lv.z.numpy(), JACOBI_DAMPING,
                            mode=_FUSED_MODULE.PROLONG, coarse=correction.numpy(),
                            scale=method.correction_scale, factors=coarse.factors,
                            mask=None if mask is None else mask.numpy())
        sweeps -= 1
    else:
        _prolong_add(correction, lv.z, method.correction_scale, coarse.factors)
        if mask is not None:
            lv.z.mul_(mask)
    for _ in range(sweeps):
        _smooth(lv)


def _cycle(levels: list[_Level], k: int, method: _Method) -> None:
    """levels[k].z ← B levels[k].r by one multigrid cycle; B is symmetric positive definite.

    The coarse problem is solved approximately by CYCLE_GAMMA cycles (1: V-cycle, 2: W-cycle),
    each a symmetric iteration, so B stays symmetric as CG requires. ``method`` sets the scale
    of the coarse correction and whether it is kept off the inactive cells.
    """
    lv = levels[k]
    if k == len(levels) - 1:
        lv.z.zero_()
        if lv.inverse is not None:
            sol = lv.inverse @ lv.r.reshape(-1)[lv.active].double()
            lv.z.view(-1)[lv.active] = sol.to(lv.z.dtype)
        elif lv.factor is not None:
            rhs = lv.r.reshape(-1)[lv.active].unsqueeze(1).to(lv.factor.dtype)
            sol = torch.cholesky_solve(rhs, lv.factor).squeeze(1)
            lv.z.view(-1)[lv.active] = sol.to(lv.z.dtype)
        return
    sweeps = FINE_SMOOTHING_SWEEPS if k == 0 else SMOOTHING_SWEEPS
    _smooth_from_zero(lv, sweeps)
    coarse = levels[k + 1]
    _residual_restrict(lv, coarse)
    gamma = 1 if k + 2 == len(levels) else CYCLE_GAMMA
    if gamma == 1:
        _cycle(levels, k + 1, method)
        _correct_and_smooth(lv, coarse.z, coarse, method, sweeps)
    else:
        if coarse.acc is None:
            coarse.acc, coarse.rhs = torch.empty_like(coarse.z), torch.empty_like(coarse.z)
        acc, rhs = coarse.acc, coarse.rhs
        rhs.copy_(coarse.r)
        for i in range(gamma):
            _cycle(levels, k + 1, method)
            if i == 0:
                acc.copy_(coarse.z)
            else:
                acc += coarse.z
            if i + 1 < gamma:
                _residual(coarse, rhs, acc, coarse.r)
        _correct_and_smooth(lv, acc, coarse, method, sweeps)


@dataclass
class _Islands:
    """Coarse space of the high-conductivity clusters: one indicator function per cluster.

    At high contrast each cluster of the well-conducting phase (CBD islands in a poorly
    conducting AM matrix) floats at a nearly uniform potential set by weak links: a few
    near-zero-energy modes per cluster that the 2×2×2 aggregates cannot represent (a block
    straddling two clusters ties them together). Projecting them out exactly makes CG converge
    steadily instead of in plateaus. Clusters never share a face, so Zᵀ A Z is diagonal.
    """

    cells: torch.Tensor  # flat indices of the fine cells inside a cluster
    labels: torch.Tensor  # their cluster, 1..k (only the cluster cells: a fraction of the grid)
    inverse_diag: torch.Tensor  # (k + 1,) 1 / (Zᵀ A Z)_aa, 0 at index 0
    buffer: torch.Tensor  # a fine-grid scratch tensor
    # numba kernels for both corrections (a fused fine level): the same sums in the same order
    # as the torch operations, touching only the cluster cells
    fused: bool = False
    # SPARSE_ISLANDS: the faces leaving the clusters (_BoundaryFaces); None: dense passes
    boundary: _BoundaryFaces | None = None

    def correct(self, res: torch.Tensor, out: torch.Tensor) -> None:
        """out += Z (Zᵀ A Z)⁻¹ Zᵀ res (touching only the cluster cells)."""
        if self.fused and _fusable(res, out):
            _FUSED_MODULE.island_correct(self.labels.numpy(), self.cells.numpy(),
                                         res.view(-1).numpy(), self.inverse_diag.numpy(),
                                         out.view(-1).numpy())
            return
        size = self.inverse_diag.numel()
        coarse = torch.bincount(self.labels, weights=res.reshape(-1)[self.cells],
                                minlength=size)
        out.view(-1).index_add_(0, self.cells, (coarse * self.inverse_diag)[self.labels])

    def correct_residual(self, fine: _Level, res: torch.Tensor, out: torch.Tensor) -> None:
        """out += Z (Zᵀ A Z)⁻¹ Zᵀ (res − A out): fused, one pass keeps only the residual's
        sums over the clusters (Zᵀ reads nothing else); no residual array is stored."""
        host = _host(fine)
        if self.fused and host is not None and _fusable(res, out):
            _FUSED_MODULE.island_residual_correct(*host, self.labels.numpy(),
                                                  self.cells.numpy(), res.numpy(),
                                                  self.inverse_diag.numpy(), out.numpy())
            return
        _residual(fine, res, out, self.buffer)
        self.correct(self.buffer, out)


@dataclass
class _BoundaryFaces:
    """The faces between a cluster cell and an outside cell, and the clusters' electrode links
    (outside = -1): the only places where A Z c is nonzero, all that Zᵀ A z sums. Flat numpy
    arrays, sorted by the cluster cell; ``touched`` the cells A Z c reaches (ascending),
    ``cell_t`` / ``other_t`` the faces' positions in it."""

    label: np.ndarray
    cell: np.ndarray
    other: np.ndarray
    g: np.ndarray  # float64 conductance of the face (or link)
    touched: np.ndarray
    cell_t: np.ndarray
    other_t: np.ndarray
    diag: np.ndarray  # (k + 1,) Zᵀ A Z, of which inverse_diag is the inverse
    sums: np.ndarray  # scratch: Zᵀ res
    coef: np.ndarray  # scratch: the first correction's cluster values
    delta: np.ndarray  # scratch: A Z coef on the touched cells


def _floating(labels: np.ndarray, k: int, hi: int) -> tuple[np.ndarray, int]:
    """The clusters of ``labels`` (1..k) that touch neither electrode layer (0 and ``hi``),
    renumbered 1..k' in their order, the others 0 (all of them if not FLOATING_ISLANDS_ONLY)."""
    if not FLOATING_ISLANDS_ONLY or k == 0:
        return labels, k
    keep = np.ones(k + 1, dtype=bool)
    keep[0] = False
    keep[labels[0].reshape(-1)] = False
    keep[labels[hi].reshape(-1)] = False
    renumber = np.zeros(k + 1, dtype=labels.dtype)
    kept = int(keep.sum())
    renumber[keep] = np.arange(1, kept + 1, dtype=labels.dtype)
    return renumber[labels], kept


def _islands(levels: list[_Level], sigma: torch.Tensor) -> _Islands | None:
    """The floating high-conductivity clusters of ``sigma`` (above the geometric mean of its
    extremes, touching neither electrode layer: ``_floating``)."""
    fine = levels[0]
    fused = bool(FUSED_ISLANDS and fine.fused and sigma.device.type == "cpu")
    if (fused and SPARSE_ISLANDS and fine.gx is not None
            and fine.diag.dtype == sigma.dtype == torch.float64):
        return _sparse_islands(fine, sigma)
    positive = sigma[sigma > 0]
    threshold = math.sqrt(float(positive.min()) * float(positive.max()))
    high = np.zeros(fine.shape, dtype=bool)
    n1, n2, n3 = sigma.shape
    high[:n1, :n2, :n3] = (sigma > threshold).cpu().numpy()
    labels, k = _floating(*ndimage.label(high), fine.hi)
    if k == 0:
        return None
    high = labels > 0
    flat = labels.reshape(-1)
    cells = np.flatnonzero(flat)
    cells_t = torch.from_numpy(cells).to(sigma.device)
    labels_t = torch.from_numpy(flat[cells].astype(np.int64)).to(sigma.device)
    indicator = torch.from_numpy(high).to(fine.diag.dtype).to(sigma.device)
    # (A 1_H)_i on a cluster cell sums its links leaving the cluster: the diagonal of Zᵀ A Z.
    _apply(fine, indicator, fine.t)
    diag = torch.bincount(labels_t, weights=fine.t.reshape(-1)[cells_t], minlength=k + 1)
    inverse = torch.zeros_like(diag)
    inverse[1:] = 1.0 / diag[1:]  # > 0: every cluster lies on the spanning cluster
    return _Islands(cells_t, labels_t, inverse, torch.empty_like(fine.t), fused=fused)


def _sparse_islands(fine: _Level, sigma: torch.Tensor) -> _Islands | None:
    """_islands for SPARSE_ISLANDS: the same clusters (threshold and labelling), their cells
    and the faces leaving them listed by one numba pass, Zᵀ A Z summed over those faces (the
    dense form's A 1_H cancels the faces inside a cluster in floating point instead)."""
    high = _FUSED_MODULE.high_cells(sigma.numpy(), fine.shape)
    labels, k = _floating(*ndimage.label(high), fine.hi)
    if k == 0:
        return None
    host = (fine.gx, fine.gy, fine.gz, fine.b_lo, fine.b_hi)
    cells, cell_labels, *faces, diag = _FUSED_MODULE.island_space(
        labels, k, *(a.numpy() for a in host), fine.hi)
    inverse = np.zeros_like(diag)
    inverse[1:] = 1.0 / diag[1:]  # > 0: every cluster lies on the spanning cluster
    boundary = _BoundaryFaces(*faces, diag, np.zeros(k + 1), np.zeros(k + 1),
                              np.zeros(faces[4].size))
    return _Islands(torch.from_numpy(cells), torch.from_numpy(cell_labels),
                    torch.from_numpy(inverse), torch.empty_like(fine.t), fused=True,
                    boundary=boundary)


def _precondition(levels: list[_Level], cycle_levels: list[_Level], res: torch.Tensor,
                  out: torch.Tensor, method: _Method, islands: _Islands | None) -> None:
    """out ← B res: island correction, multigrid cycle, island correction (symmetric).

    ``cycle_levels``: the hierarchy the cycle runs on (``levels`` itself, or its copy in the
    method's cycle precision; residuals are cast to it and corrections back).
    """
    fine, cycle_fine = levels[0], cycle_levels[0]
    if islands is None:
        cycle_fine.r.copy_(res)
        _cycle(cycle_levels, 0, method)
        out.copy_(cycle_fine.z)
        return
    faces = islands.boundary
    if faces is not None and _fusable(res, out, cycle_fine.r, cycle_fine.z):
        labels, cells = islands.labels.numpy(), islands.cells.numpy()
        _FUSED_MODULE.island_cycle_rhs(labels, cells, res.view(-1).numpy(),
                                       islands.inverse_diag.numpy(), faces.sums, faces.coef,
                                       faces.label, faces.cell_t, faces.other_t, faces.g,
                                       faces.touched, faces.delta, cycle_fine.r.view(-1).numpy())
        _cycle(cycle_levels, 0, method)
        _FUSED_MODULE.island_cycle_out(cycle_fine.z.view(-1).numpy(), faces.sums, faces.coef,
                                       faces.diag, islands.inverse_diag.numpy(), faces.label,
                                       faces.cell, faces.other, faces.g, labels, cells,
                                       out.view(-1).numpy())
        return
    out.zero_()
    islands.correct(res, out)
    if cycle_fine is fine:
        _residual(fine, res, out, fine.r)
    else:
        _residual(fine, res, out, islands.buffer)
        cycle_fine.r.copy_(islands.buffer)
    _cycle(cycle_levels, 0, method)
    out.add_(cycle_fine.z)
    islands.correct_residual(fine, res, out)


def _pcg(levels: list[_Level], x: torch.Tensor, rel_tol: float, method: _Method,
         islands: _Islands | None = None,
         cycle_levels: list[_Level] | None = None) -> tuple[float, int, bool, float]:
    """Preconditioned CG from x (flexible CG when the cycle runs in another precision).

    Returns (dissipated power of the final x, iterations, converged, relative residual
    ‖f − A x‖₂ / ‖f‖₂ of the final x as CG updated it).
    """
    fine = levels[0]
    cycle_levels = levels if cycle_levels is None else cycle_levels
    flexible = cycle_levels is not levels
    shared = islands is None and not flexible
    if shared:
        r, z = fine.r, fine.z  # the V-cycle reads fine.r and writes fine.z: share them with CG
    else:
        r, z = torch.empty_like(fine.r), torch.empty_like(fine.z)
    fused_cg = bool(FUSED_CG and flexible and _host(fine) is not None and _fusable(x, r, z))
    r_old = torch.empty_like(r) if flexible and not fused_cg else None

    def precondition() -> None:
        if shared:
            _cycle(levels, 0, method)
        else:
            _precondition(levels, cycle_levels, r, z, method, islands)

    _apply(fine, x, r)
    r.neg_()
    r[fine.hi] += fine.b_hi  # r = f − A x, f = high boundary conductances (unit potential)
    p = torch.empty_like(x)
    q = torch.empty_like(x)
    precondition()
    p.copy_(z)
    rho = float(torch.dot(r.view(-1), z.view(-1)))
    converged = False
    it = 0
    # the robust stop compares its error estimate with the dissipated power, tracked as E(x_0)
    # minus the decreases (within 1.8e-8 G of E(x_k) on every recorded step, docs/solvers.md)
    history = _History(_energy(fine, x) if method.geometric_tail else math.nan)
    flat = tuple(a.view(-1).numpy() for a in (x, r, z, p, q)) if fused_cg else ()
    while it < method.max_iterations and rho > 0:
        it += 1
        _apply(fine, p, q)
        if fused_cg:
            pq, rp = _FUSED_MODULE.two_dots(flat[3], flat[4], flat[1])
        else:
            pq = float(torch.dot(p.view(-1), q.view(-1)))
        if pq <= 0:
            break
        if not fused_cg:
            # r.p = r.z = rho in exact arithmetic; the flexible form takes r.p (exact line search)
            rp = float(torch.dot(r.view(-1), p.view(-1))) if flexible else rho
        alpha = rp / pq
        if fused_cg:
            _FUSED_MODULE.cg_update(flat[0], flat[3], flat[1], flat[4], alpha)
        else:
            x.add_(p, alpha=alpha)
            if flexible:
                r_old.copy_(r)
            r.add_(q, alpha=-alpha)
        # alpha * r.p is the exact decrease of the dissipated power in this step; the fast
        # method compares it with the current through the high electrode (a cheap estimate of
        # the conductance), the robust one with the dissipated power.
        current = float((fine.b_hi * (1.0 - x[fine.hi])).sum())
        history.step(alpha * rp)
        if it >= 2 and _converged(history, method, rel_tol, current):
            converged = True
            break
        precondition()
        if fused_cg:  # Polak-Ribiere with r - r_old = -alpha q
            rho_new, zq = _FUSED_MODULE.two_dots(flat[2], flat[1], flat[4])
            beta = -alpha * zq / rho
        else:
            rho_new = float(torch.dot(r.view(-1), z.view(-1)))
            beta = rho_new / rho
            if flexible:  # Polak-Ribiere: z.(r - r_old) / rho_old
                beta -= float(torch.dot(r_old.view(-1), z.view(-1))) / rho
        torch.add(z, p, alpha=beta, out=p)
        rho = rho_new
    else:
        converged = rho == 0.0  # residual exactly zero (e.g. a straight channel); < 0: broken B
    # CG's (recursively updated) residual: no extra operator application on the fast path
    residual = float(torch.linalg.vector_norm(r) / torch.linalg.vector_norm(fine.b_hi))
    return _energy(fine, x), it, converged, residual


@dataclass
class _History:
    """What the stop rule reads: each step's decrease of the dissipated power, and that power
    (E(x_0) minus the decreases; nan where the rule does not read it, the fast method)."""

    energy: float
    decreases: list[float] = dataclasses.field(default_factory=list)

    def step(self, decrease: float) -> None:
        self.decreases.append(decrease)
        self.energy -= decrease


def _converged(history: _History, method: _Method, rel_tol: float, current: float) -> bool:
    """Whether the dissipated power is within ``rel_tol`` of the conductance.

    CG's remaining error in energy is exactly the sum of all its future decreases. The fast
    method: its last decrease / TOLERANCE_SAFETY below rel_tol × the electrode current. The
    robust one (STOP_RULE "energy"): the extrapolated remaining error ε
    (ENERGY_TAIL_SAFETY × the geometric tail) below rel_tol × (E − ε), a lower bound of the
    conductance when ε bounds the error, i.e. (E − G) / G ≤ rel_tol. The electrode current is
    no such reference at high contrast: on a 64³ electrode at 1e6 it was 56× the conductance at
    iteration 10 (and negative at others), which made the old rule ("current", until
    2026-12-03: TAIL_SAFETY × the tail below rel_tol × current) stop 5.6 % off at rel_tol 1e-2.
    """
    if not method.geometric_tail:  # enough where CG converges quickly
        return history.decreases[-1] / TOLERANCE_SAFETY < rel_tol * current
    if STOP_RULE == "current":
        return _geometric_tail(history.decreases, TAIL_SAFETY) < rel_tol * current
    error = _geometric_tail(history.decreases, ENERGY_TAIL_SAFETY)
    return error * (1.0 + rel_tol) < rel_tol * history.energy


def _geometric_tail(decreases: list[float], safety: float) -> float:
    """``safety`` × the geometric series through the last TAIL_WINDOW decreases; inf while
    there are too few of them or while they are not falling (0 once a decrease is 0)."""
    last = decreases[-1]
    if len(decreases) <= TAIL_WINDOW or last <= 0:
        return math.inf if last > 0 else 0.0
    ratio = (last / decreases[-1 - TAIL_WINDOW]) ** (1.0 / TAIL_WINDOW)
    if not ratio < 1.0:
        return math.inf
    return safety * last * ratio / (1.0 - ratio)


def _energy(fine: _Level, x: torch.Tensor) -> float:
    """Dissipated power Σ g (Δx)² + boundary terms at unit drop: an upper bound of G."""
    host = _host(fine)
    if host is not None and _fusable(x, fine.b_lo, fine.b_hi):
        return _kernels(fine).energy(*host, x.numpy(), fine.b_lo.numpy(), fine.b_hi.numpy(),
                                    fine.hi)
    e = 0.0
    for g, dim in ((fine.gx, 0), (fine.gy, 1), (fine.gz, 2)):
        d = torch.diff(x, dim=dim)
        e += float(d.mul_(d).mul_(g).sum())  # torch sums float32 pairwise: ~1e-7 relative
    e += float((fine.b_lo.double() * x[0].double() ** 2).sum())
    e += float((fine.b_hi.double() * (1.0 - x[fine.hi].double()) ** 2).sum())
    return e


def percolating_mask(conducting: np.ndarray) -> np.ndarray:
    """Voxels of the 6-connected clusters that touch both end faces of axis 0."""
    labels, n = ndimage.label(conducting)
    if n == 0:
        return np.zeros(conducting.shape, dtype=bool)
    both = np.intersect1d(np.unique(labels[0]), np.unique(labels[-1]))
    both = both[both > 0]
    keep = np.zeros(n + 1, dtype=bool)
    keep[both] = True
    return keep[labels]


def _validate(conductivity: np.ndarray, axis: int, rel_tol: float, device: str) -> None:
    if not isinstance(conductivity, np.ndarray) or conductivity.ndim != 3:
        raise ValueError("conductivity: expected a 3D numpy array of per-voxel conductivities")
    if min(conductivity.shape) < 2:
        raise ValueError(f"conductivity: every dimension must be >= 2, got {conductivity.shape}")
    if conductivity.dtype.kind not in "biuf":
        raise ValueError(f"conductivity: expected a real numeric dtype, got {conductivity.dtype}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis: accepted values are 0, 1, 2; got {axis!r}")
    if not (0.0 < rel_tol <= 0.1):
        raise ValueError(f"rel_tol: accepted range is (0, 0.1]; got {rel_tol!r}")
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device: accepted values are 'cpu', 'cuda', 'cuda:N'; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available; use 'cpu'")


def _fine_stencil(sigma: torch.Tensor):
    """Face conductances (harmonic means) and the half-voxel links (2σ) to the two electrodes."""
    def harmonic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # 2ab / (a + b); 0 when either is 0 (the clamp only guards 0 / 0)
        return (a * b).mul_(2.0).div_((a + b).clamp_(min=HARMONIC_GUARD))

    gx = harmonic(sigma[:-1], sigma[1:])
    gy = harmonic(sigma[:, :-1], sigma[:, 1:])
    gz = harmonic(sigma[:, :, :-1], sigma[:, :, 1:])
    return gx, gy, gz, 2.0 * sigma[0], 2.0 * sigma[-1]


def _padded_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The finest level's shape: every dimension rounded up to even (padding is inactive)."""
    return tuple(n + n % 2 for n in shape)  # type: ignore[return-value]


def _initial_guess(sigma: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """The linear profile of a straight channel, on the conducting cells only, padded."""
    n1, n2, n3 = sigma.shape
    x = torch.zeros(shape, dtype=sigma.dtype, device=sigma.device)
    profile = (torch.arange(n1, dtype=sigma.dtype, device=sigma.device) + 0.5) / n1
    x[:n1, :n2, :n3] = profile[:, None, None] * (sigma > 0)
    return x


def _fine_level(sigma: torch.Tensor,
                face_dtype: torch.dtype | None = None) -> tuple[_Level, torch.Tensor]:
    """The finest level of ``sigma`` (its stencil and buffers) and the initial guess.

    On a fused CPU grid (and FUSED_SETUP) one numba pass over the field writes the faces, the
    diagonal, the electrode links and the guess; otherwise the torch operations do (about 45
    whole-array passes). The same numbers either way (checked bit for bit by the tests).
    ``face_dtype``: store the faces in this precision on a fused grid (the diagonal is then the
    sum of the stored faces in sigma's: ROBUST_FLOAT32_FACES).
    """
    n1 = sigma.shape[0]
    shape = _padded_shape(tuple(sigma.shape))
    fused = _fused_kernels() if (FUSED_SETUP and _wants_fused(math.prod(shape),
                                                               sigma.device)) else None
    if fused is None:
        return _make_level(*_fine_stencil(sigma), n1 - 1), _initial_guess(sigma, shape)
    dt, dev = sigma.dtype, sigma.device
    if shape == tuple(sigma.shape):
        padded = sigma.contiguous()
    else:
        padded = torch.zeros(shape, dtype=dt, device=dev)
        padded[tuple(slice(0, n) for n in sigma.shape)] = sigma
    s1, s2, s3 = shape
    ft = dt if face_dtype is None else face_dtype
    gx, gy, gz = (torch.empty(face, dtype=ft, device=dev)
                  for face in ((s1 - 1, s2, s3), (s1, s2 - 1, s3), (s1, s2, s3 - 1)))
    diag, x = torch.empty(shape, dtype=dt, device=dev), torch.empty(shape, dtype=dt, device=dev)
    b_lo, b_hi = torch.empty((s2, s3), dtype=dt, device=dev), torch.empty((s2, s3), dtype=dt,
                                                                           device=dev)
    profile = (torch.arange(n1, dtype=dt, device=dev) + 0.5) / n1
    fused.fine_setup(padded.numpy(), profile.numpy(), n1 - 1, HARMONIC_GUARD, gx.numpy(),
                     gy.numpy(), gz.numpy(), diag.numpy(), b_lo.numpy(), b_hi.numpy(), x.numpy())
    level = _Level(gx, gy, gz, diag, b_lo, b_hi, n1 - 1,
                   r=torch.zeros(shape, dtype=dt, device=dev),
                   z=torch.zeros(shape, dtype=dt, device=dev),
                   t=torch.zeros(shape, dtype=dt, device=dev))
    return level, x


def _run(sigma: torch.Tensor, rel_tol: float, method: _Method,
         binary: bool = False) -> tuple[float, int, bool, float]:
    """One multigrid-CG solve of the normalised field ``sigma`` (max 1, 0 off the cluster);
    ``binary``: every conducting value is 1 (its faces may then be kept as bits)."""
    sigma = sigma.to(method.dtype)
    n1, n2, n3 = sigma.shape
    shared_faces = (ROBUST_FLOAT32_FACES and method.cycle_dtype is not None
                    and method.cycle_dtype != method.dtype)
    fine, x = _fine_level(sigma, method.cycle_dtype if shared_faces else None)
    levels = _hierarchy_from(fine, method.coarsest_max_cells)
    if method.mask_inactive:
        for level in levels:
            level.active_mask = _coupled(level).to(method.dtype)
    islands = _islands(levels, sigma) if method.deflate_islands else None
    cycle_levels = levels
    if method.cycle_dtype is not None and method.cycle_dtype != method.dtype:
        cycle_levels = [_cast_level(level, method.cycle_dtype) for level in levels]
        levels = levels[:1]  # CG needs only the fine operator in full precision
    if levels[0].fused and COMPACT_FINE:
        for level in {id(lv): lv for lv in (levels[0], cycle_levels[0])}.values():
            _compact(level, sigma.to(level.diag.dtype))
    elif (binary and levels[0].fused and BINARY_FACES and cycle_levels is levels
            and not method.mask_inactive):  # the fast method's one hierarchy
        _pack_binary(levels[0])
    del sigma
    with torch.no_grad():
        conductance, iterations, converged, residual = _pcg(levels, x, rel_tol, method, islands,
                                                            cycle_levels)
    return conductance * n1 / (n2 * n3), iterations, converged, residual


def solve(conductivity: np.ndarray, axis: int = 0, rel_tol: float = 1e-3,
          device: str = "cpu", *, spanning_only: bool = False) -> TransportSolution:
    """Effective conductivity of a voxel field along ``axis``, relative to its largest value.

    ``conductivity``: 3D per-voxel field, 0 = non-conducting. ``rel_tol``: target relative
    error of the result (the reported value is an upper bound of the exact discrete one).

    The fast float32 method runs when the contrast (largest / smallest conductivity on the
    spanning cluster) is at most FAST_MAX_CONTRAST; above it, or when the fast method did not
    converge, the robust float64 method runs (see docs/solvers.md for the measurements). The
    returned ``method`` names the one that produced the value; ``converged`` is False only if
    the robust method failed too (``kernels.metrics.solvers.solve`` then raises).

    ``spanning_only=True`` says that every conducting voxel already lies on a cluster touching
    both end faces of ``axis`` (what ``kernels.metrics.solvers.solve`` passes, having labelled
    the clusters itself): the clusters are then not labelled a second time (≈ 25 ms at 128³).
    """
    start = time.perf_counter()
    _validate(conductivity, axis, rel_tol, device)
    if not isinstance(spanning_only, bool):
        raise ValueError(f"spanning_only: accepted values are True, False; got {spanning_only!r}")
    field = np.ascontiguousarray(np.moveaxis(conductivity, axis, 0), dtype=np.float32)
    if not np.all(np.isfinite(field)) or field.min() < 0:
        raise ValueError("conductivity: values must be finite and >= 0")
    mask = field > 0 if spanning_only else percolating_mask(field > 0)
    if not mask.any():
        return TransportSolution(0.0, 0, True, time.perf_counter() - start, percolating=False,
                                 method="none (not percolating)")
    dev = torch.device(device)
    reference = float(field.max())  # the result is relative to it; keeps numbers O(1)
    if spanning_only:  # the field is 0 off the cluster already
        contrast = reference / float(np.min(field, where=mask, initial=np.inf))
        sigma = torch.from_numpy(field).to(dev) / reference
    else:
        contrast = float(np.max(field, where=mask, initial=0.0)) / float(
            np.min(field, where=mask, initial=np.inf))
        sigma = torch.from_numpy(field).to(dev) * torch.from_numpy(mask).to(dev)
        sigma /= reference
    del field, mask
    fast_iterations, tried = 0, ""
    if contrast <= FAST_MAX_CONTRAST:
        relative, fast_iterations, converged, residual = _run(sigma, rel_tol, FAST,
                                                              binary=contrast == 1.0)
        if converged:
            return TransportSolution(float(relative), fast_iterations, True,
                                     time.perf_counter() - start, residual=residual,
                                     method=f"native {FAST.name}")
        tried = f"native {FAST.name} (not converged in {fast_iterations} iterations) -> "
    relative, iterations, converged, residual = _run(sigma, rel_tol, ROBUST)
    return TransportSolution(float(relative), fast_iterations + iterations, converged,
                             time.perf_counter() - start, residual=residual,
                             method=f"{tried}native {ROBUST.name}")


def warm_up() -> float:
    """Load numba and the fused kernels' compiled code (from numba's disk cache) for both
    methods' precisions; returns the CPU seconds it took.

    Why: a process's first fused solve otherwise pays it inside the solve (≈ 0.4 CPU-s to load
    numba, plus loading each kernel's compiled code on first call; the first compile on a
    machine takes several CPU-s more). A process that solves many cubes pays it once; call this
    where a worker starts, or before timing a solve. Does nothing (but cost) without numba.
    """
    global FUSED_MIN_CELLS
    start = time.process_time()
    if USE_FUSED and _fused_kernels():
        size, saved = 12, FUSED_MIN_CELLS
        grid = np.indices((size, size, size)).sum(axis=0)
        pore = (grid % 3 != 0).astype(np.float32)  # percolating, binary: the fast method
        contrast = np.where(grid % 2 == 0, 1.0, 1e-3).astype(np.float32)  # the robust one
        FUSED_MIN_CELLS = 0
        try:
            for field in (pore, contrast, pore * contrast):
                solve(field)
        finally:
            FUSED_MIN_CELLS = saved
    return time.process_time() - start


solve.takes_spanning_only = True  # kernels.metrics.solvers.solve passes spanning_only=True
