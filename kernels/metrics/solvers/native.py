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
definite on the percolating cluster. It is preconditioned with one V-cycle of aggregation
multigrid: 2×2×2 blocks (2×2 or 2 in dimensions thinner than 4 cells), Galerkin coarse operators (which for piecewise-constant transfer are
again 7-point stencils whose face conductances are sums of fine face conductances, so coarse
grids keep the exact connectivity of the pore network), damped Jacobi smoothing, an
over-corrected coarse-grid correction, and a dense Cholesky solve on the coarsest grid.

Stopping: CG minimises the dissipated power ``E(φ) = Σ g (Δφ)²`` over the Krylov space, and
``E(φ) ≥ G`` with ``E(φ) − G = ‖φ − φ*‖²_A``: the reported conductance is this upper bound,
whose error is quadratic in the field error. Each CG step lowers ``E`` by exactly ``α ρ``; the
iteration stops when that decrease falls below ``rel_tol / 4`` times the current (with this
preconditioner the error left was at most ~1.5 times the last decrease on procedural
electrodes, see docs/solvers.md).
"""

from __future__ import annotations

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
MAX_ITERATIONS = 200
# Stop when the last step lowered the dissipated power by less than this fraction of rel_tol:
# on procedural electrodes the remaining error was at most ~1.5x the last decrease.
TOLERANCE_SAFETY = 0.25


@dataclass
class _Level:
    """One grid of the hierarchy: its 7-point stencil and its work buffers."""

    gx: torch.Tensor  # conductance of the face between (i, j, k) and (i+1, j, k)
    gy: torch.Tensor
    gz: torch.Tensor
    diag: torch.Tensor  # sum of face + boundary conductances; 1 on inactive cells
    b_lo: torch.Tensor  # (n2, n3) conductance to the low Dirichlet boundary, on layer 0
    b_hi: torch.Tensor  # (n2, n3) conductance to the high Dirichlet boundary, on layer `hi`
    hi: int  # layer of the high boundary (the last unpadded layer)
    r: torch.Tensor  # right-hand side of the V-cycle on this level
    z: torch.Tensor  # correction computed by the V-cycle
    t: torch.Tensor  # scratch
    acc: torch.Tensor | None = None  # sum of the W-cycle's corrections (coarse levels)
    rhs: torch.Tensor | None = None  # copy of r kept during a W-cycle (coarse levels)
    inverse: torch.Tensor | None = None  # dense inverse on the active cells (coarsest level)
    factors: tuple[int, int, int] = (2, 2, 2)  # block size that made this level from the finer
    active: torch.Tensor | None = None  # flat indices of the active cells (coarsest level only)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.diag.shape)  # type: ignore[return-value]


def _apply(level: _Level, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = A x for the 7-point stencil of ``level`` (in place: no allocation)."""
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
        faces.append(_sum_pairs(g, tuple(e for e in halved if e != d)).contiguous())
    sides = tuple(e - 1 for e in halved if e > 0)  # b_lo, b_hi are (n2, n3)
    b_lo, b_hi = _sum_pairs(level.b_lo, sides), _sum_pairs(level.b_hi, sides)
    coarse = _make_level(*faces, b_lo, b_hi, level.hi // factors[0])
    coarse.factors = factors
    return coarse


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
    raw = _face_sum(level.gx, level.gy, level.gz, level.shape)
    raw[0] += level.b_lo
    raw[level.hi] += level.b_hi
    active = torch.nonzero(raw.reshape(-1) > 0).reshape(-1)
    level.active = active
    if active.numel():
        # a dense inverse: one small matrix-vector product per visit of the coarsest level
        level.inverse = torch.cholesky_inverse(torch.linalg.cholesky(matrix[active][:, active]))


def _hierarchy(gx: torch.Tensor, gy: torch.Tensor, gz: torch.Tensor, b_lo: torch.Tensor,
               b_hi: torch.Tensor) -> list[_Level]:
    """Fine level plus Galerkin coarse levels down to at most COARSEST_MAX_CELLS cells."""
    levels = [_make_level(gx, gy, gz, b_lo, b_hi, gx.shape[0])]
    while levels[-1].diag.numel() > COARSEST_MAX_CELLS:
        factors = _coarsening_factors(levels[-1].shape)
        if factors == (1, 1, 1):
            break
        levels.append(_coarsen(levels[-1], factors))
    _invert_coarsest(levels[-1])
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


def _smooth(lv: _Level) -> None:
    """One damped Jacobi sweep on lv.z for the right-hand side lv.r."""
    _apply(lv, lv.z, lv.t)
    torch.sub(lv.r, lv.t, out=lv.t)
    lv.z.addcdiv_(lv.t, lv.diag, value=JACOBI_DAMPING)


def _cycle(levels: list[_Level], k: int) -> None:
    """levels[k].z ← B levels[k].r by one multigrid cycle; B is symmetric positive definite.

    The coarse problem is solved approximately by CYCLE_GAMMA cycles (1: V-cycle, 2: W-cycle),
    each a symmetric iteration, so B stays symmetric as CG requires.
    """
    lv = levels[k]
    if k == len(levels) - 1:
        lv.z.zero_()
        if lv.inverse is not None:
            sol = lv.inverse @ lv.r.reshape(-1)[lv.active].double()
            lv.z.view(-1)[lv.active] = sol.to(lv.z.dtype)
        return
    torch.div(lv.r, lv.diag, out=lv.z).mul_(JACOBI_DAMPING)  # first sweep from z = 0
    sweeps = FINE_SMOOTHING_SWEEPS if k == 0 else SMOOTHING_SWEEPS
    for _ in range(sweeps - 1):
        _smooth(lv)
    _apply(lv, lv.z, lv.t)
    torch.sub(lv.r, lv.t, out=lv.t)
    coarse = levels[k + 1]
    _restrict(lv.t, coarse.r, coarse.factors)
    gamma = 1 if k + 2 == len(levels) else CYCLE_GAMMA
    if gamma == 1:
        _cycle(levels, k + 1)
        _prolong_add(coarse.z, lv.z, COARSE_CORRECTION_SCALE, coarse.factors)
    else:
        if coarse.acc is None:
            coarse.acc, coarse.rhs = torch.empty_like(coarse.z), torch.empty_like(coarse.z)
        acc, rhs = coarse.acc, coarse.rhs
        rhs.copy_(coarse.r)
        for i in range(gamma):
            _cycle(levels, k + 1)
            if i == 0:
                acc.copy_(coarse.z)
            else:
                acc += coarse.z
            if i + 1 < gamma:
                _apply(coarse, acc, coarse.t)
                torch.sub(rhs, coarse.t, out=coarse.r)
        _prolong_add(acc, lv.z, COARSE_CORRECTION_SCALE, coarse.factors)
    for _ in range(sweeps):
        _smooth(lv)


def _pcg(levels: list[_Level], x: torch.Tensor, rel_tol: float) -> tuple[float, int, bool]:
    """Preconditioned CG from x; returns (dissipated power of the final x, iterations, converged)."""
    fine = levels[0]
    r, z = fine.r, fine.z  # the V-cycle reads fine.r and writes fine.z: share them with CG
    _apply(fine, x, r)
    r.neg_()
    r[fine.hi] += fine.b_hi  # r = f − A x, f = high boundary conductances (unit potential)
    p = torch.empty_like(x)
    q = torch.empty_like(x)
    _cycle(levels, 0)
    p.copy_(z)
    rho = float(torch.dot(r.view(-1), z.view(-1)))
    converged = False
    it = 0
    while it < MAX_ITERATIONS and rho > 0:
        it += 1
        _apply(fine, p, q)
        pq = float(torch.dot(p.view(-1), q.view(-1)))
        if pq <= 0:
            break
        alpha = rho / pq
        x.add_(p, alpha=alpha)
        r.add_(q, alpha=-alpha)
        # alpha * rho is the exact decrease of the dissipated power in this step; compare it
        # with the current through the high electrode (a cheap estimate of the conductance).
        current = float((fine.b_hi * (1.0 - x[fine.hi])).sum())
        if it >= 2 and alpha * rho < rel_tol * TOLERANCE_SAFETY * current:
            converged = True
            break
        _cycle(levels, 0)
        rho_new = float(torch.dot(r.view(-1), z.view(-1)))
        torch.add(z, p, alpha=rho_new / rho, out=p)
        rho = rho_new
    else:
        converged = rho == 0.0  # residual exactly zero (e.g. a straight channel); < 0: broken B
    return _energy(fine, x), it, converged


def _energy(fine: _Level, x: torch.Tensor) -> float:
    """Dissipated power Σ g (Δx)² + boundary terms at unit drop: an upper bound of G."""
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
        return (a * b).mul_(2.0).div_((a + b).clamp_(min=1e-30))

    gx = harmonic(sigma[:-1], sigma[1:])
    gy = harmonic(sigma[:, :-1], sigma[:, 1:])
    gz = harmonic(sigma[:, :, :-1], sigma[:, :, 1:])
    return gx, gy, gz, 2.0 * sigma[0], 2.0 * sigma[-1]


def solve(conductivity: np.ndarray, axis: int = 0, rel_tol: float = 1e-3,
          device: str = "cpu") -> TransportSolution:
    """Effective conductivity of a voxel field along ``axis``, relative to its largest value.

    ``conductivity``: 3D per-voxel field, 0 = non-conducting. ``rel_tol``: target relative
    error of the result (the reported value is an upper bound of the exact discrete one).
    """
    start = time.perf_counter()
    _validate(conductivity, axis, rel_tol, device)
    field = np.ascontiguousarray(np.moveaxis(conductivity, axis, 0), dtype=np.float32)
    if not np.all(np.isfinite(field)) or field.min() < 0:
        raise ValueError("conductivity: values must be finite and >= 0")
    mask = percolating_mask(field > 0)
    if not mask.any():
        return TransportSolution(0.0, 0, True, time.perf_counter() - start, percolating=False)
    dev = torch.device(device)
    reference = float(field.max())  # the result is relative to it; keeps numbers O(1)
    sigma = torch.from_numpy(field).to(dev) * torch.from_numpy(mask).to(dev)
    sigma /= reference
    del field
    n1, n2, n3 = sigma.shape
    levels = _hierarchy(*_fine_stencil(sigma))

    # Initial guess: the linear profile of a straight channel, on the percolating cluster only.
    x = torch.zeros(levels[0].shape, dtype=torch.float32, device=dev)
    profile = (torch.arange(n1, dtype=torch.float32, device=dev) + 0.5) / n1
    x[:n1, :n2, :n3] = profile[:, None, None] * (sigma > 0)
    del sigma, mask

    with torch.no_grad():
        conductance, iterations, converged = _pcg(levels, x, rel_tol)
    relative = conductance * n1 / (n2 * n3)
    return TransportSolution(float(relative), iterations, converged, time.perf_counter() - start)
