"""GPU nodes without a GPU: the device choice as pure functions, and the rank-to-GPU mapping on
the test SLURM's GRES stand-in (device files with no CUDA behind them).

SLURM sets CUDA_VISIBLE_DEVICES from the job's GRES and SLURM_LOCALID per rank; an evaluation's
ranks must land on different GPUs. The timings on a real GPU: tests/benchmarks/gpu_check.py,
whose dry run (every stage on the CPU) is run here so the script is known to work before a GPU
session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.devices import (
    choose_device,
    local_rank_from_env,
    rank_gpu_map,
    ranks_per_gpu,
    select_device,
    visible_gpu_count,
)


def test_ranks_are_dealt_round_robin_to_the_visible_gpus():
    assert rank_gpu_map(4, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert rank_gpu_map(2, 0) == ["cpu", "cpu"]
    assert [ranks_per_gpu(r, 2) for r in (1, 2, 3, 4)] == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="local_rank"):
        choose_device(-1, 2)


def test_what_the_launcher_and_slurm_export_is_read():
    assert local_rank_from_env({"SLURM_LOCALID": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == 3
    assert local_rank_from_env({"MPI_LOCALRANKID": "2"}) == 2   # MPICH's Hydra
    assert local_rank_from_env({}) is None
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1"}) == 2
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == 0
    assert visible_gpu_count({}) is None


def test_gpus_given_but_unusable_run_on_the_cpu_and_say_so(caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    choice = select_device(environ={"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_LOCALID": "1"})
    assert choice.device == "cpu" and choice.local_rank == 1
    assert "torch sees none" in choice.reason and "given" in caplog.text


@pytest.mark.slurm
@pytest.mark.mpi
def test_an_evaluation_jobs_ranks_map_to_different_gres_gpus(tmp_path, monkeypatch):
    from hpc.machine.evaluation_task import MPI_LAUNCHER_ENV, probe_job_devices
    from hpc.machine.executor import Executor

    monkeypatch.delenv(MPI_LAUNCHER_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    # the evaluation role's own request: 2 GPUs per job (--gpus-per-node), 2 CPUs for 2 ranks
    executor = Executor("slurm", tmp_path, gpus_per_task=2, cpus_per_task=2, mem_gb=1.0,
                        walltime_min=5, max_array_size=16)
    job_id = executor.submit(probe_job_devices, 2)
    import time

    deadline = time.monotonic() + 180
    while (status := executor.poll([job_id])[job_id]).state not in ("finished", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(1)
    outcome = executor.outcome(job_id)
    assert outcome.ok, outcome.error
    ranks = outcome.value
    assert [r["visible_devices"] for r in ranks] == ["0,1", "0,1"]   # SLURM's GRES indices
    assert [r["local_rank"] for r in ranks] == [0, 1]
    assert [r["planned_device"] for r in ranks] == ["cuda:0", "cuda:1"]


@pytest.mark.slow
def test_the_gpu_check_dry_run_runs_every_stage_on_the_cpu(tmp_path):
    """`gpu_check.py --dry-run` from another folder: generation, both solves with both solvers,
    and the batch of processes, all on the CPU; no row claims a GPU; the native solver and
    TauFactor (independent implementations) agree on every field."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(root / "tests" / "benchmarks" / "gpu_check.py"), "--dry-run",
         "--sizes", "16", "--repeats", "1", "--batch", "2", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["header"]["dry_run"] is True and report["header"]["gpu"] is None
    rows = report["rows"]
    assert {row["device"] for row in rows} == {"cpu"}
    stages = {(row["stage"], row["method"]) for row in rows}
    assert stages == {("generate", "procedural"), ("generate", "generator"),
                      ("pore", "native"), ("pore", "taufactor"),
                      ("electronic", "native"), ("electronic", "taufactor"),
                      ("batch", "1 process x 2 cubes"), ("batch", "2 processes x 1 cube")}
    for row in rows:
        if row["stage"] in ("pore", "electronic"):
            assert row["converged"] and 0 < row["value"] < 1
            assert row["rel_diff_vs_native_cpu"] < 1e-3, row
    batch = next(row for row in rows if row["method"] == "2 processes x 1 cube")
    assert len(batch["solve_seconds_per_process"]) == 2
