"""End to end on the real single-node SLURM: evaluations as submitit array tasks, characterisation
on 2 MPI ranks inside each job, cell sweeps on a dask-jobqueue SLURMCluster; the same campaign
run locally with the same seed gives identical results. And `microloop submit`: the controller
job script quotes every config string, and sbatch really runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_campaign import tiny_campaign

from hpc.campaign.config import load_campaign
from hpc.campaign.controller import Campaign
from hpc.cli.commands.status import campaign_status
from hpc.cli.commands.submit import render_controller

E2E = dict(
    fidelity={"mpi_ranks": 2},
    optimizer={"backend": "sobol", "budget": 4, "max_concurrent": 4, "mode": "sync", "seed": 5},
    resources={"dask_workers": 1, "dask_interface": "lo", "dask_memory_gb": 1.0, "mem_gb": 1.5,
               "max_retries": 0, "poll_interval_s": 1.0},
)


def _run(campaign: Path, folder: Path, executor: str, seen: list | None = None
         ) -> dict[int, tuple]:
    config = load_campaign(campaign, {"resources": {"executor": executor}})
    controller = Campaign.create(config, folder)

    def look(progress) -> None:  # what `microloop status --json` says while jobs run
        if seen is not None and progress.running and not seen:
            seen.append(campaign_status(folder))

    try:
        progress = controller.run(on_progress=look, report=None)
    finally:
        controller.close()
    assert progress.complete == 4, [t.reason for t in controller.trials.values()]
    return {t.trial_id: (t.params, t.objective, t.result.metrics.mean.tortuosity_factor)
            for t in controller.trials.values()}


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.mpi
def test_slurm_campaign_matches_the_local_one(tmp_path):
    campaign = tiny_campaign(tmp_path / "e2e.toml", **E2E)
    seen: list[dict] = []
    on_slurm = _run(campaign, tmp_path / "slurm", "slurm", seen)
    assert seen and seen[0]["counts"]["running"] == len(seen[0]["running"]) > 0
    assert all(r["state"] in ("PENDING", "RUNNING", "COMPLETING", "COMPLETED")
               for r in seen[0]["running"]), seen[0]
    folder = tmp_path / "slurm"
    job_ids = [e["job_id"] for e in map(json.loads, (folder / "journal.jsonl").read_text()
                                        .splitlines()) if e["event"] == "submitted"]
    assert len(job_ids) == 4 and len({j.split("_")[0] for j in job_ids}) == 1  # one array
    assert all("_" in job_id for job_id in job_ids)
    for trial in range(4):  # characterisation ran as 2 MPI ranks in a step of the array task
        log = (folder / "trials" / str(trial) / "characterise.log").read_text()
        assert "srun --overlap" in log and '"ranks": 2' in log
    dask_logs = list((folder / "dask" / "logs").glob("microloop-dask-*.err"))
    assert dask_logs, "no dask-jobqueue worker job ran"

    local = _run(campaign, tmp_path / "local", "local")
    # same designs and same structures; the IDAKLU solve may differ in the last few bits
    # between processes (a cached model that solved another design before), hence 1e-9
    assert on_slurm.keys() == local.keys()
    for trial, (params, objective, tau) in local.items():
        assert on_slurm[trial][0] == params and on_slurm[trial][2] == tau
        assert on_slurm[trial][1] == pytest.approx(objective, rel=1e-9)


def test_controller_script_quotes_hostile_strings(tmp_path):
    hostile = "x'; touch PWNED; echo $(touch PWNED2) \"`touch PWNED3`\" ;"
    campaign = tiny_campaign(tmp_path / "c.toml")  # names are slugs now; the hostile string
    # still reaches the script as the campaign argument and in the folder name
    config = load_campaign(campaign)
    directory = tmp_path / f"dir {hostile}"
    echo_argv = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
    script = render_controller(config, hostile, directory, launcher=echo_argv)
    assert "#SBATCH --job-name=" in script
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout.strip().splitlines()[-1])
    assert argv == ["run", hostile, "--dir", str(directory), "--quiet"]
    assert not list(tmp_path.glob("PWNED*"))
    # a name that would break an #SBATCH line never reaches one
    sbatch_lines = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert all("'" not in line and "$" not in line and ";" not in line for line in sbatch_lines)


def test_submit_dry_run_and_sbatch_options_are_checked(tmp_path):
    campaign = tiny_campaign(tmp_path / "c.toml",
                             resources={"sbatch_options": {"qos": "normal; rm -rf ~"}})
    done = subprocess.run([sys.executable, "-m", "hpc.cli", "submit", str(campaign), "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "resources.sbatch_options" in done.stderr and "allowed characters" in done.stderr

    campaign = tiny_campaign(tmp_path / "ok.toml", resources={"partition": "debug"})
    done = subprocess.run([sys.executable, "-m", "hpc.cli", "submit", str(campaign), "--dir",
                           str(tmp_path / "run"), "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --partition=debug" in done.stdout
    assert "sbatch --parsable" in done.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_submit_runs_the_controller_as_a_slurm_job(tmp_path):
    campaign = tiny_campaign(tmp_path / "c.toml",
                             optimizer={"backend": "sobol", "budget": 1, "max_concurrent": 1},
                             resources={"dask_workers": 0, "controller_walltime_min": 15})
    folder = tmp_path / "run"
    env = dict(os.environ, PYBAMM_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "hpc.cli", "submit", str(campaign), "--dir",
                           str(folder)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("controller job ")[1].split(";")[0]
    deadline = time.monotonic() + 400
    while True:
        state = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                               capture_output=True, text=True).stdout.strip()
        if state and state.split()[0] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            break
        assert time.monotonic() < deadline, f"controller job {job_id} still {state}"
        time.sleep(2)
    log = "\n".join(p.read_text() for p in folder.glob("controller-*.out"))
    assert state.startswith("COMPLETED"), log[-3000:]
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "hpc.cli", "status", str(folder), "--json"], capture_output=True,
        text=True, timeout=60, env=env, check=True).stdout)
    assert status["counts"]["complete"] == 1 and status["finished"]


@pytest.mark.slurm
@pytest.mark.slow
def test_scancelled_evaluation_is_retried_and_the_campaign_completes(tmp_path):
    campaign = tiny_campaign(tmp_path / "c.toml",
                             optimizer={"backend": "sobol", "budget": 2, "max_concurrent": 2},
                             resources={"executor": "slurm", "dask_workers": 0, "mem_gb": 1.5,
                                        "max_retries": 1, "poll_interval_s": 0.5},
                             # both first attempts are held, so one is surely running when cancelled
                             faults=[{"trial_id": 0, "mode": "delay", "delay_s": 20.0},
                                     {"trial_id": 1, "mode": "delay", "delay_s": 20.0}])
    folder = tmp_path / "run"
    controller = Campaign.create(load_campaign(campaign), folder)
    cancelled: list[str] = []

    def cancel_first_running(progress) -> None:
        if cancelled:
            return
        for item in campaign_status(folder)["running"]:
            if item["state"] == "RUNNING":
                subprocess.run(["scancel", item["job_id"]], check=True)
                cancelled.append(item["job_id"])
                return

    try:
        progress = controller.run(on_progress=cancel_first_running, report=None)
    finally:
        controller.close()
    assert cancelled
    assert (progress.complete, progress.failed) == (2, 0)
    retried = [e for e in map(json.loads, (folder / "journal.jsonl").read_text().splitlines())
               if e["event"] == "retried"]
    assert len(retried) == 1 and "CANCELLED" in retried[0]["reason"]
    trial = controller.trials[retried[0]["trial_id"]]
    assert trial.attempt == 2 and trial.job_ids[0] == cancelled[0] and len(trial.job_ids) == 2


@pytest.mark.slurm
def test_refused_submissions_fail_the_trials_with_sbatchs_message(tmp_path):
    """A partition that does not exist: sbatch refuses every attempt. Each refusal uses up an
    attempt, so the campaign ends with its trials failed and sbatch's words in the reason
    (before, the trials were resubmitted every poll cycle forever, without a retry counted)."""
    campaign = tiny_campaign(tmp_path / "c.toml",
                             optimizer={"backend": "sobol", "budget": 2, "max_concurrent": 2},
                             resources={"executor": "slurm", "dask_workers": 0, "mem_gb": 1.0,
                                        "partition": "no_such_partition", "max_retries": 1,
                                        "poll_interval_s": 0.2})
    folder = tmp_path / "run"
    controller = Campaign.create(load_campaign(campaign), folder)
    started = time.monotonic()
    try:
        progress = controller.run(report=None, stop_after_s=120)
    finally:
        controller.close()
    assert time.monotonic() - started < 90
    assert (progress.complete, progress.failed) == (0, 2)
    for trial in controller.trials.values():
        assert trial.attempt == 2 and len(trial.job_ids) == 2
        assert "after 2 attempts" in trial.reason
        assert "invalid partition" in trial.reason.lower(), trial.reason


def test_controller_script_requeues_itself_before_its_walltime(tmp_path):
    campaign = tiny_campaign(tmp_path / "c.toml",
                             resources={"controller_walltime_min": 2,
                                        "controller_requeue_signal_s": 45})
    script = render_controller(load_campaign(campaign), str(campaign), tmp_path / "run")
    assert "#SBATCH --open-mode=append" in script
    assert "#SBATCH --signal=B:USR1@45" in script
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script and "StartTime=now" in script
    bad = tiny_campaign(tmp_path / "bad.toml", resources={"controller_walltime_min": 1,
                                                         "controller_requeue_signal_s": 60})
    with pytest.raises(Exception, match="controller_requeue_signal_s"):
        load_campaign(bad)


@pytest.mark.slurm
@pytest.mark.slow
def test_submitted_controller_survives_its_walltime_by_requeueing_itself(tmp_path):
    """A 2-minute controller walltime, signalled 60 s before it, and a campaign that needs
    longer (trial 1 is held 100 s): the controller is signalled, requeues itself, resumes from
    its journal and finishes; its log keeps the lines written before the requeue. (Before: the
    job ended TIMEOUT, the campaign stalled, and the log was truncated on restart.) With a
    1-minute walltime and a 30 s signal, a loaded machine's start-up (imports) used up the first
    30 s and the signal came before the first controller had journaled anything."""
    campaign = tiny_campaign(
        tmp_path / "c.toml",
        optimizer={"backend": "sobol", "budget": 2, "max_concurrent": 1},
        resources={"executor": "slurm", "dask_workers": 0, "mem_gb": 1.0, "max_retries": 0,
                   "poll_interval_s": 1.0, "controller_walltime_min": 2,
                   "controller_requeue_signal_s": 60, "controller_cpus": 1},
        faults=[{"trial_id": 1, "mode": "delay", "delay_s": 100.0}])
    folder = tmp_path / "run"
    env = dict(os.environ, PYBAMM_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "hpc.cli", "submit", str(campaign), "--dir",
                           str(folder)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("controller job ")[1].split(";")[0]
    log_path = folder / f"controller-{job_id}.out"
    deadline = time.monotonic() + 600
    state = ""
    try:
        while True:
            state = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                                   capture_output=True, text=True).stdout.strip()
            if state and state.split()[0] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
                break
            assert time.monotonic() < deadline, (
                f"controller job {job_id} still {state}: "
                + (log_path.read_text()[-3000:] if log_path.exists() else "no log"))
            time.sleep(3)
    finally:
        subprocess.run(["scancel", job_id], check=False)
    log = log_path.read_text()
    assert state.startswith("COMPLETED"), log[-3000:]
    assert "(restart 0)" in log and "(restart 1)" in log, log[-3000:]
    assert log.index("(restart 0)") < log.index("walltime near") < log.index("(restart 1)")
    started = [e for e in map(json.loads, (folder / "journal.jsonl").read_text().splitlines())
               if e["event"] == "campaign_started"]
    assert len(started) >= 2 and started[-1]["resumed"]
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "hpc.cli", "status", str(folder), "--json"], capture_output=True,
        text=True, timeout=60, env=env, check=True).stdout)
    assert status["counts"]["complete"] == 2 and status["finished"], status


@pytest.mark.slurm
@pytest.mark.mpi
def test_gpu_evaluation_with_two_mpi_ranks_completes(tmp_path):
    """Before: `gpus_per_task` broke every submission (sbatch refuses --gpus-per-task without
    --ntasks), and with ntasks=1 the 2-rank step was refused. Now the GPUs are asked per node
    and the 2-rank characterisation runs inside the one-task job (on the stand-in GPUs)."""
    shown = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    if "Gres=gpu:" not in shown:
        pytest.skip("the test cluster advertises no GPUs: start it with .ci/slurm-up")
    campaign = tiny_campaign(tmp_path / "c.toml", fidelity={"mpi_ranks": 2},
                             optimizer={"backend": "sobol", "budget": 1, "max_concurrent": 1},
                             resources={"executor": "slurm", "dask_workers": 0, "mem_gb": 1.5,
                                        "max_retries": 0, "gpus_per_task": 1,
                                        "poll_interval_s": 0.5})
    controller = Campaign.create(load_campaign(campaign), tmp_path / "run")
    try:
        progress = controller.run(report=None, stop_after_s=300)
    finally:
        controller.close()
    assert progress.complete == 1, [t.reason for t in controller.trials.values()]
