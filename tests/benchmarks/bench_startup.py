"""Benchmark: a quick-campaign job's start-up CPU against the CPU of the evaluation it runs.

The local executor starts every evaluation as a fresh Python process (submitit), which
imports what the evaluation needs before it does any work; the cell sweeps go to the
campaign's Dask worker, which is started once. Here, in one run, with the quick campaign's spec
(`hpc/campaigns/quick.toml`: 2 cubes of 32³, native solves, a 10 W discharge on one Dask worker):

* each of ``--jobs`` fresh processes imports what submitit's job runner imports, then evaluates
  one design twice (as two trials, so nothing is re-used from the store): the first pays the
  imports an evaluation makes lazily (torch, zarr, ...) and first-call costs, the second runs
  warm;
* start-up = the process's CPU before the first evaluation (interpreter and imports) + the
  first evaluation's CPU - the second's;
* the evaluation = the second evaluation's CPU in the job + the Dask worker's CPU for it.

It also lists the heavy packages a job process has imported (PyBaMM must not be one: the job
only maps metrics to a design; the worker holds the model) and the worker's warm-up cost per
evaluation after the first (0 once it is warm).

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_startup.py [--jobs 3] [--markdown out.md]

About 30 CPU-s at 3 jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "pybamm", "botorch", "skimage", "numba", "distributed", "zarr", "scipy",
         "casadi", "sympy", "pandas", "taufactor")

CHILD = r"""
import json, sys, time
ready = time.process_time()
import submitit  # noqa: F401  (submitit's job runner imports it before unpickling the task)
from hpc.machine.evaluation_task import EvaluationTask
ready = time.process_time()
campaign, spec_path, address, first_id = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
spec = json.loads(open(spec_path).read())
cpu = []
for offset in (0, 1):  # the same design under two trial ids: the same work twice
    params = {"am_wt_frac": 0.9, "porosity": 0.37, "binder_adhesion": 0.5,
              "mass_loading_mg_cm2": 20.0}
    start = time.process_time()
    result = EvaluationTask()(campaign, first_id + offset, params, spec, dask_address=address)
    assert result["objective"]["feasible"], result["objective"]
    cpu.append(time.process_time() - start)
    if offset == 0:
        print("FIRST_DONE", flush=True)
        sys.stdin.readline()  # the parent reads the worker's CPU between the two evaluations
heavy = sorted(name for name in HEAVY if name in sys.modules)
print(json.dumps({"ready_s": ready, "first_s": cpu[0], "second_s": cpu[1], "heavy": heavy}))
"""


def _worker_cpu(client) -> float:
    return sum(client.run(time.process_time).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from hpc.campaign.config import load_campaign

    spec = load_campaign("quick").to_spec_dict()
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYBAMM_DISABLE_TELEMETRY="true",
               PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                         dashboard_address=":0", local_directory=tmp) as cluster, \
            Client(cluster) as client:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        child = CHILD.replace("HEAVY", repr(HEAVY))
        for job in range(args.jobs):
            w0 = _worker_cpu(client)
            process = subprocess.Popen(
                [sys.executable, "-c", child, str(Path(tmp) / "campaign"), str(spec_path),
                 cluster.scheduler_address, str(1 + 2 * job)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp)
            assert process.stdout is not None and process.stdin is not None
            while process.stdout.readline().strip() != "FIRST_DONE":
                if process.poll() is not None:
                    raise RuntimeError(f"job {job} failed (exit {process.returncode})")
            w1 = _worker_cpu(client)
            process.stdin.write("\n")
            process.stdin.flush()
            out, _ = process.communicate(timeout=600)
            if process.returncode:
                raise RuntimeError(f"job {job} failed (exit {process.returncode})")
            w2 = _worker_cpu(client)
            record = json.loads(out.strip().splitlines()[-1])
            record.update(worker_first_s=w1 - w0, worker_second_s=w2 - w1)
            rows.append(record)
    startup = [r["ready_s"] + r["first_s"] - r["second_s"] for r in rows]
    evaluation = [r["second_s"] + r["worker_second_s"] for r in rows]
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load "
             f"{os.getloadavg()[0]:.1f}; quick campaign spec, {args.jobs} job processes, "
             "CPU s", "",
             "| job | interpreter + imports | first evaluation | second evaluation (job) | "
             "worker, first | worker, second | start-up | evaluation | start-up / evaluation |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, (r, s, e) in enumerate(zip(rows, startup, evaluation, strict=True)):
        lines.append(f"| {i} | {r['ready_s']:.2f} | {r['first_s']:.2f} | {r['second_s']:.2f} | "
                     f"{r['worker_first_s']:.2f} | {r['worker_second_s']:.2f} | {s:.2f} | "
                     f"{e:.2f} | {s / e:.0%} |")
    lines += ["", f"Median start-up {statistics.median(startup):.2f} CPU-s, evaluation "
              f"{statistics.median(evaluation):.2f} CPU-s: start-up is "
              f"{statistics.median(startup) / statistics.median(evaluation):.0%} of it. "
              f"Heavy packages in a job process: {', '.join(rows[0]['heavy'])}."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
