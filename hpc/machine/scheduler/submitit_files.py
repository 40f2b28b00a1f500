"""Result and log files of submitit jobs, shared by the back-ends that submit through submitit."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

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
        path = self.result_path(job_id)
        try:
            kind, value = load_plain_pickle(path)
        except Exception as error:  # refused, truncated or garbled: that attempt fails, named
            return JobOutcome(False, error=f"unreadable result {path.name}: "
                                           f"{type(error).__name__}: {error}")
        if kind == "success":
            return JobOutcome(True, value)
        return JobOutcome(False, error=str(value))


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what pickle makes without importing anything (str, bytes, numbers, None,
    bool, list, tuple, dict, set): no class is ever looked up, so no code runs (docs/trust.md)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused: the result pickle names {module}.{name}; a "
                                     "microloop result holds plain data only (docs/trust.md)")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused: the result pickle uses persistent ids")


def load_plain_pickle(path: Path) -> tuple[str, Any]:
    """A submitit result file, ``("success", value)`` or ``("error", traceback)``, read without
    unpickling code: `jobs/` can be written by anyone who can write the campaign folder."""
    with open(path, "rb") as handle:
        data = _PlainUnpickler(handle).load()
    if not (isinstance(data, tuple) and len(data) == 2 and data[0] in ("success", "error")):
        raise ValueError("not a submitit result (expected ('success'|'error', value))")
    return data
