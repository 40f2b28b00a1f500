"""Local back-ends: submitit's LocalExecutor (one process per job) and an in-process debug one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hpc.machine.scheduler.base import (
    FORK_LABEL_SUFFIX,
    FORK_MARKER,
    TAG_ENV,
    ExecutorError,
    FailureKind,
    JobOutcome,
    SchedulerState,
    SubmissionError,
    identity_path,
    parse_tag_label,
    process_identity,
    tag_label,
    write_identity,
)
from hpc.machine.scheduler.memory_guard import GIB, describe, process_tree, record_path
from hpc.machine.scheduler.submitit_files import SubmititFiles

#: files of a new job's pid written more than this before its submission are an earlier job's
STALE_MARGIN_S = 1.0
#: run by file path (standard library only): it starts in milliseconds, imports nothing of ours
GUARD_SCRIPT = Path(__file__).with_name("memory_guard.py")
#: a re-attached job's pid counts as the job only if the process there is the one recorded at
#: its submission (`<pid>_process.json`); False: the command line alone decides, as before
#: (another submitit job or a fork server on a reused pid then read as the job, and `cancel`
#: signalled them). Kept for comparing the two in one process.
CHECK_IDENTITY = True
#: why a re-attached job whose pid another process now has is read as ended
PID_TAKEN = "process ended while the controller was down; pid now belongs to another process"


class LocalScheduler(SubmititFiles):
    """Jobs are child processes of this controller; job ids are their process ids."""

    kind = "local"

    def __init__(self, folder: Path, *, walltime_min: int = 60, max_num_timeout: int = 3,
                 max_array_size: int | None = None, mem_gb: float | None = None,
                 persistent_worker: bool = False, preload: Sequence[str] = (),
                 warm: tuple[Callable[..., Any], tuple[Any, ...]] | None = None,
                 worker_env: dict[str, str] | None = None, **_ignored: Any) -> None:
        import submitit

        super().__init__(folder)
        #: resources.persistent_worker: jobs are forked from one warmed server (fork_server.py)
        self._fork = (ForkServerClient(self.folder, walltime_min=walltime_min, mem_gb=mem_gb,
                                       preload=preload, warm=warm, env=worker_env)
                      if persistent_worker else None)
        #: each job's memory limit (resources.mem_gb), enforced by memory_guard.py around the
        #: task (why a watchdog, not RLIMIT_AS or a cgroup: that module's docstring)
        self.mem_gb = mem_gb
        python = shlex.quote(sys.executable)
        if mem_gb is not None:
            if not mem_gb > 0:
                raise ValueError(f"mem_gb must be > 0 GiB; got {mem_gb!r}")
            python = shlex.join([sys.executable, str(GUARD_SCRIPT), "--mem-bytes",
                                 str(int(mem_gb * GIB)), "--record-dir",
                                 str(self.folder), "--", sys.executable])
        self._ex = submitit.LocalExecutor(self.folder, max_num_timeout=max_num_timeout,
                                          python=python)
        self._ex.update_parameters(timeout_min=float(walltime_min))
        self.max_array_size = max_array_size or 10**6
        self._jobs: dict[str, Any] = {}
        # re-attached jobs seen gone without an exit record: since when (a fork server of
        # another scheduler reaps a job and writes its record a moment later)
        self._gone_since: dict[str, float] = {}

    def submit_array(self, fn: Callable[..., Any], args_list: Sequence[Sequence[Any]],
                     tag: str | None = None, offset: int = 0) -> list[str]:
        started = time.time()
        try:
            ids = self._submit_array(fn, args_list, tag, offset)
        except SubmissionError as error:
            self._set_aside_stale(error.accepted, started)   # they run: as any started job
            raise
        self._set_aside_stale(ids, started)
        return ids

    def _set_aside_stale(self, job_ids: Sequence[str], started: float) -> None:
        """A job id is a process id, and process ids are reused (pid_max is 32768 here): an
        earlier job of this folder with the same pid left its result and exit record, which
        would read as the new job's end, with another trial's result. Files older than the
        submission cannot be the new job's (it writes them when it ends): moved to stale/.
        The margin: file times come from the kernel's coarse clock, which lags time.time() by
        up to a few ms, so a quick job's own result could look older than its submission; an
        earlier owner of the pid ended long before (the pid came round after pid_max forks)."""
        before = started - STALE_MARGIN_S
        for job_id in job_ids:
            for path in (self.result_path(job_id), record_path(self.folder, job_id)):
                try:
                    written = path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if written < before:
                    aside = self.folder / "stale"
                    aside.mkdir(exist_ok=True)
                    os.replace(path, aside / f"{path.name}.{int(written)}")

    def _submit_array(self, fn: Callable[..., Any], args_list: Sequence[Sequence[Any]],
                      tag: str | None, offset: int) -> list[str]:
        if self._fork is not None:
            return self._fork.submit_array(fn, args_list, tag, offset)
        jobs = []
        try:
            for index, args in enumerate(args_list):
                # submitit copies this process's environment into the job: the tag rides there
                with _environment(TAG_ENV, tag_label(tag, offset + index) if tag else None):
                    jobs.append(self._ex.submit(fn, *args))
                # at once, not after the loop: a controller killed within the array leaves
                # the jobs it started recorded. Our child, not waited for: even ended, it
                # still holds its pid
                try:
                    write_identity(self.folder, int(jobs[-1].job_id))
                except OSError as error:
                    if error.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    # as the fork server does: no job runs without its record (a resumed
                    # controller could not tell it from a later owner of its pid); it was
                    # started microseconds ago and is still starting its interpreter
                    job = jobs.pop()
                    _stop_starting_job(job)
                    reason = error.strerror or str(error)
                    raise SubmissionError(
                        f"the job's process record could not be written ({reason}); job "
                        f"process {job.job_id} was stopped as it started",
                        "permanent", accepted=self._keep(jobs)) from error
        except OSError as error:  # fork/exec failed: out of processes or memory
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # a full disk stops the campaign; it is no attempt's failure
            # the calls before the failing one were started: they run and are handed on
            raise SubmissionError(f"starting a local job failed: {error}",
                                  self.classify_submission_error(str(error)),
                                  accepted=self._keep(jobs)) from error
        return self._keep(jobs)

    def _keep(self, jobs: Sequence[Any]) -> list[str]:
        """Hold the started submitit jobs (a dropped handle cancels its job); their ids."""
        ids = []
        for job in jobs:
            job_id = str(job.job_id)
            self._jobs[job_id] = job
            ids.append(job_id)
        return ids

    def submit(self, fn: Callable[..., Any], *args: Any) -> str:
        return self.submit_array(fn, [tuple(args)])[0]

    def find_tagged(self, tag: str) -> dict[int, str]:
        """Live local jobs started with `tag`: the processes whose environment carries it and
        whose parent's does not (the job's own process, whose pid is its job id)."""
        labels: dict[int, tuple[str, int]] = {}
        proc = Path("/proc")
        if not proc.is_dir():   # no process table to read (not Linux): nothing can be found
            return {}
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
                continue
            prefix = f"{TAG_ENV}=".encode()
            for item in environ:
                if item.startswith(prefix):
                    labels[int(entry.name)] = (item[len(prefix):].decode(errors="replace"),
                                               parent)
                    break
        found: dict[int, str] = {}
        for pid, (label, parent) in labels.items():
            position = parse_tag_label(label, tag)
            if position is not None and labels.get(parent, ("",))[0] != label:
                found[position] = str(pid)
                if CHECK_IDENTITY:
                    # its label proves the process is the job: recorded anew, in case a
                    # controller killed right after starting it left an earlier job's record
                    # of that pid (or none) in place
                    write_identity(self.folder, pid)
        # forked jobs (resources.persistent_worker) share their server's environment: the
        # server leaves each one's label in a file
        for path in self.folder.glob(f"*{FORK_LABEL_SUFFIX}"):
            pid = path.name[:-len(FORK_LABEL_SUFFIX)]
            if not pid.isdigit() or not job_process_alive(self.folder, pid):
                continue
            try:
                position = parse_tag_label(path.read_text().strip(), tag)
            except OSError:
                continue
            if position is not None:
                found[position] = pid
        return found

    def wait_for_unread_requests(self, wait_s: float) -> None:
        """Wait until no fork server but this scheduler's own may still read a request.

        Why: a controller killed after writing a job request to its server's pipe and before
        reading the pid leaves the request unread if that server is slow (busy, stopped, a
        loaded machine); the server forks it later, after a resumed controller found no
        label and no marker and submitted the trial again (two jobs for one attempt). Each
        server holds `fork_server_<pid>.open` until its input has ended (fork_server.py).
        Raises ExecutorError after `wait_s`: which server, so nothing is resubmitted blind."""
        from hpc.machine.scheduler.fork_server import OPEN_SUFFIX

        own = self._fork.pid if self._fork is not None else None
        deadline = time.monotonic() + wait_s
        while True:
            busy = []
            for path in self.folder.glob(f"fork_server_*{OPEN_SUFFIX}"):
                pid = path.name[len("fork_server_"):-len(OPEN_SUFFIX)]
                if pid.isdigit() and pid != own and _is_forked(int(pid)):
                    busy.append(pid)   # alive (a dead server's file is stale: it reads nothing)
            if not busy:
                return
            if time.monotonic() > deadline:
                raise ExecutorError(
                    f"fork server(s) {', '.join(sorted(busy))} of an earlier controller still "
                    f"hold unread job requests after {wait_s:g} s (stopped or overloaded?); a "
                    "trial of a cut submission may still be started by them")
            time.sleep(0.2)

    def classify_submission_error(self, message: str) -> FailureKind:
        transient = (os.strerror(errno.EAGAIN), os.strerror(errno.ENOMEM))
        return "transient" if any(text in message for text in transient) else "permanent"

    def states(self, job_ids: Sequence[str]) -> dict[str, SchedulerState]:
        return {job_id: self._state(job_id) for job_id in job_ids if job_id.isdigit()}

    def reap(self) -> None:
        """Wait for local jobs that exited (no zombies until the controller ends); a job that
        left its result is forgotten, one without keeps its exit code for `states`."""
        for job_id, job in list(self._jobs.items()):
            process = getattr(job, "_process", None)
            if process is not None and process.poll() is not None and self.has_result(job_id):
                del self._jobs[job_id]

    def _state(self, job_id: str) -> SchedulerState:
        forked = self._forked_record(job_id)
        if forked is not None:   # the fork server reaped it: its record is final
            return SchedulerState("ended", f"EXITED ({describe(forked)})")
        process = getattr(self._jobs.get(job_id), "_process", None)
        if process is not None:
            code = process.poll()
            if code is None:
                return SchedulerState("running", "RUNNING")
            # submitit's local wrapper exits 0 even when its task died (killed, out of memory):
            # the memory guard's record says how the task itself ended
            how = f"killed by signal {-code}" if code < 0 else "its process died"
            return SchedulerState("ended", f"EXITED ({self._guard_record(job_id) or how})")
        # re-attached after a controller restart: the process is not our child any more
        if pid_alive(int(job_id)):
            if job_process_alive(self.folder, job_id):
                return SchedulerState("running", "RUNNING")
            if pid_taken(self.folder, job_id):
                # the job ended while no controller watched (reaped, so any record is
                # written) and the kernel gave its pid to another process: ended, with what
                # it left
                record = self._guard_record(job_id)
                return SchedulerState("ended", f"GONE ({record + '; ' if record else ''}"
                                               f"{PID_TAKEN})")
            # else it exited between the two reads of /proc: an ending job, read below
        if _unreaped_fork_child(int(job_id)) or (self._fork is not None
                                                  and self._fork.awaiting_record(job_id)):
            return SchedulerState("running", "EXITING (the fork server is recording its end)")
        record = self._guard_record(job_id)
        if record:
            return SchedulerState("ended", f"GONE ({record})")
        # no record yet: a fork server we do not own may have reaped the job and not yet
        # written its record; give it the time a live server takes before calling it gone
        first_seen = self._gone_since.setdefault(job_id, time.monotonic())
        if time.monotonic() - first_seen < RECORD_WAIT_S:
            return SchedulerState("running", "EXITING (waiting for its exit record)")
        return SchedulerState("ended", "GONE")

    def _forked_record(self, job_id: str) -> dict | None:
        """The fork server's record of an ended forked job, None for a running or fresh one
        (a fresh job's guard record is not final: submitit may requeue the task)."""
        try:
            record = json.loads(record_path(self.folder, job_id).read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("forked") else None

    def _guard_record(self, job_id: str) -> str:
        """How the memory guard saw the job's task end, '' without a (readable) record."""
        try:
            record = json.loads(record_path(self.folder, job_id).read_text())
        except (OSError, ValueError):
            return ""  # no guard (mem_gb unset), or the guard itself was killed
        if not isinstance(record, dict):
            return ""
        return describe(record)

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Stop these jobs; a pid whose process is not the job's (it ended, and the pid was
        given to another process) is never signalled."""
        for job_id in job_ids:
            if not self._owns(job_id):
                continue
            try:
                if _is_forked(int(job_id)):
                    # a forked job runs submitit's task directly, which ignores SIGTERM (it
                    # is submitit's wrapper that turns it into a kill): end its tree
                    for pid in reversed(process_tree(int(job_id))):
                        os.kill(pid, signal.SIGKILL)
                else:
                    os.kill(int(job_id), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass

    def _owns(self, job_id: str) -> bool:
        """Whether the process on pid `job_id` is that job's: our own child not yet waited
        for (its pid cannot have been reused), else a re-attached job's recorded process."""
        if not CHECK_IDENTITY:
            return True   # as before: whatever holds the pid is signalled
        if not job_id.isdigit():
            return False
        process = getattr(self._jobs.get(job_id), "_process", None)
        if process is not None and process.returncode is None:
            return True
        return job_process_alive(self.folder, job_id)

    def set_warm(self, warm: tuple[Callable[..., Any], tuple[Any, ...]] | None) -> None:
        """The call the fork server runs once before its first job (no effect on fresh jobs,
        nor once the server has started)."""
        if self._fork is not None:
            self._fork.warm = warm

    def close(self) -> None:
        """Stop the fork server taking jobs (its running jobs finish)."""
        if self._fork is not None:
            self._fork.close()


#: how long `close` waits for the fork server to exit (it stays while its jobs run)
CLOSE_WAIT_S = 5.0
#: the longest a live fork server may take to record an ended job (it does every 0.25 s)
RECORD_WAIT_S = 10.0


class ForkServerClient:
    """The controller's end of `fork_server.py`: started on the first submission, restarted
    if it died; each job is one request and its job id the forked child's pid."""

    def __init__(self, folder: Path, *, walltime_min: float, mem_gb: float | None,
                 preload: Sequence[str], warm: tuple[Callable[..., Any], tuple[Any, ...]] | None,
                 env: dict[str, str] | None) -> None:
        self.folder = Path(folder)
        self.timeout_s = 60.0 * float(walltime_min)
        self.mem_bytes = None if mem_gb is None else int(mem_gb * GIB)
        self.preload = list(preload)
        self.warm = warm
        self.env = dict(env or {})
        self.pids: set[str] = set()
        self._ended_unrecorded: dict[str, float] = {}
        self.starts = 0  # servers started (1 unless one died)
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> str | None:
        """The running server's pid, None before the first submission."""
        return str(self._process.pid) if self._process is not None else None

    def awaiting_record(self, job_id: str) -> bool:
        """A job of this server's that has ended (a zombie, or just reaped) while the server,
        alive, has not written its exit record yet (it does within one watch interval)."""
        if job_id not in self.pids or self._process is None or self._process.poll() is not None:
            return False
        first = self._ended_unrecorded.setdefault(job_id, time.monotonic())
        return time.monotonic() - first < RECORD_WAIT_S

    def _server(self) -> subprocess.Popen[str]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        from submitit.core.utils import DelayedSubmission

        command = [sys.executable, "-m", "hpc.machine.scheduler.fork_server", str(self.folder),
                   "--preload", ",".join(self.preload)]
        if self.warm is not None:
            path = self.folder / f".fork_server_warm_{uuid.uuid4().hex[:8]}.pkl"
            DelayedSubmission(self.warm[0], *self.warm[1]).dump(path)
            command += ["--warm", str(path)]
        command += ["--role", FORK_MARKER]
        env = dict(os.environ)
        for key, value in self.env.items():   # what the job would set: before torch loads
            env.setdefault(key, value)
        env.pop(TAG_ENV, None)
        log_file = open(self.folder / "fork_server.log", "a")  # noqa: SIM115 (the server's)
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log_file, text=True, env=env)
        log_file.close()
        self.starts += 1
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise SubmissionError(f"the fork server (resources.persistent_worker) exited {code} "
                                  f"before it was ready; see {self.folder / 'fork_server.log'}",
                                  "permanent")   # a start-up error: trying again repeats it
        return self._process

    def submit_array(self, fn: Callable[..., Any], args_list: Sequence[Sequence[Any]],
                     tag: str | None, offset: int) -> list[str]:
        from submitit.core.utils import DelayedSubmission

        ids = []
        for index, args in enumerate(args_list):
            path = self.folder / f".submission_file_{uuid.uuid4().hex}.pkl"
            DelayedSubmission(fn, *args).dump(path)
            request = {"pickle": str(path), "timeout_s": self.timeout_s,
                       "mem_bytes": self.mem_bytes,
                       "label": tag_label(tag, offset + index) if tag else None,
                       "env": {TAG_ENV: tag_label(tag, offset + index)} if tag else {}}
            try:
                answer = self._ask(request)
            except SubmissionError as error:   # the server died: the calls before ran
                path.unlink(missing_ok=True)
                raise SubmissionError(error.message, error.kind, accepted=ids) from error
            if "pid" not in answer:
                path.unlink(missing_ok=True)   # no job took it
                message = f"the fork server refused a job: {answer.get('error')}"
                if answer.get("errno") in (errno.ENOSPC, errno.EDQUOT):
                    # as on the plain path: a full disk stops the campaign (the jobs already
                    # started are found again by their tag when it resumes)
                    raise OSError(answer["errno"], message)
                kind = ("transient" if answer.get("errno") in (errno.EAGAIN, errno.ENOMEM)
                        else "permanent")
                # the calls before this one were started: they run and are handed on
                raise SubmissionError(message, kind, accepted=ids)
            ids.append(str(answer["pid"]))
            self.pids.add(ids[-1])
        return ids

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        for _ in range(2):   # a server that died meanwhile is replaced once
            process = self._server()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
            if line:
                return json.loads(line)
            process.wait()
        raise SubmissionError("the fork server (resources.persistent_worker) died twice; see "
                              f"{self.folder / 'fork_server.log'}", "transient")

    def close(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            # it exits once its jobs have ended (at a campaign's end: at once); reaped here
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=CLOSE_WAIT_S)
        self._process = None   # a later submission starts a new server


class DebugScheduler:
    """Calls run in this process when their outcome is read (for stepping through a debugger)."""

    kind = "debug"

    def __init__(self, folder: Path, *, max_array_size: int | None = None,
                 **_ignored: Any) -> None:
        self.folder = Path(folder)
        self.max_array_size = max_array_size or 10**6
        self._jobs: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._count = 0

    def submit_array(self, fn: Callable[..., Any], args_list: Sequence[Sequence[Any]],
                     tag: str | None = None, offset: int = 0) -> list[str]:
        ids = []
        for args in args_list:
            job_id = f"debug-{self._count}"
            self._count += 1
            self._jobs[job_id] = (fn, tuple(args))
            ids.append(job_id)
        return ids

    def submit(self, fn: Callable[..., Any], *args: Any) -> str:
        return self.submit_array(fn, [tuple(args)])[0]

    def find_tagged(self, tag: str) -> dict[int, str]:
        return {}  # in-process calls die with the controller

    def classify_submission_error(self, message: str) -> FailureKind:
        return "permanent"  # nothing is submitted anywhere

    def states(self, job_ids: Sequence[str]) -> dict[str, SchedulerState]:
        return {job_id: SchedulerState("ended", "DEBUG") for job_id in job_ids
                if job_id in self._jobs}

    def has_result(self, job_id: str) -> bool:
        return job_id in self._jobs  # runs when its outcome is read

    def outcome(self, job_id: str) -> JobOutcome:
        fn, args = self._jobs.pop(job_id)
        try:
            return JobOutcome(True, fn(*args))
        except Exception:  # the function's own error, in this process, with its frames
            return JobOutcome(False, error=traceback.format_exc())

    def log_tail(self, job_id: str) -> str:
        return ""

    def cancel(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self._jobs.pop(job_id, None)


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """Set (or, for None, leave unset) one environment variable for the duration."""
    previous = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if previous is not None:
            os.environ[name] = previous


def _stop_starting_job(job: Any) -> None:
    """SIGKILL a submitit job this process has just started (its tree), and reap it."""
    import signal

    pid = int(job.job_id)
    for member in reversed(process_tree(pid)):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job._process.wait()


def _is_forked(pid: int) -> bool:
    """A job forked by a fork server (it shares the server's command line)."""
    try:
        return FORK_MARKER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _unreaped_fork_child(pid: int) -> bool:
    """An ended job a fork server has not reaped yet (a zombie whose parent is the server):
    its exit record follows within the server's watch interval."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            return False
        return FORK_MARKER.encode() in Path(f"/proc/{fields[1]}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def job_process_alive(folder: Path, job_id: str | int) -> bool:
    """Whether local job `job_id` of `folder` still runs: its pid holds a submitit or
    fork-server process and, where its identity was recorded at submission, that very process
    (not a later one the pid was given to after the job ended). Without a record (a folder from
    before records, no /proc, or a record garbled by someone else: ours are written whole) the
    command line decides, as before."""
    pid = int(job_id)
    if not pid_alive(pid):
        return False
    if not CHECK_IDENTITY:
        return True
    try:
        recorded = json.loads(identity_path(folder, job_id).read_text())
    except (OSError, ValueError):
        return True
    return recorded == process_identity(pid)


def pid_taken(folder: Path, job_id: str | int) -> bool:
    """Whether pid `job_id` now holds a process other than the one recorded for that job: a
    record exists and the live process's identity differs. False when the process vanished
    while being read (an exiting job, whose stat is gone a moment after its command line: not
    a stranger) or with no record to compare."""
    if not CHECK_IDENTITY:
        return False
    try:
        recorded = json.loads(identity_path(folder, job_id).read_text())
    except (OSError, ValueError):
        return False
    current = process_identity(int(job_id))
    return current is not None and pid_alive(int(job_id)) and recorded != current


def pid_alive(pid: int) -> bool:
    """A live submitit local job (guards against pid reuse by checking its command line)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"submitit" in cmdline or FORK_MARKER.encode() in cmdline
