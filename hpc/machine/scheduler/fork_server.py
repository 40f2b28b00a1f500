"""A persistent job process for the local executor: import once, fork one child per job.

Why: a fresh job process spends ~3 CPU-s on the interpreter, imports (torch, numba, zarr,
skimage, the stage modules) and first calls before a quick evaluation's ~0.85 CPU-s of work
(tests/benchmarks/bench_startup.py). This server pays that once per campaign: it imports the
`--preload` modules, runs the optional warm-up call (a real evaluation in a scratch folder, so
first-call costs such as numba's cache loads are paid too), and then forks one child per job.

Why fork and not one long-lived worker that runs the jobs in turn: every child starts from the
same pristine, warmed state, so nothing a design does (module caches, RNG state, a leaked
thread) reaches the next one, and a child that crashes or hangs takes only its own trial down;
the server itself never runs a design.

The contract is submitit's local one, so the controller reads a forked job like any other:
the child runs `submitit.core.submission.process_job` on its own pickle under its own pid (the
job id), with stdout/stderr in submitit's log files, and leaves the result pickle. The server
enforces what submitit's local wrapper and `memory_guard.py` enforce for a fresh process: the
walltime (the child's process tree is killed, recorded as timed out), `resources.mem_gb`
(sampled over the child's tree) and the exit record ``<folder>/<pid>_memory.json``.

Protocol (one JSON object per line): the controller writes
``{"pickle": PATH, "env": {...}, "timeout_s": S, "mem_bytes": N or null, "label": TEXT or null}``
on stdin; the server answers ``{"pid": P}`` (or ``{"error": TEXT}``) on stdout. At end of input
(the controller ended) it takes no more jobs, waits for its children (still enforcing their
limits) and exits: running jobs survive a controller restart, as fresh processes do.

    python -m hpc.machine.scheduler.fork_server FOLDER [--preload a,b] [--warm PICKLE]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hpc.machine.scheduler.base import FORK_LABEL_SUFFIX as LABEL_SUFFIX
from hpc.machine.scheduler.base import FORK_MARKER as MARKER
from hpc.machine.scheduler.base import identity_path, write_identity
from hpc.machine.scheduler.memory_guard import (
    oom_kills,
    process_tree,
    pss_bytes,
    record_path,
    rss_bytes,
)

INTERVAL_S = 0.25
GATE_GO = b"1"   # what a forked child waits for before it runs its job: its record is written
GATE_REFUSED_EXIT = 75   # the child's exit code when it gets no go (reaped by the server)


def label_path(folder: str | Path, pid: int | str) -> Path:
    """A forked job's tag label, for `find_tagged` (its /proc environ is the server's)."""
    return Path(folder) / f"{pid}{LABEL_SUFFIX}"


def open_path(folder: str | Path, pid: int | str) -> Path:
    """Exists while server `pid` may still read a request: from before it says it is ready
    until its input has ended. A resumed controller waits for these to go before it decides
    that a cut submission started no job (a request can sit unread in a dead controller's
    pipe; the server would fork it later)."""
    return Path(folder) / f"fork_server_{pid}{OPEN_SUFFIX}"


OPEN_SUFFIX = ".open"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Child:
    """What the server watches of one forked job."""

    def __init__(self, pid: int, timeout_s: float, mem_bytes: int | None) -> None:
        self.pid = pid
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.mem_bytes = mem_bytes
        self.kills_before = oom_kills()
        self.peak_rss_sum = 0
        self.killed_by_guard = False
        self.timed_out = False
        self.pss_at_kill = 0
        self.n_at_kill = 0


def _run_child(folder: Path, request: dict[str, Any]) -> None:
    """In the forked child: become submitit job `pid` and run its pickle; never returns."""
    code = 1
    try:
        pid = os.getpid()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        from submitit.core.utils import JobPaths

        paths = JobPaths(folder, job_id=str(pid), task_id=0)
        os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
        os.environ.update(SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID=str(pid),
                          SUBMITIT_LOCAL_NTASKS="1", SUBMITIT_LOCAL_NODEID="0",
                          SUBMITIT_LOCAL_JOB_NUM_NODES="1", SUBMITIT_LOCAL_GLOBALID="0",
                          SUBMITIT_LOCAL_LOCALID="0",
                          SUBMITIT_LOCAL_TIMEOUT_S=str(int(request["timeout_s"])))
        paths.stdout.parent.mkdir(parents=True, exist_ok=True)
        out = os.open(paths.stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        err = os.open(paths.stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out, 1)
        os.dup2(err, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)   # the server's stdin is the controller's pipe: not the job's
        os.replace(request["pickle"], paths.submitted_pickle)
        from submitit.core.submission import process_job

        process_job(folder)
        code = 0
    except BaseException:  # the error pickle is written by process_job; say so in the log too
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)   # never the server's atexit handlers or buffered output


class ForkServer:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.children: dict[int, _Child] = {}

    def start(self, request: dict[str, Any]) -> int:
        """Fork job `request` and return its pid once its process record (and tag label) is
        written; if they cannot be written the child never runs the job (it waits at a gate
        for the go, gets end of file instead, is reaped) and the OSError says so."""
        # everything read from the request before the fork: a bad field refuses the job with
        # nothing started (after the fork it would leave a running job answered as refused)
        label = request.get("label")
        timeout_s = float(request["timeout_s"])
        mem = request.get("mem_bytes")
        mem_bytes = None if mem is None else int(mem)
        if not isinstance(request["pickle"], str):
            raise TypeError(f"pickle: expected a path, got {request['pickle']!r}")
        gate_read, gate_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(gate_write)
            go = os.read(gate_read, 1)   # b"" if the server could not record it (or died)
            os.close(gate_read)
            if go != GATE_GO:
                os._exit(GATE_REFUSED_EXIT)
            _run_child(self.folder, request)
        os.close(gate_read)
        try:
            # before the go, the answer and any wait4: the child cannot have been reaped, so
            # the process read is the job's (the controller's proof against a later owner of
            # the pid)
            write_identity(self.folder, pid)
            if label:
                _write_atomic(label_path(self.folder, pid), str(label))
            child = _Child(pid, timeout_s, mem_bytes)
        except OSError as error:
            # without its record a resumed controller could not tell the job from a later owner
            # of its pid, and the controller will be told the submission failed: a job that ran
            # anyway would run untracked (and twice, once resubmitted)
            self._stop_at_gate(pid, gate_write)
            raise OSError(error.errno, f"the job's process record could not be written "
                                       f"({error.strerror or error}); job process {pid} was "
                                       f"stopped before it ran, nothing was started") from error
        except BaseException:
            self._stop_at_gate(pid, gate_write)
            raise
        self.children[pid] = child
        os.write(gate_write, GATE_GO)
        os.close(gate_write)
        return pid

    def _stop_at_gate(self, pid: int, gate_write: int) -> None:
        """End a child still waiting at its gate (end of file, it exits) and remove its files."""
        os.close(gate_write)
        os.waitpid(pid, 0)
        for path in (identity_path(self.folder, pid), label_path(self.folder, pid)):
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError):   # never written, or not a file
                pass

    def watch(self) -> None:
        """Reap ended children (writing their records) and enforce walltime and memory."""
        for pid, child in list(self.children.items()):
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                self._record(child, status, usage)
                del self.children[pid]
                continue
            tree = process_tree(pid)
            if time.monotonic() > child.deadline and not child.timed_out:
                child.timed_out = True
                _kill(tree)
                continue
            if child.mem_bytes is None:
                continue
            rss_sum = sum(rss_bytes(p) for p in tree)
            child.peak_rss_sum = max(child.peak_rss_sum, rss_sum)
            if not child.killed_by_guard and rss_sum > child.mem_bytes:
                pss = sum(pss_bytes(p) for p in tree)
                if pss > child.mem_bytes:
                    child.killed_by_guard, child.pss_at_kill, child.n_at_kill = (
                        True, pss, len(tree))
                    _kill(tree)

    def _record(self, child: _Child, status: int, usage: Any) -> None:
        code = os.waitstatus_to_exitcode(status)
        after = oom_kills()
        record = {
            "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None,
            "killed_by_guard": child.killed_by_guard, "pss_bytes_at_kill": child.pss_at_kill,
            "n_processes": child.n_at_kill, "mem_bytes": child.mem_bytes or 0,
            "peak_rss_sum_bytes": child.peak_rss_sum,
            "peak_rss_bytes": int(usage.ru_maxrss) * 1024,
            "oom_kills_while_running": (None if child.kills_before is None or after is None
                                        else after - child.kills_before),
            "timed_out_after_s": child.timeout_s if child.timed_out else None,
            # the kernel's account of the job's CPU from its fork to its exit (its own and its
            # waited-for children's): what a job costs beyond the shared warm state
            "cpu_s": float(usage.ru_utime + usage.ru_stime),
            "minor_page_faults": int(usage.ru_minflt),   # copy-on-write copies among them
            "forked": True,
        }
        _write_atomic(record_path(self.folder, str(child.pid)), json.dumps(record))

    def serve(self, stdin: Any, stdout: Any) -> None:
        buffer = b""
        fd = stdin.fileno()
        open_input = True
        while open_input or self.children:
            if open_input:
                ready, _, _ = select.select([fd], [], [], INTERVAL_S)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        open_input = False
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            answer = json.dumps(self._answer(line)) + "\n"
                            try:
                                stdout.write(answer)
                                stdout.flush()
                            except BrokenPipeError:   # the controller died after asking:
                                open_input = False     # the job runs on, its label written
                                _silence_stdout()
                                break
                if not open_input:   # every request it will ever read has been answered
                    open_path(self.folder, os.getpid()).unlink(missing_ok=True)
            else:
                time.sleep(INTERVAL_S)
            self.watch()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            return {"pid": self.start(request)}
        except OSError as error:   # errno: the client tells a full disk from a refusal
            return {"error": f"{type(error).__name__}: {error}", "errno": error.errno}
        except (ValueError, KeyError, TypeError) as error:
            return {"error": f"{type(error).__name__}: {error}"}


def _silence_stdout() -> None:
    """Point stdout at /dev/null: its pipe's reader is gone (no traceback at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _kill(tree: list[int]) -> None:
    for pid in reversed(tree):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def warm_up(path: Path) -> None:
    """Run the pickled warm-up call (a submitit DelayedSubmission) in this process: what it
    imports, builds and caches, every forked job inherits."""
    from submitit.core.utils import DelayedSubmission

    DelayedSubmission.load(path).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpc.machine.scheduler.fork_server")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--preload", default="", help="comma-separated modules to import")
    parser.add_argument("--warm", type=Path, default=None, help="a pickled call to run once")
    parser.add_argument("--role", default=MARKER, help="names the process (for pid_alive)")
    args = parser.parse_args(argv)
    import submitit.core.submission  # noqa: F401  (what every child runs)

    for name in filter(None, args.preload.split(",")):
        importlib.import_module(name)
    if args.warm is not None:
        start = time.process_time()
        try:
            warm_up(args.warm)
        except Exception:  # noqa: BLE001 - logged; each job then pays its own first calls
            import traceback

            traceback.print_exc()
            print("fork server: the warm-up call failed (above); jobs start cold", file=sys.stderr,
                  flush=True)
        else:
            print(f"fork server: warmed in {time.process_time() - start:.2f} CPU-s",
                  file=sys.stderr, flush=True)
        args.warm.unlink(missing_ok=True)
    # every object made so far is the shared warm state: frozen, the jobs' garbage collections
    # skip it instead of touching (and so copying) every page that holds one (gc.freeze's
    # documented use before fork)
    gc.collect()
    gc.freeze()
    server = ForkServer(args.folder)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    opened = open_path(args.folder, os.getpid())
    _write_atomic(opened, str(os.getpid()))
    try:
        try:
            sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:   # the controller died while this server warmed up
            _silence_stdout()
            return 0
        server.serve(sys.stdin, sys.stdout)
    finally:
        opened.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
