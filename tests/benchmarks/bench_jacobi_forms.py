"""How far the solver's fine Jacobi sweep is from what its data traffic allows (issue 22).

One 128³ float32 grid of random faces, one process, one thread, medians of 5 interleaved
repeats (wall ms; the kernels do no I/O). Five forms of the same damped Jacobi sweep
z <- z + omega (r - A z) / d, and a stream of the same arrays:

* the solver's ``kernels.metrics.solvers._fused.jacobi`` (in place: each plane's old values
  kept in a buffer; one loop per stencil term and row, the update in three more loops);
* the solver's ``_fused.jacobi_out_of_place`` (what the cycle runs on stored faces since
  2026-12-04: the same numbers, the faces of the box included, into a second grid);
* one loop per row over the whole stencil and the update, in place (a plane copy);
* the same loop out of place (a second grid written: the form an out-of-place cycle would use);
* no stencil: the six arrays read and one written once (the bandwidth bound of a sweep);
* on a binary (0/1) field: the cycle's out-of-place sweep on its stored faces, the same sweep on
  face bits (``_fused_bits``, one byte per cell: what the pore solve's finest level runs since
  2026-12-04; its numbers checked equal), and the stream of what the bits sweep moves (three
  float32 reads and one write, the byte not counted).

Only the inner cells are swept by the three written here (bounds, not replacements: the
faces of the box are left out).

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_jacobi_forms.py [--size 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from kernels.metrics.solvers import _fused, _fused_bits  # noqa: E402

_jit = numba.njit(cache=False, boundscheck=False, error_model="numpy")


#: one loop per row over a plane's inner cells: the solver's own (the out-of-place kernel's core)
_row_sweep = _fused._inner_sweep


@_jit
def one_loop_in_place(d, gx, gy, gz, r, z, omega):  # pragma: no cover - jitted
    n1, n2, n3 = z.shape
    prev = np.zeros((n2, n3), z.dtype)
    saved = np.empty((n2, n3), z.dtype)
    for i in range(1, n1 - 1):
        zi = z[i]
        for j in range(n2):
            for k in range(n3):
                saved[j, k] = zi[j, k]
        _row_sweep(d[i], gx[i - 1], gx[i], gy[i], gz[i], prev, saved, z[i + 1], r[i], zi, omega)
        prev, saved = saved, prev


@_jit
def one_loop_out_of_place(d, gx, gy, gz, r, z, out, omega):  # pragma: no cover - jitted
    n1 = z.shape[0]
    for i in range(1, n1 - 1):
        _row_sweep(d[i], gx[i - 1], gx[i], gy[i], gz[i], z[i - 1], z[i], z[i + 1], r[i],
                   out[i], omega)


@_jit
def stream(d, gx, gy, gz, r, z, out, omega):  # pragma: no cover - jitted
    n1, n2, n3 = z.shape
    for i in range(n1):
        for j in range(n2):
            for k in range(n3):
                out[i, j, k] = z[i, j, k] + omega * (r[i, j, k] - d[i, j, k] * z[i, j, k]
                                                     + gx[i, j, k] + gy[i, j, k] + gz[i, j, k])


@_jit
def stream4(d, r, z, out, omega):  # pragma: no cover - jitted
    n1, n2, n3 = z.shape
    for i in range(n1):
        for j in range(n2):
            for k in range(n3):
                out[i, j, k] = z[i, j, k] + omega * (r[i, j, k] - d[i, j, k] * z[i, j, k])


def _binary_forms(n: int, rng: np.random.Generator) -> dict:
    """The sweep of a 0/1 field (65 % conducting) on stored faces and on face bits."""
    open_ = (rng.random((n, n, n)) < 0.65).astype(np.float32)
    gx = open_[:-1] * open_[1:]
    gy = open_[:, :-1] * open_[:, 1:]
    gz = open_[:, :, :-1] * open_[:, :, 1:]
    diag = np.zeros_like(open_)
    for g, axis in ((gx, 0), (gy, 1), (gz, 2)):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        diag[tuple(lo)] += g
        diag[tuple(hi)] += g
    diag[diag == 0] = 1.0
    bits = _fused_bits.pack(gx, gy, gz, open_.shape)
    z, r = (rng.random((n, n, n), dtype=np.float32) for _ in range(2))
    field = np.zeros((1, 1, 1), np.float32)
    stored_out, bits_out = np.empty_like(z), np.empty_like(z)
    _fused.jacobi_out_of_place(diag, gx, gy, gz, field, False, 1e-30, r, z, stored_out, 0.95)
    _fused_bits.jacobi_out_of_place(diag, bits, bits, bits, field, False, 1e-30, r, z,
                                    bits_out, 0.95)
    assert np.array_equal(stored_out, bits_out)  # the same numbers
    omega = np.float32(0.95)
    return {
        "binary field: _fused.jacobi_out_of_place on stored faces": lambda: (
            _fused.jacobi_out_of_place(diag, gx, gy, gz, field, False, 1e-30, r, z,
                                       stored_out, 0.95)),
        "binary field: _fused_bits.jacobi_out_of_place (the pore solve's since 2026-12-04)":
            lambda: _fused_bits.jacobi_out_of_place(diag, bits, bits, bits, field, False,
                                                    1e-30, r, z, bits_out, 0.95),
        "stream: 3 reads + 1 write (the bits sweep's floats), no stencil": lambda: stream4(
            diag, r, z, bits_out, omega),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    z, r = (rng.random((n, n, n), dtype=np.float32) for _ in range(2))
    d = rng.random((n, n, n), dtype=np.float32) + 6
    gx, gy, gz = (rng.random((n, n, n), dtype=np.float32) for _ in range(3))
    out, field = np.empty_like(z), np.zeros((1, 1, 1), np.float32)
    omega = np.float32(0.95)
    forms = {
        "the solver's _fused.jacobi (in place)": lambda: _fused.jacobi(
            d, gx, gy, gz, field, False, 1e-30, r, z, 0.95),
        "the solver's _fused.jacobi_out_of_place (the cycle's default since 2026-12-04)":
            lambda: _fused.jacobi_out_of_place(d, gx, gy, gz, field, False, 1e-30, r, z, out,
                                               0.95),
        "one loop per row, in place": lambda: one_loop_in_place(d, gx, gy, gz, r, z, omega),
        "one loop per row, out of place": lambda: one_loop_out_of_place(d, gx, gy, gz, r, z,
                                                                        out, omega),
        "stream: 6 reads + 1 write, no stencil": lambda: stream(d, gx, gy, gz, r, z, out, omega),
        **_binary_forms(n, rng),
    }
    for form in forms.values():
        form()   # compile / load
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(args.repeats):
        for name, form in forms.items():
            start = time.perf_counter()
            form()
            times[name].append(time.perf_counter() - start)
    anchor = statistics.median(times["the solver's _fused.jacobi (in place)"])
    print(f"| form ({n}³ float32) | ms | × the solver's |")
    print("|---|---|---|")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"| {name} | {ms * 1e3:.2f} | {ms / anchor:.2f} |")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
