"""What the process-identity check costs a local poll (hpc.machine.scheduler.local).

A re-attached or forked local job is read as running only if the process on its pid is the
one recorded at its submission (`<pid>_process.json`: boot id and start ticks), not only a
submitit or fork-server command line (CHECK_IDENTITY = False, the old path). Both paths read
the same live forked jobs from a new scheduler (what a resumed controller has), interleaved in
one run, CPU time (time.process_time), median of repeats; prints each path's CPU per job per
poll, their ratio and the difference.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_local_identity.py --jobs 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import hpc.machine.scheduler.local as local


def _states_cpu_s(reader: local.LocalScheduler, ids: list[str], check: bool,
                  calls: int) -> float:
    local.CHECK_IDENTITY = check
    start = time.process_time()
    for _ in range(calls):
        states = reader.states(ids)
    spent = time.process_time() - start
    if any(state.phase != "running" for state in states.values()):
        raise RuntimeError(f"a live job read as not running (check={check}): {states}")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="live forked jobs to poll")
    parser.add_argument("--calls", type=int, default=200, help="polls per timing")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        submitter = local.LocalScheduler(Path(folder), walltime_min=10, persistent_worker=True)
        ids = submitter.submit_array(time.sleep, [(600.0,)] * args.jobs)
        try:
            reader = local.LocalScheduler(Path(folder), walltime_min=10)
            old, new = [], []
            for _ in range(args.repeats):
                old.append(_states_cpu_s(reader, ids, False, args.calls))
                new.append(_states_cpu_s(reader, ids, True, args.calls))
        finally:
            local.CHECK_IDENTITY = True
            submitter.cancel(ids)
            submitter.close()
    per_poll = 1e6 / (args.calls * args.jobs)
    old_us, new_us = statistics.median(old) * per_poll, statistics.median(new) * per_poll
    print(f"{args.jobs} live forked jobs, {args.calls} polls x {args.repeats} repeats, CPU per "
          f"job per poll: command line only {old_us:.1f} us, with identity {new_us:.1f} us, "
          f"ratio {new_us / old_us:.2f}, +{new_us - old_us:.1f} us")


if __name__ == "__main__":
    main()
