"""The executor over submitit: results and remote errors come back, a killed job is seen, SLURM
arrays are split at MaxArraySize, one sacct call polls all jobs, a scancel is noticed.

Job functions are standard-library functions (math.factorial, time.sleep, operator.truediv):
submitit pickles them by reference, so they unpickle on the node, unlike test-module functions.
"""

from __future__ import annotations

import math
import operator
import os
import signal
import subprocess
import time

import pytest

from hpc.machine.executor import Executor, parse_sacct, slurm_max_array_size


def _wait(executor: Executor, job_ids: list[str], timeout_s: float = 120.0,
          until: tuple[str, ...] = ("finished", "failed")) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = executor.poll(job_ids)
        if all(s.state in until for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs did not reach {until}: {statuses}")
        time.sleep(0.5)


def test_parse_sacct_expands_array_ranges():
    text = "101_0|COMPLETED\n101_[2-4,7]|PENDING\n102|CANCELLED by 0\n102.batch|CANCELLED\n"
    states = parse_sacct(text)
    assert states["101_0"] == "COMPLETED"
    assert [states[f"101_{i}"] for i in (2, 3, 4, 7)] == ["PENDING"] * 4
    assert states["102"] == "CANCELLED"
    assert "102.batch" not in states


def test_local_results_and_remote_errors(tmp_path):
    executor = Executor("local", tmp_path, walltime_min=5)
    ok, bad = executor.submit_array(math.factorial, [(5,), (-1,)])
    statuses = _wait(executor, [ok, bad])
    assert statuses[ok].state == statuses[bad].state == "finished"
    assert executor.outcome(ok).value == 120
    outcome = executor.outcome(bad)
    assert not outcome.ok and "ValueError" in outcome.error and "Traceback" in outcome.error


def test_local_killed_job_is_seen_as_failed(tmp_path):
    executor = Executor("local", tmp_path, walltime_min=5)
    job_id = executor.submit(time.sleep, 60)
    assert executor.poll([job_id])[job_id].state == "running"
    os.kill(int(job_id), signal.SIGKILL)
    status = _wait(executor, [job_id], timeout_s=30)[job_id]
    assert status.state == "failed"
    assert "killed by signal 9" in status.detail


def test_debug_executor_runs_in_process(tmp_path):
    executor = Executor("debug", tmp_path)
    job_id = executor.submit(operator.truediv, 1, 0)
    assert executor.poll([job_id])[job_id].state == "finished"
    outcome = executor.outcome(job_id)
    assert not outcome.ok and "ZeroDivisionError" in outcome.error


@pytest.mark.slurm
def test_slurm_arrays_split_at_max_array_size_and_one_sacct_per_poll(tmp_path):
    max_size = slurm_max_array_size()
    n = max_size + 4
    executor = Executor("slurm", tmp_path, mem_gb=0.25, walltime_min=5)
    job_ids = executor.submit_array(math.factorial, [(i,) for i in range(n)])
    parents = {job_id.split("_")[0] for job_id in job_ids}
    assert len(parents) == math.ceil(n / max_size)
    assert max(int(job_id.split("_")[1]) for job_id in job_ids) < max_size
    polls_before = executor.sacct_calls
    cycles = 0
    deadline = time.monotonic() + 240
    while True:
        cycles += 1
        statuses = executor.poll(job_ids)
        if all(s.state in ("finished", "failed") for s in statuses.values()):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(1.0)
    assert executor.sacct_calls - polls_before <= cycles  # never one call per job
    assert [executor.outcome(j).value for j in job_ids] == [math.factorial(i) for i in range(n)]


@pytest.mark.slurm
def test_slurm_scancel_is_seen_and_reported(tmp_path):
    executor = Executor("slurm", tmp_path, mem_gb=0.25, walltime_min=5)
    job_id = executor.submit(time.sleep, 300)
    _wait(executor, [job_id], timeout_s=60, until=("running",))
    subprocess.run(["scancel", job_id], check=True)
    status = _wait(executor, [job_id], timeout_s=60)[job_id]
    assert status.state == "failed"
    assert "CANCELLED" in status.detail


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_preempted_evaluation_is_requeued_released_and_completes(tmp_path):
    """A real evaluation signalled as at its time limit checkpoints, is requeued by submitit, is
    released from SLURM's 120 s requeue hold by the poll loop, and finishes from its store."""
    from hpc.campaign.config import parse_campaign
    from hpc.machine.evaluation_task import EvaluationTask

    config = parse_campaign({
        "space": {"am_wt_frac": [0.86, 0.96], "porosity": [0.28, 0.42],
                  "mass_loading_mg_cm2": 15.0},
        "objective": {"power_W": 10.0},
        "fidelity": {"n_cubes": 2, "cube_voxels": 24, "rel_tol": 1e-2},
    })
    params = {"am_wt_frac": 0.9, "porosity": 0.35, "binder_adhesion": 0.5,
              "mass_loading_mg_cm2": 15.0}
    campaign_dir = tmp_path / "campaign"
    executor = Executor("slurm", tmp_path / "jobs", mem_gb=1.5, walltime_min=10)
    hold = {"trial_id": 0, "attempts": 1, "mode": "delay", "delay_s": 15.0}  # running when signalled
    job_id = executor.submit(EvaluationTask(), str(campaign_dir), 0, params,
                             config.to_spec_dict(), 1, None, hold, {"OMP_NUM_THREADS": "1"})
    _wait(executor, [job_id], timeout_s=120, until=("running",))
    time.sleep(3)  # let submitit install its signal handlers
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    status = _wait(executor, [job_id], timeout_s=110)[job_id]  # < SLURM's 120 s hold
    assert status.state == "finished", status
    outcome = executor.outcome(job_id)
    assert outcome.ok, outcome.error
    assert outcome.value["trial_id"] == 0 and outcome.value["objective"]["value"] > 0
    runs = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                          capture_output=True, text=True, check=True).stdout.split()
    assert runs[0] == "REQUEUED" and len(runs) == 2, runs  # the first run requeued, one rerun
