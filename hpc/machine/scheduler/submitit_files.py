"""Result and log files of submitit jobs, shared by the back-ends that submit through submitit."""

from __future__ import annotations

from pathlib import Path

from hpc.machine.scheduler.base import JobOutcome, tail_text


class SubmititFiles:
    """Where a submitit job in `folder` leaves its result pickle and logs."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def result_path(self, job_id: str) -> Path:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=job_id, task_id=0).result_pickle

    def stderr_path(self, job_id: str) -> Path:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=job_id, task_id=0).stderr

    def has_result(self, job_id: str) -> bool:
        return self.result_path(job_id).exists()

    def log_tail(self, job_id: str) -> str:
        return tail_text(self.stderr_path(job_id))

    def outcome(self, job_id: str) -> JobOutcome:
        from submitit.core.utils import pickle_load

        path = self.result_path(job_id)
        try:
            kind, value = pickle_load(path)
        except Exception as error:  # a truncated or unreadable pickle: that job's failure
            return JobOutcome(False, error=f"unreadable result {path.name}: "
                                           f"{type(error).__name__}: {error}")
        if kind == "success":
            return JobOutcome(True, value)
        return JobOutcome(False, error=str(value))
