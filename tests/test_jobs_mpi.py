"""Characterisation over real MPI ranks (the venv's mpiexec, 2 processes) equals the serial run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobs.characterise import metrics_path, run_characterise
from jobs.contract.spec import EvaluationSpec
from jobs.generate import generate_samples

pytestmark = pytest.mark.mpi

MPIEXEC = Path(sys.executable).parent / "mpiexec"
PARAMS = {"am_wt_frac": 0.92, "porosity": 0.38}


def _spec(ranks: int) -> EvaluationSpec:
    return EvaluationSpec.from_dict({
        "fidelity": {"n_cubes": 4, "cube_voxels": 32, "voxel_um": 0.5, "mpi_ranks": ranks},
        "generator": {"mean_diameter_um": 4.0}, "seed": 11})


@pytest.fixture(autouse=True)
def _need_mpiexec(monkeypatch):
    if not MPIEXEC.is_file():
        pytest.skip(f"no mpiexec next to {sys.executable} (pip install mpich)")
    # the launcher must be the venv's mpiexec even inside a SLURM job running the suite
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("MICROLOOP_MPI_LAUNCHER", raising=False)


def _flat(nested: dict, prefix: str = "") -> dict:
    """Nested metric dicts -> {"a.b": value} (pytest.approx compares flat mappings only)."""
    out = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _records(campaign: Path, trial: int) -> list[dict]:
    return [json.loads(metrics_path(campaign, trial, i).read_text()) for i in range(4)]


def test_two_ranks_give_the_serial_metrics(tmp_path):
    serial_dir, mpi_dir = tmp_path / "serial", tmp_path / "mpi"
    for folder, ranks in ((serial_dir, 1), (mpi_dir, 2)):
        generate_samples(folder, 5, PARAMS, _spec(ranks))
    serial = run_characterise(serial_dir, 5, _spec(1))
    parallel = run_characterise(mpi_dir, 5, _spec(2))        # mpiexec -n 2 python -m ...
    log = (mpi_dir / "trials" / "5" / "characterise.log").read_text()
    assert "mpiexec -n 2" in log
    assert _flat(parallel["mean"]) == pytest.approx(_flat(serial["mean"]), rel=1e-9)
    assert _flat(parallel["std"]) == pytest.approx(_flat(serial["std"]), rel=1e-9)
    for a, b in zip(_records(serial_dir, 5), _records(mpi_dir, 5), strict=True):
        assert _flat(a["metrics"]) == pytest.approx(_flat(b["metrics"]), rel=1e-9)
    # samples were handed out dynamically to both ranks
    assert {r["rank"] for r in _records(mpi_dir, 5)} == {0, 1}
    assert {r["rank"] for r in _records(serial_dir, 5)} == {0}


@pytest.mark.slow
def test_a_killed_mpi_job_resumes_without_redoing_finished_cubes(tmp_path):
    spec = EvaluationSpec.from_dict({**_spec(2).to_dict(), "fidelity": {
        **_spec(2).to_dict()["fidelity"], "n_cubes": 6, "cube_voxels": 24}})
    generate_samples(tmp_path, 4, PARAMS, spec)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    job = subprocess.Popen([str(MPIEXEC), "-n", "2", sys.executable, "-m", "jobs.characterise",
                            str(tmp_path), "4", "--spec", str(spec_file), "--ranks", "2"],
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    paths = [metrics_path(tmp_path, 4, i) for i in range(6)]
    deadline = time.monotonic() + 120
    while not any(p.exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)          # the whole job: mpiexec and both ranks
    job.wait(timeout=30)
    finished = {p: p.stat().st_mtime_ns for p in paths if p.exists()}
    assert 1 <= len(finished) < 6
    assert not (tmp_path / "trials" / "4" / "metrics.json").exists()

    result = run_characterise(tmp_path, 4, spec, ranks=1)   # the rerun solves only the rest
    assert result["n_samples"] == 6 and all(p.exists() for p in paths)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished


def test_a_failing_rank_fails_the_job_with_its_traceback(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""
        import sys
        from mpi4py import MPI
        from jobs.mpi_pool import map_dynamic

        def work(task):
            if task == 5:
                raise ValueError("task five is bad")
            return task * task

        comm = MPI.COMM_WORLD
        try:
            results = map_dynamic(work, list(range(int(sys.argv[1]))), comm)
        except RuntimeError as error:
            print("FAILED", error, flush=True)
            sys.exit(3)
        if comm.Get_rank() == 0:
            print("OK", sorted(results.items()), flush=True)
    """))
    ok = subprocess.run([str(MPIEXEC), "-n", "3", sys.executable, str(script), "5"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "OK [(0, 0), (1, 1), (2, 4), (3, 9), (4, 16)]" in ok.stdout
    bad = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(script), "8"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert "task five is bad" in bad.stdout


def test_a_launcher_with_the_wrong_rank_count_is_refused(tmp_path):
    spec = _spec(2)
    generate_samples(tmp_path, 6, PARAMS, spec)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    # as srun without the right --mpi would do: a one-rank job told to expect two
    run = subprocess.run([sys.executable, "-m", "jobs.characterise", str(tmp_path), "6",
                          "--spec", str(spec_file), "--ranks", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "expected 2 MPI ranks" in run.stderr
    assert not metrics_path(tmp_path, 6, 0).exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_inside_slurm_the_ranks_start_with_srun(tmp_path):
    """In a 2-task batch script the ranks are an srun step; inside a 1-task step (as submitit
    runs a job) they are a nested, overlapping step. Both give 2 real ranks."""
    spec = EvaluationSpec.from_dict({**_spec(2).to_dict(), "fidelity": {
        **_spec(2).to_dict()["fidelity"], "n_cubes": 2, "cube_voxels": 24}})
    for trial in (7, 8):
        generate_samples(tmp_path, trial, PARAMS, spec)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    script = tmp_path / "job.sh"
    code = ("import json, sys; from jobs.characterise import run_characterise; "
            "run_characterise('.', int(sys.argv[1]), json.load(open('spec.json')))")
    script.write_text(f"#!/bin/bash\nset -e\n{sys.executable} -c \"{code}\" 7\n"
                      f"srun --ntasks=1 {sys.executable} -c \"{code}\" 8\n")
    job = subprocess.run(["sbatch", "--wait", "--ntasks=2", "--time=5", f"--chdir={tmp_path}",
                          "--output=slurm.out", str(script)],
                         capture_output=True, text=True, timeout=300)
    logs = {t: (tmp_path / "trials" / str(t) / "characterise.log") for t in (7, 8)}
    logs = {t: p.read_text() if p.exists() else "" for t, p in logs.items()}
    assert job.returncode == 0, (job.stderr, (tmp_path / "slurm.out").read_text(), logs)
    assert "srun --mpi=pmi2 --ntasks=2" in logs[7]
    assert "srun --overlap --mem=0 --mpi=pmi2 --ntasks=2" in logs[8]
    for trial in (7, 8):       # one communicator of 2 ranks (not 2 one-rank jobs), all cubes
        assert '"ranks": 2' in logs[trial]
        assert all(metrics_path(tmp_path, trial, i).exists() for i in range(2))


def test_the_launcher_is_chosen_from_the_environment(monkeypatch):
    from jobs.characterise import mpi_launch_prefix

    assert mpi_launch_prefix(3) == [str(MPIEXEC), "-n", "3"]          # no SLURM: the venv's
    monkeypatch.setenv("MICROLOOP_MPI_LAUNCHER", "mpirun --oversubscribe -np {ranks}")
    assert mpi_launch_prefix(4) == ["mpirun", "--oversubscribe", "-np", "4"]
    monkeypatch.delenv("MICROLOOP_MPI_LAUNCHER")
    if shutil.which("srun") is None:
        return
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert mpi_launch_prefix(2)[0] == str(MPIEXEC)                     # batch script, 1 task
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_MPI_TYPE", "pmix")                      # srun reads it itself
    assert mpi_launch_prefix(2) == ["srun", "--ntasks=2", "--cpus-per-task=1",
                                    "--kill-on-bad-exit=1"]
    monkeypatch.setenv("SLURM_STEP_ID", "0")                           # inside a job step
    assert mpi_launch_prefix(2)[:3] == ["srun", "--overlap", "--mem=0"]
