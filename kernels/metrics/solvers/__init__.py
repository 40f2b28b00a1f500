"""Transport solvers behind one `solve()` entry: one back-end per module.

The discrete problem every back-end solves (so that they return the same number)
--------------------------------------------------------------------------------
`conductivity` is a 3D field of non-negative numbers, one per voxel (0 = non-conducting), on a
grid of unit cubic voxels. Along `axis` the box is held between two electrodes: potential 0 on
the face before the first layer and 1 on the face after the last one (Dirichlet on the voxel
faces, half a voxel from the first/last voxel centres). The four other sides are insulating
(no flux). Unknowns sit at the voxel centres. Conductances:

* between two face-neighbouring voxels i, j: the harmonic mean 2 c_i c_j / (c_i + c_j)
  (0 if either is 0), i.e. two half-voxel resistors in series;
* between a voxel in the first or last layer and its electrode face: 2 c_i (a half-voxel).

Kirchhoff's current law at every conducting voxel gives a symmetric linear system. With I the
total current through any layer, A the cross-section (voxels) and L the length (voxels) along
`axis`, the box's effective conductivity is sigma_eff = I L / A (for a unit potential drop).

    relative_conductance = sigma_eff / max(conductivity)

For a binary pore field (1 in the pores) this is D_eff / D_bulk, so the tortuosity factor is
porosity / relative_conductance. For a multiphase electronic field in S/m the effective
conductivity in S/m is relative_conductance * max(conductivity). A uniform field gives exactly 1;
slabs in series give the harmonic mean of the slab conductivities weighted by thickness.

Before any back-end runs, `solve()` keeps only the conducting voxels that belong to a cluster
(face-connected, the stencil's connectivity) touching both electrode faces: isolated clusters and
dead ends attached to one face only carry no current, but iterative solvers converge on them
slowly or never. A field without such a cluster returns relative_conductance 0.0,
percolating False, converged True, without calling the back-end. So a back-end always receives a
field whose every conducting voxel lies on a spanning cluster, oriented with the flux along
axis 0 (`np.ascontiguousarray`, float32), and returns a `TransportSolution` whose
relative_conductance is sigma_eff / max(the field it received); `solve()` rescales that to the
maximum of the caller's field.

A number or a named failure: a back-end's result is accepted only if it converged and its value
is finite, positive and at most the parallel (Wiener) bound mean(c) / max(c) of the field it
received (any conductance of this discrete problem lies below it: the linear potential's
dissipation does). A result that fails this check is solved again by the native back-end
(whose own robust method is described in `native.py`); if that fails too, `solve()` raises
`SolverNotConverged` naming the back-ends, iterations, residual and axis. So every result
`solve()` returns has converged=True, and `method` says which back-end and method produced it.

Adding a back-end: write `kernels/solvers/<name>.py` with
`def solve(conductivity: np.ndarray, axis: int, rel_tol: float, device: str) -> TransportSolution`
and add its module name to `BACKEND_MODULES` (or call `register_backend`).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class TransportSolution:
    """Result of one transport solve; see the module docstring for the exact definition.

    relative_conductance: sigma_eff / max(conductivity) along the solved axis, dimensionless.
    iterations: solver iterations (0 for a direct solve or a non-percolating field).
    converged: the back-end's stopping criterion was met before its iteration limit.
    wall_s: seconds spent in the back-end (plus the percolation check).
    percolating: a conducting cluster connects the two electrode faces.
    residual: the back-end's own convergence measure of the returned value (native: relative
        residual norm ‖f − A x‖/‖f‖; taufactor: its relative flux spread); nan if not solved.
    method: how the value was obtained (back-end and method, retries joined by ' -> ').
    """

    relative_conductance: float
    iterations: int
    converged: bool
    wall_s: float
    percolating: bool = True
    residual: float = math.nan
    method: str = ""


class SolverNotConverged(RuntimeError):
    """No back-end produced an acceptable value; the message says who tried what.

    Picklable with its attributes (submitit and MPI ship exceptions between processes).
    """

    def __init__(self, message: str, backend: str, iterations: int, residual: float,
                 axis: int) -> None:
        super().__init__(message)
        self.backend = backend
        self.iterations = iterations
        self.residual = residual
        self.axis = axis

    def __reduce__(self):
        return (type(self), (str(self), self.backend, self.iterations, self.residual, self.axis))


BackendFn = Callable[[np.ndarray, int, float, str], TransportSolution]

# name -> module path holding `solve`; imported on first use so torch loads only when needed.
BACKEND_MODULES: dict[str, str] = {
    "taufactor": "kernels.metrics.solvers.taufactor_backend",
    "native": "kernels.metrics.solvers.native",
}
BACKENDS: dict[str, BackendFn] = {}
FALLBACK_BACKEND = "native"  # retries a result that failed `rejection_reason`
WIENER_SLACK = 1e-5  # float32 rounding allowed above the parallel bound


def register_backend(name: str, fn: BackendFn) -> None:
    """Make `fn` available as `solve(..., backend=name)`."""
    BACKENDS[name] = fn


def available_backends() -> list[str]:
    """The accepted `backend` names."""
    return sorted(set(BACKENDS) | set(BACKEND_MODULES))


def get_backend(name: str) -> BackendFn:
    """The solve function registered under `name`; ValueError listing the accepted names."""
    if name not in BACKENDS:
        if name not in BACKEND_MODULES:
            raise ValueError(
                f"backend must be one of {available_backends()}, got {name!r}"
            )
        module = importlib.import_module(BACKEND_MODULES[name])
        BACKENDS[name] = module.solve
    return BACKENDS[name]


def spanning_cluster(conducting: np.ndarray, axis: int = 0) -> np.ndarray:
    """Boolean mask of the face-connected clusters of `conducting` that touch both faces of `axis`."""
    labels, n = ndimage.label(conducting)  # default structure: 6-connectivity in 3D
    if n == 0:
        return np.zeros(conducting.shape, dtype=bool)
    first = np.unique(np.take(labels, 0, axis=axis))
    last = np.unique(np.take(labels, -1, axis=axis))
    through = np.intersect1d(first, last)
    through = through[through != 0]
    if through.size == 0:
        return np.zeros(conducting.shape, dtype=bool)
    keep = np.zeros(n + 1, dtype=bool)
    keep[through] = True
    return keep[labels]


def solve(
    conductivity: np.ndarray,
    axis: int = 0,
    backend: str = "native",
    rel_tol: float = 1e-3,
    device: str = "cpu",
) -> TransportSolution:
    """Effective conductance of a voxel field along `axis`, relative to its largest conductivity.

    rel_tol: the back-end's convergence tolerance (relative spread of the current between
    layers for the iterative solvers). device: 'cpu' or a torch device string such as 'cuda:0'.
    """
    field = np.asarray(conductivity)
    if field.ndim != 3:
        raise ValueError(f"conductivity must be a 3D array, got shape {field.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    if not np.issubdtype(field.dtype, np.number) or np.issubdtype(field.dtype, np.complexfloating):
        raise ValueError(f"conductivity must be a real numeric array, got dtype {field.dtype}")
    if not np.all(np.isfinite(field)) or field.min(initial=0.0) < 0:
        raise ValueError("conductivity must be finite and >= 0 everywhere")
    if not (0 < rel_tol < 1):
        raise ValueError(f"rel_tol must be in (0, 1), got {rel_tol!r}")
    fn = get_backend(backend)

    start = time.perf_counter()
    field = np.moveaxis(field, axis, 0)
    mask = spanning_cluster(field > 0, axis=0)
    if not mask.any():
        return TransportSolution(0.0, 0, True, time.perf_counter() - start, percolating=False,
                                 method="none (no spanning cluster)")
    reduced = np.ascontiguousarray(np.where(mask, field, 0), dtype=np.float32)
    wiener_bound = float(reduced.mean(dtype=np.float64)) / float(reduced.max())
    check_s = time.perf_counter() - start
    result = _call(fn, reduced, rel_tol, device)
    failure = rejection_reason(result, wiener_bound)
    attempts = [f"{backend}: {failure}"] if failure else []
    if failure and backend != FALLBACK_BACKEND:
        retry = _call(get_backend(FALLBACK_BACKEND), reduced, rel_tol, device)
        retry = dataclasses.replace(
            retry, wall_s=retry.wall_s + result.wall_s,
            method=f"{backend} ({failure}) -> {retry.method or FALLBACK_BACKEND}")
        result, failure = retry, rejection_reason(retry, wiener_bound)
        if failure:
            attempts.append(f"{FALLBACK_BACKEND}: {failure}")
    if failure:
        raise SolverNotConverged(
            f"transport solve along axis {axis} failed: " + "; ".join(attempts),
            backend=backend if len(attempts) == 1 else f"{backend} -> {FALLBACK_BACKEND}",
            iterations=result.iterations, residual=result.residual, axis=axis)
    # The back-end normalises by the largest conductivity it saw; report relative to the input's.
    return dataclasses.replace(
        result, percolating=True, wall_s=result.wall_s + check_s,
        relative_conductance=result.relative_conductance * float(reduced.max()) / float(field.max()))


def _call(fn: BackendFn, reduced: np.ndarray, rel_tol: float, device: str) -> TransportSolution:
    """Run a back-end on the spanning-cluster field; one that declares it (the native solver's
    ``takes_spanning_only``) is told so and does not label the clusters a second time."""
    if getattr(fn, "takes_spanning_only", False):
        return fn(reduced, 0, rel_tol, device, spanning_only=True)
    return fn(reduced, 0, rel_tol, device)


def rejection_reason(result: TransportSolution, wiener_bound: float) -> str | None:
    """Why a back-end's result on a percolating field is not a number to report; None if it is.

    wiener_bound: mean(c) / max(c) of the field the back-end received, an upper bound of any
    relative conductance of this discrete problem (the linear potential's dissipation).
    """
    value = result.relative_conductance
    detail = f"{result.iterations} iterations, residual {result.residual:.3g}"
    if result.method:
        detail += f", method {result.method}"
    if not result.converged:
        return f"not converged ({detail})"
    if not math.isfinite(value) or value <= 0:
        return f"relative conductance {value!r} is not a positive finite number ({detail})"
    if value > wiener_bound * (1 + WIENER_SLACK):
        return (f"relative conductance {value:.6g} exceeds the parallel bound "
                f"{wiener_bound:.6g} ({detail})")
    return None


__all__ = [
    "BACKENDS",
    "BACKEND_MODULES",
    "FALLBACK_BACKEND",
    "SolverNotConverged",
    "TransportSolution",
    "available_backends",
    "get_backend",
    "register_backend",
    "rejection_reason",
    "solve",
    "spanning_cluster",
]
