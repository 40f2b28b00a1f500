"""Convergence studies at scale: sources made in array tasks, stored chunked, read by chunk.

At 1000 cubes of 256³ the source volumes cannot be made in the driver (52 CPU-s and 3.8 GB per
512³) nor stored as one chunk per volume (every cube decoded the whole volume). Here, at a small
scale: 2 source volumes of 96³ in chunks of 32³, cubes of 32³.
"""

from __future__ import annotations

import itertools
import json
import subprocess

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, WrapperStore

from hpc.campaign.convergence_config import (
    build_convergence_file,
    estimate_rank_mem_gb,
    estimate_source_mem_gb,
)
from hpc.cli.commands.convergence import run_study
from jobs.convergence import (
    SOURCE_STORE,
    collect,
    ensure_source,
    init_study,
    load_plan,
    plan_cubes,
    read_cube,
)
from kernels.structure.procedural import ManufacturingParams, generate_structure

DESIGN = {"am_wt_frac": 0.92, "porosity": 0.40, "binder_adhesion": 0.5, "mean_diameter_um": 3.0}


def scale_study(**resources):
    return build_convergence_file({
        "material": {"design": DESIGN, "source_voxels": 96, "n_source_volumes": 2,
                     "chunk_voxels": 32, "voxel_um": 0.5},
        "study": {"cube_voxels": [32], "cubes_per_size": 4, "n_bootstrap": 200},
        "resources": resources,
    })


class RecordingStore(WrapperStore):
    """The real local store, remembering which keys were read."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.read: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.read.append(key)
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        self.read.extend(key for key, _ in key_ranges)
        return await self._store.get_partial_values(prototype, key_ranges)


def _overlapped_chunks(task, chunk: int) -> set[str]:
    ranges = [range(o // chunk, (o + task.cube_voxels - 1) // chunk + 1) for o in task.origin]
    return {f"c/{task.source_index}/{i}/{j}/{k}" for i, j, k in itertools.product(*ranges)}


def test_a_cube_read_decodes_only_the_chunks_it_overlaps(tmp_path):
    study = scale_study()
    plan = study.to_plan()
    init_study(tmp_path, plan)
    path = tmp_path / SOURCE_STORE
    whole = zarr.open_array(str(path), mode="r")
    assert whole.chunks == (1, 32, 32, 32)
    for task in plan_cubes(tmp_path, load_plan(tmp_path)):
        store = RecordingStore(LocalStore(str(path), read_only=True))
        cube = read_cube(zarr.open_array(store, mode="r"), task)
        chunks = {key for key in store.read if key.startswith("c/")}
        assert chunks == _overlapped_chunks(task, 32), task
        assert len(chunks) <= 8 < 27   # never the whole 96³ volume (27 chunks)
        s, (z, y, x) = task.cube_voxels, task.origin
        np.testing.assert_array_equal(cube, whole[task.source_index, z:z + s, y:y + s, x:x + s])
    # each volume is the simulator's, with its own seed
    params = ManufacturingParams(**DESIGN)
    np.testing.assert_array_equal(whole[1], generate_structure(params, 96, 0.5, seed=1))


def test_memory_per_rank_is_estimated_and_a_value_below_it_refused():
    study = scale_study()
    assert study.rank_mem_gb() == estimate_rank_mem_gb(32, "native")
    needed_256 = estimate_rank_mem_gb(256, "native")
    assert needed_256 > 3.6   # the evaluation model: 310 MB + 363 B per voxel, 5.9 GiB at 256³
    assert estimate_source_mem_gb(512) > 3.8e9 / 2**30   # measured: 3.8 GB per 512³ source
    with pytest.raises(ValueError, match="resources.mem_gb_per_rank = 1 is below"):
        build_convergence_file({"material": {"design": DESIGN, "source_voxels": 256},
                                "study": {"cube_voxels": [256]},
                                "resources": {"mem_gb_per_rank": 1.0}})


def test_a_study_frozen_before_chunking_resumes_with_its_default(tmp_path):
    plan = scale_study().to_plan()
    init_study(tmp_path, plan, make_source=False)
    frozen = json.loads((tmp_path / "study.json").read_text())
    del frozen["chunk_voxels"]
    (tmp_path / "study.json").write_text(json.dumps(frozen))
    plan.chunk_voxels = 64
    init_study(tmp_path, plan, make_source=False)   # the same study: no "different study"


def _sacct(name: str) -> list[list[str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ReqMem", "--name", name,
                          "-S", "now-1hour"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_study_generates_its_sources_in_array_tasks(tmp_path):
    study_dir = tmp_path / "study"
    summary = run_study(study_dir, scale_study(executor="slurm", n_tasks=2, walltime_min=10),
                        show_progress=False, poll_s=0.5)
    assert summary["errors"] == [] and summary["missing_cubes"] == 0
    markers = [json.loads((study_dir / "source.done" / f"{i}.json").read_text())
               for i in range(2)]
    jobs = [m["job_id"] for m in markers]
    assert all(jobs) and len(set(jobs)) == 2   # two array tasks, one volume each
    sources = [row for row in _sacct("microloop-convergence-source")
               if row[0].split("_")[0] in {j for j in jobs}]
    assert len(sources) == 2 and all(state == "COMPLETED" for _, state, _ in sources)
    assert all(mem == f"{int(estimate_source_mem_gb(96) * 1024)}M" for *_, mem in sources)
    # the same volumes as made in one process
    local = tmp_path / "local"
    init_study(local, scale_study().to_plan(), make_source=False)
    ensure_source(local, load_plan(local))
    np.testing.assert_array_equal(zarr.open_array(str(study_dir / SOURCE_STORE))[:],
                                  zarr.open_array(str(local / SOURCE_STORE))[:])
    _, results, _ = collect(study_dir)
    assert len(results) == 4 and all(r["tortuosity_factor"] > 1 for r in results)
