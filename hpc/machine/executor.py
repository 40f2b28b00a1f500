"""The executor the controller calls: one facade over the `Scheduler` back-ends.

What it adds to every back-end (hpc.machine.scheduler): arrays split at the scheduler's
MaxArraySize; one batched state query per poll cycle; a finished job recognised by its result
file, with a grace for a file that lags behind the job's end (NFS); and classified submission
failures:

- transient (scheduler unreachable or busy): retried in place with exponential back-off
  (1, 2, 4, ... s, bounded), each retry counted and logged; if they run out before anything of
  the call was accepted, `ExecutorError` is raised and the controller tries again next cycle;
- permanent (bad partition, account, QOS, option): not retried in place; each refused call is
  recorded as "refused" jobs (ids ``refused-<hex>_<task>``, the scheduler's message kept in
  ``<folder>/refused/``) that poll as failed with that message, so the trial uses up an attempt
  and fails after its bounded retries with sbatch's own words as the reason. The parts of a
  split array that were accepted keep their real ids (nothing is orphaned or submitted twice).

Job ids are plain strings (``"1234"``, ``"1234_7"`` for an array task, the process id locally),
so the controller can journal them and re-attach after a restart.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpc.campaign.resources_config import MAX_CONSECUTIVE_REFUSALS
from hpc.machine.scheduler import SCHEDULERS, Scheduler
from hpc.machine.scheduler.base import (
    ExecutorError,
    JobOutcome,
    JobStatus,
    SubmissionError,
)
from hpc.machine.scheduler.local import pid_alive as _pid_alive
from hpc.machine.scheduler.slurm import (
    SLURM_TERMINAL,
    parse_sacct,
    query_slurm_states,
    slurm_max_array_size,
)

log = logging.getLogger(__name__)

__all__ = [
    "SLURM_TERMINAL", "Executor", "ExecutorError", "JobOutcome", "JobStatus", "SubmissionError",
    "_pid_alive", "parse_sacct", "query_slurm_states", "slurm_max_array_size",
]

#: What a persistent worker imports before its first job: the modules an evaluation loads
#: lazily (the stages, and through them torch, numba, zarr, skimage; PyBaMM only where the
#: warm-up scores the cell in the job)
EVALUATION_PRELOAD = ("hpc.machine.evaluation_task", "jobs.evaluate", "jobs.generate",
                      "jobs.characterise", "jobs.simulate", "distributed")
#: Default wait for the result file of a job its scheduler says has ended (slow NFS).
RESULT_GRACE_S = 5.0
#: Prefix of the id of a submission the scheduler refused permanently.
REFUSED_PREFIX = "refused-"
REFUSED_FOLDER = "refused"


class Executor:
    """Submit package-level functions and poll their jobs in batches.

    kind: "local" (processes on this machine), "slurm" (sbatch through submitit) or "debug"
    (in this process, run when polled; for stepping through with a debugger).
    max_concurrent: the most array tasks running at once (SLURM `%N`); default: no limit beyond
    the array itself (the controller never submits more than its free slots).
    """

    def __init__(self, kind: str, folder: Path, *, partition: str | None = None,
                 account: str | None = None, cpus_per_task: int = 1, gpus_per_task: int = 0,
                 mem_gb: float = 4.0, walltime_min: int = 60, job_name: str = "microloop",
                 sbatch_options: dict[str, str] | None = None, max_array_size: int | None = None,
                 max_num_timeout: int = 3, max_concurrent: int | None = None,
                 result_grace_s: float = RESULT_GRACE_S, transient_retries: int = 6,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 60.0,
                 setup: list[str] | None = None,
                 max_consecutive_refusals: int = MAX_CONSECUTIVE_REFUSALS,
                 persistent_worker: bool = False, preload: Sequence[str] = (),
                 worker_env: dict[str, str] | None = None) -> None:
        if kind not in SCHEDULERS:
            raise ValueError(f"executor kind {kind!r}; allowed: {', '.join(SCHEDULERS)}")
        if result_grace_s < 0 or transient_retries < 0 or backoff_base_s < 0:
            raise ValueError("result_grace_s, transient_retries and backoff_base_s must be >= 0; "
                             f"got {result_grace_s}, {transient_retries}, {backoff_base_s}")
        self.kind = kind
        self.folder = Path(folder).absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = dict(max_array_size=max_array_size,
                                       max_num_timeout=max_num_timeout, walltime_min=walltime_min)
        if kind == "local":
            options.update(mem_gb=mem_gb,  # enforced by the local memory guard
                           persistent_worker=persistent_worker, preload=tuple(preload),
                           worker_env=worker_env)
        elif persistent_worker:
            raise ValueError(f"persistent_worker needs executor kind 'local', not {kind!r}")
        if kind == "slurm":
            options.update(partition=partition, account=account, cpus_per_task=cpus_per_task,
                           gpus_per_task=gpus_per_task, mem_gb=mem_gb, job_name=job_name,
                           sbatch_options=sbatch_options, array_parallelism=max_concurrent,
                           setup=setup)
        self.scheduler: Scheduler = SCHEDULERS[kind](self.folder, **options)
        self.max_array_size = self.scheduler.max_array_size
        self.result_grace_s = float(result_grace_s)
        self.transient_retries = int(transient_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self._terminal_since: dict[str, float] = {}
        self.sacct_calls = 0  # scheduler state queries (one per poll cycle at most)
        self.submission_retries = 0  # transient refusals retried in place
        self.submissions_refused = 0  # permanent refusals recorded as failed jobs
        #: permanent refusals since the last accepted request, and the last one's message: the
        #: controller stops the campaign when they repeat (the same request is refused again)
        self.consecutive_refusals = 0
        self.last_refusal = ""
        if max_consecutive_refusals < 1:
            raise ValueError(f"max_consecutive_refusals must be >= 1; got "
                             f"{max_consecutive_refusals}")
        self.max_consecutive_refusals = int(max_consecutive_refusals)

    @classmethod
    def from_resources(cls, resources: Any, folder: Path, *, job_name: str,
                       cpus_per_task: int, max_concurrent: int,
                       worker_env: dict[str, str] | None = None) -> Executor:
        """The evaluations' executor from a campaign's `[resources]` (its evaluation role:
        hpc.campaign.resources_config), throttled at the campaign's `max_concurrent`.
        `worker_env`: what each job sets (thread counts), set in a persistent worker before
        it imports anything."""
        from hpc.campaign.resources_config import resolve_role

        role = resolve_role(resources, "evaluation")
        return cls(resources.executor, folder, partition=role.partition, account=role.account,
                   cpus_per_task=cpus_per_task, gpus_per_task=role.gpus_per_task,
                   mem_gb=resources.mem_gb, walltime_min=role.walltime_min, job_name=job_name,
                   sbatch_options=role.sbatch_options, setup=list(role.setup),
                   max_concurrent=max_concurrent, result_grace_s=resources.result_grace_s,
                   max_consecutive_refusals=resources.max_consecutive_refusals,
                   persistent_worker=resources.forks_jobs,
                   preload=EVALUATION_PRELOAD, worker_env=worker_env)

    # ---- submission ----------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], *args: Any) -> str:
        """Submit one call; returns its job id."""
        return self.submit_array(fn, [tuple(args)])[0]

    def submit_array(self, fn: Callable[..., Any], args_list: Sequence[Sequence[Any]],
                     tag: str | None = None) -> list[str]:
        """Submit many calls of one function, as arrays of at most MaxArraySize tasks.

        `tag` (a word the caller journals before calling) marks every job, so that
        `find_submission(tag)` finds the queued and running ones after the caller was killed
        between the scheduler accepting them and the caller recording their ids.
        Returns one id per call (a refused call's id polls as failed with the refusal)."""
        ids: list[str] = []
        size = self.max_array_size
        for start in range(0, len(args_list), size):
            chunk = args_list[start:start + size]
            try:
                ids.extend(self._submit_chunk(fn, chunk, tag, start))
            except SubmissionError as error:
                ids.extend(error.accepted)   # started before the refusal: they run
                if error.kind == "transient" and not ids:
                    raise  # nothing accepted: the controller submits all of it again later
                ids.extend(self._record_refusal(error, len(chunk) - len(error.accepted)))
            else:
                self.consecutive_refusals = 0
        return ids

    def settle_submissions(self, wait_s: float) -> None:
        """Before `find_submission` after a restart: wait (at most `wait_s`, then
        ExecutorError) until no job of an earlier controller can still start from a request
        it left unread (a local fork server's pipe); a no-op where the scheduler has none."""
        wait = getattr(self.scheduler, "wait_for_unread_requests", None)
        if wait is not None:
            wait(wait_s)

    def find_submission(self, tag: str) -> dict[int, str]:
        """The queued or running jobs of the submission `tag`: {call position: job id}."""
        return self.scheduler.find_tagged(tag)

    def _submit_chunk(self, fn: Callable[..., Any], chunk: Sequence[Sequence[Any]],
                      tag: str | None = None, offset: int = 0) -> list[str]:
        """One scheduler request, retried with exponential back-off while refusals are transient.

        A refusal part-way through (a local array starts job by job) keeps the jobs it
        started: a retry submits only the calls after them, and the error that ends the
        retries carries every accepted id (`SubmissionError.accepted`)."""
        retry = 0
        accepted: list[str] = []
        while True:
            try:
                rest = chunk[len(accepted):]
                return accepted + self.scheduler.submit_array(fn, rest, tag=tag,
                                                              offset=offset + len(accepted))
            except SubmissionError as error:
                accepted += error.accepted
                error.accepted = list(accepted)
                if error.kind == "permanent" or retry >= self.transient_retries:
                    if error.kind == "transient":
                        log.warning("%s submission still refused after %d retries: %s",
                                    self.kind, retry, error.message)
                    raise
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** retry)
                retry += 1
                self.submission_retries += 1
                log.warning("%s submission refused (transient, retry %d of %d in %.0f s): %s",
                            self.kind, retry, self.transient_retries, delay, error.message)
                time.sleep(delay)

    def _record_refusal(self, error: SubmissionError, n_tasks: int) -> list[str]:
        """A permanent refusal as job ids that poll as failed with the scheduler's message."""
        self.submissions_refused += 1
        self.consecutive_refusals += 1
        self.last_refusal = error.message
        record = f"{REFUSED_PREFIX}{uuid.uuid4().hex[:12]}"
        folder = self.folder / REFUSED_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{record}.txt").write_text(f"submission refused ({error.kind}): "
                                              f"{error.message}")
        log.error("%s refused a submission of %d task(s) (%s): %s", self.kind, n_tasks,
                  error.kind, error.message)
        return [f"{record}_{index}" for index in range(n_tasks)]

    def refusal(self, job_id: str) -> str | None:
        """The recorded message of a refused submission, None for a real job id."""
        if not job_id.startswith(REFUSED_PREFIX):
            return None
        path = self.folder / REFUSED_FOLDER / f"{job_id.rsplit('_', 1)[0]}.txt"
        try:
            return path.read_text().strip()
        except OSError as error:
            return f"submission refused (its record {path.name} is unreadable: {error})"

    # ---- polling -------------------------------------------------------------------------

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The state of every given job; at most one scheduler query for all of them."""
        statuses: dict[str, JobStatus] = {}
        reap = getattr(self.scheduler, "reap", None)
        if reap is not None:
            reap()
        waiting = []
        for job_id in job_ids:
            refused = self.refusal(job_id)
            if refused is not None:
                statuses[job_id] = JobStatus("failed", refused)
            elif self.scheduler.has_result(job_id):
                statuses[job_id] = JobStatus("finished", "COMPLETED")
            else:
                waiting.append(job_id)
        if not waiting:
            return statuses
        self.sacct_calls += 1
        states = self.scheduler.states(waiting)
        for job_id in waiting:
            state = states.get(job_id)
            if state is None:
                statuses[job_id] = self._after_grace(job_id, "UNKNOWN to the scheduler")
            elif state.phase == "ended":
                statuses[job_id] = self._after_grace(job_id, state.detail)
            else:
                statuses[job_id] = JobStatus(state.phase, state.detail)
        return statuses

    def _after_grace(self, job_id: str, state: str) -> JobStatus:
        """An ended job without a result file: wait briefly for a lagging file, then fail."""
        first = self._terminal_since.setdefault(job_id, time.monotonic())
        if self.scheduler.has_result(job_id):
            return JobStatus("finished", "COMPLETED")
        if time.monotonic() - first < self.result_grace_s:
            return JobStatus("running", state)
        tail = self.scheduler.log_tail(job_id).strip().splitlines()[-3:]
        reason = f"job {job_id} ended {state} without a result"
        if tail:
            reason += ": " + " | ".join(tail)
        return JobStatus("failed", reason)

    def outcome(self, job_id: str) -> JobOutcome:
        """The return value of a finished job or the remote traceback text."""
        refused = self.refusal(job_id)
        if refused is not None:
            return JobOutcome(False, error=refused)
        return self.scheduler.outcome(job_id)

    def set_warm(self, warm: tuple[Callable[..., Any], tuple[Any, ...]] | None) -> None:
        """The call a persistent worker runs once before its first job (a no-op otherwise)."""
        setter = getattr(self.scheduler, "set_warm", None)
        if setter is not None:
            setter(warm)

    def close(self) -> None:
        """Let a persistent worker end once its running jobs have (a no-op otherwise)."""
        closer = getattr(self.scheduler, "close", None)
        if closer is not None:
            closer()

    def cancel(self, job_ids: Sequence[str]) -> None:
        ids = [job_id for job_id in job_ids if not job_id.startswith(REFUSED_PREFIX)]
        if ids:
            self.scheduler.cancel(ids)
