"""The one interface every batch-system back-end implements (local processes, SLURM, ...).

Why a Protocol: the controller talks to `hpc.machine.executor.Executor` only; the executor adds
what is common to every back-end (result files, the grace for lagging files, classified
submission failures with retries and back-off, array splitting) and asks a `Scheduler` for the
few things that differ per batch system. A PBS back-end is one new module implementing this
Protocol, registered in `hpc.machine.scheduler.SCHEDULERS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

#: How a refused submission is treated: "transient" errors (scheduler unreachable, busy) are
#: retried with exponential back-off; "permanent" ones (bad partition, account, QOS, option)
#: would be refused again unchanged, so the affected trials fail with the scheduler's message.
FailureKind = Literal["transient", "permanent"]

#: The coarse phase of a job as the executor needs it; "ended" = will not run any more (the
#: result file, or its absence after a grace, decides success).
Phase = Literal["pending", "running", "ended"]


@dataclass(frozen=True)
class SchedulerState:
    """One job as its scheduler reports it."""

    phase: Phase
    detail: str  # the scheduler's own word for it (PENDING, TIMEOUT, "EXITED (killed ...)")


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


class SubmissionError(ExecutorError):
    """The scheduler refused one submission; `kind` says whether trying again can help.

    `accepted`: the job ids of the submission's first calls, which were started before the
    refusal (a local array is started job by job): they run, and must not be read as refused
    or submitted again."""

    def __init__(self, message: str, kind: FailureKind, accepted: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.kind: FailureKind = kind
        self.accepted: list[str] = list(accepted)


@runtime_checkable
class Scheduler(Protocol):
    """A batch system: submit, submit an array, poll many jobs in one call, cancel, classify."""

    kind: str
    #: The most tasks one array submission may hold (SLURM: MaxArraySize).
    max_array_size: int

    def submit_array(self, fn: Callable[..., Any], args_list: Sequence[Sequence[Any]],
                     tag: str | None = None, offset: int = 0) -> list[str]:
        """Submit all calls in ONE scheduler request (len(args_list) <= max_array_size).

        `tag` (with `offset`, the position of the first call in the caller's whole list) is
        attached to every job so that `find_tagged` can find them again after the caller was
        killed before it recorded their ids. Returns one job id per call. Raises
        `SubmissionError` (classified) if refused."""
        ...

    def find_tagged(self, tag: str) -> dict[int, str]:
        """The jobs submitted with `tag` that are still queued or running, as {position in the
        tagged submission: job id}; one scheduler query."""
        ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> str:
        """Submit one call; its job id."""
        ...

    def states(self, job_ids: Sequence[str]) -> dict[str, SchedulerState]:
        """Every given job's state with at most one scheduler query; unknown ids are absent."""
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Ask the scheduler to stop these jobs (unknown or finished ids are ignored)."""
        ...

    def classify_submission_error(self, message: str) -> FailureKind:
        """Whether a refused submission with this message may succeed when tried again."""
        ...

    def outcome(self, job_id: str) -> JobOutcome:
        """The return value of an ended job, or the error it left."""
        ...

    def has_result(self, job_id: str) -> bool:
        """Whether the job's result is on disk (success or its remote exception)."""
        ...

    def log_tail(self, job_id: str) -> str:
        """The end of the job's error log (for the failure reason of a job that left nothing)."""
        ...


#: In a fork server's command line (fork_server.py): its forked jobs share it, so `pid_alive`
#: knows them; and the suffix of the file holding a forked job's tag label
FORK_MARKER = "microloop-fork-server"
FORK_LABEL_SUFFIX = "_label.txt"
#: A local job's process as it was at its submission (`process_identity`), kept in
#: ``<folder>/<pid>_process.json``: a resumed controller's proof that the process now on that
#: pid is still the job and not a later process the pid was given to
PROCESS_SUFFIX = "_process.json"

#: What marks a job as part of a tagged submission (a SLURM comment, a local job's environment).
TAG_PREFIX = "microloop-submission"
TAG_ENV = "MICROLOOP_SUBMISSION"


def tag_label(tag: str, position: int) -> str:
    """The label a job of submission `tag` carries: the tag and its first call's position."""
    if not tag or ":" in tag or any(c.isspace() for c in tag):
        raise ValueError(f"submission tag {tag!r}: expected a non-empty word without ':'")
    return f"{TAG_PREFIX}:{tag}:{int(position)}"


def parse_tag_label(label: str, tag: str) -> int | None:
    """The position a label of submission `tag` carries, None for any other label."""
    prefix = f"{TAG_PREFIX}:{tag}:"
    if not label.startswith(prefix):
        return None
    rest = label[len(prefix):].strip()
    return int(rest) if rest.isdigit() else None


def identity_path(folder: str | Path, job_id: str | int) -> Path:
    """Where the identity of local job `job_id`'s process is kept."""
    return Path(folder) / f"{job_id}{PROCESS_SUFFIX}"


def process_identity(pid: int) -> dict[str, Any] | None:
    """What tells process `pid` from any later process given the same pid: this boot's id and
    its start time in clock ticks since boot (/proc/<pid>/stat field 22); None without such a
    process (or a /proc to read). Exact, unlike a start time compared with a submission time:
    two processes on one pid in one clock tick would need pid_max forks within it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return {"boot_id": boot_id, "start_ticks": int(fields[19])}
    except (OSError, IndexError, ValueError):
        return None


def write_identity(folder: str | Path, pid: int) -> None:
    """Record process `pid` as local job `pid`; called while it cannot have been reaped (the
    caller is its parent and has not waited for it), so it is the job's own process."""
    identity = process_identity(pid)
    if identity is None:   # no /proc: nothing to compare later either (pid_alive decides)
        return
    path = identity_path(folder, pid)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(identity))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)   # no half-written record left behind (a full disk)
        raise


def tail_text(path: Path, n_chars: int = 1500) -> str:
    """The last characters of a text file, '' if it cannot be read."""
    try:
        return path.read_text(errors="replace")[-n_chars:]
    except OSError:
        return ""
