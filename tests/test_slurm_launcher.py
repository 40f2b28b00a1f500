"""The MPI launcher of an evaluation job, on the real test SLURM.

An evaluation's ranks are a nested `srun --overlap` step inside submitit's step. Without
`--mem=0` that nested step asks for memory of its own, which the outer step already holds: in a
job submitted with `--mem-per-cpu` SLURM refuses it ("Memory required by task is not
available") and every characterisation with more than one rank fails.
"""

from __future__ import annotations

import pytest

from hpc.machine.evaluation_task import MPI_LAUNCHER_ENV, probe_job_launcher


@pytest.mark.slurm
@pytest.mark.mpi
def test_the_evaluation_launcher_starts_its_ranks_in_a_mem_per_cpu_job(tmp_path, monkeypatch):
    import submitit

    monkeypatch.delenv(MPI_LAUNCHER_ENV, raising=False)  # the job inherits this environment
    executor = submitit.SlurmExecutor(tmp_path)
    executor.update_parameters(time=5, cpus_per_task=2, mem_per_cpu="700M", job_name="launcher")
    report = executor.submit(probe_job_launcher, 2).result()
    assert sorted(rank["rank"] for rank in report["ranks"]) == [0, 1]
    assert {rank["size"] for rank in report["ranks"]} == {2}
    assert report["launcher"][:3] == ["srun", "--overlap", "--mem=0"]
