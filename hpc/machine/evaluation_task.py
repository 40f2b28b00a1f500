"""What one submitted job runs: `jobs.evaluate.evaluate_design` for one trial, requeue-safe.

It lives in the package (not in a test or a script) because submitit unpickles the callable on
the compute node by its module path. It is a `submitit.helpers.Checkpointable`: on a SLURM
timeout or preemption the job is requeued with the same arguments, and since `evaluate_design`
is idempotent (finished stages are read back from the store) the requeued run simply continues.

Fault injection (campaign `[[faults]]`, for testing the controller's retry path): the first
`attempts` attempts of a trial raise `InjectedFault` (mode "raise") or SIGKILL their own process
(mode "kill", as the kernel's OOM killer would).

If the campaign's Dask scheduler cannot be reached (a killed controller took it down), the cell
sweeps run in the job's own process instead of failing the evaluation.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import submitit

MPI_LAUNCHER_ENV = "MICROLOOP_MPI_LAUNCHER"
#: What the cell sweeps raise when the campaign's Dask scheduler is gone: no answer at connect
#: (OSError, TimeoutError), and, for a job already waiting in `client.gather` when the
#: controller holding the scheduler is killed, distributed's FutureCancelledError ("cancelled
#: for reason: scheduler-connection-lost", a concurrent.futures.CancelledError). Before the
#: last was named here such a job failed its attempt and the resumed controller ran the trial
#: a second time (tests/test_hardening_more.py reproduces it by killing a real scheduler).
DASK_GONE_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError,
                                                     concurrent.futures.CancelledError)


def started_marker(campaign_dir: str | Path, trial_id: int, attempt: int) -> Path:
    return Path(campaign_dir) / "jobs" / "started" / f"{int(trial_id)}-{int(attempt)}.json"


def mark_started(campaign_dir: str, trial_id: int, attempt: int) -> None:
    """Record which job runs this attempt, so a controller killed between the scheduler
    accepting the job and journaling its id can re-attach to it instead of submitting again."""
    try:
        job_id = submitit.JobEnvironment().job_id
    except RuntimeError:  # not inside a submitit job (the debug executor)
        return
    path = started_marker(campaign_dir, trial_id, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"job_id": str(job_id), "host": os.uname().nodename}))
    os.replace(tmp, path)


def _set_mpi_launcher_in_slurm_step() -> None:
    """Inside submitit's srun step (1 task holding the job's CPUs) MPI ranks must be a nested
    step that overlaps it: plain mpiexec would call srun and wait forever for free CPUs.

    `--mem=0`: the nested step shares the job's memory. Without it srun asks for memory of its
    own (e.g. the job's SLURM_MEM_PER_CPU per rank), which the outer step already holds, and
    SLURM refuses the step ("Memory required by task is not available"; seen on the test SLURM
    for a job submitted with --mem-per-cpu)."""
    if os.environ.get(MPI_LAUNCHER_ENV) or not os.environ.get("SLURM_STEP_ID"):
        return
    from jobs import characterise

    mpi_flag = " ".join(characterise._srun_mpi_flag())
    os.environ[MPI_LAUNCHER_ENV] = (
        f"srun --overlap --mem=0 {mpi_flag} --ntasks={{ranks}} --cpus-per-task=1 "
        "--kill-on-bad-exit=1"
    )


def _run_with_job_launcher(n_ranks: int, module: str, timeout_s: float) -> tuple[list[str], str]:
    """Run `python -m module` on `n_ranks` ranks with the launcher an evaluation job uses;
    its JSON output lines and the launcher command."""
    import subprocess
    import sys

    from jobs.characterise import mpi_launch_prefix

    _set_mpi_launcher_in_slurm_step()
    prefix = mpi_launch_prefix(n_ranks)
    if prefix is None:
        raise RuntimeError("no MPI launcher in this job (srun, mpiexec)")
    done = subprocess.run([*prefix, sys.executable, "-m", module], capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(prefix)} exited {done.returncode}: {done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{module} printed no result: {done.stdout[-2000:]}")
    return lines, prefix


def probe_job_launcher(n_ranks: int = 2, timeout_s: float = 120.0) -> dict[str, Any]:
    """Inside a job: start `jobs.mpi_probe` on `n_ranks` ranks with the launcher an evaluation
    job uses (for `microloop doctor` and the tests); returns the probe's report and the command."""
    lines, prefix = _run_with_job_launcher(n_ranks, "jobs.mpi_probe", timeout_s)
    return {"launcher": prefix, **json.loads(lines[-1])}


def probe_job_devices(n_ranks: int = 2, timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """Inside a job: every rank's view of its GPUs and the device it would compute on
    (jobs.devices), started as an evaluation starts its ranks."""
    lines, _ = _run_with_job_launcher(n_ranks, "jobs.devices", timeout_s)
    return sorted((json.loads(line) for line in lines), key=lambda r: int(r["rank"] or 0))


def warm_up_evaluation(scratch_dir: str, params: dict[str, float], spec: dict[str, Any],
                       cell_in_job: bool) -> None:
    """A persistent worker's warm-up (hpc/machine/scheduler/fork_server.py): one real evaluation
    of this campaign's work in a scratch folder, so that the imports, numba's cache loads and
    other first calls are paid once, in the process every job is forked from.

    `cell_in_job` (no Dask cluster): the cell model is built and warmed here too, so each job
    inherits it. With a cluster the cell stage is left out: the workers hold the model, and a
    Dask client must not run before a fork (its threads would not exist in the child)."""
    import shutil

    from jobs.contract.spec import EvaluationSpec, validate_params

    scratch = Path(scratch_dir)
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        if cell_in_job:
            from jobs.evaluate import evaluate_design

            evaluate_design(str(scratch), 0, params, spec, dask_scheduler_address=None)
        else:
            from jobs.characterise import run_characterise
            from jobs.generate import generate_samples

            typed = EvaluationSpec.from_dict(spec)
            generate_samples(str(scratch), 0, validate_params(params), typed)
            run_characterise(str(scratch), 0, typed)
        print(f"warm-up: cell models built in this process: {cell_models_built()}",
              file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def cell_models_built() -> int | None:
    """How many cell models this process holds (kernels.cell.model's cache), None when the
    cell model was never imported here: what tells a forked job whether it built one."""
    module = sys.modules.get("kernels.cell.model")
    return None if module is None else len(module._MODELS)


class InjectedFault(RuntimeError):
    """Raised on purpose by a campaign's `[[faults]]` entry."""


class EvaluationTask(submitit.helpers.Checkpointable):
    """Callable job: evaluate one trial of a campaign."""

    def __call__(self, campaign_dir: str, trial_id: int, params: dict[str, float],
                 spec: dict[str, Any], attempt: int = 1, dask_address: str | None = None,
                 fault: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
        for key, value in (env or {}).items():
            os.environ.setdefault(key, value)
        mark_started(campaign_dir, trial_id, attempt)
        _set_mpi_launcher_in_slurm_step()
        if fault and attempt <= int(fault.get("attempts", 1)) and fault.get("mode") == "delay":
            if int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0:  # not again after a requeue
                time.sleep(float(fault.get("delay_s", 30.0)))
        elif fault and attempt <= int(fault.get("attempts", 1)):
            if fault.get("mode") == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(
                f"injected fault: trial {trial_id} attempt {attempt} "
                f"(campaign [[faults]] fails the first {fault.get('attempts', 1)})"
            )
        from jobs.evaluate import evaluate_design

        models_before = cell_models_built()
        try:
            result = evaluate_design(campaign_dir, trial_id, params, spec,
                                     dask_scheduler_address=dask_address)
        except DASK_GONE_ERRORS as error:
            if dask_address is None:
                raise
            # The campaign's Dask scheduler is gone (e.g. the controller was killed and is being
            # resumed): run the cell sweeps in this process. Finished stages are read back from
            # the store, so only the sweeps are redone.
            print(f"Dask scheduler {dask_address} unreachable ({type(error).__name__}: {error}); "
                  "running the cell sweeps in this job", flush=True)
            result = evaluate_design(campaign_dir, trial_id, params, spec,
                                     dask_scheduler_address=None)
        models_after = cell_models_built()
        # the observable for "the model is built once per worker": a forked job of a warmed
        # worker that scores the cell in the job builds none
        print(f"cell models: {models_before} before this job, {models_after} after "
              f"(process {os.getpid()}, parent {os.getppid()})", flush=True)
        job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
        return dict(result, attempt=attempt, host=os.uname().nodename, job_id=job_id)
