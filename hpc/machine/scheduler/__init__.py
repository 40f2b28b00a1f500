"""Batch-system back-ends behind one `Scheduler` Protocol; `SCHEDULERS` maps a kind to one.

Adding PBS: write `pbs.py` with a class implementing `base.Scheduler` and add it here."""

from __future__ import annotations

from hpc.machine.scheduler.base import (
    ExecutorError,
    FailureKind,
    JobOutcome,
    JobStatus,
    Scheduler,
    SchedulerState,
    SubmissionError,
)
from hpc.machine.scheduler.local import DebugScheduler, LocalScheduler
from hpc.machine.scheduler.slurm import SlurmScheduler

SCHEDULERS: dict[str, type] = {
    "local": LocalScheduler,
    "slurm": SlurmScheduler,
    "debug": DebugScheduler,
}

__all__ = [
    "SCHEDULERS", "DebugScheduler", "ExecutorError", "FailureKind", "JobOutcome", "JobStatus",
    "LocalScheduler", "Scheduler", "SchedulerState", "SlurmScheduler", "SubmissionError",
]
