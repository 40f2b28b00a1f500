"""Peak memory of one evaluation, estimated before anything is submitted.

Why: a cube_voxels of 512 needs ~17 GiB per rank; submitted with the default `mem_gb = 4` every
job is OOM-killed and recorded only as "its process died". The estimate turns that into a
config error naming the fields to change.

Model (one process per MPI rank, each characterising one cube at a time, the cubes generated
one at a time): ``peak = ranks_used * (PROCESS_BASE_BYTES + BYTES_PER_VOXEL[backend] * L**3)``
with ``ranks_used = min(ranks, n_cubes)``, plus one more process base for the job's own
process when the ranks are separate MPI processes.

Measured on this project's CPU container (procedural structure + all metrics, particle size
included, at rel_tol 1e-2 with the default intrinsic conductivities - the float64 high-contrast
solver path - peak RSS from /proc VmHWM, a fresh process per size), re-measured after the cell
physics and solver changes (the first fit, 134/148 bytes per voxel, was 20 % low afterwards):

| backend   | peak 64^3 | peak 96^3 | peak 128^3 | slope (bytes/voxel) | intercept |
|-----------|-----------|-----------|------------|---------------------|-----------|
| native    | 368.4 MB  | 503.1 MB  | 694.5 MB   | 216                 | 310 MB    |
| taufactor | 349.5 MB  | 456.5 MB  | 654.8 MB   | 172                 | 310 MB    |

(128^3: the model gives 763 / 671 MB, +10 % / +2 %, on the safe side).

(the process after importing numpy, torch and taufactor: 294 MB). Not included: the PyBaMM model
when the cell sweeps run inside the job (`dask_workers = 0`) and GPU memory. The estimate is
therefore a lower bound, used to refuse what surely does not fit, not to size a job tightly.
It is the steady state: the first run on a checkout also compiles the numba kernels (cached on
disk after that), which adds 50-90 MB once (576 / 651 / 769 MB cold against 484 / 556 / 720 MB
warm at 64 / 80 / 96^3, measured 2026-12-01 after the fused-kernel changes). Extrapolated to 256^3 the
native model gives 3.6 GiB (the 2.27 GiB of issue 20 was measured before the particle-size and
high-contrast solver stages existed).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

#: RSS of a process that has imported numpy, torch, taufactor (the intercept of the fit)
PROCESS_BASE_BYTES = 310e6
#: the fitted slope per voxel of one cube, by transport solver (native re-measured 2026-12-01
#: at 64^3, 80^3 and 96^3 after the float32-cycle robust solve: VmHWM 372, 496, 633 MB)
BYTES_PER_VOXEL = {"native": 363.0, "taufactor": 172.0}
GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one evaluation and what it is made of (for the message)."""

    peak_bytes: float
    ranks_used: int
    per_rank_bytes: float

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB


def volume_peak_bytes(n_voxels: int, backend: str = "native") -> float:
    """Peak bytes of characterising one volume of `n_voxels` in one process."""
    if backend not in BYTES_PER_VOXEL:
        raise ValueError(f"backend {backend!r} has no memory model; known: "
                         f"{sorted(BYTES_PER_VOXEL)}")
    return PROCESS_BASE_BYTES + BYTES_PER_VOXEL[backend] * float(n_voxels)


def estimate_evaluation(cube_voxels: int, n_cubes: int, ranks: int,
                        backend: str = "native") -> MemoryEstimate:
    """Peak bytes of one evaluation (see the module docstring for the model)."""
    for name, value in (("cube_voxels", cube_voxels), ("n_cubes", n_cubes), ("ranks", ranks)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    ranks_used = min(int(ranks), int(n_cubes))
    per_rank = volume_peak_bytes(int(cube_voxels) ** 3, backend)
    job_process = PROCESS_BASE_BYTES if ranks_used > 1 else 0.0
    return MemoryEstimate(ranks_used * per_rank + job_process, ranks_used, per_rank)


def check_evaluation_memory(cube_voxels: int, n_cubes: int, ranks: int, mem_gb: float,
                            backend: str = "native") -> MemoryEstimate:
    """The estimate, or ValueError naming the fields when it exceeds `mem_gb` (resources.mem_gb)."""
    estimate = estimate_evaluation(cube_voxels, n_cubes, ranks, backend)
    if estimate.peak_bytes > mem_gb * GIB:
        raise ValueError(
            f"resources.mem_gb = {mem_gb:g} is below the estimated peak memory of one evaluation, "
            f"{estimate.peak_gib:.2f} GiB ({estimate.ranks_used} rank(s) x "
            f"{estimate.per_rank_bytes / GIB:.2f} GiB for a {cube_voxels}^3 cube with the "
            f"{backend} solver): raise resources.mem_gb to at least "
            f"{math.ceil(estimate.peak_gib * 1.1 * 10) / 10:g}, or lower fidelity.cube_voxels "
            "or fidelity.mpi_ranks")
    return estimate


def available_memory_bytes() -> float:
    """What this process may still allocate: MemAvailable, capped by a cgroup v2 limit."""
    available = math.inf
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current") as handle:
            used = float(handle.read().strip())
        if limit != "max":
            available = min(available, float(limit) - used)
    except (OSError, ValueError):
        pass
    if available == math.inf:  # not Linux: fall back to the physical memory
        available = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return available
