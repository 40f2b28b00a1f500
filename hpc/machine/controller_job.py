"""`python -m hpc.machine.controller_job ARGS`: the CLI as the controller job runs it.

Why a wrapper: before its walltime the controller job's shell (slurm_templates/controller.sh)
gets SIGUSR1, stops the controller with SIGTERM and requeues the job. Python's default SIGTERM
kills the process on the spot; here it raises SystemExit instead, so the controller's `finally`
blocks run (the Dask cluster and its worker jobs are shut down, the journal is closed). Nothing
else needs saving: every state change is already in the fsync'ed journal.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    from hpc.cli.app import main as cli_main

    sys.argv[0] = "microloop"
    cli_main()


if __name__ == "__main__":
    main()
