"""The sub-volume convergence study: how many cubes of which size make a metric trustworthy.

A study folder holds:

```
<study>/study.json          the frozen plan (sizes, cubes per size, source, seed, solver)
        source.zarr/        the large volume(s) cubes are cut from, in chunk_voxels³ chunks
        source.done/<i>.json  one marker per generated volume (written last by its array task)
        tasks/<t>-rank<r>.json  what each process of solve task t cost (CPU s, peak memory, when)
        cubes/<L>_<i>.json  one result per cube: tortuosity, porosity, percolation, solve seconds,
                            the solving process's peak memory, host and SLURM job
        convergence.json    per-size statistics and the recommended (size, count)
        convergence.png     mean ± CI vs size, cubes needed vs size
```

Every cube is independent, so the work is split over SLURM array tasks (`task_index`, `n_tasks`)
and, inside a task, over MPI ranks (`python -m jobs.convergence run-task ...` under mpiexec/srun).
The procedural source volumes are generated one per array task too (`generate_source`), into a
store the driver created (`create_source`), chunked so that a cube decodes only its chunks.
A finished cube or volume is never made again: rerunning any part resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from jobs.store import read_json, write_json_atomic

STUDY_FILE = "study.json"
SOURCE_STORE = "source.zarr"
SOURCE_DONE = "source.done.json"
SOURCE_MARKERS = "source.done"   # one marker per generated source volume
TASK_RECORDS = "tasks"           # one cost record per process of a solve task
RESULT_FILE = "convergence.json"
PLOT_FILE = "convergence.png"
METRICS = ("tortuosity_factor", "effective_conductivity_S_m")
#: "disjoint": the cubes of one size never overlap while the sources hold enough of them (the
#: statistics treat cubes as independent samples); "random": origins drawn anywhere, as studies
#: frozen before this field were planned
CUBE_PLACEMENTS = ("disjoint", "random")

log = logging.getLogger(__name__)


@dataclass
class ConvergencePlan:
    """What a convergence study computes. `design` (procedural source) or `volume_path` (a user's
    labelled volume, .npy/.tif/.zarr) gives the material."""

    cube_voxels: list[int]
    cubes_per_size: int = 40
    design: dict[str, float] | None = None
    source_voxels: int = 256
    n_source_volumes: int = 1
    chunk_voxels: int = 64
    volume_path: str | None = None
    voxel_um: float = 0.5
    axis: int = 0
    metric: str = "tortuosity_factor"
    backend: str = "native"
    rel_tol: float = 1e-3
    conductivity_am_S_m: float | None = None
    conductivity_cbd_S_m: float | None = None
    confidence: float = 0.95
    relative_tolerance: float = 0.01
    n_bootstrap: int = 2000
    seed: int = 0
    cube_placement: str = "disjoint"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.cube_voxels or any(int(s) < 8 for s in self.cube_voxels):
            raise ValueError(f"cube_voxels must be a non-empty list of sizes >= 8, got {self.cube_voxels}")
        if self.cubes_per_size < 2:
            raise ValueError(f"cubes_per_size must be >= 2 (a spread needs two), got {self.cubes_per_size}")
        if (self.design is None) == (self.volume_path is None):
            raise ValueError("give exactly one material source: design (procedural) or volume_path")
        if self.design is not None and max(self.cube_voxels) > self.source_voxels:
            raise ValueError(f"the largest cube ({max(self.cube_voxels)}) exceeds source_voxels "
                             f"({self.source_voxels})")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if int(self.chunk_voxels) != self.chunk_voxels or self.chunk_voxels < 8:
            raise ValueError(f"chunk_voxels must be an integer >= 8, got {self.chunk_voxels}")
        if self.axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {self.axis}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if not 0 < self.relative_tolerance < 1:
            raise ValueError(f"relative_tolerance must be in (0, 1), got {self.relative_tolerance}")
        if self.cube_placement not in CUBE_PLACEMENTS:
            raise ValueError(f"cube_placement must be one of {', '.join(CUBE_PLACEMENTS)}, "
                             f"got {self.cube_placement!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ConvergencePlan:
        # a study frozen before cube_placement existed drew its origins at random
        return cls(**{"cube_placement": "random", **data})


@dataclass(frozen=True)
class CubeTask:
    cube_voxels: int
    index: int
    source_index: int
    origin: tuple[int, int, int]

    @property
    def name(self) -> str:
        return f"{self.cube_voxels}_{self.index:05d}"


# ---- planning and the source volumes ------------------------------------------------------------

def load_plan(study_dir: str | Path) -> ConvergencePlan:
    data = read_json(Path(study_dir) / STUDY_FILE)
    if data is None:
        raise FileNotFoundError(f"{study_dir} has no {STUDY_FILE}: start the study with `microloop convergence`")
    return ConvergencePlan.from_dict(data)


def init_study(study_dir: str | Path, plan: ConvergencePlan, make_source: bool = True) -> None:
    """Freeze the plan (or check that a resumed study has the same one) and, with
    `make_source`, make the source volumes here (else: `create_source` + `generate_source` per
    volume, e.g. as array tasks, then `finish_source`)."""
    plan.validate()
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    existing = read_json(study_dir / STUDY_FILE)
    if existing is not None:   # a study frozen before a field existed reads with its default
        try:
            same = ConvergencePlan.from_dict(existing).to_dict() == json.loads(
                json.dumps(plan.to_dict()))
        except TypeError:   # a key this version does not know
            same = False
        if not same:
            differ = sorted(k for k, v in json.loads(json.dumps(plan.to_dict())).items()
                            if existing.get(k, "random" if k == "cube_placement" else None) != v)
            raise ValueError(f"{study_dir} holds a different study (differs in "
                             f"{', '.join(differ) or 'its keys'}); use another folder or the "
                             "same plan")
    else:
        write_json_atomic(study_dir / STUDY_FILE, plan.to_dict())
    if make_source:
        ensure_source(study_dir, plan)


def _source_marker(study_dir: Path, index: int) -> Path:
    return study_dir / SOURCE_MARKERS / f"{int(index)}.json"


def source_shape(plan: ConvergencePlan) -> tuple[int, int, int, int]:
    """(volumes, L, L, L) of a procedural study's source store."""
    size = plan.source_voxels
    return (plan.n_source_volumes, size, size, size)


def create_source(study_dir: str | Path, plan: ConvergencePlan,
                  shape: tuple[int, ...] | None = None) -> zarr.Array:
    """Create the source store once, in the driver: array tasks starting together would race
    to create it. Chunks of `plan.chunk_voxels`³ inside one volume, so a cube decodes only the
    chunks it overlaps, and each volume is whole chunks written by one task."""
    study_dir = Path(study_dir)
    shape = tuple(shape or source_shape(plan))
    chunks = (1, *(min(plan.chunk_voxels, n) for n in shape[1:]))
    path = study_dir / SOURCE_STORE
    try:
        array = zarr.open_array(str(path), mode="r+")
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError,
            zarr.errors.NodeTypeValidationError):
        return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="uint8",
                                 fill_value=255, overwrite=True)
    if tuple(array.shape) != shape or tuple(array.chunks) != chunks:
        raise ValueError(f"{path} holds shape {array.shape} chunks {array.chunks}, not {shape} "
                         f"chunks {chunks}: the study's source changed; use another folder")
    return array


def generate_source(study_dir: str | Path, index: int) -> dict[str, Any]:
    """Generate source volume `index` of a procedural study (what one array task runs): its
    own whole chunks, then its marker. Idempotent: a volume with a marker is not made again."""
    from kernels.structure.procedural import ManufacturingParams, generate_structure

    study_dir = Path(study_dir)
    marker = _source_marker(study_dir, index)
    done = read_json(marker)
    if done is not None:
        return done
    plan = load_plan(study_dir)
    if plan.design is None or not 0 <= index < plan.n_source_volumes:
        raise ValueError(f"source volume {index}: the study has {plan.n_source_volumes} "
                         "procedural source volume(s)")
    params = ManufacturingParams(**plan.design)
    params.validate()
    array = zarr.open_array(str(study_dir / SOURCE_STORE), mode="r+")
    start_cpu = time.process_time()
    array[index] = generate_structure(params, plan.source_voxels, plan.voxel_um,
                                      seed=plan.seed * 1000 + index)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record = {"index": int(index), "cpu_s": time.process_time() - start_cpu,
              "process_cpu_s": usage.ru_utime + usage.ru_stime,   # imports included
              "peak_rss_mib": usage.ru_maxrss / 1024,
              "host": os.uname().nodename, "job_id": os.environ.get("SLURM_JOB_ID")}
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, record)
    return record


def missing_sources(study_dir: str | Path, plan: ConvergencePlan) -> list[int]:
    """Indices of the procedural source volumes without their marker."""
    return [i for i in range(plan.n_source_volumes)
            if not _source_marker(Path(study_dir), i).exists()]


def finish_source(study_dir: str | Path) -> None:
    """Seal the source (`source.done.json`) once every volume is in."""
    study_dir = Path(study_dir)
    plan = load_plan(study_dir)
    if plan.design is not None:
        missing = missing_sources(study_dir, plan)
        if missing:
            raise RuntimeError(f"{study_dir}: source volume(s) {missing} were not generated")
    array = zarr.open_array(str(study_dir / SOURCE_STORE), mode="r")
    write_json_atomic(study_dir / SOURCE_DONE, {"shape": list(array.shape),
                                                "chunks": list(array.chunks)})


def ensure_source(study_dir: str | Path, plan: ConvergencePlan) -> None:
    """Generate (or import) the source volumes here, once; finished ones are kept."""
    study_dir = Path(study_dir)
    if (study_dir / SOURCE_DONE).exists():
        return
    if plan.volume_path is not None:
        from jobs.volume_io import read_volume

        volume = np.asarray(read_volume(plan.volume_path))
        if volume.ndim == 3:
            volume = volume[None]
        array = create_source(study_dir, plan, volume.shape)
        for i in range(volume.shape[0]):
            array[i] = volume[i]
    else:
        create_source(study_dir, plan)
        for index in missing_sources(study_dir, plan):
            generate_source(study_dir, index)
    finish_source(study_dir)


def read_cube(source: zarr.Array, task: CubeTask) -> np.ndarray:
    """The voxels of one cube: zarr decodes only the chunks the slice overlaps."""
    s, (z, y, x) = task.cube_voxels, task.origin
    return np.asarray(source[task.source_index, z:z + s, y:y + s, x:x + s])


def independent_cubes(dims: tuple[int, ...] | list[int], n_sources: int, size: int) -> int:
    """How many non-overlapping cubes of edge `size` the sources hold: floor(d / size) per axis
    of each volume (a grid of cubes), times the volumes."""
    return int(n_sources) * math.prod(int(d) // int(size) for d in dims)


def overlap_warning(dims, n_sources: int, size: int, cubes_per_size: int) -> str | None:
    """What to tell a user who asks for more cubes of `size` than fit without overlap."""
    limit = independent_cubes(dims, n_sources, size)
    if cubes_per_size <= limit:
        return None
    return (f"study.cubes_per_size = {cubes_per_size} is more than the {limit} non-overlapping "
            f"{size}³ cubes the source holds ({n_sources} volume(s) of "
            f"{'x'.join(str(int(d)) for d in dims)}): {cubes_per_size - limit} cubes overlap "
            "others and are correlated with them, so the spread and the cubes needed are "
            "underestimated; raise material.n_source_volumes or material.source_voxels, or "
            f"lower study.cubes_per_size to {limit}")


def _disjoint_origins(rng: np.random.Generator, dims, size: int, n: int) -> list[tuple[int, ...]]:
    """Up to `n` origins of non-overlapping cubes in one volume: the slots of a grid of
    `size`-edged cells, shifted by a random offset inside the leftover margin, in random order."""
    counts = [int(d) // size for d in dims]
    offset = [int(rng.integers(0, int(d) - k * size + 1)) for d, k in zip(dims, counts, strict=True)]
    slots = list(itertools.product(*(range(k) for k in counts)))
    order = rng.permutation(len(slots))[:n]
    return [tuple(o + s * size for o, s in zip(offset, slots[j], strict=True)) for j in order]


def plan_cubes(study_dir: str | Path, plan: ConvergencePlan) -> list[CubeTask]:
    """The deterministic list of cubes, per size, spread round-robin over the source volumes.

    `disjoint` (the default): the cubes of one size do not overlap (each volume a grid of cube
    slots, a random offset, slots taken in random order); cubes beyond what fits are drawn at
    random origins, with a warning naming `study.cubes_per_size` and the limit. `random`: every
    origin drawn anywhere (studies frozen before the field)."""
    shape = read_json(Path(study_dir) / SOURCE_DONE)["shape"]
    n_sources, dims = shape[0], shape[1:]
    tasks = []
    for size in sorted(int(s) for s in plan.cube_voxels):
        if size > min(dims):
            raise ValueError(f"cube size {size} exceeds the source volume {dims}")
        rng = np.random.default_rng([plan.seed, size])
        slots: list[list[tuple[int, ...]]] = [[] for _ in range(n_sources)]
        if plan.cube_placement == "disjoint":
            warning = overlap_warning(dims, n_sources, size, plan.cubes_per_size)
            if warning:
                log.warning(warning)
            slots = [_disjoint_origins(rng, dims, size, len(range(s, plan.cubes_per_size,
                                                                  n_sources)))
                     for s in range(n_sources)]
        for i in range(plan.cubes_per_size):
            source, j = i % n_sources, i // n_sources
            if j < len(slots[source]):
                origin = slots[source][j]
            else:
                origin = tuple(int(rng.integers(0, d - size + 1)) for d in dims)
            tasks.append(CubeTask(size, i, source, origin))  # type: ignore[arg-type]
    return tasks


# ---- solving cubes ------------------------------------------------------------------------------

def cube_result_path(study_dir: str | Path, task: CubeTask) -> Path:
    return Path(study_dir) / "cubes" / f"{task.name}.json"


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def solve_cube(study_dir: str | Path, plan: ConvergencePlan, task: CubeTask) -> dict:
    """Cut one cube, measure it, store the result; a stored result is returned as it is."""
    path = cube_result_path(study_dir, task)
    stored = read_json(path)
    if stored is not None:
        return stored
    import torch

    from kernels.metrics import volume as kmetrics

    torch.set_num_threads(1)
    source = zarr.open_array(str(Path(study_dir) / SOURCE_STORE), mode="r")
    s = task.cube_voxels
    cube = read_cube(source, task)
    kmetrics.validate_labels(cube)
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    result: dict[str, Any] = {
        "cube_voxels": s, "index": task.index, "source_index": task.source_index,
        "origin": list(task.origin), "porosity": kmetrics.volume_fractions(cube)["pore"],
        "tortuosity_factor": None, "percolating": None, "effective_conductivity_S_m": None,
    }
    # only the studied metric is solved: the other transport solve would double the cost
    if plan.metric == "tortuosity_factor":
        tau, percolating = kmetrics.tortuosity_factor(cube, plan.axis, plan.backend, plan.rel_tol)
        result.update(tortuosity_factor=_finite_or_none(tau), percolating=percolating)
    else:
        conductivities = {k: v for k, v in (("conductivity_am_S_m", plan.conductivity_am_S_m),
                                             ("conductivity_cbd_S_m", plan.conductivity_cbd_S_m))
                          if v is not None}
        sigma = kmetrics.effective_conductivity_S_m(cube, plan.axis, backend=plan.backend,
                                                    rel_tol=plan.rel_tol, **conductivities)
        result.update(effective_conductivity_S_m=sigma, percolating=sigma > 0)
    result["solve_cpu_s"] = time.process_time() - start_cpu
    result["solve_wall_s"] = time.perf_counter() - start_wall
    # where it ran and the process's peak memory so far (Linux: KiB), against the estimate the
    # task requested (hpc.campaign.convergence_config): a rank solves its largest cubes first
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["host"] = os.uname().nodename
    result["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    write_json_atomic(path, result)
    return result


def task_share(tasks: list[CubeTask], task_index: int, n_tasks: int) -> list[CubeTask]:
    """The cubes array task `task_index` of `n_tasks` owns; big cubes first so they spread out."""
    ordered = sorted(tasks, key=lambda t: (-t.cube_voxels, t.index))
    return ordered[task_index::n_tasks]


def run_share(study_dir: str | Path, task_index: int = 0, n_tasks: int = 1, comm: Any = None) -> int:
    """Solve this array task's pending cubes over the MPI ranks of this program (dynamically, by
    jobs.mpi_pool: a rank that drew small cubes simply takes more); one rank without MPI.
    Returns the number of cubes solved."""
    from jobs.mpi_pool import map_dynamic

    plan = load_plan(study_dir)
    share = [t for t in task_share(plan_cubes(study_dir, plan), task_index, n_tasks)
             if not cube_result_path(study_dir, t).exists()]
    rank = 0 if comm is None else comm.Get_rank()
    start = time.time()
    solved_here = []

    def solve(i: int) -> bool:
        solved_here.append(share[i].name)
        return bool(solve_cube(study_dir, plan, share[i]))

    done = map_dynamic(solve, range(len(share)), comm)
    write_process_record(study_dir, f"{task_index}-rank{rank}", start,
                         task_index=task_index, n_tasks=n_tasks, rank=rank,
                         cubes=len(solved_here))
    return len(done)


def write_process_record(study_dir: str | Path, name: str, start: float, **fields: Any) -> None:
    """`D/tasks/<name>.json`: what one process of a task cost (its whole life's CPU seconds,
    imports included, its peak memory, when it ran and where), so a study at scale reports its
    real CPU and wall time and its load balance. Rewritten by a rerun (the rerun's cost)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record = {**fields, "cpu_s": usage.ru_utime + usage.ru_stime,
              "peak_rss_mib": usage.ru_maxrss / 1024, "start": start, "end": time.time(),
              "host": os.uname().nodename, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    path = Path(study_dir) / TASK_RECORDS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def launch_share(study_dir: str | Path, task_index: int, n_tasks: int, mpi_ranks: int = 1,
                 timeout_s: float | None = None) -> None:
    """Run one array task's share: in process for 1 rank, else on `mpi_ranks` MPI ranks started by
    the launcher jobs.characterise picks (srun in a multi-task allocation, else mpiexec)."""
    from jobs.characterise import mpi_launch_prefix

    prefix = mpi_launch_prefix(mpi_ranks) if mpi_ranks > 1 else None
    if prefix is None:
        if mpi_ranks > 1:
            raise RuntimeError("mpi_ranks > 1 but no MPI launcher (srun, mpiexec) was found; "
                               "install microloop-electrodes[mpich] or load your cluster's MPI")
        run_share(study_dir, task_index, n_tasks)
        return
    command = [*prefix, sys.executable, "-m", "jobs.convergence", "run-task", str(study_dir),
               "--task-index", str(task_index), "--n-tasks", str(n_tasks), "--ranks", str(mpi_ranks)]
    start = time.time()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... exited {completed.returncode}:\n"
                           f"{completed.stderr[-3000:]}")
    # this process only waited for the ranks (they are not its children under srun)
    write_process_record(study_dir, f"{task_index}-launcher", start, task_index=task_index,
                         n_tasks=n_tasks, ranks=mpi_ranks)


# ---- analysis -----------------------------------------------------------------------------------

def collect(study_dir: str | Path) -> tuple[ConvergencePlan, list[dict], int]:
    """The plan, the stored cube results and how many planned cubes are still missing."""
    plan = load_plan(study_dir)
    tasks = plan_cubes(study_dir, plan)
    results, missing = [], 0
    for task in tasks:
        stored = read_json(cube_result_path(study_dir, task))
        if stored is None:
            missing += 1
        else:
            results.append(stored)
    return plan, results, missing


def analyse(study_dir: str | Path) -> dict:
    """Per-size statistics and the recommendation; written to convergence.json."""
    from kernels.metrics.sampling_statistics import recommend, summarise_sizes

    plan, results, missing = collect(study_dir)
    by_size: dict[int, list[dict]] = {}
    for r in results:
        by_size.setdefault(int(r["cube_voxels"]), []).append(r)
    values = {size: np.array([np.nan if r[plan.metric] is None else r[plan.metric] for r in rows])
              for size, rows in by_size.items()}
    summaries = summarise_sizes(values, plan.confidence, plan.relative_tolerance,
                                plan.n_bootstrap, plan.seed)
    cost = {size: float(np.mean([r["solve_cpu_s"] for r in rows])) for size, rows in by_size.items()}
    best = recommend(summaries, cost, plan.relative_tolerance)
    per_size = []
    for s in summaries:
        rows = by_size[s.cube_voxels]
        per_size.append({
            "cube_voxels": s.cube_voxels, "n_cubes": s.n_cubes,
            "n_non_percolating": sum(1 for r in rows if not r["percolating"]),
            "tau_mean" if plan.metric == "tortuosity_factor" else "metric_mean": _finite_or_none(s.mean),
            "tau_sd" if plan.metric == "tortuosity_factor" else "metric_sd": _finite_or_none(s.std),
            "tau_ci95" if plan.metric == "tortuosity_factor" else "metric_ci95":
                [_finite_or_none(s.ci95_low), _finite_or_none(s.ci95_high)],
            "relative_half_width": _finite_or_none(s.relative_half_width),
            "bias_vs_largest": _finite_or_none(s.bias_vs_largest),
            "cubes_needed": s.cubes_needed if s.cubes_needed >= 1 else None,
            "solve_cpu_s": cost[s.cube_voxels],
        })
    summary = {
        "metric": plan.metric, "confidence": plan.confidence,
        "relative_tolerance": plan.relative_tolerance, "missing_cubes": missing,
        "per_size": per_size,
        "recommended": None if best is None else {
            "cube_voxels": best[0], "n_cubes": best[1], "solve_cpu_s": best[2]},
    }
    write_json_atomic(Path(study_dir) / RESULT_FILE, summary)
    return summary


def plot(study_dir: str | Path, summary: dict | None = None) -> Path:
    """Mean ± CI of the metric and the cubes needed, against cube size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summary or read_json(Path(study_dir) / RESULT_FILE)
    rows = summary["per_size"]
    if not rows:
        raise ValueError(f"{study_dir}: no cube has been solved yet, nothing to plot")
    key = "tau" if summary["metric"] == "tortuosity_factor" else "metric"
    sizes = [r["cube_voxels"] for r in rows]
    means = np.array([np.nan if r[f"{key}_mean"] is None else r[f"{key}_mean"] for r in rows])
    ci = np.array([[np.nan if v is None else v for v in r[f"{key}_ci95"]] for r in rows])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.errorbar(sizes, means, yerr=[means - ci[:, 0], ci[:, 1] - means], marker="o", capsize=4)
    left.set_xlabel("cube edge [voxels]")
    left.set_ylabel(f"{summary['metric']} (mean, {int(summary['confidence'] * 100)} % CI)")
    left.set_title("mean vs sub-volume size")
    needed = [r["cubes_needed"] or np.nan for r in rows]
    right.semilogy(sizes, needed, marker="s")
    right.set_xlabel("cube edge [voxels]")
    right.set_ylabel(f"cubes needed (±{summary['relative_tolerance'] * 100:g} %)")
    rec = summary.get("recommended")
    if rec:
        right.scatter([rec["cube_voxels"]], [rec["n_cubes"]], s=160, facecolors="none",
                      edgecolors="red", label=f"recommended: {rec['n_cubes']} × {rec['cube_voxels']}³")
        right.legend()
    right.set_title("cubes needed vs size")
    fig.tight_layout()
    out = Path(study_dir) / PLOT_FILE
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.convergence")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-task", help="solve one array task's share of cubes (MPI-aware)")
    run.add_argument("study_dir")
    run.add_argument("--task-index", type=int, default=int(os.environ.get("SLURM_ARRAY_TASK_ID", 0)))
    run.add_argument("--n-tasks", type=int, default=1)
    run.add_argument("--ranks", type=int, default=None, help="ranks the launcher was asked for (checked)")
    analyse_cmd = sub.add_parser("analyse", help="summarise stored cubes and plot")
    analyse_cmd.add_argument("study_dir")
    args = parser.parse_args(argv)
    if args.command == "run-task":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if args.ranks is not None and comm.Get_size() != args.ranks:
            raise SystemExit(f"expected {args.ranks} MPI ranks but this process sees {comm.Get_size()}: "
                             "the launcher does not match mpi4py's MPI (see MICROLOOP_MPI_LAUNCHER)")
        run_share(args.study_dir, args.task_index, args.n_tasks, comm)
    else:
        print(json.dumps(analyse(args.study_dir)))
        plot(args.study_dir)


if __name__ == "__main__":
    main()
