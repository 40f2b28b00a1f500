"""The scheduler interface and classified submission failures, against the real test SLURM.

Every refusal here is produced by the real sbatch: a partition that does not exist and a GPU
request on a node without GRES (permanent), and a controller that does not answer (transient: a
copy of the cluster's slurm.conf pointing at a port where no slurmctld listens).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from hpc.machine.executor import Executor
from hpc.machine.scheduler import SCHEDULERS, Scheduler
from hpc.machine.scheduler.base import SubmissionError
from hpc.machine.scheduler.slurm import classify_sbatch_error


def _sbatch_stderr(*options: str) -> str:
    done = subprocess.run(["sbatch", *options, "--wrap", "true"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0, f"sbatch accepted {options}: {done.stdout}"
    return done.stderr


def _unreachable_controller(tmp_path: Path) -> Path:
    """A copy of the running cluster's slurm.conf whose controller port nobody listens on."""
    text = Path(os.environ["SLURM_CONF"]).read_text()
    conf = tmp_path / "slurm.conf"
    conf.write_text(re.sub(r"(?m)^SlurmctldPort=\d+", "SlurmctldPort=6899", text))
    return conf


def test_every_backend_implements_the_scheduler_protocol(tmp_path):
    for kind, cls in SCHEDULERS.items():
        if kind == "slurm":
            continue  # needs scontrol; checked below on the test cluster
        assert isinstance(cls(tmp_path / kind), Scheduler), kind


@pytest.mark.slurm
def test_real_sbatch_refusals_are_classified(tmp_path, monkeypatch):
    bad_partition = _sbatch_stderr("--partition=no_such_partition")
    gpu_without_ntasks = _sbatch_stderr("--gpus-per-task=1")
    assert classify_sbatch_error(bad_partition) == "permanent", bad_partition
    assert classify_sbatch_error(gpu_without_ntasks) == "permanent", gpu_without_ntasks
    monkeypatch.setenv("SLURM_CONF", str(_unreachable_controller(tmp_path)))
    down = _sbatch_stderr()
    assert classify_sbatch_error(down) == "transient", down
    assert isinstance(SCHEDULERS["slurm"](tmp_path / "s", max_array_size=10), Scheduler)


@pytest.mark.slurm
def test_permanent_refusal_becomes_failed_jobs_with_sbatchs_message(tmp_path):
    executor = Executor("slurm", tmp_path, partition="no_such_partition", mem_gb=0.25,
                        walltime_min=5, backoff_base_s=30.0)
    started = time.monotonic()
    ids = executor.submit_array(math.factorial, [(3,), (4,), (5,)])
    assert time.monotonic() - started < 20  # not retried in place
    assert len(ids) == 3 and len(set(ids)) == 3
    assert (executor.submissions_refused, executor.submission_retries) == (1, 0)
    statuses = executor.poll(ids)
    assert executor.sacct_calls == 0  # nothing to ask the scheduler about
    for status in statuses.values():
        assert status.state == "failed"
        assert "invalid partition" in status.detail.lower(), status.detail
    # the record survives a controller restart (a new executor on the same folder)
    again = Executor("slurm", tmp_path, partition="no_such_partition", max_array_size=10)
    assert all(s.state == "failed" for s in again.poll(ids).values())
    assert "invalid partition" in again.outcome(ids[0]).error.lower()
    again.cancel(ids)  # refused ids are not sent to scancel


@pytest.mark.slurm
@pytest.mark.slow
def test_transient_refusal_backs_off_exponentially_then_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(_unreachable_controller(tmp_path)))
    executor = Executor("slurm", tmp_path, max_array_size=10, mem_gb=0.25, walltime_min=5,
                        transient_retries=2, backoff_base_s=1.0)
    started = time.monotonic()
    with pytest.raises(SubmissionError) as caught:
        executor.submit_array(math.factorial, [(3,), (4,)])
    elapsed = time.monotonic() - started
    assert caught.value.kind == "transient"
    assert "unable to contact" in caught.value.message.lower()
    assert executor.submission_retries == 2 and executor.submissions_refused == 0
    assert elapsed >= 1.0 + 2.0  # the two back-off sleeps


def test_sbatch_script_throttles_arrays_at_max_concurrent(tmp_path):
    from hpc.machine.scheduler.slurm import SlurmScheduler

    throttled = SlurmScheduler(tmp_path, max_array_size=1001, array_parallelism=300)
    assert "#SBATCH --array=0-399%300" in throttled.sbatch_script(400)
    # without a limit an array runs whole: not submitit's default %256
    whole = SlurmScheduler(tmp_path, max_array_size=1001)
    assert "#SBATCH --array=0-299%300" in whole.sbatch_script(300)
    gpus = SlurmScheduler(tmp_path, max_array_size=1001, gpus_per_task=2).sbatch_script(1)
    assert "--gpus-per-node=2" in gpus and "--gpus-per-task" not in gpus


@pytest.mark.slurm
def test_submitted_array_carries_the_max_concurrent_throttle(tmp_path):
    # begins in an hour: nothing runs, the array only has to be accepted and shown
    executor = Executor("slurm", tmp_path, mem_gb=0.1, walltime_min=5, max_concurrent=5,
                        sbatch_options={"begin": "now+3600"})
    ids = executor.submit_array(time.sleep, [(60,)] * min(8, executor.max_array_size))
    parent = ids[0].split("_")[0]
    try:
        shown = subprocess.run(["scontrol", "show", "job", parent], capture_output=True,
                               text=True, timeout=60, check=True).stdout
        assert "ArrayTaskThrottle=5" in shown, shown[:2000]
    finally:
        subprocess.run(["scancel", parent], timeout=60, check=False)


def _node_gpus() -> int:
    shown = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    match = re.search(r"Gres=gpu:(?:\w+:)?(\d+)", shown)
    return int(match.group(1)) if match else 0


@pytest.mark.slurm
def test_gpu_evaluations_get_their_gpus_and_nothing_else_does(tmp_path):
    """The scheduling path of GPU evaluations on the test cluster's stand-in GPUs (.ci/slurm-up
    advertises `Gres=gpu:2` backed by plain files): `evaluation.gres` and `gpus_per_task` are
    accepted by sbatch and the job sees its devices; a CPU job sees none."""
    if _node_gpus() < 2:
        pytest.skip("the test cluster advertises no GPUs: start it with .ci/slurm-up "
                    "(MICROLOOP_SLURM_GPUS=2, the default)")
    from test_campaign import tiny_campaign

    from hpc.campaign.config import load_campaign
    from hpc.machine import selfcheck

    def seen(resources: dict) -> dict:
        config = load_campaign(tiny_campaign(tmp_path / "c.toml", resources={
            "executor": "slurm", "mem_gb": 0.25, **resources}))
        executor = Executor.from_resources(config.resources, tmp_path / "jobs", job_name="gpu",
                                           cpus_per_task=1, max_concurrent=1)
        job_id = executor.submit(selfcheck.gpu_env)
        deadline = time.monotonic() + 120
        while (status := executor.poll([job_id])[job_id]).state not in ("finished", "failed"):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        outcome = executor.outcome(job_id)
        assert outcome.ok, outcome.error
        return outcome.value

    one = seen({"evaluation": {"gres": "gpu:1"}})
    assert one["CUDA_VISIBLE_DEVICES"] == "0", one
    two = seen({"gpus_per_task": 2})
    assert two["CUDA_VISIBLE_DEVICES"] == "0,1", two
    assert seen({})["CUDA_VISIBLE_DEVICES"] is None


@pytest.mark.slurm
def test_split_array_keeps_the_accepted_part_and_fails_only_the_refused_part(tmp_path):
    """Told a MaxArraySize above the cluster's, the executor splits 3 + MaxArraySize + 3 tasks
    into a too-large array (refused by sbatch: "Invalid job array specification") and a small
    one (accepted). Each task keeps its own fate: the accepted ones run and return, only the
    refused ones fail; nothing is resubmitted (before, the whole call raised and every task of
    it was submitted again, orphaning any part already accepted)."""
    real = Executor("slurm", tmp_path / "probe", mem_gb=0.25).max_array_size
    executor = Executor("slurm", tmp_path, mem_gb=0.25, walltime_min=5,
                        max_array_size=real + 3)
    args = [(n % 6,) for n in range(real + 6)]
    ids = executor.submit_array(math.factorial, args)
    assert len(ids) == len(args) and len(set(ids)) == len(ids)
    refused, accepted = ids[:real + 3], ids[real + 3:]
    assert all(i.startswith("refused-") for i in refused)
    assert not any(i.startswith("refused-") for i in accepted)
    assert executor.submissions_refused == 1
    deadline = time.monotonic() + 180
    while True:
        statuses = executor.poll(ids)
        if all(s.state in ("finished", "failed") for s in statuses.values()):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)
    assert all(statuses[i].state == "failed" and "array" in statuses[i].detail.lower()
               for i in refused)
    assert [executor.outcome(i).value for i in accepted] == [
        math.factorial(a[0]) for a in args[real + 3:]]
