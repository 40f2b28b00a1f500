"""TauFactor (red-black over-relaxed iteration, torch) as a `kernels.metrics.solvers` back-end.

A field with one conducting value goes to TauFactor's binary `Solver`, whose discrete problem is
exactly the one `kernels.metrics.solvers` defines (Dirichlet on the end faces, half-voxel links to them).
A field with several conducting values goes to `MultiPhaseSolver`, whose stock boundary puts the
electrode potential one whole voxel beyond the box (a ghost layer copying the first layer's
conductivity, effective length L + 1). `_FaceDirichletMultiPhaseSolver` changes only that: the
ghost layer gets zero resistance, so the link to the electrode is the half voxel of the first
layer, and the result is scaled to length L. Both then solve the same equations and a
uniform field gives 1. Validated against a scipy sparse direct solve in tests/test_metrics.py.

Threads: torch runs one thread per process unless MICROLOOP_TORCH_THREADS says otherwise (on CPU,
several single-threaded processes beat one multi-threaded one: 2 ranks x 1 thread beat
1 rank x 2 threads, which was 10-40x slower on a busy machine).
"""

from __future__ import annotations

import contextlib
import io
import os
import time

import numpy as np
import torch
from taufactor import taufactor as tf

from kernels.metrics.solvers import TransportSolution

ITER_LIMIT_MIN = 10_000
ITER_LIMIT_PER_VOXEL = 200  # SOR needs O(L) sweeps; allow generous headroom per voxel of length


def _set_threads() -> None:
    threads = int(os.environ.get("MICROLOOP_TORCH_THREADS", "1"))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class _FaceDirichletMultiPhaseSolver(tf.MultiPhaseSolver):
    """MultiPhaseSolver with the electrode potentials on the box's end faces (see module doc)."""

    def init_conductive_neighbours(self, img: torch.Tensor) -> list[torch.Tensor]:
        half_resistance = torch.zeros_like(img)
        for phase, value in self.cond.items():
            half_resistance[img == phase] = value
        padded = self._pad(self._pad(half_resistance))
        tiny = torch.tensor(1e-20, dtype=padded.dtype, device=padded.device)
        zero = torch.zeros((), dtype=padded.dtype, device=padded.device)
        # Electrode layers: (almost) no resistance beyond the face, only where the box conducts.
        padded[:, 1] = torch.where(padded[:, 2] > 0, tiny, zero)
        padded[:, -2] = torch.where(padded[:, -3] > 0, tiny, zero)
        total = torch.zeros_like(padded, dtype=self.precision)
        links = []
        for dim in range(1, 4):
            for shift in (1, -1):
                neighbour = torch.roll(padded, shift, dim)
                resistance = padded + neighbour
                resistance[neighbour == 0] = 0
                resistance[padded == 0] = 0
                conductance = 1 / resistance
                conductance[conductance == torch.inf] = 0
                total += conductance
                links.append(self._crop(conductance, 1).to(self.device))
        total = self._crop(total, 2)
        total[img == 0] = torch.inf
        total[total == 0] = torch.inf
        links.insert(0, total.to(self.device))
        return links


def solve(conductivity: np.ndarray, axis: int, rel_tol: float, device: str) -> TransportSolution:
    """Solve along `axis` with TauFactor; relative_conductance = sigma_eff / max(conductivity)."""
    _set_threads()
    field = np.ascontiguousarray(np.moveaxis(np.asarray(conductivity, dtype=np.float32), axis, 0))
    values = np.unique(field[field > 0])
    if values.size == 0:
        return TransportSolution(0.0, 0, True, 0.0, percolating=False)
    length = field.shape[0]
    iter_limit = max(ITER_LIMIT_MIN, ITER_LIMIT_PER_VOXEL * length)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # TauFactor prints its progress
        if values.size == 1:
            solver = tf.Solver((field > 0).astype(np.float32), device=device)
            solver.solve(iter_limit=iter_limit, verbose=False, conv_crit=rel_tol)
            relative = float(np.asarray(solver.D_rel).ravel()[0])
        else:
            labels = np.zeros(field.shape, dtype=np.float32)
            cond = {}
            for label, value in enumerate(values, start=1):
                labels[field == value] = label
                cond[label] = float(value / values[-1])
            solver = _FaceDirichletMultiPhaseSolver(labels, cond=cond, device=device)
            solver.solve(iter_limit=iter_limit, verbose=False, conv_crit=rel_tol)
            # TauFactor reports I (L + 1) / A for its ghost-layer length; ours is L.
            relative = float(np.asarray(solver.D_eff).ravel()[0]) * length / (length + 1)
        # TauFactor's own stopping measure (relative spread of the flux between layers)
        _, spread = solver.compute_metrics()
    wall_s = time.perf_counter() - start
    return TransportSolution(
        relative_conductance=relative,
        iterations=int(solver.iter),
        converged=bool(solver.converged),
        wall_s=wall_s,
        residual=float(np.max(np.abs(np.asarray(spread, dtype=float)))),
        method=f"taufactor {type(solver).__name__.lstrip('_')}",
    )
