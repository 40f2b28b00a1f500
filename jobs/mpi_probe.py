"""A tiny MPI program: every rank reports who it is, rank 0 prints the gathered list as JSON.

Used by `microloop doctor` and the tests to prove that the MPI launcher next to the Python
interpreter (or the cluster's srun) really starts several ranks that talk to each other.
Run as `mpiexec -n 2 python -m jobs.mpi_probe`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path


def mpiexec_path() -> str | None:
    """The MPI launcher to use: the one beside this interpreter (pip's mpich), else the PATH one."""
    beside_python = Path(sys.executable).parent / "mpiexec"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("mpiexec")


def gather_ranks() -> list[dict]:
    """Each rank's (rank, size, host, pid), gathered on every rank with an allgather."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    mine = {"rank": comm.Get_rank(), "size": comm.Get_size(), "host": socket.gethostname(),
            "pid": os.getpid()}
    return comm.allgather(mine)


def main() -> None:
    ranks = gather_ranks()
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        print(json.dumps({"ranks": ranks, "mpi_library": MPI.Get_library_version().strip()}))


if __name__ == "__main__":
    main()
