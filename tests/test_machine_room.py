"""The real components of the machine room: submitit on SLURM, MPI ranks, Dask workers on SLURM."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from submitit.core.utils import FailedJobError

from hpc.machine import selfcheck


@pytest.fixture()
def slurm_executor(tmp_path):
    return selfcheck.make_executor("slurm", tmp_path / "submitit")


@pytest.mark.slurm
def test_submitted_function_returns_its_result_from_slurm(slurm_executor):
    job = slurm_executor.submit(selfcheck.where_am_i)
    info = job.result()
    assert info["slurm_job_id"] == str(job.job_id)
    assert slurm_executor.submit(selfcheck.square, 12).result() == 144


@pytest.mark.slurm
def test_map_array_of_eight_returns_eight_results(slurm_executor):
    jobs = slurm_executor.map_array(selfcheck.square, list(range(8)))
    assert [job.result() for job in jobs] == [i * i for i in range(8)]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one SLURM array


@pytest.mark.slurm
def test_failing_job_surfaces_with_remote_traceback(slurm_executor):
    job = slurm_executor.submit(selfcheck.fail_on_node, "boom on the node")
    with pytest.raises(FailedJobError) as caught:
        job.result()
    text = str(caught.value)
    assert "SelfCheckError" in text and "boom on the node" in text and "Traceback" in text


@pytest.mark.mpi
def test_two_rank_mpiexec_reports_ranks_0_and_1():
    report = selfcheck.run_mpi_probe(n_ranks=2)
    assert sorted(r["rank"] for r in report["ranks"]) == [0, 1]
    assert {r["size"] for r in report["ranks"]} == {2}
    assert len({r["pid"] for r in report["ranks"]}) == 2


@pytest.mark.slurm
@pytest.mark.slow
def test_dask_slurmcluster_scales_to_two_workers_and_maps(tmp_path):
    from dask.distributed import Client

    with selfcheck.make_slurm_dask_cluster(None, tmp_path, interface="lo") as cluster, \
            Client(cluster) as client:
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        assert client.gather(client.map(selfcheck.square, range(6))) == [0, 1, 4, 9, 16, 25]
        job_ids = set(client.run(lambda: __import__("os").environ.get("SLURM_JOB_ID")).values())
        assert len(job_ids) == 2 and None not in job_ids  # two workers, each its own SLURM job


@pytest.mark.slurm
@pytest.mark.slow
def test_doctor_command_passes_on_the_test_cluster(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "hpc.cli", "doctor", "--executor", "slurm", "--interface", "lo",
         "--folder", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["ok"] and {c["name"] for c in report["checks"]} == {
        "submit", "array", "remote_error", "mpi", "dask", "shared_folder", "flock", "port",
        "mpi_in_job"}


def test_cli_version_and_help():
    out = subprocess.run([sys.executable, "-m", "hpc.cli", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("microloop ")
    helped = subprocess.run([sys.executable, "-m", "hpc.cli", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "doctor" in helped.stdout


def test_every_command_has_working_help():
    from typer.testing import CliRunner

    from hpc.cli.app import app

    commands = [c.name for c in app.registered_commands]
    assert {"run", "resume", "status", "submit", "characterise", "cell", "convergence"} <= set(commands)
    runner = CliRunner()
    for name in commands:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output, result.exception)


def test_shared_world_checks_pass_for_a_local_job(tmp_path):
    executor = selfcheck.make_executor("local", tmp_path / "submitit")
    results = {r.name: r for r in selfcheck.check_shared_world(executor, tmp_path / "shared")}
    assert set(results) == {"shared_folder", "flock", "port"}
    assert all(r.ok for r in results.values()), results


def test_node_view_reports_what_is_broken(tmp_path):
    """Each assumption broken for real: no token in the folder (not the shared one), a lock no
    one holds (as on a file system without cross-node locking) and a port nobody listens on."""
    import socket

    with socket.socket() as probe:  # a free port, closed again before the node tries it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    view = selfcheck.node_view(str(tmp_path), "no-such-token", "free.lock", "127.0.0.1", port)
    assert view["token"] is None
    assert view["lock"].startswith("acquired")
    assert view["port"].startswith("ConnectionRefusedError")
