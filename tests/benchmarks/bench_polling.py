"""Why the controller polls SLURM with one batched `sacct` call per cycle.

Submits N trivial jobs as arrays (split at MaxArraySize), then in the same run times
(a) one `hpc.machine.executor` poll cycle: one `sacct` call for every job, and
(b) asking the scheduler job by job (`sacct -j <id>` per job), what per-job polling costs,
and prints both and their ratio. Needs a running SLURM (`source <slurm dir>/env.sh`).

    python tests/benchmarks/bench_polling.py --jobs 64 --folder runs/bench-polling
"""

from __future__ import annotations

import argparse
import math
import subprocess
import time
from pathlib import Path

from hpc.machine.executor import Executor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("runs/bench-polling"))
    args = parser.parse_args()

    executor = Executor("slurm", args.folder, mem_gb=0.25, walltime_min=5)
    job_ids = executor.submit_array(math.factorial, [(i,) for i in range(args.jobs)])
    parents = sorted({j.split("_")[0] for j in job_ids})
    print(f"{len(job_ids)} jobs in {len(parents)} arrays (MaxArraySize {executor.max_array_size})")
    # poll until everything is done so both methods look at the same finished jobs
    while any(s.state not in ("finished", "failed") for s in executor.poll(job_ids).values()):
        time.sleep(1)
    batched, single = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(parents)],
                       capture_output=True, check=True)
        batched.append(time.perf_counter() - start)
        start = time.perf_counter()
        for job_id in job_ids:
            subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id],
                           capture_output=True, check=True)
        single.append(time.perf_counter() - start)
    b, s = min(batched), min(single)
    print(f"one batched sacct for {len(job_ids)} jobs: {b * 1000:.0f} ms")
    print(f"sacct job by job:                 {s * 1000:.0f} ms ({s / len(job_ids) * 1000:.0f} "
          f"ms per job)")
    print(f"job by job: {len(job_ids)} scheduler calls instead of 1, {s / b:.0f}x the time "
          "per poll cycle")


if __name__ == "__main__":
    main()
