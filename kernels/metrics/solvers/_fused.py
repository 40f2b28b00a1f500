"""Fused CPU kernels for the native solver's 7-point stencil (numba), one pass over memory each.

Why: the torch form of ``A x`` is seven whole-array operations (a product and six strided
``addcmul_``), each streaming its operands through memory again — about 27 array passes for
what needs six (x, the diagonal, three face-conductance arrays, the output). On one CPU core
the solver is bound by memory bandwidth, so a kernel that visits every cell once, with the
neighbouring rows still in cache, does the same arithmetic for a fraction of the traffic.
The damped-Jacobi sweep is fused the same way and runs in place (two plane buffers keep the
old values its neighbours need), so a sweep reads each array once and writes z once.

Identical arithmetic to the torch path in ``native.py`` up to the order of the additions
(rounding at the level of the working precision); ``tests/test_native_solver.py`` checks both
against each other and against direct solves. ``native.py`` imports this module only for CPU grids of at least ``native.FUSED_MIN_CELLS``
cells and only if numba is installed; otherwise, and on CUDA, it runs its torch operations.
Loading numba costs about 0.4 CPU-s per process (measured), more than the kernels save on
small grids. Compiled on first use and cached on disk (``cache=True``), so a machine pays
the compile (several CPU-s) once, not every process.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False)

@_jit
def _row_apply(diag, gx, gy, gz, x, out, i, j, n1, n2, n3):  # pragma: no cover - jitted
    """out[i, j, :] = (A x)[i, j, :], the rows of x around (i, j) read once."""
    for k in range(n3):
        out[i, j, k] = diag[i, j, k] * x[i, j, k]
    if i > 0:
        for k in range(n3):
            out[i, j, k] -= gx[i - 1, j, k] * x[i - 1, j, k]
    if i < n1 - 1:
        for k in range(n3):
            out[i, j, k] -= gx[i, j, k] * x[i + 1, j, k]
    if j > 0:
        for k in range(n3):
            out[i, j, k] -= gy[i, j - 1, k] * x[i, j - 1, k]
    if j < n2 - 1:
        for k in range(n3):
            out[i, j, k] -= gy[i, j, k] * x[i, j + 1, k]
    for k in range(n3 - 1):
        out[i, j, k] -= gz[i, j, k] * x[i, j, k + 1]
    for k in range(n3 - 1):  # a second loop: no store-to-load dependence, so it vectorises
        out[i, j, k + 1] -= gz[i, j, k] * x[i, j, k]

@_jit
def apply(diag, gx, gy, gz, x, out):  # pragma: no cover - jitted
    """out = A x for the stencil (diag; gx, gy, gz face conductances along axes 0, 1, 2)."""
    n1, n2, n3 = x.shape
    for i in range(n1):
        for j in range(n2):
            _row_apply(diag, gx, gy, gz, x, out, i, j, n1, n2, n3)

@_jit
def residual(diag, gx, gy, gz, r, x, out):  # pragma: no cover - jitted
    """out = r - A x."""
    n1, n2, n3 = x.shape
    for i in range(n1):
        for j in range(n2):
            _row_apply(diag, gx, gy, gz, x, out, i, j, n1, n2, n3)
            for k in range(n3):
                out[i, j, k] = r[i, j, k] - out[i, j, k]

@_jit
def jacobi(diag, gx, gy, gz, r, z, omega, prev, saved):  # pragma: no cover - jitted
    """One damped Jacobi sweep in place: z <- z + omega (r - A z) / diag.

    prev, saved: (n2, n3) scratch planes holding the old values of planes i-1 and i; plane
    i+1 is still old in z. Each row's new values are written straight into z.
    """
    n1, n2, n3 = z.shape
    row = np.empty(n3, dtype=z.dtype)
    for i in range(n1):
        for j in range(n2):
            for k in range(n3):
                saved[j, k] = z[i, j, k]
        for j in range(n2):
            for k in range(n3):
                row[k] = diag[i, j, k] * saved[j, k]
            if i > 0:
                for k in range(n3):
                    row[k] -= gx[i - 1, j, k] * prev[j, k]
            if i < n1 - 1:
                for k in range(n3):
                    row[k] -= gx[i, j, k] * z[i + 1, j, k]
            if j > 0:
                for k in range(n3):
                    row[k] -= gy[i, j - 1, k] * saved[j - 1, k]
            if j < n2 - 1:
                for k in range(n3):
                    row[k] -= gy[i, j, k] * saved[j + 1, k]
            for k in range(n3 - 1):
                row[k] -= gz[i, j, k] * saved[j, k + 1]
            for k in range(n3 - 1):
                row[k + 1] -= gz[i, j, k] * saved[j, k]
            for k in range(n3):
                z[i, j, k] = saved[j, k] + omega * (r[i, j, k] - row[k]) / diag[i, j, k]
        prev, saved = saved, prev  # plane i's old values serve plane i + 1
