"""The hand-out policy alone: dynamic (jobs.mpi_pool) vs a static split, same tasks, same run.

    .venv/bin/python tests/benchmarks/bench_mpi_pool.py [--ranks 4] [--tasks 32] [--spread 0.4]

Each task sleeps for a lognormal duration (median 0.2 s, sigma `--spread`; the eight 64^3 cubes
of one 128^3 volume solved in 2.3-3.4 s with TauFactor), so the numbers measure scheduling, not the
CPU: they hold on a busy machine. Reports both makespans, their ratio and the ideal (total / R).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

RANK_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from mpi4py import MPI
    from jobs.mpi_pool import map_dynamic, quiet_barrier

    n_tasks, spread = int(sys.argv[1]), float(sys.argv[2])
    durations = np.random.default_rng(0).lognormal(np.log(0.2), spread, n_tasks)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    def work(task):
        time.sleep(durations[task])
        return task

    quiet_barrier(comm)
    start = time.perf_counter()
    for task in range(rank, n_tasks, size):          # static: round-robin by index
        work(task)
    quiet_barrier(comm)
    static_s = time.perf_counter() - start

    start = time.perf_counter()
    map_dynamic(work, list(range(n_tasks)), comm)
    quiet_barrier(comm)
    dynamic_s = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"static_s": static_s, "dynamic_s": dynamic_s,
                          "ideal_s": float(durations.sum()) / size,
                          "longest_task_s": float(durations.max())}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--spread", type=float, default=0.4)
    args = parser.parse_args()
    mpiexec = Path(sys.executable).parent / "mpiexec"
    run = subprocess.run([str(mpiexec), "-n", str(args.ranks), sys.executable, "-c", RANK_SCRIPT,
                          str(args.tasks), str(args.spread)],
                         capture_output=True, text=True, timeout=600, check=True)
    import json

    out = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"{args.tasks} tasks, lognormal sigma {args.spread}, {args.ranks} ranks")
    print(f"ideal (total / ranks): {out['ideal_s']:.2f} s  (longest task {out['longest_task_s']:.2f} s)")
    print(f"static round-robin   : {out['static_s']:.2f} s")
    print(f"dynamic (mpi_pool)   : {out['dynamic_s']:.2f} s   "
          f"static/dynamic = {out['static_s'] / out['dynamic_s']:.2f}x, "
          f"dynamic/ideal = {out['dynamic_s'] / out['ideal_s']:.2f}")


if __name__ == "__main__":
    main()
