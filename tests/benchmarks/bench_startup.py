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

Then, in the same run, the persistent worker (`resources.persistent_worker`,
hpc/machine/scheduler/fork_server.py): one server imports the stages and runs one warm-up
evaluation, and ``--jobs`` designs are forked from it one after another, as the controller
submits them. Per job: its whole CPU from fork to exit (the kernel's account, in the server's
exit record), the evaluation's CPU inside it, and the Dask worker's for it; start-up = the
job's CPU - the evaluation's. The server's own CPU (imports + warm-up, once per campaign) is
shown, and also spread over the quick campaign's budget (10 evaluations).

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_startup.py [--jobs 3] [--markdown out.md]

About 50 CPU-s at 3 jobs.
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


PARAMS = {"am_wt_frac": 0.9, "porosity": 0.37, "binder_adhesion": 0.5,
          "mass_loading_mg_cm2": 20.0}
QUICK_BUDGET = 10


def _worker_cpu(client) -> float:
    return sum(client.run(time.process_time).values())


def timed_evaluation(*args):
    """What a forked job runs here: the evaluation task, with its CPU inside the job (pickled
    by value: this module is __main__)."""
    from hpc.machine.evaluation_task import EvaluationTask

    before = time.process_time()   # since the fork: unpickling and the job's set-up
    result = EvaluationTask()(*args)
    assert result["objective"]["feasible"], result["objective"]
    return {"before_s": before, "evaluation_s": time.process_time() - before}


def _process_cpu(pid: int) -> float:
    """A live process's own CPU (utime + stime) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def persistent_rows(client, address: str, spec: dict, tmp: Path, n_jobs: int,
                    env: dict[str, str]) -> tuple[list[dict], float]:
    """`n_jobs` designs forked one after another from one warmed worker; the server's CPU."""
    from hpc.machine.evaluation_task import warm_up_evaluation
    from hpc.machine.executor import EVALUATION_PRELOAD, Executor
    from hpc.machine.scheduler.memory_guard import record_path

    folder = tmp / "forked_jobs"
    executor = Executor("local", folder, walltime_min=30, mem_gb=4.0, persistent_worker=True,
                        preload=EVALUATION_PRELOAD, worker_env=env)
    executor.set_warm((warm_up_evaluation, (str(tmp / "warm"), PARAMS, spec, False)))
    executor.scheduler._fork._server()   # start and warm it now: not inside a job's numbers
    rows = []
    for job in range(n_jobs):
        w0 = _worker_cpu(client)
        (job_id,) = executor.submit_array(timed_evaluation, [(
            str(tmp / "campaign_forked"), 1 + job, PARAMS, spec, 1, address, None, env)])
        while True:
            state = executor.poll([job_id])[job_id]
            if state.state in ("finished", "failed"):
                break
            time.sleep(0.1)
        outcome = executor.outcome(job_id)
        if not outcome.ok:
            raise RuntimeError(f"forked job {job_id}: {state.detail} {outcome.error}")
        w1 = _worker_cpu(client)
        while not record_path(folder, job_id).exists():   # written when the server reaps it
            time.sleep(0.05)
        record = json.loads(record_path(folder, job_id).read_text())
        rows.append(dict(outcome.value, job_s=record["cpu_s"], worker_s=w1 - w0,
                         faults=record["minor_page_faults"]))
    server_s = _process_cpu(executor.scheduler._fork._process.pid)
    executor.close()
    return rows, server_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from hpc.campaign.config import load_campaign

    spec = load_campaign("quick").to_spec_dict()
    repo = Path(__file__).resolve().parents[2]
    job_env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYBAMM_DISABLE_TELEMETRY": "true"}
    env = dict(os.environ, **job_env,
               PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    os.environ.update(env)   # the persistent worker starts from this process's environment
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
        forked, server_s = persistent_rows(client, cluster.scheduler_address, spec, Path(tmp),
                                           args.jobs, job_env)
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
    f_startup = [r["job_s"] - r["evaluation_s"] for r in forked]
    f_evaluation = [r["evaluation_s"] + r["worker_s"] for r in forked]
    lines += ["", "Persistent worker (resources.persistent_worker), the same run:", "",
              "| job | job CPU, fork to exit | before the call | evaluation (job) | minor faults "
              "| worker | start-up | evaluation | start-up / evaluation |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i, (r, s_, e) in enumerate(zip(forked, f_startup, f_evaluation, strict=True)):
        lines.append(f"| {i} | {r['job_s']:.3f} | {r['before_s']:.3f} | {r['evaluation_s']:.2f} "
                     f"| {r['faults']} | {r['worker_s']:.2f} | {s_:.3f} | {e:.2f} | {s_ / e:.1%} |")
    med_s, med_e = statistics.median(f_startup), statistics.median(f_evaluation)
    per_campaign = server_s / QUICK_BUDGET
    # the stricter reading: all a forked job costs beyond a fresh process's warm evaluation
    # (its second one) counts as start-up, copy-on-write and per-process first calls included
    warm_job = statistics.median(r["second_s"] for r in rows)
    excess = statistics.median(r["job_s"] for r in forked) - warm_job
    warm_evaluation = statistics.median(evaluation)
    lines += ["", f"Stricter: a forked job's CPU beyond a fresh process's warm evaluation in the "
              f"job ({warm_job:.2f}) is {excess:.2f} CPU-s, {excess / warm_evaluation:.0%} of "
              f"that warm evaluation ({warm_evaluation:.2f} with its worker CPU)."]
    lines += ["", f"Median start-up {med_s:.3f} CPU-s per forked job against an evaluation of "
              f"{med_e:.2f}: {med_s / med_e:.1%}. The worker itself (imports + one warm-up "
              f"evaluation, once per campaign): {server_s:.2f} CPU-s, {per_campaign:.2f} per "
              f"evaluation over the quick campaign's {QUICK_BUDGET}: with it, "
              f"{(med_s + per_campaign) / med_e:.0%}. Fresh-process start-up in this run: "
              f"{statistics.median(startup):.2f} CPU-s."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
