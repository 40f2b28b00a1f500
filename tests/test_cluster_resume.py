"""A resume never runs a trial twice at once, and repeated refusals stop the campaign.

- The folder lock: a live controller's flock refuses a second one; its heartbeat lease refuses a
  controller on another host whose flock succeeded (a file system with node-local locks); a
  lapsed lease (a crashed holder) is taken over; `--wait` waits for a live holder to let go.
- A controller killed between the scheduler accepting its jobs and journaling their ids: the
  resumed one finds the jobs, still queued, by the tag their submission carries (SLURM: the
  job comment; local: the job's environment) and re-attaches instead of submitting again.
- Permanent refusals in a row stop the campaign with sbatch's message, in the journal, the error
  and the report; the trials refused at the stop are submitted again on resume, no retry used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_campaign import tiny_campaign

from hpc.campaign.config import load_campaign
from hpc.campaign.controller import Campaign, CampaignError
from hpc.campaign.journal import read_journal
from hpc.cli.commands.status import campaign_status
from hpc.machine.folder_lock import FolderLockedError, acquire, read_owner
from hpc.machine.scheduler.local import LocalScheduler

LOCK = ".controller.lock"


def _lease(path: Path, host: str, age_s: float, pid: int = 4242, job: str | None = "77"
           ) -> None:
    path.write_text(json.dumps({"pid": pid, "host": host, "slurm_job_id": job,
                                "heartbeat": time.time() - age_s}))


# ---- the folder lock --------------------------------------------------------------------------

def test_a_fresh_lease_from_another_host_refuses_even_when_flock_succeeds(tmp_path):
    # what a controller on node B sees when the file system keeps node A's flock on node A
    # (node A's controller started by hand, not as a SLURM job)
    _lease(tmp_path / LOCK, "node-a.cluster", age_s=5, job=None)
    with pytest.raises(FolderLockedError, match=r"pid 4242 on node-a\.cluster, heartbeat"):
        acquire(tmp_path, LOCK, lease_s=120)


def test_a_requeued_controller_job_takes_over_its_own_fresh_lease(tmp_path, monkeypatch):
    # node A ran SLURM job 77 and died; SLURM requeued job 77 on node B seconds later
    _lease(tmp_path / LOCK, "node-a.cluster", age_s=5)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    acquire(tmp_path, LOCK, lease_s=120).close()


@pytest.mark.slurm
def test_a_fresh_lease_of_a_job_slurm_no_longer_runs_is_taken_over(tmp_path):
    done = subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "--wrap", "true"],
                          capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip().split(";")[0]
    deadline = time.monotonic() + 120
    while subprocess.run(["squeue", "-h", "-j", done], capture_output=True, text=True,
                         timeout=30).stdout.strip():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    _lease(tmp_path / LOCK, "node-a.cluster", age_s=5, job=done)   # its controller died
    acquire(tmp_path, LOCK, lease_s=120).close()
    running = subprocess.run(["sbatch", "--parsable", "--output=/dev/null", "--wrap", "sleep 60"],
                             capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip().split(";")[0]
    try:
        while "RUNNING" not in subprocess.run(["squeue", "-h", "-j", running, "-o", "%T"],
                                              capture_output=True, text=True,
                                              timeout=30).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        _lease(tmp_path / LOCK, "node-a.cluster", age_s=5, job=running)
        with pytest.raises(FolderLockedError, match=f"SLURM job {running}"):
            acquire(tmp_path, LOCK, lease_s=120)
    finally:
        subprocess.run(["scancel", running], capture_output=True, timeout=30)


def test_a_lapsed_lease_is_taken_over_and_refreshed_while_held(tmp_path):
    _lease(tmp_path / LOCK, "node-a.cluster", age_s=600)  # node A crashed 10 minutes ago
    lock = acquire(tmp_path, LOCK, lease_s=0.4)
    try:
        first = read_owner((tmp_path / LOCK).read_text())
        assert (first.pid, first.host) == (os.getpid(), socket.gethostname())
        time.sleep(0.5)  # the heartbeat thread refreshes every lease_s / 4
        assert read_owner((tmp_path / LOCK).read_text()).heartbeat > first.heartbeat
    finally:
        lock.close()
    assert (tmp_path / LOCK).read_text() == ""  # released: a successor need not wait


_HOLDER = textwrap.dedent("""
    import sys, time
    from hpc.machine.folder_lock import acquire
    lock = acquire(sys.argv[1], ".controller.lock")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.close()
""")


def _holder(folder: Path, hold_s: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), str(hold_s)],
                               stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_live_holder_refuses_at_once_and_wait_takes_over_when_it_lets_go(tmp_path):
    holder = _holder(tmp_path, 3.0)
    try:
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid} on"):
            acquire(tmp_path, LOCK)
        started = time.monotonic()
        lock = acquire(tmp_path, LOCK, wait_s=60, poll_s=0.2)
        waited = time.monotonic() - started
        lock.close()
    finally:
        holder.wait(timeout=60)
    assert 0.5 < waited < 30


# ---- re-attaching to jobs a killed controller submitted -----------------------------------------

def test_local_jobs_are_found_by_their_submission_tag_from_a_new_scheduler(tmp_path):
    submitter = LocalScheduler(tmp_path / "jobs")
    ids = submitter.submit_array(time.sleep, [(20.0,), (20.0,)], tag="t0a1", offset=3)
    try:
        # a new scheduler, as a resumed controller has: nothing but the tag connects them
        assert LocalScheduler(tmp_path / "jobs").find_tagged("t0a1") == {3: ids[0], 4: ids[1]}
        assert LocalScheduler(tmp_path / "jobs").find_tagged("other") == {}
    finally:
        submitter.cancel(ids)


def _drop_submitted(folder: Path) -> int:
    """The journal as a controller SIGKILLed right after sbatch answered leaves it: the
    `submitted` lines (written after the scheduler accepted the jobs) never made it."""
    path = folder / "journal.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["event"] != "submitted"]
    path.write_text("".join(kept))
    return len(lines) - len(kept)


def _jobs_named(name: str, at_least: int = 0) -> list[tuple[str, str]]:
    """The accounting rows of the jobs called `name`. The accounting daemon records jobs
    asynchronously (seconds behind on a loaded machine; a CI run once read none), so wait up to
    a minute for `at_least` rows before returning what it has."""
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "--name", name,
                              "-S", "now-1hour"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
        rows = [tuple(line.split("|")[:2]) for line in out.splitlines() if line.strip()]
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(1.0)


@pytest.mark.slurm
@pytest.mark.slow
def test_resume_reattaches_to_queued_jobs_a_killed_controller_never_journaled(tmp_path):
    name = f"reattach{os.getpid()}"
    # the jobs wait in the queue (begin in an hour): no job starts, so no started marker exists
    campaign = tiny_campaign(tmp_path / "c.toml", name=name,
                             # sync: the first loop cycle proposes and submits inline (an
                             # async ask would still be running when stop_after_s=0 stops it)
                             optimizer={"backend": "sobol", "budget": 2, "max_concurrent": 2,
                                        "mode": "sync"},
                             resources={"executor": "slurm", "dask_workers": 0, "mem_gb": 1.0,
                                        "max_retries": 0, "poll_interval_s": 0.5,
                                        "sbatch_options": {"begin": "now+3600"}})
    folder = tmp_path / "run"
    first = Campaign.create(load_campaign(campaign), folder)
    first.run(report=None, stop_after_s=0)
    first.close()
    submitted = {t.trial_id: t.job_id for t in first.trials.values()}
    assert len(submitted) == 2 and all(submitted.values())
    assert _drop_submitted(folder) == 2
    assert not list((folder / "jobs").glob("started/*.json"))

    resumed = Campaign.open(folder)
    try:
        assert campaign_status(folder)["controller"]["pid"] == os.getpid()  # the live lease
        resumed._recover_submissions()
        assert {t.trial_id: (t.status, t.job_ids) for t in resumed.trials.values()} == {
            tid: ("submitted", [job_id]) for tid, job_id in submitted.items()}
        for job_id in submitted.values():   # let the queued jobs run now
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                           check=True, capture_output=True, timeout=30)
        progress = resumed.run(report=None, stop_after_s=240)
    finally:
        resumed.close()
    assert progress.complete == 2, [t.reason for t in resumed.trials.values()]
    jobs = _jobs_named(f"microloop-{name}", at_least=len(submitted))
    assert sorted(job for job, _ in jobs) == sorted(submitted.values()), jobs  # nothing twice


# ---- repeated permanent refusals stop the campaign -----------------------------------------------

@pytest.mark.slurm
@pytest.mark.slow
def test_repeated_permanent_refusals_stop_the_campaign_with_sbatchs_message(tmp_path):
    campaign = tiny_campaign(tmp_path / "c.toml",
                             optimizer={"backend": "sobol", "budget": 5, "max_concurrent": 1},
                             resources={"executor": "slurm", "dask_workers": 0, "mem_gb": 1.0,
                                        "partition": "no_such_partition", "max_retries": 0,
                                        "poll_interval_s": 0.2})
    folder = tmp_path / "run"
    controller = Campaign.create(load_campaign(campaign), folder)
    try:
        with pytest.raises(CampaignError, match="(?i)3 submissions in a row.*invalid partition"):
            controller.run(report=None, stop_after_s=120)
    finally:
        controller.close()
    stopped = [e for e in read_journal(folder) if e["event"] == "campaign_stopped"]
    assert len(stopped) == 1 and "invalid partition" in stopped[0]["reason"].lower()
    trials = controller.trials
    assert len(trials) == 3  # trials 3 and 4 were never proposed
    assert [trials[i].status for i in range(3)] == ["failed", "failed", "proposed"]
    assert trials[2].submitting and trials[2].attempt == 1 and not trials[2].job_ids

    status = campaign_status(folder)
    assert "invalid partition" in status["stopped"].lower() and status["controller"] is None
    from hpc.analysis.report import write_report

    summary = write_report(folder).read_text()
    assert "stopped" in summary and "invalid partition" in summary.lower()

    # fixed (the real partition): the trial refused at the stop runs with its first attempt
    resumed = Campaign.open(folder, {"optimizer": {"budget": 3},
                                     "resources": {"partition": "debug"}})
    try:
        progress = resumed.run(report=None, stop_after_s=240)
    finally:
        resumed.close()
    assert (progress.complete, progress.failed) == (1, 2)
    assert resumed.trials[2].attempt == 1 and len(resumed.trials[2].job_ids) == 1


@pytest.mark.slurm
def test_the_refusals_that_stop_the_campaign_are_set_in_the_campaign_file(tmp_path):
    """`resources.max_consecutive_refusals = 1`: the first permanent refusal stops the campaign
    (with the default 3, two trials would have failed first), and the error names the key."""
    campaign = tiny_campaign(tmp_path / "c.toml",
                             optimizer={"backend": "sobol", "budget": 5, "max_concurrent": 1},
                             resources={"executor": "slurm", "dask_workers": 0, "mem_gb": 1.0,
                                        "partition": "no_such_partition", "max_retries": 0,
                                        "poll_interval_s": 0.2, "max_consecutive_refusals": 1})
    folder = tmp_path / "run"
    controller = Campaign.create(load_campaign(campaign), folder)
    try:
        with pytest.raises(CampaignError, match="(?i)1 submissions in a row.*"
                           "max_consecutive_refusals = 1.*invalid partition"):
            controller.run(report=None, stop_after_s=120)
    finally:
        controller.close()
    trials = controller.trials
    assert len(trials) == 1 and trials[0].status == "proposed" and trials[0].submitting
    stopped = [e for e in read_journal(folder) if e["event"] == "campaign_stopped"]
    assert len(stopped) == 1 and stopped[0]["refusals"] == 1


def test_the_refusal_limit_is_validated_naming_the_key(tmp_path):
    from hpc.campaign.config import ConfigError

    for bad in (0, 1.5, "3"):
        path = tiny_campaign(tmp_path / "bad.toml",
                             resources={"max_consecutive_refusals": bad})
        with pytest.raises(ConfigError, match=r"resources\.max_consecutive_refusals"):
            load_campaign(path)
    assert load_campaign(tiny_campaign(tmp_path / "ok.toml")).resources \
        .max_consecutive_refusals == 3


def test_resume_wait_waits_for_the_live_controller_before_refusing(tmp_path):
    from test_hardening import tiny_config
    from typer.testing import CliRunner

    from hpc.cli.app import app

    folder = tmp_path / "c"
    Campaign.create(tiny_config(), folder).close()
    holder = _holder(folder, 20.0)   # a live controller's lock on the folder
    try:
        started = time.monotonic()
        result = CliRunner().invoke(app, ["resume", str(folder), "--wait", "0.05",
                                          "--quiet", "--no-report"])
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert result.exit_code == 2 and f"pid {holder.pid} on" in result.output
    assert waited >= 3.0   # it waited its 3 s before refusing
