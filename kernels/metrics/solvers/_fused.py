"""Fused CPU kernels for the native solver's 7-point stencil (numba), one pass over memory each.

Why: the solver is bound by memory traffic on one CPU core. The torch form of ``A x`` is seven
whole-array operations (a product and six strided ``addcmul_``), each streaming its operands
again, about 27 array passes for what needs seven. These kernels visit every cell once, with
the neighbouring rows still in cache, and fuse what the multigrid cycle does in sequence:

* ``apply`` (``A x``), ``residual`` (``r - A x``) and ``residual_restrict`` (the residual summed
  straight into the coarse grid's blocks, ``Pᵀ (r - A x)``: the fine residual is never stored);
* ``jacobi``: a damped Jacobi sweep in place (two plane buffers keep the old values its
  neighbours need), optionally starting from z = 0 (the cycle's first sweep, ``z = ω r / d``,
  done one plane ahead inside the same pass) or from ``z + s P e`` (the coarse correction
  added, and masked, one plane ahead: the prolongation is never a separate pass);
* on the finest grid the face conductances are not stored at all: they are the harmonic means
  of the (normalised) voxel conductivities ``sig``, computed per plane and row from ``sig``
  exactly as ``native._fine_stencil`` computes them (same operations, same rounding; a binary
  field's are products). That replaces three face arrays by one field;
* ``fine_setup``: the finest level itself (faces, diagonal, electrode links, CG's initial
  guess) from the field in one pass, the torch set-up's numbers bit for bit.

Every kernel takes the stencil as ``(diag, gx, gy, gz, sig, binary, tiny)``: stored face arrays
when ``sig`` has size 1, else faces from ``sig`` (gx, gy, gz are then placeholders). Identical
arithmetic to the torch path in ``native.py`` up to the order of additions (rounding in the
working precision); ``tests/test_solver_fused.py`` checks every kernel against the torch
operations and the solves against direct solves. ``native.py`` imports this module only for
CPU grids of at least ``native.FUSED_MIN_CELLS`` cells and only if numba is installed. Loading
numba costs about 0.4 CPU-s per process (measured); the kernels are compiled on first use and
cached on disk (``cache=True``), so a machine pays the compile (several CPU-s) once.
"""

from __future__ import annotations

import numba
import numpy as np

# error_model="numpy": x / 0 gives inf (no Python ZeroDivisionError check), which lets the
# divisions vectorise; the diagonal is never 0 (1 on inactive cells)
_jit = numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")
# float64 sums (energies, dot products) may be reassociated: that lets them vectorise
_jit_sum = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, boundscheck=False,
                      error_model="numpy")

PLAIN, FROM_ZERO, PROLONG = 0, 1, 2  # jacobi: what the sweep starts from


@_jit
def _harmonic(a, b, out, binary, tiny):  # pragma: no cover - jitted
    """out = 2ab / max(a + b, tiny) on 2D planes: native._fine_stencil's rounding (a * b for
    a binary 0/1 field, the same numbers)."""
    n2, n3 = out.shape
    if binary:
        for j in range(n2):
            for k in range(n3):
                out[j, k] = a[j, k] * b[j, k]
    else:
        for j in range(n2):
            for k in range(n3):
                p = a[j, k] * b[j, k]
                s = a[j, k] + b[j, k]
                out[j, k] = (p + p) / max(s, tiny)


@_jit
def _sigma_faces(sig, i, gxc, gy2, gz2, binary, tiny):  # pragma: no cover - jitted
    """Faces of plane i from sig: gxc to plane i + 1 (0 past the last), gy2[j] between rows
    j and j + 1, gz2[:, k] between k and k + 1."""
    n1, n2, n3 = sig.shape
    if i + 1 < n1:
        _harmonic(sig[i], sig[i + 1], gxc, binary, tiny)
    else:
        gxc[:, :] = 0
    plane = sig[i]
    if n2 > 1:
        _harmonic(plane[:-1], plane[1:], gy2[:-1], binary, tiny)
    if n3 > 1:
        _harmonic(plane[:, :-1], plane[:, 1:], gz2[:, :-1], binary, tiny)


@_jit
def _post_row(j, post, out, r2, d2, s2, z2, omega, cp, f2, f3):  # pragma: no cover - jitted
    """Finish row j of a plane while it is in L1: post 1 out = r - out (the residual); 2 the
    residual summed into the coarse plane cp (restriction); 3 the Jacobi update of z2 from
    the old values s2 (z = s + omega (r - A s) / d, in three loops that vectorise)."""
    n3 = out.shape[1]
    if post == 0:
        return
    if post <= 2:
        for k in range(n3):
            out[j, k] = r2[j, k] - out[j, k]
        if post == 2:
            jc = j // f2
            if f3 == 2:
                for k in range(n3 // 2):
                    cp[jc, k] += out[j, 2 * k] + out[j, 2 * k + 1]
            else:
                for k in range(n3):
                    cp[jc, k] += out[j, k]
        return
    for k in range(n3):
        out[j, k] = omega * (r2[j, k] - out[j, k])
    for k in range(n3):
        out[j, k] = out[j, k] / d2[j, k]
    for k in range(n3):
        z2[j, k] = s2[j, k] + out[j, k]


@_jit
def _plane(d, xc, gxb, xm, gxf, xp, gy, gz, has_xm, has_xp, out, post, r2, s2, z2, omega, cp,
           f2, f3):  # pragma: no cover - jitted
    """out = (A x) on one plane: d xc minus the six neighbours, in a fixed order (2D arrays:
    xm, xp the planes before and after, gxb, gxf their faces; gy[j] faces j | j+1, gz[:, k]
    faces k | k+1); each row then finished by ``_post_row``."""
    n2, n3 = out.shape
    for j in range(n2):
        for k in range(n3):
            out[j, k] = d[j, k] * xc[j, k]
        if has_xm:
            for k in range(n3):
                out[j, k] -= gxb[j, k] * xm[j, k]
        if has_xp:
            for k in range(n3):
                out[j, k] -= gxf[j, k] * xp[j, k]
        if j > 0:
            for k in range(n3):
                out[j, k] -= gy[j - 1, k] * xc[j - 1, k]
        if j < n2 - 1:
            for k in range(n3):
                out[j, k] -= gy[j, k] * xc[j + 1, k]
        for k in range(n3 - 1):
            out[j, k] -= gz[j, k] * xc[j, k + 1]
        for k in range(n3 - 1):  # a second loop: no store-to-load dependence, so it vectorises
            out[j, k + 1] -= gz[j, k] * xc[j, k]
        _post_row(j, post, out, r2, d, s2, z2, omega, cp, f2, f3)


@_jit
def _plane_binary(d, sc, sm, sp, xc, xm, xp, has_xm, has_xp, out, post, r2, s2, z2, omega, cp,
                  f2, f3):  # pragma: no cover - jitted
    """``_plane`` for a binary (0/1) field whose faces are the products of the voxel values
    (exactly the stored faces, so the same numbers): sc, sm, sp the field on the plane and
    the planes before and after. No face array is read."""
    n2, n3 = out.shape
    for j in range(n2):
        for k in range(n3):
            out[j, k] = d[j, k] * xc[j, k]
        if has_xm:
            for k in range(n3):
                out[j, k] -= (sc[j, k] * sm[j, k]) * xm[j, k]
        if has_xp:
            for k in range(n3):
                out[j, k] -= (sc[j, k] * sp[j, k]) * xp[j, k]
        if j > 0:
            for k in range(n3):
                out[j, k] -= (sc[j - 1, k] * sc[j, k]) * xc[j - 1, k]
        if j < n2 - 1:
            for k in range(n3):
                out[j, k] -= (sc[j, k] * sc[j + 1, k]) * xc[j + 1, k]
        for k in range(n3 - 1):
            out[j, k] -= (sc[j, k] * sc[j, k + 1]) * xc[j, k + 1]
        for k in range(n3 - 1):
            out[j, k + 1] -= (sc[j, k] * sc[j, k + 1]) * xc[j, k]
        _post_row(j, post, out, r2, d, s2, z2, omega, cp, f2, f3)


@_jit
def _sweep_apply(diag, gx, gy, gz, sig, binary, tiny, x, r, out, coarse, factors, mode,
                 labels, cells, sums):  # pragma: no cover - jitted
    """mode 0: out = A x; 1: out = r - A x; 2: coarse[blocks] = Pᵀ (r - A x) (out unused);
    3: sums[labels[c]] += (r - A x)[cells[c]] for c in order (cells ascending, out unused)."""
    n1, n2, n3 = x.shape
    on_the_fly = sig.size > 1
    dt = x.dtype
    ft = gx.dtype  # the faces' (float32 faces on the robust method's float64 level)
    gxp = np.zeros((n2, n3), ft)
    gxc = np.zeros((n2, n3), ft)
    gy2 = np.zeros((n2, n3), ft)
    gz2 = np.zeros((n2, n3), ft)
    tmp = np.empty((n2, n3), dt)
    ftmp = np.zeros((n2, n3), ft)
    f1, f2, f3 = factors
    if mode == 2:
        coarse[: n1 // f1, : n2 // f2, : n3 // f3] = 0
    omega = tiny * 0  # unused by posts 0-2, typed like the arrays
    post = 1 if mode == 3 else mode
    plane_cells = n2 * n3
    c = 0
    for i in range(n1):
        dst = tmp if mode >= 2 else out[i]
        xm = x[i - 1] if i > 0 else tmp
        xp = x[i + 1] if i < n1 - 1 else tmp
        cp = coarse[i // f1] if mode == 2 else tmp
        if on_the_fly and binary:
            _plane_binary(diag[i], sig[i], sig[i - 1] if i > 0 else tmp,
                          sig[i + 1] if i < n1 - 1 else tmp, x[i], xm, xp, i > 0, i < n1 - 1,
                          dst, post, r[i], tmp, tmp, omega, cp, f2, f3)
        else:
            if on_the_fly:
                gxp, gxc = gxc, gxp
                if i == 0:
                    gxp[:, :] = 0
                _sigma_faces(sig, i, gxc, gy2, gz2, binary, tiny)
                gxb, gxf, gyi, gzi = gxp, gxc, gy2, gz2
            else:
                gxb = gx[i - 1] if i > 0 else ftmp
                gxf = gx[i] if i < n1 - 1 else ftmp
                gyi = gy[i] if n2 > 1 else ftmp
                gzi = gz[i] if n3 > 1 else ftmp
            _plane(diag[i], x[i], gxb, xm, gxf, xp, gyi, gzi, i > 0, i < n1 - 1, dst, post,
                   r[i], tmp, tmp, omega, cp, f2, f3)
        if mode == 3:  # the plane's residual is in tmp: add the cluster cells' values
            flat = tmp.reshape(-1)
            end = (i + 1) * plane_cells
            while c < cells.size and cells[c] < end:
                sums[labels[c]] += flat[cells[c] - i * plane_cells]
                c += 1


def _dummy(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)[:1].reshape(1, 1, 1)


_NO_CELLS = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.float64))


def apply(diag, gx, gy, gz, sig, binary, tiny, x, out):
    """out = A x for the stencil (diag; gx, gy, gz face conductances, or sig: see the module)."""
    _sweep_apply(diag, gx, gy, gz, sig, binary, x.dtype.type(tiny), x, x, out, _dummy(x),
                 (1, 1, 1), 0, *_NO_CELLS)


def residual(diag, gx, gy, gz, sig, binary, tiny, r, x, out):
    """out = r - A x."""
    _sweep_apply(diag, gx, gy, gz, sig, binary, x.dtype.type(tiny), x, r, out, _dummy(x),
                 (1, 1, 1), 1, *_NO_CELLS)


def residual_restrict(diag, gx, gy, gz, sig, binary, tiny, r, x, coarse, factors):
    """coarse[:c1, :c2, :c3] = block sums of (r - A x), c = fine shape / factors (Pᵀ)."""
    _sweep_apply(diag, gx, gy, gz, sig, binary, x.dtype.type(tiny), x, r, x, coarse,
                 tuple(factors), 2, *_NO_CELLS)


@_jit
def _prepare_plane(z, r, diag, p, mode, omega, coarse, scale, factors, mask,
                   masked):  # pragma: no cover - jitted
    """Give plane p of z the values the sweep starts from (modes FROM_ZERO, PROLONG)."""
    n2, n3 = z.shape[1], z.shape[2]
    f1, f2, f3 = factors
    zp = z[p]
    if mode == 1:
        rp, dp = r[p], diag[p]
        for j in range(n2):
            for k in range(n3):
                zp[j, k] = rp[j, k] / dp[j, k] * omega
        return
    cp = coarse[p // f1]
    for j in range(n2):
        jc = j // f2
        if f3 == 2:
            for k in range(n3):
                zp[j, k] += scale * cp[jc, k // 2]
        else:
            for k in range(n3):
                zp[j, k] += scale * cp[jc, k]
    if masked:
        mp = mask[p]
        for j in range(n2):
            for k in range(n3):
                zp[j, k] *= mp[j, k]


@_jit
def _jacobi(diag, gx, gy, gz, sig, binary, tiny, r, z, omega, mode, coarse, scale, factors,
            mask, masked):  # pragma: no cover - jitted
    n1, n2, n3 = z.shape
    dt = z.dtype
    on_the_fly = sig.size > 1
    gxp = np.zeros((n2, n3), dt)
    gxc = np.zeros((n2, n3), dt)
    gy2 = np.zeros((n2, n3), dt)
    gz2 = np.zeros((n2, n3), dt)
    prev = np.empty((n2, n3), dt)
    saved = np.empty((n2, n3), dt)
    tmp = np.empty((n2, n3), dt)
    if mode != 0:
        _prepare_plane(z, r, diag, 0, mode, omega, coarse, scale, factors, mask, masked)
    for i in range(n1):
        if mode != 0 and i + 1 < n1:
            _prepare_plane(z, r, diag, i + 1, mode, omega, coarse, scale, factors, mask,
                           masked)
        zi = z[i]
        for j in range(n2):
            for k in range(n3):
                saved[j, k] = zi[j, k]
        xp = z[i + 1] if i < n1 - 1 else tmp
        if on_the_fly and binary:
            _plane_binary(diag[i], sig[i], sig[i - 1] if i > 0 else tmp,
                          sig[i + 1] if i < n1 - 1 else tmp, saved, prev, xp, i > 0,
                          i < n1 - 1, tmp, 3, r[i], saved, zi, omega, tmp, 1, 1)
        else:
            if on_the_fly:
                gxp, gxc = gxc, gxp
                if i == 0:
                    gxp[:, :] = 0
                _sigma_faces(sig, i, gxc, gy2, gz2, binary, tiny)
                gxb, gxf, gyi, gzi = gxp, gxc, gy2, gz2
            else:
                gxb = gx[i - 1] if i > 0 else tmp
                gxf = gx[i] if i < n1 - 1 else tmp
                gyi = gy[i] if n2 > 1 else tmp
                gzi = gz[i] if n3 > 1 else tmp
            _plane(diag[i], saved, gxb, prev, gxf, xp, gyi, gzi, i > 0, i < n1 - 1, tmp, 3,
                   r[i], saved, zi, omega, tmp, 1, 1)
        prev, saved = saved, prev  # plane i's old values serve plane i + 1


def jacobi(diag, gx, gy, gz, sig, binary, tiny, r, z, omega, mode=PLAIN, coarse=None,
           scale=1.0, factors=(1, 1, 1), mask=None):
    """One damped Jacobi sweep in place, z <- z0 + omega (r - A z0) / diag, where z0 is
    z (PLAIN), 0 (FROM_ZERO: the sweep then does two, the first being omega r / diag) or
    (z + scale P coarse) * mask (PROLONG: the coarse correction added, masked if mask given).
    omega and scale in the dtype of z (float32 arithmetic on float32 grids)."""
    dt = z.dtype.type
    masked = mask is not None
    _jacobi(diag, gx, gy, gz, sig, binary, dt(tiny), r, z, dt(omega), mode,
            _dummy(z) if coarse is None else coarse, dt(scale), factors,
            mask if masked else _dummy(z), masked)


@_jit
def _edge_cells(d, xc, gxb, xm, gxf, xp, gy, gz, has_xm, has_xp, r, z, omega, rows,
                full):  # pragma: no cover - jitted
    """The Jacobi update z = x + omega (r - A x) / d of the cells ``_inner_sweep`` leaves: all
    cells of the rows in ``rows`` (full) or only their two end cells, with ``_plane``'s terms
    in its order (a term only where the neighbour exists) and ``_post_row``'s update: the
    same numbers as the in-place sweep. Loops, not a call per cell: a call passing ten arrays
    costs their reference counts each time (a per-cell call made the sweep twice as slow)."""
    n2, n3 = xc.shape
    for j in rows:
        step = 1 if full or n3 < 2 else n3 - 1
        for k in range(0, n3, step):
            a = d[j, k] * xc[j, k]
            if has_xm:
                a -= gxb[j, k] * xm[j, k]
            if has_xp:
                a -= gxf[j, k] * xp[j, k]
            if j > 0:
                a -= gy[j - 1, k] * xc[j - 1, k]
            if j < n2 - 1:
                a -= gy[j, k] * xc[j + 1, k]
            if k < n3 - 1:
                a -= gz[j, k] * xc[j, k + 1]
            if k > 0:
                a -= gz[j, k - 1] * xc[j, k - 1]
            z[j, k] = xc[j, k] + (omega * (r[j, k] - a)) / d[j, k]


@_jit
def _inner_sweep(d, gxb, gxf, gy, gz, xm, xc, xp, r, z, omega):  # pragma: no cover - jitted
    """z = x + omega (r - A x) / d on the plane's inner cells (rows and columns 1 to n - 2) in
    one loop: every term present there, in ``_plane``'s order, then ``_post_row``'s update."""
    n2, n3 = z.shape
    for j in range(1, n2 - 1):
        for k in range(1, n3 - 1):
            a = (d[j, k] * xc[j, k] - gxb[j, k] * xm[j, k] - gxf[j, k] * xp[j, k]
                 - gy[j - 1, k] * xc[j - 1, k] - gy[j, k] * xc[j + 1, k]
                 - gz[j, k] * xc[j, k + 1] - gz[j, k - 1] * xc[j, k - 1])
            z[j, k] = xc[j, k] + (omega * (r[j, k] - a)) / d[j, k]


@_jit
def _jacobi_out_of_place(diag, gx, gy, gz, r, src, dst, omega, mode, coarse, scale, factors,
                         mask, masked):  # pragma: no cover - jitted
    n1, n2, n3 = src.shape
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
        gxb = gx[i - 1] if has_xm else zplane
        gxf = gx[i] if has_xp else zplane
        gyi = gy[i] if n2 > 1 else zplane
        gzi = gz[i] if n3 > 1 else zplane
        d, xc, ri, zi = diag[i], src[i], r[i], dst[i]
        if has_xm and has_xp and n2 > 2 and n3 > 2:
            _inner_sweep(d, gxb, gxf, gyi, gzi, xm, xc, xp, ri, zi, omega)
            _edge_cells(d, xc, gxb, xm, gxf, xp, gyi, gzi, True, True, ri, zi, omega,
                        outer_rows, True)
            _edge_cells(d, xc, gxb, xm, gxf, xp, gyi, gzi, True, True, ri, zi, omega,
                        inner_rows, False)
        else:
            _edge_cells(d, xc, gxb, xm, gxf, xp, gyi, gzi, has_xm, has_xp, ri, zi, omega,
                        every_row, True)


def jacobi_out_of_place(diag, gx, gy, gz, sig, binary, tiny, r, src, dst, omega, mode=PLAIN,
                        coarse=None, scale=1.0, factors=(1, 1, 1), mask=None) -> None:
    """dst <- one damped Jacobi sweep from src0: ``jacobi``'s numbers without its in-place
    plane buffers, in one loop per row, in 0.55-0.61x its time at 128³ (tests/benchmarks/
    bench_jacobi_forms.py). src0 is src (PLAIN), omega r / diag (FROM_ZERO: written into src)
    or (src + scale P coarse) * mask (PROLONG: src updated in place). Stored faces only (a
    level whose faces come from ``sig`` takes ``jacobi``)."""
    if sig.size > 1:
        raise ValueError("jacobi_out_of_place needs stored faces (sig of size 1)")
    dt = src.dtype.type
    masked = mask is not None
    _jacobi_out_of_place(diag, gx, gy, gz, r, src, dst, dt(omega), mode,
                         _dummy(src) if coarse is None else coarse, dt(scale), factors,
                         mask if masked else _dummy(src), masked)


@_jit_sum
def _energy(diag, gx, gy, gz, sig, binary, tiny, x, b_lo, b_hi, hi):  # pragma: no cover
    n1, n2, n3 = x.shape
    ft = gx.dtype  # the faces' (float32 faces on the robust method's float64 level)
    on_the_fly = sig.size > 1
    gxc = np.zeros((n2, n3), ft)
    gy2 = np.zeros((n2, n3), ft)
    gz2 = np.zeros((n2, n3), ft)
    total = 0.0
    for i in range(n1):
        if on_the_fly:
            _sigma_faces(sig, i, gxc, gy2, gz2, binary, tiny)
            gxf, gyi, gzi = gxc, gy2, gz2
        else:
            gxf = gx[i] if i < n1 - 1 else gxc
            gyi = gy[i] if n2 > 1 else gxc
            gzi = gz[i] if n3 > 1 else gxc
        xc = x[i]
        if i < n1 - 1:
            xp = x[i + 1]
            for j in range(n2):
                for k in range(n3):
                    dx = np.float64(xp[j, k] - xc[j, k])
                    total += np.float64(gxf[j, k]) * dx * dx
        for j in range(n2 - 1):
            for k in range(n3):
                dy = np.float64(xc[j + 1, k] - xc[j, k])
                total += np.float64(gyi[j, k]) * dy * dy
        for j in range(n2):
            for k in range(n3 - 1):
                dz = np.float64(xc[j, k + 1] - xc[j, k])
                total += np.float64(gzi[j, k]) * dz * dz
    for j in range(n2):
        for k in range(n3):
            v = np.float64(x[0, j, k])
            total += np.float64(b_lo[j, k]) * v * v
            w = 1.0 - np.float64(x[hi, j, k])
            total += np.float64(b_hi[j, k]) * w * w
    return total


def energy(diag, gx, gy, gz, sig, binary, tiny, x, b_lo, b_hi, hi) -> float:
    """Dissipated power Σ g (Δx)² plus the electrode links, summed in float64."""
    return float(_energy(diag, gx, gy, gz, sig, binary, x.dtype.type(tiny), x, b_lo, b_hi, hi))


# The robust method's coarse space of high-conductivity clusters (native._Islands): its two
# corrections went through torch (a gather, a weighted bincount and an index_add_ over the
# cluster cells, and before the second one a whole residual written and read back), about a
# quarter of a robust CG iteration at 128³. Here the corrections are two loops over the
# cluster cells (≈ 15 % of the grid), and the residual is summed over the clusters inside the
# stencil pass (mode 3 of _sweep_apply). Same sums in the same order as the torch operations
# (bincount adds its weights in index order), so the same numbers bit for bit.


@_jit
def _island_scatter(labels, cells, coarse, inverse_diag, out):  # pragma: no cover - jitted
    """out[cells] += (coarse · inverse_diag)[labels] (coarse overwritten by the product)."""
    for a in range(coarse.size):
        coarse[a] = coarse[a] * inverse_diag[a]
    for c in range(cells.size):
        out[cells[c]] += coarse[labels[c]]


@_jit
def _island_correct(labels, cells, res, inverse_diag, out):  # pragma: no cover - jitted
    coarse = np.zeros(inverse_diag.size, res.dtype)
    for c in range(cells.size):
        coarse[labels[c]] += res[cells[c]]
    _island_scatter(labels, cells, coarse, inverse_diag, out)


def island_correct(labels, cells, res, inverse_diag, out):
    """out += Z (Zᵀ A Z)⁻¹ Zᵀ res: Z the clusters' indicators (cells, labels 1..k as flat
    int64 arrays), res and out flat."""
    _island_correct(labels, cells, res, inverse_diag, out)


def island_residual_correct(diag, gx, gy, gz, sig, binary, tiny, labels, cells, r,
                            inverse_diag, x):
    """x += Z (Zᵀ A Z)⁻¹ Zᵀ (r − A x): the residual in one pass that keeps only its sums over
    the clusters (no residual array written and read back), then the scatter onto them."""
    sums = np.zeros(inverse_diag.size, x.dtype)
    _sweep_apply(diag, gx, gy, gz, sig, binary, x.dtype.type(tiny), x, r, x, _dummy(x),
                 (1, 1, 1), 3, labels, cells, sums)
    _island_scatter(labels, cells, sums, inverse_diag, x.reshape(-1))


# The finest level's set-up (native._fine_level): the torch form computes the three faces'
# harmonic means, their sum per cell and the initial guess in about 45 whole-array passes at
# 128³ (each ``a * b``, ``mul_``, ``clamp_``, ``div_``, every ``s[...] += g`` of the face sum, the
# ``diag == 0`` mask, the profile times ``sigma > 0``). Here one pass over the field writes
# them all, with the torch operations' arithmetic in their order (so the same numbers bit for
# bit: ``tests/test_solver_fused.py``).


@_jit
def _fine_setup(sig, profile, hi, tiny, gx, gy, gz, diag, b_lo, b_hi,
                x):  # pragma: no cover - jitted
    """Faces (harmonic means), diagonal (face sum as native._face_sum adds it, then the
    electrode links on layers 0 and ``hi``, 1 where nothing couples), the links 2σ to the
    electrodes and the initial guess ``profile[i]`` on conducting cells. ``sig`` is the
    normalised field, already padded with zeros to the level's (even) shape."""
    n1, n2, n3 = sig.shape
    for i in range(n1 - 1):
        _harmonic(sig[i], sig[i + 1], gx[i], False, tiny)
    for i in range(n1):
        if n2 > 1:
            _harmonic(sig[i, :-1], sig[i, 1:], gy[i], False, tiny)
        if n3 > 1:
            _harmonic(sig[i, :, :-1], sig[i, :, 1:], gz[i], False, tiny)
    for j in range(n2):
        for k in range(n3):
            b_lo[j, k] = sig[0, j, k] + sig[0, j, k]  # 2σ, exactly
            b_hi[j, k] = sig[hi, j, k] + sig[hi, j, k]
    zero = diag.dtype.type(0.0)
    one = diag.dtype.type(1.0)
    for i in range(n1):
        for j in range(n2):
            for k in range(n3):
                s = zero
                if i < n1 - 1:
                    s += gx[i, j, k]
                if i > 0:
                    s += gx[i - 1, j, k]
                if j < n2 - 1:
                    s += gy[i, j, k]
                if j > 0:
                    s += gy[i, j - 1, k]
                if k < n3 - 1:
                    s += gz[i, j, k]
                if k > 0:
                    s += gz[i, j, k - 1]
                if i == 0:
                    s += b_lo[j, k]
                if i == hi:
                    s += b_hi[j, k]
                diag[i, j, k] = one if s == zero else s
                x[i, j, k] = profile[i] if sig[i, j, k] > zero else zero


def fine_setup(sig, profile, hi, tiny, gx, gy, gz, diag, b_lo, b_hi, x) -> None:
    """Fill the finest level's faces, diagonal, electrode links and the initial guess from
    the padded normalised field ``sig`` in one pass (see ``_fine_setup``)."""
    _fine_setup(sig, profile, hi, sig.dtype.type(tiny), gx, gy, gz, diag, b_lo, b_hi, x)


# The robust preconditioner's cluster corrections on the clusters' boundary faces only
# (native.SPARSE_ISLANDS). Both corrections need a residual: before the cycle r − A Z c1 (the
# cycle's right-hand side), after it Zᵀ (r − A (Z c1 + z)). Each was a whole float64 stencil
# pass, although A Z c is zero everywhere but on the faces that leave a cluster (clusters
# never share a face), and Zᵀ A z sums, per cluster, only the flux through those faces and
# its electrode links (the faces inside a cluster cancel). So the set-up lists those faces
# once (cluster cell, outside cell or -1 for an electrode link, conductance, cluster) and the
# corrections read them, plus one cast pass each way between CG's float64 vectors and the
# cycle's float32 ones. Same linear map; rounding differs (the dense form cancels the faces
# inside a cluster in floating point, these sums never form them).


@_jit
def _island_cycle_rhs(labels, cells, res, inverse_diag, sums, coef, f_label, f_cell_t,
                      f_other_t, f_g, touched, delta, out):  # pragma: no cover - jitted
    """sums = Zᵀ res, coef = sums · inverse_diag (the first correction's cluster values, in
    the order of ``_island_correct``), and out = res − A Z coef in out's dtype."""
    for a in range(sums.size):
        sums[a] = 0.0
    for c in range(cells.size):
        sums[labels[c]] += res[cells[c]]
    for a in range(sums.size):
        coef[a] = sums[a] * inverse_diag[a]
    for n in range(res.size):
        out[n] = res[n]
    for t in range(delta.size):
        delta[t] = 0.0
    for f in range(f_g.size):
        v = f_g[f] * coef[f_label[f]]
        delta[f_cell_t[f]] -= v
        if f_other_t[f] >= 0:
            delta[f_other_t[f]] += v
    for t in range(touched.size):
        n = touched[t]
        out[n] = res[n] + delta[t]


@_jit
def _island_cycle_out(z, sums, coef, diag_islands, inverse_diag, f_label, f_cell, f_other,
                      f_g, labels, cells, out):  # pragma: no cover - jitted
    """out = z + Z (coef + c2), c2 = inverse_diag · Zᵀ (res − A (Z coef + z)) evaluated as
    sums − D coef − Σ_faces g (z_cell − z_other) (z_other = 0 on an electrode link)."""
    second = np.empty(sums.size, np.float64)
    for a in range(sums.size):
        second[a] = sums[a] - diag_islands[a] * coef[a]
    for f in range(f_g.size):
        other = np.float64(z[f_other[f]]) if f_other[f] >= 0 else 0.0
        second[f_label[f]] -= f_g[f] * (np.float64(z[f_cell[f]]) - other)
    for a in range(sums.size):
        second[a] *= inverse_diag[a]
    for n in range(z.size):
        out[n] = z[n]
    for c in range(cells.size):
        a = labels[c]
        out[cells[c]] = (out[cells[c]] + coef[a]) + second[a]


def island_cycle_rhs(labels, cells, res, inverse_diag, sums, coef, f_label, f_cell_t,
                     f_other_t, f_g, touched, delta, out):
    """The first cluster correction's values (into sums, coef) and the cycle's right-hand
    side res − A Z coef, written in out's precision (all arrays flat)."""
    _island_cycle_rhs(labels, cells, res, inverse_diag, sums, coef, f_label, f_cell_t,
                      f_other_t, f_g, touched, delta, out)


def island_cycle_out(z, sums, coef, diag_islands, inverse_diag, f_label, f_cell, f_other,
                     f_g, labels, cells, out):
    """The preconditioner's output from the cycle's z: both cluster corrections added (flat)."""
    _island_cycle_out(z, sums, coef, diag_islands, inverse_diag, f_label, f_cell, f_other,
                      f_g, labels, cells, out)


@_jit
def _high_cells(sig, shape):  # pragma: no cover - jitted
    """Cells above the geometric mean of the smallest positive and the largest value of sig
    (native._islands' threshold, the same float64 arithmetic), padded with False to shape."""
    lowest, highest = np.inf, -np.inf
    flat = sig.reshape(-1)
    for n in range(flat.size):
        v = flat[n]
        if v > 0:
            lowest = min(lowest, v)
            highest = max(highest, v)
    threshold = np.sqrt(np.float64(lowest) * np.float64(highest))
    high = np.zeros(shape, np.bool_)
    n1, n2, n3 = sig.shape
    for i in range(n1):
        for j in range(n2):
            for k in range(n3):
                high[i, j, k] = sig[i, j, k] > threshold
    return high


def high_cells(sig, shape):
    """The boolean mask of native._islands' high-conductivity cells (padded to shape)."""
    return _high_cells(sig, shape)


@_jit
def _island_space(labels, k, gx, gy, gz, b_lo, b_hi, hi):  # pragma: no cover - jitted
    """The clusters' cells and labels (ascending cells, as np.flatnonzero), the faces leaving
    them and their electrode links in cell order (neighbours -x, +x, -y, +y, -z, +z, then the
    link): (label, cell, other or -1, g); the touched cells and the faces' positions among
    them; Zᵀ A Z (per cluster: the conductance of its faces and links)."""
    n1, n2, n3 = labels.shape
    plane = n2 * n3
    flat = labels.reshape(-1)
    inside = 0
    for n in range(flat.size):
        if flat[n] != 0:
            inside += 1
    cells = np.empty(inside, np.int64)
    cell_labels = np.empty(inside, np.int64)
    c = 0
    for n in range(flat.size):
        if flat[n] != 0:
            cells[c], cell_labels[c] = n, flat[n]
            c += 1
    count = 0
    for stage in range(2):
        if stage == 1:
            label = np.empty(count, np.int64)
            cell = np.empty(count, np.int64)
            other = np.empty(count, np.int64)
            g = np.empty(count, np.float64)
        else:
            label = cell = other = np.empty(0, np.int64)
            g = np.empty(0, np.float64)
        f = 0
        for c in range(inside):
            n, a = cells[c], cell_labels[c]
            i, rest = n // plane, n % plane
            j, kk = rest // n3, rest % n3
            for d in range(7):
                m, v = -1, 0.0
                if d == 0 and i > 0:
                    m, v = n - plane, gx[i - 1, j, kk]
                elif d == 1 and i < n1 - 1:
                    m, v = n + plane, gx[i, j, kk]
                elif d == 2 and j > 0:
                    m, v = n - n3, gy[i, j - 1, kk]
                elif d == 3 and j < n2 - 1:
                    m, v = n + n3, gy[i, j, kk]
                elif d == 4 and kk > 0:
                    m, v = n - 1, gz[i, j, kk - 1]
                elif d == 5 and kk < n3 - 1:
                    m, v = n + 1, gz[i, j, kk]
                elif d == 6:
                    if i == 0:
                        v += b_lo[j, kk]
                    if i == hi:
                        v += b_hi[j, kk]
                if not v > 0 or (m >= 0 and flat[m] != 0):
                    continue
                if stage == 1:
                    label[f] = a
                    cell[f] = n
                    other[f] = m
                    g[f] = v
                f += 1
        count = f
    diag = np.zeros(k + 1, np.float64)
    for f in range(count):
        diag[label[f]] += g[f]
    pos = np.zeros(flat.size, np.int32)
    for f in range(count):
        pos[cell[f]] = 1
        if other[f] >= 0:
            pos[other[f]] = 1
    touched_count = 0
    for n in range(flat.size):
        touched_count += pos[n]
    touched = np.empty(touched_count, np.int64)
    t = 0
    for n in range(flat.size):
        if pos[n]:
            touched[t] = n
            pos[n] = t
            t += 1
    cell_t = np.empty(count, np.int64)
    other_t = np.empty(count, np.int64)
    for f in range(count):
        cell_t[f] = pos[cell[f]]
        other_t[f] = pos[other[f]] if other[f] >= 0 else -1
    return cells, cell_labels, label, cell, other, g, touched, cell_t, other_t, diag


def island_space(labels, k, gx, gy, gz, b_lo, b_hi, hi):
    """(cells, cell labels, then native._BoundaryFaces' label, cell, other, g, touched,
    cell_t, other_t and diag) from the clusters' labels (1..k, 0 outside) and the stencil."""
    return _island_space(labels, k, gx, gy, gz, b_lo, b_hi, hi)


# Flexible CG's vector work in the robust method (native.FUSED_CG): torch ran each dot product
# and update as its own pass over float64 vectors (p·q, r·p, x += αp, r_old = r, r −= αq, r·z,
# r_old·z). Here p·q and r·p share one pass, the two updates another, and r·z with q·z a third;
# r_old is not kept: the Polak-Ribiere term z·(r − r_old) is −α z·q (r − r_old = −α q).


@_jit_sum
def _two_dots(u, v, w):  # pragma: no cover - jitted
    """(u·v, u·w) summed in float64 in one pass over flat arrays."""
    uv = 0.0
    uw = 0.0
    for n in range(u.size):
        uv += u[n] * v[n]
        uw += u[n] * w[n]
    return uv, uw


@_jit
def _cg_update(x, p, r, q, alpha):  # pragma: no cover - jitted
    """x += alpha p and r -= alpha q in one pass over flat arrays."""
    for n in range(x.size):
        x[n] += alpha * p[n]
        r[n] -= alpha * q[n]


def two_dots(u, v, w) -> tuple[float, float]:
    """(u·v, u·w) of flat float64 arrays."""
    uv, uw = _two_dots(u, v, w)
    return float(uv), float(uw)


def cg_update(x, p, r, q, alpha: float) -> None:
    """x += alpha p, r -= alpha q (flat arrays, in place)."""
    _cg_update(x, p, r, q, alpha)
