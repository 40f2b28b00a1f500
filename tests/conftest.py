"""Shared test set-up: skip SLURM tests only where there is no SLURM, and keep solves single-threaded."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _slurm_reason() -> str | None:
    """Why SLURM tests cannot run here, or None when a controller answers."""
    if shutil.which("sbatch") is None:
        return "sbatch is not installed (run the suite with `bash .ci/test`, which starts SLURM)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"scontrol ping failed: {error}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return "no SLURM controller answers `scontrol ping` (is SLURM_CONF set? run `bash .ci/test`)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any("slurm" in item.keywords for item in items):
        return
    reason = _slurm_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)
