"""SLURM back-end: sbatch through submitit, one `sacct` per poll cycle, classified sbatch errors.

Why not submitit's own job objects for polling: submitit asks `sacct` lazily (sometimes minutes
stale), which floods a controller at thousands of jobs. Here one `sacct` call per poll cycle
covers every running job. A requeued job (preemption, node failure, timeout of a
Checkpointable task) is held ~120 s by SLURM; it is released a few seconds after the requeue.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from submitit.core.utils import FailedSubmissionError, UncompletedJobError

from hpc.machine.scheduler.base import (
    ExecutorError,
    FailureKind,
    SchedulerState,
    SubmissionError,
    parse_tag_label,
    tag_label,
)
from hpc.machine.scheduler.submitit_files import SubmititFiles

log = logging.getLogger(__name__)

#: sacct states after which a job will not produce anything more.
SLURM_TERMINAL = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "REVOKED", "TIMEOUT",
}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING"}
# A requeued job released at once is killed at start ("Job credential revoked") while its old
# step is still being torn down; a few seconds later it starts cleanly.
REQUEUE_RELEASE_DELAY_S = 4.0

#: sbatch/slurmctld messages (slurm_strerror texts) after which the same request can succeed
#: later: the controller is down, overloaded or briefly refusing work.
TRANSIENT_PATTERNS = (
    r"socket timed out", r"unable to contact slurm controller", r"connect failure",
    r"connection refused", r"resource temporarily unavailable", r"not responding",
    r"zero bytes were transmitted or received", r"communication connection failure",
    r"slurmctld.*(down|unavailable)", r"requested operation is presently disabled",
    r"try again", r"eagain", r"temporarily",
)
#: Messages of requests that will be refused again unchanged (named here so the log says which).
PERMANENT_PATTERNS = (
    r"invalid partition", r"invalid account", r"invalid qos", r"invalid generic resource",
    r"gres", r"--gpus-per-task", r"violates accounting/qos policy", r"invalid feature",
    r"requested node configuration is not available", r"time limit", r"memory",
    r"unrecognized option", r"invalid option", r"not permitted", r"access.*denied",
)


def classify_sbatch_error(message: str) -> FailureKind:
    """"transient" for an unreachable or busy controller, else "permanent".

    Unrecognised messages count as permanent: a refusal we cannot explain is reported to the
    user (the trial fails with sbatch's own words) instead of being retried forever."""
    text = message.lower()
    if any(re.search(pattern, text) for pattern in PERMANENT_PATTERNS):
        return "permanent"
    if any(re.search(pattern, text) for pattern in TRANSIENT_PATTERNS):
        return "transient"
    return "permanent"


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


def is_slurm_job_id(job_id: str) -> bool:
    """"1234" or "1234_7" (an array task)."""
    return re.fullmatch(r"\d+(_\d+)?", job_id) is not None


def query_slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """One `sacct` call for all jobs (arrays by their parent id); unknown ids are absent.

    Ids that are not SLURM's (a refused submission's record) are skipped."""
    parents = sorted({job_id.split("_")[0] for job_id in job_ids if is_slurm_job_id(job_id)},
                     key=int)
    if not parents:
        return {}
    command = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(parents)]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise ExecutorError(f"sacct failed: {error}") from error
    return parse_sacct(out)


class SlurmScheduler(SubmititFiles):
    """sbatch through submitit's SlurmExecutor; `sacct` for states; `scancel` to cancel.

    gpus_per_task > 0 asks for that many GPUs on the job's node (`--gpus-per-node`): a job is one
    task, and `--gpus-per-task` without `--ntasks` is refused by sbatch.
    array_parallelism: the most tasks of one array running at once (`%N`); None = no limit
    beyond the array's own size (submitit would otherwise add `%256`).
    setup: shell lines run in the job script before the task (`module load ...`).
    """

    kind = "slurm"

    def __init__(self, folder: Path, *, partition: str | None = None,
                 account: str | None = None, cpus_per_task: int = 1, gpus_per_task: int = 0,
                 mem_gb: float = 4.0, walltime_min: int = 60, job_name: str = "microloop",
                 sbatch_options: dict[str, str] | None = None, max_array_size: int | None = None,
                 max_num_timeout: int = 3, array_parallelism: int | None = None,
                 setup: list[str] | None = None) -> None:
        import submitit

        super().__init__(folder)
        self._ex = submitit.SlurmExecutor(self.folder, max_num_timeout=max_num_timeout)
        self.max_array_size = max_array_size or slurm_max_array_size()
        extra: dict[str, Any] = dict(sbatch_options or {})
        if account:
            extra["account"] = account
        params: dict[str, Any] = dict(
            time=int(walltime_min), cpus_per_task=int(cpus_per_task),
            mem=f"{int(mem_gb * 1024)}M", job_name=job_name, signal_delay_s=60,
            array_parallelism=int(array_parallelism or self.max_array_size),
            additional_parameters=extra,
        )
        if partition:
            params["partition"] = partition
        if gpus_per_task:
            params["gpus_per_node"] = int(gpus_per_task)
        if setup:
            params["setup"] = list(setup)  # shell lines before the task (module load, export)
        self._ex.update_parameters(**params)
        self._last_state: dict[str, str] = {}
        self._requeued_since: dict[str, float] = {}   # requeued jobs not yet released

    @property
    def parameters(self) -> dict[str, Any]:
        """submitit's sbatch parameters (what goes into the #SBATCH lines)."""
        return dict(self._ex.parameters)

    def sbatch_script(self, n_tasks: int) -> str:
        """The sbatch script an array of `n_tasks` would be submitted with (for checks)."""
        from submitit.slurm.slurm import _make_sbatch_string

        params = self.parameters
        if n_tasks > 1:
            params["map_count"] = n_tasks
        return _make_sbatch_string(command="true", folder=self.folder, **params)

    def submit_array(self, fn: Callable[..., Any], args_list: Sequence[Sequence[Any]],
                     tag: str | None = None, offset: int = 0) -> list[str]:
        if len(args_list) > self.max_array_size:
            raise ValueError(f"{len(args_list)} tasks > MaxArraySize {self.max_array_size}")
        # the tag rides in the job's comment: `squeue` shows it while the job is queued or runs
        self._ex.update_parameters(comment=tag_label(tag, offset) if tag else None)
        try:
            if len(args_list) == 1:
                jobs = [self._ex.submit(fn, *args_list[0])]
            else:
                with self._ex.batch():
                    jobs = [self._ex.submit(fn, *args) for args in args_list]
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # a full disk stops the campaign; it is no attempt's failure
            message = str(error).strip() or type(error).__name__
            raise SubmissionError(f"sbatch: {message}",
                                  self.classify_submission_error(message)) from error
        except (UncompletedJobError, FailedSubmissionError, subprocess.SubprocessError) as error:
            # what submitit raises for a refused or unreadable sbatch (FailedJobError carries
            # sbatch's stderr); any other exception is a bug and propagates as itself
            message = str(error).strip() or type(error).__name__
            raise SubmissionError(f"sbatch: {message}",
                                  self.classify_submission_error(message)) from error
        return [str(job.job_id) for job in jobs]

    def submit(self, fn: Callable[..., Any], *args: Any) -> str:
        return self.submit_array(fn, [tuple(args)])[0]

    def find_tagged(self, tag: str) -> dict[int, str]:
        """Queued and running jobs whose comment carries `tag` (one `squeue`, arrays expanded).

        Why squeue, not sacct: sacct stores comments only with AccountingStoreFlags=job_comment;
        squeue shows them for every job slurmctld holds, which covers the queued and running
        jobs a restarted controller must not submit again (a job that started left its own
        marker, see hpc.machine.evaluation_task)."""
        command = ["squeue", "-h", "-r", "-o", "%i|%T|%k"]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                 check=True).stdout
        except (OSError, subprocess.SubprocessError) as error:
            raise ExecutorError(f"squeue failed: {error}") from error
        return parse_tagged_squeue(out, tag)

    def classify_submission_error(self, message: str) -> FailureKind:
        return classify_sbatch_error(message)

    def states(self, job_ids: Sequence[str]) -> dict[str, SchedulerState]:
        raw = query_slurm_states(job_ids)
        out: dict[str, SchedulerState] = {}
        for job_id in job_ids:
            if not is_slurm_job_id(job_id):
                continue
            state = raw.get(job_id, "PENDING")  # not in the accounting database yet
            out[job_id] = self._state(job_id, state)
        return out

    def _state(self, job_id: str, state: str) -> SchedulerState:
        previous = self._last_state.get(job_id)
        self._last_state[job_id] = state
        if state in ("PENDING", "REQUEUED") and (previous in ("RUNNING", "REQUEUED")
                                                 or job_id in self._requeued_since):
            since = self._requeued_since.setdefault(job_id, time.monotonic())
            if time.monotonic() - since >= REQUEUE_RELEASE_DELAY_S:
                release_requeued(job_id)
                self._requeued_since[job_id] = math.inf  # released; wait for it to run
        elif state == "RUNNING":
            self._requeued_since.pop(job_id, None)
        if state in SLURM_TERMINAL:
            return SchedulerState("ended", state)
        if state in SLURM_RUNNING:
            return SchedulerState("running", state)
        return SchedulerState("pending", state)

    def cancel(self, job_ids: Sequence[str]) -> None:
        ids = [job_id for job_id in job_ids if is_slurm_job_id(job_id)]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60, check=False)


def parse_tagged_squeue(text: str, tag: str) -> dict[int, str]:
    """`squeue -h -r -o '%i|%T|%k'` lines -> {position in submission `tag`: job id}.

    An array task ``123_4`` of a job labelled at position p is call p + 4; a plain job is call
    p. Ended jobs are skipped: squeue prints an array whose tasks all ended before starting as
    the bare parent id, indistinguishable from a single job (and such a job ran nothing)."""
    found: dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split("|", 2)
        if len(fields) != 3:
            continue
        job_id, state, comment = (field.strip() for field in fields)
        position = parse_tag_label(comment, tag)
        if position is None or not is_slurm_job_id(job_id) or state in SLURM_TERMINAL:
            continue
        task = int(job_id.split("_")[1]) if "_" in job_id else 0
        found[position + task] = job_id
    return found


def release_requeued(job_id: str) -> None:
    """SLURM holds a requeued job for 120 s (BeginTime); let it start again at once."""
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                   capture_output=True, text=True, timeout=30, check=False)
