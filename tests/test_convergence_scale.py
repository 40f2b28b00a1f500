"""Convergence studies at scale: sources made in array tasks, stored chunked, read by chunk.

At 1000 cubes of 256³ the source volumes cannot be made in the driver (52 CPU-s and 3.8 GB per
512³) nor stored as one chunk per volume (every cube decoded the whole volume). Here, at a small
scale: 2 source volumes of 96³ in chunks of 32³, cubes of 32³.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, WrapperStore

from hpc.campaign.convergence_config import (
    build_convergence_file,
    chunks_per_cube,
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
    task_share,
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
    # held out: a 256³ native tortuosity rank of a real study task on the test SLURM peaked at
    # 1545 MiB (1 Dec 2026); the model, fitted at 64-192³, covers it, within 2x (the
    # evaluation's model requested 7.2 GiB)
    needed_256 = estimate_rank_mem_gb(256, "native")
    assert 1545 <= needed_256 * 1024 <= 2 * 1545
    # a conductivity rank holds more than a tortuosity one (the float64 high-contrast path)
    assert estimate_rank_mem_gb(128, "native", "effective_conductivity_S_m") > \
        estimate_rank_mem_gb(128, "native")
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
    # the accounting daemon records finished jobs asynchronously (seconds behind on a loaded
    # machine): wait for both rows before reading them
    deadline = time.monotonic() + 60
    while True:
        sources = [row for row in _sacct("microloop-convergence-source")
                   if row[0].split("_")[0] in {j for j in jobs}]
        done = len(sources) == 2 and all(state == "COMPLETED" for _, state, _ in sources)
        if done or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert done, sources
    assert all(mem == f"{int(estimate_source_mem_gb(96) * 1024)}M" for *_, mem in sources)
    # the same volumes as made in one process
    local = tmp_path / "local"
    init_study(local, scale_study().to_plan(), make_source=False)
    ensure_source(local, load_plan(local))
    np.testing.assert_array_equal(zarr.open_array(str(study_dir / SOURCE_STORE))[:],
                                  zarr.open_array(str(local / SOURCE_STORE))[:])
    _, results, _ = collect(study_dir)
    assert len(results) == 4 and all(r["tortuosity_factor"] > 1 for r in results)
    # each cube solved once, by the array task that owns it; every process's cost recorded,
    # its peak memory within what the task requested per rank
    records = [json.loads(p.read_text()) for p in sorted((study_dir / "tasks").glob("*.json"))]
    assert sorted(r["task_index"] for r in records) == [0, 1]
    assert sum(r["cubes"] for r in records) == 4
    tasks = load_plan(study_dir)
    for record in records:
        owned = task_share(plan_cubes(study_dir, tasks), record["task_index"], 2)
        assert {r["slurm_job_id"] for r in results
                if (r["cube_voxels"], r["index"]) in {(t.cube_voxels, t.index) for t in owned}
                } == {record["slurm_job_id"]}
        assert 0 < record["cpu_s"] and record["end"] > record["start"]
        assert record["peak_rss_mib"] < estimate_rank_mem_gb(32, "native") * 1024


# ---- the plan at scale, printed before anything runs ------------------------------------------

def _brute_force_chunks(cube: int, chunk: int, source: int) -> int:
    """The most chunks a cube overlaps, by trying every origin along one axis."""
    per_axis = max(len({v // chunk for v in range(o, o + cube)})
                   for o in range(source - cube + 1))
    return per_axis ** 3


def test_chunks_per_cube_is_the_most_any_origin_overlaps():
    for cube, chunk, source in [(256, 64, 512), (256, 128, 512), (32, 32, 96), (24, 32, 96),
                                (33, 32, 96), (96, 32, 96), (100, 64, 128), (16, 64, 64)]:
        assert chunks_per_cube(cube, chunk, source) == _brute_force_chunks(cube, chunk, source), \
            (cube, chunk, source)


def test_a_cube_read_never_decodes_more_chunks_than_the_plan_says(tmp_path):
    study = scale_study()
    plan = study.resource_plan()
    init_study(tmp_path, study.to_plan())
    path = tmp_path / SOURCE_STORE
    most = 0
    for task in plan_cubes(tmp_path, load_plan(tmp_path)):
        store = RecordingStore(LocalStore(str(path), read_only=True))
        read_cube(zarr.open_array(store, mode="r"), task)
        most = max(most, len({key for key in store.read if key.startswith("c/")}))
    assert 1 <= most <= plan.chunks_per_largest_cube_max == 8


def test_the_plan_for_1000_cubes_of_256_states_tasks_memory_and_chunks(tmp_path):
    """`microloop convergence --plan` on the design card's scale: nothing runs, no folder is
    made; memory per rank is the estimate for a 256³ cube, a task asks for its ranks' memory."""
    from typer.testing import CliRunner

    from hpc.cli.app import app

    args = ["convergence", "--design", "am_wt_frac=0.94,porosity=0.35", "--sizes", "256",
            "--cubes-per-size", "1000", "--source-voxels", "512", "--source-volumes", "64",
            "--chunk-voxels", "64", "--executor", "slurm", "--tasks", "125", "--mpi-ranks", "8",
            "--dir", str(tmp_path / "study"), "--plan", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert not (tmp_path / "study").exists()
    rank = estimate_rank_mem_gb(256, "native")
    assert plan["rank_mem_gib"] == rank and plan["rank_mem_estimated"]
    assert rank * 1024 >= 1545   # the peak of a real 256³ rank (see above)
    assert plan["task_mem_gib"] == pytest.approx(8 * rank, abs=0.05)
    assert (plan["n_cubes"], plan["n_tasks"], plan["cubes_per_task_max"]) == (1000, 125, 8)
    assert plan["n_source_tasks"] == 64 and plan["source_mem_gib"] == estimate_source_mem_gb(512)
    assert plan["source_gib_uncompressed"] == 8.0   # 64 x 512³ bytes
    assert plan["chunks_per_largest_cube_max"] == 125   # 5 per axis: 256 straddles 64-chunks
    assert plan["decoded_voxels_per_largest_cube_max"] == 125 * 64**3
    text = CliRunner().invoke(app, args[:-1])
    assert text.exit_code == 0 and "memory per rank: " in text.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_a_thousand_cubes_on_slurm_are_each_solved_once_by_their_own_task(tmp_path):
    """The design card's 1000 cubes, at 16³: 4 sources made by 4 array tasks, the cubes by 4
    array tasks; every cube solved exactly once, by the task that owns it, reading its chunks."""
    study_dir = tmp_path / "study"
    study = build_convergence_file({
        "material": {"design": DESIGN, "source_voxels": 64, "n_source_volumes": 4,
                     "chunk_voxels": 16, "voxel_um": 0.5},
        "study": {"cube_voxels": [16], "cubes_per_size": 1000, "n_bootstrap": 200},
        "resources": {"executor": "slurm", "n_tasks": 4, "walltime_min": 30},
    })
    assert study.resource_plan().chunks_per_largest_cube_max == 8
    summary = run_study(study_dir, study, show_progress=False, poll_s=1.0)
    assert summary["errors"] == [] and summary["missing_cubes"] == 0
    assert len({json.loads(p.read_text())["job_id"]
                for p in (study_dir / "source.done").glob("*.json")}) == 4
    plan = load_plan(study_dir)
    _, results, _ = collect(study_dir)
    assert len(results) == 1000
    records = [json.loads(p.read_text()) for p in (study_dir / "tasks").glob("*.json")]
    assert sorted(r["task_index"] for r in records) == [0, 1, 2, 3]
    assert sum(r["cubes"] for r in records) == 1000   # none solved twice
    job_of_task = {r["task_index"]: r["slurm_job_id"] for r in records}
    assert len(set(job_of_task.values())) == 4
    solved_by = {(r["cube_voxels"], r["index"]): r["slurm_job_id"] for r in results}
    for task_index, job in job_of_task.items():
        owned = task_share(plan_cubes(study_dir, plan), task_index, 4)
        assert len(owned) == 250
        assert {solved_by[(t.cube_voxels, t.index)] for t in owned} == {job}
    percolating = [r["tortuosity_factor"] for r in results if r["percolating"]]
    assert len(percolating) > 500 and all(tau >= 1 for tau in percolating)
