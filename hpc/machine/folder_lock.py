"""One controller per campaign folder, on a local disk or a shared file system.

Two controllers appending to one journal would submit every trial twice. Two mechanisms guard
the folder, because each alone fails somewhere:

- an exclusive `flock` on ``.controller.lock``: released by the kernel when the holder dies
  (even by SIGKILL), so a crash never leaves a stale lock. It spans nodes only where the file
  system forwards locks (NFSv4, Lustre mounted with ``-o flock``, GPFS); on a mount with
  node-local locks (``localflock``, NFS ``nolock``) a controller on another node gets the flock
  although one is alive;
- a lease in the same file: the holder's host, pid, SLURM job id and a heartbeat that a thread
  rewrites every `lease_s / 4` s while it holds the lock. A controller on another host that
  finds a heartbeat younger than `lease_s` refuses even when its flock succeeded, unless the
  holder's SLURM job is over (the requeued run of the same controller job, or a job squeue no
  longer shows running). A heartbeat older than that is a crashed holder (its lease lapsed):
  taking over is safe.

Where the file system refuses `flock` altogether (ENOLCK, ENOSYS, EOPNOTSUPP) the lease alone
guards the folder, with a warning. `microloop doctor` checks which case a cluster is in.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: A heartbeat older than this (seconds) is a dead controller's. Long enough for a loaded
#: NFS server and modest clock skew between nodes; the holder refreshes it 4x as often.
LEASE_S = 120.0
#: The lease record's fixed size (JSON padded with spaces): rewritten in place in one write.
RECORD_BYTES = 512
_NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


class FolderLockedError(RuntimeError):
    """Another live controller drives the folder."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or last held) the lock, as its lease records it."""

    pid: int | None
    host: str
    slurm_job_id: str | None
    heartbeat: float  # epoch seconds of the holder's last refresh (0: unknown)

    def describe(self, now: float) -> str:
        age = f", heartbeat {now - self.heartbeat:.0f} s ago" if self.heartbeat else ""
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        return f"pid {self.pid if self.pid is not None else 'unknown'} on {self.host}{job}{age}"


def read_owner(text: str) -> LockOwner | None:
    """The lease in a lock file's text; a bare pid (the format before leases) has no host."""
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return LockOwner(int(text), "unknown", None, 0.0)
    try:
        data = json.loads(text)
        return LockOwner(data.get("pid"), str(data.get("host", "unknown")),
                         data.get("slurm_job_id"), float(data.get("heartbeat", 0.0)))
    except (ValueError, TypeError, AttributeError):
        return None


class FolderLock:
    """The held lock of one folder; `close()` releases it (so does the process dying)."""

    def __init__(self, path: Path, handle: Any, flocked: bool, lease_s: float) -> None:
        self.path = path
        self._handle = handle
        self.flocked = flocked
        self.lease_s = float(lease_s)
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self.heartbeat()
        self._thread = threading.Thread(target=self._beat, name="microloop-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def heartbeat(self) -> None:
        """Rewrite the lease with the time now (through the locked handle: the flock stays)."""
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "heartbeat": time.time()}
        # one fixed-size write at offset 0, never a truncate first: a reader (a controller on
        # another node checking the lease) sees the old record or the new one, not an empty file
        data = json.dumps(record).ljust(RECORD_BYTES).encode()
        with self._write_lock:
            if self._handle.closed:
                return
            os.pwrite(self._handle.fileno(), data, 0)
            os.fsync(self._handle.fileno())

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.heartbeat()
            except OSError as error:  # a file server hiccup: the next beat tries again
                log.warning("could not refresh the controller lease %s: %s", self.path, error)

    def close(self) -> None:
        """Release: the lease is cleared (a successor need not wait for it to lapse)."""
        self._stop.set()
        with self._write_lock:
            if self._handle.closed:
                return
            try:
                self._handle.seek(0)
                self._handle.truncate()
                self._handle.flush()
            except OSError:
                pass
            self._handle.close()


def _owner_job_gone(owner: LockOwner) -> bool:
    """Whether the holder's SLURM job is known to be over, so its fresh lease is stale: a
    requeued controller job (same job id, maybe another node) follows a dead run of itself,
    and a job squeue no longer shows running has no live controller. Unknown: not gone."""
    if not owner.slurm_job_id:
        return False
    if owner.slurm_job_id == os.environ.get("SLURM_JOB_ID"):
        return True   # SLURM runs one instance of a job id at a time: this one is the next
    import shutil
    import subprocess

    if shutil.which("squeue") is None:
        return False
    try:
        done = subprocess.run(["squeue", "-h", "-j", str(owner.slurm_job_id), "-o", "%T"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    if done.returncode != 0 and "invalid job id" not in done.stderr.lower():
        return False   # the scheduler did not answer: keep the lease
    return done.stdout.strip() not in ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED")


def acquire(directory: Path, name: str, *, wait_s: float = 0.0, lease_s: float = LEASE_S,
            poll_s: float = 2.0) -> FolderLock:
    """Take the folder's lock, waiting up to `wait_s` seconds for a live holder to let go.

    Raises FolderLockedError naming the holder when it is still held after `wait_s`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        try:
            return _try_acquire(directory / name, lease_s)
        except FolderLockedError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(poll_s)


def _try_acquire(path: Path, lease_s: float) -> FolderLock:
    # read-write without O_APPEND (with it, Linux appends a pwrite at any offset)
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+")
    flocked = True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = read_owner(handle.read())
        handle.close()
        held_by = owner.describe(time.time()) if owner else "unknown"
        raise FolderLockedError(f"another controller ({held_by}) is driving {path.parent}; "
                                "wait for it or stop it first") from None
    except OSError as error:
        if error.errno not in _NO_FLOCK:
            handle.close()
            raise
        flocked = False
        log.warning("%s: this file system refuses flock (%s); only the heartbeat lease guards "
                    "the folder against a second controller", path, error)
    handle.seek(0)
    owner = read_owner(handle.read())
    now = time.time()

    if owner is not None and owner.heartbeat and now - owner.heartbeat < lease_s:
        me = (socket.gethostname(), os.getpid())
        if flocked and owner.host == me[0]:
            pass  # same host: the kernel's flock is the truth (the holder died, or it is us)
        elif (owner.host, owner.pid) != me and not _owner_job_gone(owner):
            handle.close()
            why = ("this file system's locks do not reach across nodes" if flocked
                   else "this file system has no flock")
            raise FolderLockedError(
                f"another controller ({owner.describe(now)}) holds the lease on {path.parent}, "
                f"but {why}; its lease lapses {lease_s:.0f} s after its last heartbeat: wait "
                "for it or stop it first")
    return FolderLock(path, handle, flocked, lease_s)
