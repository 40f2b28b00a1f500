"""One small interface over submitit's local, SLURM and debug executors.

Why not submitit's own job objects for polling: submitit asks `sacct` per job (lazily, sometimes
minutes stale), which floods a controller at thousands of jobs. Here one `sacct` call per poll
cycle covers every running job, a finished job is recognised by its result pickle, and array
submissions are split at the cluster's MaxArraySize (submitit does not split them).

Job ids are plain strings (``"1234"``, ``"1234_7"`` for an array task, the process id locally),
so the controller can journal them and re-attach after a restart.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import pickle
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: sacct states after which a job will not produce anything more.
SLURM_TERMINAL = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "REVOKED", "TIMEOUT",
}
#: How long a terminal job may lack its result pickle before it counts as failed (slow NFS).
RESULT_GRACE_S = 5.0
# A requeued job released at once is killed at start ("Job credential revoked") while its old
# step is still being torn down; a few seconds later it starts cleanly.
REQUEUE_RELEASE_DELAY_S = 4.0


@dataclass
class JobStatus:
    """The state of one job as the controller needs it."""

    state: str  # "pending" | "running" | "finished" | "failed"
    detail: str = ""  # the scheduler's own state (e.g. CANCELLED) or why it failed


@dataclass
class JobOutcome:
    """What a finished job returned, or the error text it left."""

    ok: bool
    value: Any = None
    error: str = ""


class ExecutorError(RuntimeError):
    """The scheduler refused a submission or could not be queried."""


def slurm_max_array_size(default: int = 1001) -> int:
    """The cluster's MaxArraySize (array indices must be below it), from `scontrol show config`."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("scontrol show config failed (%s); assuming MaxArraySize=%d", error, default)
        return default
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, flags=re.MULTILINE)
    return int(match.group(1)) if match else default


def parse_sacct(text: str) -> dict[str, str]:
    """`sacct -X -n -P -o JobID,State` output -> {job_id: STATE}, array ranges expanded."""
    from submitit.slurm.slurm import read_job_id

    states: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        job_field, _, state_field = line.partition("|")
        job_field = job_field.strip()
        if not job_field or "." in job_field:
            continue
        state = state_field.split("|")[0].split()[0] if state_field.strip() else "UNKNOWN"
        try:
            pieces = read_job_id(job_field)
        except ValueError:
            log.debug("unparsed sacct job id %r", job_field)
            continue
        for piece in pieces:
            if len(piece) == 1:
                states[piece[0]] = state
            elif len(piece) == 2:
                states[f"{piece[0]}_{piece[1]}"] = state
            else:
                for index in range(int(piece[1]), int(piece[2]) + 1):
                    states[f"{piece[0]}_{index}"] = state
    return states


def query_slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """One `sacct` call for all jobs (arrays by their parent id); unknown ids are absent."""
    if not job_ids:
        return {}
    parents = sorted({job_id.split("_")[0] for job_id in job_ids}, key=int)
    command = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(parents)]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise ExecutorError(f"sacct failed: {error}") from error
    return parse_sacct(out)


def _tail(path: Path, n_chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n_chars:]
    except OSError:
        return ""


class Executor:
    """Submit package-level functions and poll their jobs in batches.

    kind: "local" (processes on this machine), "slurm" (sbatch through submitit) or "debug"
    (in this process, run when polled; for stepping through with a debugger).
    """

    def __init__(self, kind: str, folder: Path, *, partition: str | None = None,
                 account: str | None = None, cpus_per_task: int = 1, gpus_per_task: int = 0,
                 mem_gb: float = 4.0, walltime_min: int = 60, job_name: str = "microloop",
                 sbatch_options: dict[str, str] | None = None, max_array_size: int | None = None,
                 max_num_timeout: int = 3) -> None:
        import submitit

        if kind not in ("local", "slurm", "debug"):
            raise ValueError(f"executor kind {kind!r}; allowed: local, slurm, debug")
        self.kind = kind
        self.folder = Path(folder).absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._debug_jobs: dict[str, Any] = {}
        self._local_jobs: dict[str, Any] = {}
        self._terminal_since: dict[str, float] = {}
        self._last_slurm_state: dict[str, str] = {}
        self._requeued_since: dict[str, float] = {}   # requeued jobs not yet released
        self.sacct_calls = 0
        if kind == "slurm":
            self._ex = submitit.SlurmExecutor(self.folder, max_num_timeout=max_num_timeout)
            extra: dict[str, Any] = dict(sbatch_options or {})
            if account:
                extra["account"] = account
            params: dict[str, Any] = dict(
                time=int(walltime_min), cpus_per_task=int(cpus_per_task),
                mem=f"{int(mem_gb * 1024)}M", job_name=job_name, signal_delay_s=60,
                additional_parameters=extra,
            )
            if partition:
                params["partition"] = partition
            if gpus_per_task:
                params["gpus_per_task"] = int(gpus_per_task)
            self._ex.update_parameters(**params)
            self.max_array_size = max_array_size or slurm_max_array_size()
        elif kind == "local":
            self._ex = submitit.LocalExecutor(self.folder, max_num_timeout=max_num_timeout)
            self._ex.update_parameters(timeout_min=float(walltime_min))
            self.max_array_size = max_array_size or 10**6
        else:  # debug: calls run in this process when their outcome is read
            self._ex = None
            self.max_array_size = max_array_size or 10**6

    # ---- submission ----------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any) -> str:
        """Submit one call; returns its job id."""
        return self.submit_array(fn, [tuple(args)])[0]

    def submit_array(self, fn: Callable[..., Any], args_list: Sequence[Sequence[Any]]) -> list[str]:
        """Submit many calls of one function, as SLURM arrays of at most MaxArraySize tasks."""
        ids: list[str] = []
        if self.kind == "debug":
            for args in args_list:
                job_id = f"debug-{len(self._debug_jobs)}"
                self._debug_jobs[job_id] = (fn, tuple(args))
                ids.append(job_id)
            return ids
        size = self.max_array_size
        for start in range(0, len(args_list), size):
            chunk = args_list[start:start + size]
            try:
                if len(chunk) == 1:
                    jobs = [self._ex.submit(fn, *chunk[0])]
                else:
                    with self._ex.batch():
                        jobs = [self._ex.submit(fn, *args) for args in chunk]
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # a full disk stops the campaign; it is no attempt's failure
                raise ExecutorError(f"{self.kind} submission failed: {error}") from error
            except Exception as error:  # submitit raises plain exceptions for sbatch errors
                raise ExecutorError(f"{self.kind} submission failed: {error}") from error
            for job in jobs:
                job_id = str(job.job_id)
                if self.kind == "local":
                    self._local_jobs[job_id] = job
                ids.append(job_id)
        return ids

    # ---- polling -------------------------------------------------------------------------

    def result_path(self, job_id: str) -> Path:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=job_id, task_id=0).result_pickle

    def stderr_path(self, job_id: str) -> Path:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=job_id, task_id=0).stderr

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The state of every given job; at most one scheduler query for all of them."""
        statuses: dict[str, JobStatus] = {}
        if self.kind == "debug":
            for job_id in job_ids:
                statuses[job_id] = JobStatus("finished", "DEBUG")
            return statuses
        self._reap_local()
        waiting = []
        for job_id in job_ids:
            if self.result_path(job_id).exists():
                statuses[job_id] = JobStatus("finished", "COMPLETED")
            else:
                waiting.append(job_id)
        if not waiting:
            return statuses
        if self.kind == "slurm":
            self.sacct_calls += 1
            states = query_slurm_states(waiting)
            for job_id in waiting:
                state = states.get(job_id, "PENDING")  # not in the accounting database yet
                statuses[job_id] = self._slurm_status(job_id, state)
        else:
            for job_id in waiting:
                statuses[job_id] = self._local_status(job_id)
        return statuses

    def _reap_local(self) -> None:
        """Wait for local jobs that exited (no zombies until the controller ends); a job that
        left its result is forgotten, one without keeps its exit code for `_local_status`."""
        for job_id, job in list(self._local_jobs.items()):
            process = getattr(job, "_process", None)
            if process is not None and process.poll() is not None \
                    and self.result_path(job_id).exists():
                del self._local_jobs[job_id]

    def _slurm_status(self, job_id: str, state: str) -> JobStatus:
        previous = self._last_slurm_state.get(job_id)
        self._last_slurm_state[job_id] = state
        if state in ("PENDING", "REQUEUED") and (previous in ("RUNNING", "REQUEUED")
                                                 or job_id in self._requeued_since):
            since = self._requeued_since.setdefault(job_id, time.monotonic())
            if time.monotonic() - since >= REQUEUE_RELEASE_DELAY_S:
                self._release_requeued(job_id)
                self._requeued_since[job_id] = math.inf  # released; wait for it to run
        elif state == "RUNNING":
            self._requeued_since.pop(job_id, None)
        if state in SLURM_TERMINAL:
            return self._after_grace(job_id, state)
        if state in ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING"):
            return JobStatus("running", state)
        return JobStatus("pending", state)

    def _release_requeued(self, job_id: str) -> None:
        """SLURM holds a requeued job for 120 s (BeginTime); let it start again at once."""
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                       capture_output=True, text=True, timeout=30, check=False)

    def _after_grace(self, job_id: str, state: str) -> JobStatus:
        """A terminal job without a result pickle: wait briefly for a lagging file, then fail."""
        first = self._terminal_since.setdefault(job_id, time.monotonic())
        if time.monotonic() - first < RESULT_GRACE_S:
            return JobStatus("running", state)
        tail = _tail(self.stderr_path(job_id)).strip().splitlines()[-3:]
        reason = f"job {job_id} ended {state} without a result"
        if tail:
            reason += ": " + " | ".join(tail)
        return JobStatus("failed", reason)

    def _local_status(self, job_id: str) -> JobStatus:
        job = self._local_jobs.get(job_id)
        process = getattr(job, "_process", None)
        if process is not None:
            code = process.poll()
            if code is None:
                return JobStatus("running", "RUNNING")
            # submitit's local wrapper exits 0 even when its task died (killed, out of memory)
            how = f"killed by signal {-code}" if code < 0 else "its process died"
            return self._after_grace(job_id, f"EXITED ({how})")
        # re-attached after a controller restart: the process is not our child any more
        if _pid_alive(int(job_id)):
            return JobStatus("running", "RUNNING")
        return self._after_grace(job_id, "GONE")

    def outcome(self, job_id: str) -> JobOutcome:
        """The return value of a finished job or the remote traceback text."""
        if self.kind == "debug":
            fn, args = self._debug_jobs.pop(job_id)
            try:
                return JobOutcome(True, fn(*args))
            except Exception as error:  # the function's own error, in this process
                return JobOutcome(False, error=f"{type(error).__name__}: {error}")
        path = self.result_path(job_id)
        try:
            kind, value = load_plain_pickle(path)
        except Exception as error:  # refused, truncated or garbled: the attempt fails, named
            return JobOutcome(False, error=f"unreadable result {path.name}: {error}")
        if kind == "success":
            return JobOutcome(True, value)
        return JobOutcome(False, error=str(value))

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids or self.kind == "debug":
            return
        if self.kind == "slurm":
            subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60, check=False)
            return
        import signal

        for job_id in job_ids:
            try:
                os.kill(int(job_id), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


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


def _pid_alive(pid: int) -> bool:
    """A live submitit local job (guards against pid reuse by checking its command line)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"submitit" in cmdline
