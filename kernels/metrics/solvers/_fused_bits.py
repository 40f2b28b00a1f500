"""Fused CPU kernels for a binary finest level whose faces are bits: one byte per cell (numba).

Why: on a binary field (the pore solve: every voxel 0 or 1) every face conductance is 0 or 1,
yet the stored finest level keeps three float32 face arrays, 12 of the 28 bytes a Jacobi sweep
moves per cell. Here each cell's byte says which of its six faces conduct (bit set: face value
1), so a sweep reads the byte, the diagonal, x and r and writes one value: 17 bytes. The face
values are exactly the stored ones and every kernel does the stored-face kernels' operations
in their order (a closed face still subtracts 0 · x, as the stored 0.0 does), so the numbers are
the same bit for bit (``tests/test_solver_fused.py``). Measured: docs/solvers.md, "Speed: face
bits, floating clusters, float32 robust faces".

The kernels take the stencil as ``_fused`` does, ``(diag, bits, bits, bits, sig, binary,
tiny)``: ``native`` passes the bits array where the face arrays go, and calls this module's
functions instead of ``_fused``'s on such a level (``native._kernels``).
"""

from __future__ import annotations

import numpy as np

from kernels.metrics.solvers._fused import (
    FROM_ZERO,
    PLAIN,
    PROLONG,
    _dummy,
    _jit,
    _jit_sum,
    _prepare_plane,
)

__all__ = ["FROM_ZERO", "PLAIN", "PROLONG", "apply", "energy", "jacobi",
           "jacobi_out_of_place", "pack", "residual", "residual_restrict"]

# a cell's face bits: the face to the neighbour at i - 1, i + 1, j - 1, j + 1, k - 1, k + 1
XM, XP, YM, YP, ZM, ZP = 1, 2, 4, 8, 16, 32


@_jit
def _pack(gx, gy, gz, bits):  # pragma: no cover - jitted
    """bits from the stored faces, row by row (loops, not calls: a call per row passing its
    arrays costs their reference counts); False when a face is neither 0 nor 1."""
    n1, n2, n3 = bits.shape
    bad = 0
    zero = np.uint8(0)
    xm, xp, ym, yp = np.uint8(XM), np.uint8(XP), np.uint8(YM), np.uint8(YP)
    zm, zp = np.uint8(ZM), np.uint8(ZP)
    for i in range(n1):
        for j in range(n2):
            row = bits[i, j]
            for k in range(n3):
                row[k] = zero
            if i > 0:
                face = gx[i - 1, j]
                for k in range(n3):
                    row[k] |= xm if face[k] == 1 else zero
            if i < n1 - 1:
                face = gx[i, j]
                for k in range(n3):
                    v = face[k]
                    row[k] |= xp if v == 1 else zero
                    bad += (v != 0) & (v != 1)
            if j > 0:
                face = gy[i, j - 1]
                for k in range(n3):
                    row[k] |= ym if face[k] == 1 else zero
            if j < n2 - 1:
                face = gy[i, j]
                for k in range(n3):
                    v = face[k]
                    row[k] |= yp if v == 1 else zero
                    bad += (v != 0) & (v != 1)
            face = gz[i, j]
            for k in range(n3 - 1):
                v = face[k]
                row[k] |= zp if v == 1 else zero
                bad += (v != 0) & (v != 1)
            for k in range(n3 - 1):
                row[k + 1] |= zm if face[k] == 1 else zero
    return bad == 0


def pack(gx: np.ndarray, gy: np.ndarray, gz: np.ndarray, shape: tuple[int, int, int]
         ) -> np.ndarray | None:
    """The face bits of stored faces gx (n1 - 1, n2, n3), gy, gz of a level of ``shape``, or
    None when some face is neither 0 nor 1 (the level then keeps its stored faces)."""
    bits = np.empty(shape, np.uint8)
    return bits if _pack(gx, gy, gz, bits) else None


APPLY, RESIDUAL, SWEEP = 0, 1, 2  # what a plane kernel writes: A x, r - A x, the Jacobi update


@_jit
def _edge_cells(d, bits, xc, xm, xp, has_xm, has_xp, r, z, omega, rows, full, one,
                zero, kind):  # pragma: no cover - jitted
    """The cells ``_inner`` leaves (all cells of ``rows`` if full, else their two end cells):
    A x with ``_fused._plane``'s terms in its order, a term only where the neighbour exists;
    then z = A x, r - A x or the Jacobi update (``kind``)."""
    n2, n3 = xc.shape
    xm_, xp_, ym_, yp_ = np.uint8(XM), np.uint8(XP), np.uint8(YM), np.uint8(YP)
    zm_, zp_ = np.uint8(ZM), np.uint8(ZP)
    for j in rows:
        step = 1 if full or n3 < 2 else n3 - 1
        for k in range(0, n3, step):
            b = bits[j, k]
            a = d[j, k] * xc[j, k]
            if has_xm:
                a -= (one if b & xm_ else zero) * xm[j, k]
            if has_xp:
                a -= (one if b & xp_ else zero) * xp[j, k]
            if j > 0:
                a -= (one if b & ym_ else zero) * xc[j - 1, k]
            if j < n2 - 1:
                a -= (one if b & yp_ else zero) * xc[j + 1, k]
            if k < n3 - 1:
                a -= (one if b & zp_ else zero) * xc[j, k + 1]
            if k > 0:
                a -= (one if b & zm_ else zero) * xc[j, k - 1]
            if kind == SWEEP:
                z[j, k] = xc[j, k] + (omega * (r[j, k] - a)) / d[j, k]
            elif kind == RESIDUAL:
                z[j, k] = r[j, k] - a
            else:
                z[j, k] = a


@_jit
def _inner(d, bits, xm, xc, xp, r, z, omega, one, zero, kind):  # pragma: no cover - jitted
    """Rows and columns 1 to n - 2 of a plane with both neighbouring planes, one loop: A x
    (every term present, ``_fused._inner_sweep``'s order), then z = the Jacobi update, r - A x
    or A x (``kind``: loop-invariant, so the compiler unswitches the loop). The bit masks are
    uint8 like the bits (an int64 mask widens the vectorised loop's integer lanes: 7 % slower
    measured)."""
    n2, n3 = z.shape
    xm_, xp_, ym_, yp_ = np.uint8(XM), np.uint8(XP), np.uint8(YM), np.uint8(YP)
    zm_, zp_ = np.uint8(ZM), np.uint8(ZP)
    for j in range(1, n2 - 1):
        for k in range(1, n3 - 1):
            b = bits[j, k]
            a = (d[j, k] * xc[j, k] - (one if b & xm_ else zero) * xm[j, k]
                 - (one if b & xp_ else zero) * xp[j, k]
                 - (one if b & ym_ else zero) * xc[j - 1, k]
                 - (one if b & yp_ else zero) * xc[j + 1, k]
                 - (one if b & zp_ else zero) * xc[j, k + 1]
                 - (one if b & zm_ else zero) * xc[j, k - 1])
            if kind == SWEEP:
                z[j, k] = xc[j, k] + (omega * (r[j, k] - a)) / d[j, k]
            elif kind == RESIDUAL:
                z[j, k] = r[j, k] - a
            else:
                z[j, k] = a


@_jit
def _plane(d, bits, xm, xc, xp, has_xm, has_xp, r, z, omega, one, zero, kind, every_row,
           outer_rows, inner_rows):  # pragma: no cover - jitted
    """One plane of A x, r - A x or the Jacobi update (``kind``) into z: the inner cells in
    one loop, the plane's edges cell by cell."""
    n2, n3 = z.shape
    if has_xm and has_xp and n2 > 2 and n3 > 2:
        _inner(d, bits, xm, xc, xp, r, z, omega, one, zero, kind)
        _edge_cells(d, bits, xc, xm, xp, True, True, r, z, omega, outer_rows, True, one, zero,
                    kind)
        _edge_cells(d, bits, xc, xm, xp, True, True, r, z, omega, inner_rows, False, one,
                    zero, kind)
    else:
        _edge_cells(d, bits, xc, xm, xp, has_xm, has_xp, r, z, omega, every_row, True, one,
                    zero, kind)


@_jit
def _sweep_apply(diag, bits, x, r, out, coarse, factors, mode):  # pragma: no cover - jitted
    """``_fused._sweep_apply``'s modes 0 (out = A x), 1 (out = r - A x) and 2 (coarse =
    Pᵀ (r - A x), out unused) on face bits."""
    n1, n2, n3 = x.shape
    dt = x.dtype
    one, zero = diag.dtype.type(1.0), diag.dtype.type(0.0)
    tmp = np.zeros((n2, n3), dt)
    every_row = np.arange(n2)
    outer_rows = np.array([0, n2 - 1]) if n2 > 1 else np.array([0])
    inner_rows = np.arange(1, n2 - 1)
    f1, f2, f3 = factors
    if mode == 2:
        coarse[: n1 // f1, : n2 // f2, : n3 // f3] = 0
    omega = zero  # unused: no sweep
    kind = APPLY if mode == 0 else RESIDUAL
    for i in range(n1):
        dst = tmp if mode >= 2 else out[i]
        has_xm, has_xp = i > 0, i < n1 - 1
        xm = x[i - 1] if has_xm else tmp
        xp = x[i + 1] if has_xp else tmp
        _plane(diag[i], bits[i], xm, x[i], xp, has_xm, has_xp, r[i], dst, omega, one, zero,
               kind, every_row, outer_rows, inner_rows)
        if mode == 2:  # the rows summed into the coarse plane as _fused._post_row sums them
            cp = coarse[i // f1]
            for j in range(n2):
                jc = j // f2
                if f3 == 2:
                    for k in range(n3 // 2):
                        cp[jc, k] += dst[j, 2 * k] + dst[j, 2 * k + 1]
                else:
                    for k in range(n3):
                        cp[jc, k] += dst[j, k]


def apply(diag, bits, _gy, _gz, _sig, _binary, _tiny, x, out):
    """out = A x on face bits."""
    _sweep_apply(diag, bits, x, x, out, _dummy(x), (1, 1, 1), 0)


def residual(diag, bits, _gy, _gz, _sig, _binary, _tiny, r, x, out):
    """out = r - A x on face bits."""
    _sweep_apply(diag, bits, x, r, out, _dummy(x), (1, 1, 1), 1)


def residual_restrict(diag, bits, _gy, _gz, _sig, _binary, _tiny, r, x, coarse, factors):
    """coarse[:c1, :c2, :c3] = block sums of (r - A x) on face bits."""
    _sweep_apply(diag, bits, x, r, x, coarse, tuple(factors), 2)


@_jit
def _jacobi_out_of_place(diag, bits, r, src, dst, omega, mode, coarse, scale, factors, mask,
                         masked):  # pragma: no cover - jitted
    n1, n2, n3 = src.shape
    one, zero = diag.dtype.type(1.0), diag.dtype.type(0.0)
    zplane = np.zeros((n2, n3), src.dtype)
    every_row = np.arange(n2)
    outer_rows = np.array([0, n2 - 1]) if n2 > 1 else np.array([0])
    inner_rows = np.arange(1, n2 - 1)
    if mode != 0:
        _prepare_plane(src, r, diag, 0, mode, omega, coarse, scale, factors, mask, masked)
    for i in range(n1):
        if mode != 0 and i + 1 < n1:
            _prepare_plane(src, r, diag, i + 1, mode, omega, coarse, scale, factors, mask,
                           masked)
        has_xm, has_xp = i > 0, i < n1 - 1
        xm = src[i - 1] if has_xm else zplane
        xp = src[i + 1] if has_xp else zplane
        _plane(diag[i], bits[i], xm, src[i], xp, has_xm, has_xp, r[i], dst[i], omega, one,
               zero, SWEEP, every_row, outer_rows, inner_rows)


def jacobi_out_of_place(diag, bits, _gy, _gz, _sig, _binary, _tiny, r, src, dst, omega,
                        mode=PLAIN, coarse=None, scale=1.0, factors=(1, 1, 1),
                        mask=None) -> None:
    """``_fused.jacobi_out_of_place`` on face bits: the same numbers."""
    dt = src.dtype.type
    masked = mask is not None
    _jacobi_out_of_place(diag, bits, r, src, dst, dt(omega), mode,
                         _dummy(src) if coarse is None else coarse, dt(scale), factors,
                         mask if masked else _dummy(src), masked)


def jacobi(diag, bits, gy, gz, sig, binary, tiny, r, z, omega, mode=PLAIN, coarse=None,
           scale=1.0, factors=(1, 1, 1), mask=None) -> None:
    """``_fused.jacobi`` (one sweep in place) on face bits: out of place from a copy of z,
    the same numbers (the cycle itself sweeps in pairs through its scratch grid)."""
    jacobi_out_of_place(diag, bits, gy, gz, sig, binary, tiny, r, z.copy(), z, omega, mode,
                        coarse, scale, factors, mask)


@_jit_sum
def _energy(bits, x, b_lo, b_hi, hi):  # pragma: no cover - jitted
    """``_fused._energy`` on face bits: Σ g (Δx)² in float64 plus the electrode links."""
    n1, n2, n3 = x.shape
    total = 0.0
    for i in range(n1):
        bi = bits[i]
        xc = x[i]
        if i < n1 - 1:
            xp = x[i + 1]
            for j in range(n2):
                for k in range(n3):
                    dx = np.float64(xp[j, k] - xc[j, k])
                    total += (1.0 if bi[j, k] & XP else 0.0) * dx * dx
        for j in range(n2 - 1):
            for k in range(n3):
                dy = np.float64(xc[j + 1, k] - xc[j, k])
                total += (1.0 if bi[j, k] & YP else 0.0) * dy * dy
        for j in range(n2):
            for k in range(n3 - 1):
                dz = np.float64(xc[j, k + 1] - xc[j, k])
                total += (1.0 if bi[j, k] & ZP else 0.0) * dz * dz
    for j in range(n2):
        for k in range(n3):
            v = np.float64(x[0, j, k])
            total += np.float64(b_lo[j, k]) * v * v
            w = 1.0 - np.float64(x[hi, j, k])
            total += np.float64(b_hi[j, k]) * w * w
    return total


def energy(_diag, bits, _gy, _gz, _sig, _binary, _tiny, x, b_lo, b_hi, hi) -> float:
    """Dissipated power on face bits, summed in float64 as ``_fused.energy`` sums it."""
    return float(_energy(bits, x, b_lo, b_hi, hi))
