"""Dynamic work distribution over MPI ranks: rank 0 hands out task ids as ranks become free.

Transport solve times vary several-fold between sub-volumes (a tortuous cube converges slowly),
so a static split leaves ranks idle. Here every rank asks rank 0 for the next task when it
finishes one. Rank 0 works too: a helper thread answers the requests (polling with a short sleep,
so it does not spin a core) while the main thread computes; only the helper thread calls MPI while
it runs, which needs MPI_THREAD_SERIALIZED (mpi4py asks for MULTIPLE). With less thread support
rank 0 only dispatches.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

TAG_REQUEST = 11
TAG_TASK = 12
POLL_S = 0.002   # hand-out latency vs a sleeping thread's wake-ups (see bench_mpi_pool.py)


def local_rank(comm: Any) -> int:
    """This rank's index among the ranks on its node (for picking a GPU)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return int(node.Get_rank())
    finally:
        node.Free()


def quiet_barrier(comm: Any, poll_s: float = 0.01) -> None:
    """A barrier that sleeps while it waits: a blocking MPI wait spins a core, which on a
    small node steals the CPU from the ranks still computing."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_s)


def map_dynamic(fn: Callable[[int], Any], tasks: Sequence[int], comm: Any = None,
                ) -> dict[int, Any]:
    """Run ``fn(task)`` for every task across the ranks of `comm`, dynamically.

    Every rank must call this with the same `tasks`. Returns ``{task: result}`` on rank 0 (all
    tasks) and ``{}`` on the other ranks; results must pickle. With `comm` None or one rank the
    tasks run here, in order. If any `fn` raises, no new tasks are handed out and rank 0 raises
    a RuntimeError carrying the failing ranks' tracebacks (results finished so far are lost from
    the return value, so `fn` should persist its own result).
    """
    if comm is None or comm.Get_size() == 1:
        return {task: fn(task) for task in tasks}
    if comm.Get_rank() == 0:
        return _dispatch(fn, list(tasks), comm)
    _work(fn, comm)
    return {}


def _work(fn: Callable[[int], Any], comm: Any) -> None:
    message: tuple[str, int | None, Any] = ("ready", None, None)
    while True:
        comm.send(message, dest=0, tag=TAG_REQUEST)
        task = comm.recv(source=0, tag=TAG_TASK)
        if task is None:
            break
        try:
            message = ("result", task, fn(task))
        except Exception:
            message = ("error", task, f"rank {comm.Get_rank()}: {traceback.format_exc()}")
    quiet_barrier(comm)


def _dispatch(fn: Callable[[int], Any], tasks: list[int], comm: Any) -> dict[int, Any]:
    from mpi4py import MPI

    queue = deque(tasks)
    lock = threading.Lock()
    results: dict[int, Any] = {}
    errors: list[str] = []

    def next_task() -> int | None:
        with lock:
            if errors or not queue:
                return None
            return queue.popleft()

    def serve() -> None:
        active = comm.Get_size() - 1
        status = MPI.Status()
        while active:
            if not comm.iprobe(source=MPI.ANY_SOURCE, tag=TAG_REQUEST, status=status):
                time.sleep(POLL_S)
                continue
            source = status.Get_source()
            kind, task, payload = comm.recv(source=source, tag=TAG_REQUEST)
            with lock:
                if kind == "result":
                    results[task] = payload
                elif kind == "error":
                    errors.append(f"task {task}: {payload}")
            reply = next_task()
            comm.send(reply, dest=source, tag=TAG_TASK)
            if reply is None:
                active -= 1

    rank0_works = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    server = threading.Thread(target=serve, name="mpi-dispatch", daemon=True)
    server.start()
    if rank0_works:
        while (task := next_task()) is not None:
            try:
                value = fn(task)
            except Exception:
                with lock:
                    errors.append(f"task {task}: rank 0: {traceback.format_exc()}")
                break
            with lock:
                results[task] = value
    server.join()
    quiet_barrier(comm)
    if errors:
        raise RuntimeError("MPI tasks failed:\n" + "\n".join(errors))
    return results
