"""The cluster settings of the campaign file act where they belong: an ended job's missing result
file is waited for `resources.result_grace_s` (a shared file system may show it late) before the
job counts as failed, and `resources.poll_interval_s` paces the poll cycles."""

from __future__ import annotations

import subprocess
import time

from test_campaign import tiny_campaign

from hpc.campaign.config import load_campaign
from hpc.machine.executor import Executor


def _seconds_from_end_to_failed(tmp_path, grace_s: float) -> float:
    """A job that dies without a result (SIGKILL of its process): seconds from the first poll
    that sees it ended to the poll that reports it failed, with the campaign file's grace."""
    config = load_campaign(tiny_campaign(tmp_path / f"g{grace_s}.toml",
                                         resources={"result_grace_s": grace_s}))
    assert config.resources.result_grace_s == grace_s
    executor = Executor.from_resources(config.resources, tmp_path / f"jobs{grace_s}",
                                       job_name="grace", cpus_per_task=1, max_concurrent=1)
    job_id = executor.submit(subprocess.check_call, ["sh", "-c", "kill -9 $PPID"])
    ended_at = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = executor.poll([job_id])[job_id]
        now = time.monotonic()
        if ended_at is None and (status.detail.startswith("EXITED")
                                 or status.state == "failed"):
            ended_at = now   # the first poll that saw it ended (it may report failed at once)
        if status.state == "failed":
            assert "ended EXITED" in status.detail and "without a result" in status.detail
            return now - ended_at
        time.sleep(0.05)
    raise AssertionError("the killed job was never reported failed")


def test_the_result_grace_of_the_campaign_file_holds_back_the_failed_verdict(tmp_path):
    assert _seconds_from_end_to_failed(tmp_path, 3.0) >= 3.0
    assert _seconds_from_end_to_failed(tmp_path, 0.0) < 1.0


def test_the_documented_defaults_of_polling_and_grace(tmp_path):
    """docs/campaigns.md: one sacct per second, 5 s for a lagging result file."""
    resources = load_campaign(tiny_campaign(tmp_path / "d.toml", resources={
        "executor": "local", "dask_workers": 1, "max_retries": 1, "walltime_min": 10})).resources
    defaults = type(resources).model_fields
    assert defaults["poll_interval_s"].default == 1.0
    assert defaults["result_grace_s"].default == 5.0
    assert defaults["max_consecutive_refusals"].default == 3
