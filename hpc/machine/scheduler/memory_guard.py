"""Enforce a local job's `resources.mem_gb` and record how its process ended.

Run as ``python memory_guard.py --mem-bytes N --record-dir DIR -- COMMAND...`` (by file path,
standard library only, so it starts in milliseconds): it starts COMMAND (submitit's task),
forwards signals to it, samples the memory of COMMAND's whole process tree (MPI ranks included)
every `INTERVAL_S`, kills the tree when it exceeds N bytes, and writes
``DIR/<job id>_memory.json`` with the exit status and the memory evidence, so the controller can
say "killed by signal 9 (out of memory? ...)" instead of "its process died".

Why a watchdog and not RLIMIT_AS or a cgroup: RLIMIT_AS limits each process's *virtual* address
space, not the job's memory: every MPI rank would get the whole limit, reserved-but-unused
address space counts (glibc arenas, thread stacks, CUDA reserves tens of GB), so jobs that fit
would fail and GPU jobs could not start; and hitting it surfaces as a MemoryError or a crash
deep inside a C library. RLIMIT_RSS is not enforced by Linux. A cgroup needs a delegated
hierarchy (systemd), which a laptop shell or a container does not give. The watchdog measures
what SLURM's cgroup would charge: the proportional set size (PSS: shared pages split between the
processes sharing them), summed over the tree, read only when the cheap RSS sum (an upper bound)
is above the limit. Its limits: a spike shorter than the sampling interval is missed (the kernel's
OOM killer is then the backstop, and the record says it fired), and memory of processes that
leave the tree (double-forked daemons) is not counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

INTERVAL_S = 0.25
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
GIB = 1024**3
#: signals a batch system or submitit's local wrapper sends a job; passed on to the task
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGCONT)


def record_path(folder: str | Path, job_id: str) -> Path:
    """Where the guard of local job `job_id` leaves its record."""
    return Path(folder) / f"{job_id}_memory.json"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return found


def _children_by_scan() -> dict[int, list[int]]:
    """ppid -> pids from every /proc/<pid>/stat (kernels without CONFIG_PROC_CHILDREN)."""
    by_parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            by_parent.setdefault(ppid, []).append(int(entry))
    return by_parent


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants (through /proc/<pid>/task/<tid>/children, or a scan
    of /proc where the kernel does not provide those files)."""
    scanned = (None if Path(f"/proc/{root}/task/{root}/children").exists()
               else _children_by_scan())
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        if pid in tree:
            continue
        tree.append(pid)
        frontier += _children(pid) if scanned is None else scanned.get(pid, [])
    return tree


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0  # exited between the listing and the read: it holds no memory any more


def pss_bytes(pid: int) -> int:
    """Proportional set size (smaps_rollup), or the RSS where the kernel does not give it."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return rss_bytes(pid)


def oom_kills() -> int | None:
    """The kernel's count of OOM kills since boot (/proc/vmstat oom_kill), None if not given."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def describe(record: dict, mem_gb_key: str = "resources.mem_gb") -> str:
    """One line for the failure reason: how the job's process ended, with the memory evidence."""
    limit = record.get("mem_bytes", 0) / GIB
    peak = record.get("peak_rss_bytes", 0) / GIB
    if record.get("killed_by_guard"):
        return (f"killed by signal 9 by the memory guard: its {record.get('n_processes', 1)} "
                f"process(es) held {record.get('pss_bytes_at_kill', 0) / GIB:.2f} GiB (PSS), "
                f"above {mem_gb_key} = {limit:g} GiB; raise {mem_gb_key} or lower "
                "fidelity.cube_voxels / mpi_ranks")
    if record.get("timed_out_after_s") is not None:
        return (f"timed out: killed after its walltime of "
                f"{record['timed_out_after_s'] / 60:g} min (resources.walltime_min)")
    sig = record.get("signal")
    if sig is None:
        return (f"exited with code {record.get('exit_code')} (peak RSS {peak:.2f} GiB of "
                f"{mem_gb_key} = {limit:g} GiB)")
    text = f"killed by signal {sig}"
    if sig == signal.SIGKILL:
        kills = record.get("oom_kills_while_running")
        seen = ("" if kills is None else
                f"; the kernel's OOM killer fired {kills} time(s) while it ran")
        text += (f" (out of memory? peak RSS of its largest process {peak:.2f} GiB of "
                 f"{mem_gb_key} = {limit:g} GiB{seen})")
    return text


def _write_record(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _die_with_parent() -> None:
    """In the child: SIGKILL when the guard dies (submitit's wrapper SIGKILLs its task, which is
    now the guard, at a timeout or cancel; the real task must not outlive it as an orphan)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def guard(command: list[str], mem_bytes: int, record: Path | None,
          interval_s: float = INTERVAL_S) -> int:
    """Run `command` under the limit; returns the exit code to exit with (128 + signal)."""
    kills_before = oom_kills()
    child = subprocess.Popen(command, preexec_fn=_die_with_parent)

    def forward(signum: int, _frame: object) -> None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    peak_rss_sum, killed, pss_at_kill, n_at_kill = 0, False, 0, 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        tree = process_tree(child.pid)
        rss_sum = sum(rss_bytes(p) for p in tree)
        peak_rss_sum = max(peak_rss_sum, rss_sum)
        if not killed and rss_sum > mem_bytes:   # RSS sum >= PSS sum: only now the dear read
            pss = sum(pss_bytes(p) for p in tree)
            if pss > mem_bytes:
                killed, pss_at_kill, n_at_kill = True, pss, len(tree)
                for p in reversed(tree):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        time.sleep(interval_s)
    child.returncode = os.waitstatus_to_exitcode(status)
    kills_after = oom_kills()
    code = child.returncode
    result = {
        "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None,
        "killed_by_guard": killed, "pss_bytes_at_kill": pss_at_kill, "n_processes": n_at_kill,
        "mem_bytes": mem_bytes, "peak_rss_sum_bytes": peak_rss_sum,
        "peak_rss_bytes": int(usage.ru_maxrss) * 1024,  # wait4: the largest process of the tree
        "oom_kills_while_running": (None if kills_before is None or kills_after is None
                                    else kills_after - kills_before),
    }
    if record is not None:
        _write_record(record, result)
    if code < 0:  # for a reader of the log; the controller reads the record
        print(f"microloop memory guard: the task ended by signal {-code}"
              + (" sent by the guard (over the memory limit)" if killed else ""),
              file=sys.stderr, flush=True)
        return 128 - code
    return code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        raise SystemExit("usage: memory_guard.py --mem-bytes N [--record-dir DIR] -- COMMAND...")
    split = args.index("--")
    options, command = args[:split], args[split + 1:]
    values = dict(zip(options[::2], options[1::2], strict=False))
    mem_bytes = int(values["--mem-bytes"])
    folder = values.get("--record-dir")
    job_id = os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    record = record_path(folder, job_id) if folder and job_id else None
    return guard(command, mem_bytes, record)


if __name__ == "__main__":
    sys.exit(main())
