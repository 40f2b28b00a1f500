"""The convergence-study file (TOML) as validated models; errors name the key and the fix.

Strict like the campaign file (no coercion, finite numbers), with the voxel and cube sizes and the
recipe checked against `kernels.cell.ranges`: a study recommends only what a campaign accepts.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpc.campaign.config import format_validation_error, in_range
from hpc.campaign.memory_estimate import BYTES_PER_VOXEL, GIB, PROCESS_BASE_BYTES
from jobs.convergence import ConvergencePlan
from kernels.cell import ranges

#: what a procedural recipe may hold (mass loading sets a thickness, not a microstructure)
RECIPE_RANGES = {**{k: v for k, v in ranges.DESIGN_PARAMETERS.items()
                    if k != "mass_loading_mg_cm2"}, **ranges.PARTICLE_PARAMETERS}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class MaterialSection(_Strict):
    design: dict[str, float] | None = Field(
        None, description="procedural recipe: am_wt_frac, porosity, binder_adhesion, ...")
    volume: str | None = Field(None, description="a labelled volume file (.npy, .tif, .zarr) instead")
    source_voxels: int = Field(256, ge=16, le=2048)
    n_source_volumes: int = Field(1, ge=1, le=64)
    chunk_voxels: int = Field(64, ge=8, le=512, description="edge of the source store's chunks: "
                              "a cube decodes only the chunks it overlaps")
    voxel_um: in_range(ranges.VOXEL_UM) = 0.5
    axis: Literal[0, 1, 2] = 0

    @field_validator("design")
    @classmethod
    def _recipe_in_range(cls, design: dict[str, float] | None) -> dict[str, float] | None:
        for name, value in (design or {}).items():
            if name not in RECIPE_RANGES:
                raise ValueError(f"unknown recipe key {name!r}; accepted: {', '.join(RECIPE_RANGES)}")
            if not RECIPE_RANGES[name].contains(value):
                raise ValueError(f"{name} = {value!r}; expected {RECIPE_RANGES[name].describe()}")
        return design

    @model_validator(mode="after")
    def _one_source(self) -> MaterialSection:
        if (self.design is None) == (self.volume is None):
            raise ValueError("give exactly one of material.design or material.volume")
        return self


class StudySection(_Strict):
    cube_voxels: list[in_range(ranges.CUBE_VOXELS)] = Field([32, 48, 64, 96, 128], min_length=1)
    cubes_per_size: int = Field(40, ge=2, le=100000)
    metric: Literal["tortuosity_factor", "effective_conductivity_S_m"] = "tortuosity_factor"
    backend: Literal["taufactor", "native"] = "native"
    rel_tol: float = Field(1e-3, gt=0, lt=0.1)
    confidence: float = Field(0.95, gt=0, lt=1)
    relative_tolerance: float = Field(0.01, gt=0, lt=1)
    n_bootstrap: int = Field(2000, ge=100)
    seed: int = 0
    cube_placement: Literal["disjoint", "random"] = Field(
        "disjoint", description="disjoint: the cubes of one size do not overlap (a warning "
        "names the limit when more are asked for than fit); random: origins drawn anywhere")


class ResourcesSection(_Strict):
    executor: Literal["local", "slurm"] = "local"
    n_tasks: int = Field(1, ge=1, le=100000, description="SLURM array tasks the cubes are split over")
    mpi_ranks_per_task: int = Field(1, ge=1, le=1024)
    partition: str | None = None
    account: str | None = None
    walltime_min: int = Field(60, ge=1)
    mem_gb_per_rank: float | None = Field(
        None, gt=0, description="memory per MPI rank of a solve task (default: estimated from "
        "the largest cube; a value below the estimate is refused)")
    source_mem_gb: float | None = Field(
        None, gt=0, description="memory of one source-generation task (default: estimated)")


#: Bytes per voxel of generating one procedural source volume (peak RSS above the process
#: base): 3.8 GB for one 512³ volume (issue 19), i.e. (3.8e9 - 0.31e9) / 512³ ≈ 26.
SOURCE_BYTES_PER_VOXEL = 26.0
#: Headroom on the estimates when requesting memory (the models are fits, +-10 %).
MEMORY_HEADROOM = 1.2


def _gib(bytes_: float) -> float:
    """GiB rounded up to 0.1 with the headroom."""
    return math.ceil(bytes_ * MEMORY_HEADROOM / GIB * 10) / 10


#: Peak RSS (MiB) of one study rank solving one cube of the studied metric only, in a fresh
#: process (tests/benchmarks/bench_convergence_memory.py, the real `solve_cube`; 1 Dec 2026; the
#: process after its imports: 257 MiB). A rank solves one metric, a fraction of what an
#: evaluation holds (every metric of a design: hpc.campaign.memory_estimate), whose model
#: over-requested a 256³ native tortuosity rank 4.8-fold (7.2 GiB for a measured 1.51 GiB).
MEASURED_RANK_PEAK_MIB: dict[tuple[str, str], dict[int, float]] = {
    ("tortuosity_factor", "native"): {64: 297.8, 128: 528.9, 192: 833.5},
    ("tortuosity_factor", "taufactor"): {64: 321.9, 128: 537.2, 192: 815.5},
    ("effective_conductivity_S_m", "native"): {64: 329.2, 128: 807.5, 192: 1711.1},
}


def _rank_bytes_per_voxel(peaks_mib: dict[int, float]) -> float:
    """The largest measured bytes per voxel above the process base: the per-voxel cost falls
    with size (fixed buffers), so the largest ratio keeps larger cubes on the safe side."""
    return max((mib * 2**20 - PROCESS_BASE_BYTES) / size**3 for size, mib in peaks_mib.items())


#: bytes per voxel of a study rank, by (metric, back-end), from the measurements above. The
#: conductivity with TauFactor was not measured past 64³ (340 MiB; 23 CPU-s there, it rarely
#: converges at this contrast): it takes the evaluation's per-voxel cost, an upper bound (an
#: evaluation solves it and every other metric; 164 B per voxel measured at 128³).
RANK_BYTES_PER_VOXEL = {
    **{key: _rank_bytes_per_voxel(peaks) for key, peaks in MEASURED_RANK_PEAK_MIB.items()},
    ("effective_conductivity_S_m", "taufactor"): max(
        BYTES_PER_VOXEL["taufactor"], _rank_bytes_per_voxel({64: 340.4})),
}


def estimate_rank_mem_gb(largest_cube_voxels: int, backend: str,
                         metric: str = "tortuosity_factor") -> float:
    """Memory one MPI rank of a solve task needs: one process solving its largest cube's
    studied metric (310 MB of imports + the measured bytes per voxel), with the headroom."""
    key = (metric, backend)
    if key not in RANK_BYTES_PER_VOXEL:
        raise ValueError(f"no memory model for metric {metric!r} with backend {backend!r}; "
                         f"known: {sorted(RANK_BYTES_PER_VOXEL)}")
    return _gib(PROCESS_BASE_BYTES + RANK_BYTES_PER_VOXEL[key] * float(largest_cube_voxels) ** 3)


def estimate_source_mem_gb(source_voxels: int) -> float:
    """Memory of one source-generation task (one procedural volume)."""
    return _gib(PROCESS_BASE_BYTES + SOURCE_BYTES_PER_VOXEL * float(source_voxels) ** 3)


def chunks_per_cube(cube_voxels: int, chunk_voxels: int, source_voxels: int | None = None) -> int:
    """The most chunks a cube at any origin overlaps: per axis ceil((L - 1) / c) + 1 (an
    unaligned cube straddles one more chunk than it spans), at most the source's chunks."""
    per_axis = math.ceil((cube_voxels - 1) / chunk_voxels) + 1
    if source_voxels is not None:
        per_axis = min(per_axis, math.ceil(source_voxels / chunk_voxels))
    return per_axis ** 3


@dataclass(frozen=True)
class StudyResourcePlan:
    """What a study will submit and request, before anything runs (`microloop convergence
    --plan`): solve tasks and their memory per rank, source tasks and theirs, how the source
    is chunked and how much of it the largest cube decodes. Memory in GiB as requested (the
    estimate with its headroom, or the value the file gives)."""

    n_cubes: int
    cube_voxels: tuple[int, ...]
    executor: str
    n_tasks: int
    mpi_ranks_per_task: int
    cubes_per_task_max: int
    rank_mem_gib: float
    rank_mem_estimated: bool
    task_mem_gib: float
    n_source_tasks: int
    source_voxels: int | None
    source_mem_gib: float | None
    source_gib_uncompressed: float | None
    chunk_voxels: int
    chunks_per_largest_cube_max: int
    decoded_voxels_per_largest_cube_max: int

    def to_dict(self) -> dict:
        return asdict(self)


class ConvergenceFile(_Strict):
    material: MaterialSection
    study: StudySection = StudySection()
    resources: ResourcesSection = ResourcesSection()

    @model_validator(mode="after")
    def _memory_fits(self) -> ConvergenceFile:
        given = self.resources.mem_gb_per_rank
        needed = estimate_rank_mem_gb(max(self.study.cube_voxels), self.study.backend,
                                      self.study.metric)
        if given is not None and given < needed:
            raise ValueError(f"resources.mem_gb_per_rank = {given:g} is below the estimated "
                             f"{needed:g} GiB a rank needs for the {self.study.metric} of a "
                             f"{max(self.study.cube_voxels)}³ cube with the {self.study.backend} "
                             "solver; raise it or leave it "
                             "out (then the estimate is requested)")
        return self

    def rank_mem_gb(self) -> float:
        """What a solve task requests per rank (`--mem-per-cpu`): the given value or the
        estimate."""
        return self.resources.mem_gb_per_rank or estimate_rank_mem_gb(
            max(self.study.cube_voxels), self.study.backend, self.study.metric)

    def source_mem_gb(self) -> float:
        """What one source-generation task requests."""
        return self.resources.source_mem_gb or estimate_source_mem_gb(
            self.material.source_voxels)

    def resource_plan(self) -> StudyResourcePlan:
        """The study's tasks, memory and chunking (see `StudyResourcePlan`)."""
        res, mat = self.resources, self.material
        sizes = tuple(sorted(self.study.cube_voxels))
        n_cubes = len(sizes) * self.study.cubes_per_size
        procedural = mat.design is not None
        source = mat.source_voxels if procedural else None
        largest = sizes[-1]
        chunk = min(mat.chunk_voxels, source) if source else mat.chunk_voxels  # as stored
        chunks = chunks_per_cube(largest, chunk, source)
        rank = self.rank_mem_gb()
        return StudyResourcePlan(
            n_cubes=n_cubes, cube_voxels=sizes, executor=res.executor, n_tasks=res.n_tasks,
            mpi_ranks_per_task=res.mpi_ranks_per_task,
            cubes_per_task_max=math.ceil(n_cubes / res.n_tasks), rank_mem_gib=rank,
            rank_mem_estimated=res.mem_gb_per_rank is None,
            task_mem_gib=round(rank * res.mpi_ranks_per_task, 1),
            n_source_tasks=mat.n_source_volumes if procedural and res.executor == "slurm" else 0,
            source_voxels=source, source_mem_gib=self.source_mem_gb() if procedural else None,
            source_gib_uncompressed=(round(mat.n_source_volumes * source**3 / GIB, 2)
                                     if procedural else None),
            chunk_voxels=chunk, chunks_per_largest_cube_max=chunks,
            decoded_voxels_per_largest_cube_max=chunks * chunk**3,
        )

    def to_plan(self) -> ConvergencePlan:
        return ConvergencePlan(
            cube_voxels=sorted(self.study.cube_voxels), cubes_per_size=self.study.cubes_per_size,
            design=self.material.design, source_voxels=self.material.source_voxels,
            n_source_volumes=self.material.n_source_volumes,
            chunk_voxels=self.material.chunk_voxels,
            volume_path=str(Path(self.material.volume).resolve()) if self.material.volume else None,
            voxel_um=self.material.voxel_um, axis=self.material.axis, metric=self.study.metric,
            backend=self.study.backend, rel_tol=self.study.rel_tol,
            confidence=self.study.confidence, relative_tolerance=self.study.relative_tolerance,
            n_bootstrap=self.study.n_bootstrap, seed=self.study.seed,
            cube_placement=self.study.cube_placement,
        )


def load_convergence_file(path: str | Path, overrides: dict | None = None) -> ConvergenceFile:
    """Parse and validate; `overrides` are merged per section (command-line flags win)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from error
    return build_convergence_file(data, overrides, str(path))


def build_convergence_file(data: dict, overrides: dict | None = None,
                           source: str = "<dict>") -> ConvergenceFile:
    merged = {section: dict(values) for section, values in data.items()}
    for section, values in (overrides or {}).items():
        merged.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        return ConvergenceFile.model_validate(merged)
    except ValidationError as error:
        raise ValueError(format_validation_error(error, source, ConvergenceFile,
                                                 "convergence study")) from None
