"""Stored samples -> microstructure metrics, spread over MPI ranks (one solve per rank).

Each sample's metrics go to ``<campaign>/trials/<id>/metrics_<i>.json`` as soon as they are
known (a killed job keeps them; a rerun skips them); rank 0 then writes the mean and spread to
``metrics.json``. Samples are handed out dynamically (jobs.mpi_pool) because solve times vary.
Each rank uses one thread (on a CPU two single-threaded ranks beat one rank with two threads)
and, where torch sees GPUs, the GPU ``local_rank % n_gpus``.

Started by `run_characterise` as ``mpiexec -n R python -m jobs.characterise CAMPAIGN TRIAL --spec
SPEC.json`` (``srun`` inside a SLURM allocation), or in this process when R is 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jobs.contract.result import CubeMetrics, MetricsSummary, SampleMetrics
from jobs.contract.spec import EvaluationSpec
from jobs.store import DesignStore, json_safe, read_json, trial_dir, write_json_atomic

MPI_LAUNCHER_ENV = "MICROLOOP_MPI_LAUNCHER"   # e.g. "srun --mpi=pmix -n {ranks}"
AGGREGATE_NAME = "metrics.json"


def metrics_path(campaign_dir: str | Path, trial_id: int, index: int) -> Path:
    return trial_dir(campaign_dir, trial_id) / f"metrics_{int(index)}.json"


def aggregate_path(campaign_dir: str | Path, trial_id: int) -> Path:
    return trial_dir(campaign_dir, trial_id) / AGGREGATE_NAME


# ---- one sample -----------------------------------------------------------------------------
def characterise_sample(campaign_dir: str | Path, trial_id: int, index: int,
                        spec: EvaluationSpec, device: str = "cpu", rank: int = 0) -> dict[str, Any]:
    """Metrics of one stored sample, computed once: an existing metrics file is returned as is."""
    path = metrics_path(campaign_dir, trial_id, index)
    existing = read_json(path)
    if existing is not None:
        return existing
    from kernels.metrics.volume import characterise_volume

    volume = DesignStore.open(campaign_dir, trial_id).read_sample(index)
    fidelity = spec.fidelity
    kwargs: dict[str, Any] = {"axis": 0, "backend": fidelity.backend, "rel_tol": fidelity.rel_tol,
                              "device": device}
    if fidelity.conductivity_am_S_m is not None:
        kwargs["conductivity_am_S_m"] = fidelity.conductivity_am_S_m
    if fidelity.conductivity_cbd_S_m is not None:
        kwargs["conductivity_cbd_S_m"] = fidelity.conductivity_cbd_S_m
    from kernels.cell.options import cell_model_options

    cbd_domain = cell_model_options(spec.cell.model_options).cbd_domain()
    if cbd_domain is not None:   # [cell] model_options cbd_volume = "nanoporous_domain"
        kwargs["cbd_domain"] = cbd_domain
    start = time.perf_counter()
    metrics = characterise_volume(volume, fidelity.voxel_um, **kwargs)
    record = SampleMetrics(sample=int(index),
                           metrics=CubeMetrics.from_dict(json_safe(metrics.to_dict())),
                           wall_s=time.perf_counter() - start, device=device, rank=int(rank))
    write_json_atomic(path, record.to_dict())
    return record.to_dict()


# ---- mean and spread over samples -----------------------------------------------------------
TRANSPORT_KEYS = ("tortuosity_factor", "effective_conductivity_S_m")


def aggregate(per_sample: list[dict[str, Any]]) -> MetricsSummary:
    """Mean and standard deviation (ddof=1; 0 for one sample) of every metric over the cubes.

    A cube percolates when both its pore and its solid phase connect the faces
    (`CubeMetrics.percolation`; a solid flag the metrics do not report is unknown, not True).
    When every cube percolates, every mean is over all of them; otherwise the transport means
    (tortuosity, conductivity) are over the percolating cubes only, and the summary says how
    many percolate: whether that is enough is the objective's decision (jobs.evaluate).
    """
    if not per_sample:
        raise ValueError("no sample metrics to aggregate")
    records = [SampleMetrics.from_dict(record) for record in per_sample]
    cubes = [record.metrics for record in records]
    percolates = [cube.percolation()[0] for cube in cubes]
    transport_over = [r.sample for r, ok in zip(records, percolates, strict=True) if ok]
    dicts = [cube.to_dict() for cube in cubes]
    mean, std = _aggregate_nested(dicts, percolates)
    any_path = bool(transport_over)
    mean["percolating"] = any_path          # the transport means describe percolating cubes
    mean["solid_percolating"] = any_path
    return MetricsSummary(
        mean=CubeMetrics.from_dict(mean),
        std=std,
        n_samples=len(records),
        n_percolating=len(transport_over),
        percolating_fraction=len(transport_over) / len(records),
        transport_over=sorted(transport_over),
        samples=sorted(record.sample for record in records),
        solve_wall_s=[record.wall_s for record in records],
    )


def _aggregate_nested(dicts: list[dict[str, Any]], percolates: list[bool],
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    keys = list(dict.fromkeys(key for d in dicts for key in d))
    for key in keys:
        values = [d.get(key) for d in dicts]
        if any(isinstance(v, dict) for v in values):
            mean[key], std[key] = _aggregate_nested([v or {} for v in values], percolates)
            continue
        if any(isinstance(v, bool) or isinstance(v, str) for v in values):
            continue    # flags and labels are not averaged (percolation is counted instead)
        if key in TRANSPORT_KEYS:
            values = [v for v, ok in zip(values, percolates, strict=True) if ok]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        if not numbers or len(numbers) != len(values) or not all(map(math.isfinite, numbers)):
            # a cube without this number (or a non-finite one) leaves its mean unknown
            mean[key], std[key] = None, None
            continue
        m = sum(numbers) / len(numbers)
        s = (math.sqrt(sum((x - m) ** 2 for x in numbers) / (len(numbers) - 1))
             if len(numbers) > 1 else 0.0)
        mean[key], std[key] = m, s
    return mean, std


# ---- all samples of one design, on the ranks of this MPI job ------------------------------
def pick_device(comm: Any = None) -> str:
    """``cuda:<local_rank % n_gpus>`` when torch sees GPUs, else ``cpu`` (jobs.devices); one
    CPU thread."""
    import torch

    from jobs.devices import select_device

    torch.set_num_threads(1)
    return select_device(comm).device


def characterise_trial(campaign_dir: str | Path, trial_id: int, spec: EvaluationSpec | dict,
                       comm: Any = None) -> dict[str, Any] | None:
    """Characterise every sample of the design over the ranks of `comm` (None: serially).

    Every rank calls this; rank 0 writes ``metrics.json`` and returns the aggregate, the other
    ranks return None. Samples not yet generated are an error (generate first).
    """
    import kernels.metrics.volume  # noqa: F401  (import before the hand-out: ranks start level)
    from jobs.mpi_pool import map_dynamic

    spec = EvaluationSpec.from_dict(spec)
    rank = 0 if comm is None else comm.Get_rank()
    device = pick_device(comm)
    store = DesignStore.open(campaign_dir, trial_id)
    missing = [i for i in range(store.n_samples) if not store.is_done(i)]
    if missing:
        raise ValueError(f"trial {trial_id}: samples {missing} are not generated yet")
    pending = [i for i in range(store.n_samples)
               if not metrics_path(campaign_dir, trial_id, i).exists()]
    def solve(index: int) -> int:
        return characterise_sample(campaign_dir, trial_id, index, spec, device, rank)["sample"]

    map_dynamic(solve, pending, comm)
    if rank != 0:
        return None
    records = [read_json(metrics_path(campaign_dir, trial_id, i)) for i in range(store.n_samples)]
    result = aggregate(records).to_dict()
    write_json_atomic(aggregate_path(campaign_dir, trial_id), result)
    return result


# ---- launching the MPI job ------------------------------------------------------------------
def mpi_launch_prefix(ranks: int) -> list[str] | None:
    """The command that starts `ranks` MPI processes here, or None when there is none.

    Order: ``$MICROLOOP_MPI_LAUNCHER`` (``{ranks}`` is substituted); ``srun --overlap`` inside
    a SLURM job step; ``srun`` in a SLURM batch script of more than one task; the ``mpiexec``
    next to this Python; ``mpiexec`` on PATH.
    """
    template = os.environ.get(MPI_LAUNCHER_ENV)
    if template:
        return shlex.split(template.format(ranks=ranks))
    if os.environ.get("SLURM_JOB_ID") and shutil.which("srun"):
        ranks_args = [f"--ntasks={ranks}", "--cpus-per-task=1", "--kill-on-bad-exit=1"]
        if os.environ.get("SLURM_STEP_ID") not in (None, "", "batch", "extern"):
            # inside a job step (e.g. submitit's): the ranks are a nested step sharing its CPUs
            # and memory; a plain mpiexec here would wait for CPUs the step already holds
            return ["srun", "--overlap", "--mem=0", *srun_mpi_flag(), *ranks_args]
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            return ["srun", *srun_mpi_flag(), *ranks_args]
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside), "-n", str(ranks)]
    on_path = shutil.which("mpiexec")
    if on_path:
        return [on_path, "-n", str(ranks)]
    return None


def srun_mpi_flag() -> list[str]:
    """srun's ``--mpi`` for the MPI that mpi4py uses. A site default of ``none`` would start R
    separate one-rank jobs; MPICH and Intel MPI speak PMI-2, Open MPI wants the site's PMIx.
    ``SLURM_MPI_TYPE`` (read by srun itself) wins when set."""
    if os.environ.get("SLURM_MPI_TYPE"):
        return []
    probe = subprocess.run(
        [sys.executable, "-c", "import mpi4py; mpi4py.rc.initialize = False; "
         "from mpi4py import MPI; print(MPI.Get_library_version())"],
        capture_output=True, text=True, timeout=60, check=False)
    return [] if "Open MPI" in probe.stdout else ["--mpi=pmi2"]


_srun_mpi_flag = srun_mpi_flag   # the name hpc.machine.evaluation_task used first


def run_characterise(campaign_dir: str | Path, trial_id: int, spec: EvaluationSpec | dict,
                     ranks: int | None = None) -> dict[str, Any]:
    """Characterise the design with `ranks` (default `spec.fidelity.mpi_ranks`) MPI ranks and
    return the aggregate. Finished samples are skipped; with nothing left to solve, or one rank,
    or no MPI launcher, it runs in this process."""
    spec = EvaluationSpec.from_dict(spec)
    ranks = spec.fidelity.mpi_ranks if ranks is None else int(ranks)
    n_pending = sum(not metrics_path(campaign_dir, trial_id, i).exists()
                    for i in range(spec.fidelity.n_cubes))
    ranks = max(1, min(ranks, n_pending))
    prefix = mpi_launch_prefix(ranks) if ranks > 1 else None
    if prefix is None:
        result = characterise_trial(campaign_dir, trial_id, spec)
        assert result is not None
        return result
    folder = trial_dir(campaign_dir, trial_id)
    spec_file = folder / "spec.json"
    write_json_atomic(spec_file, spec.to_dict())
    command = prefix + [sys.executable, "-m", "jobs.characterise", str(campaign_dir),
                        str(int(trial_id)), "--spec", str(spec_file), "--ranks", str(ranks)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYBAMM_DISABLE_TELEMETRY="true")
    log_path = folder / "characterise.log"
    with open(log_path, "ab") as log:
        log.write(f"$ {shlex.join(command)}\n".encode())
        log.flush()
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   check=False)
    if completed.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"MPI characterisation of trial {trial_id} failed (exit "
                           f"{completed.returncode}): {shlex.join(command)}\n{tail}")
    result = read_json(aggregate_path(campaign_dir, trial_id))
    if result is None:
        raise RuntimeError(f"MPI characterisation of trial {trial_id} wrote no {AGGREGATE_NAME}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.characterise",
        description="Characterise the stored samples of one design over the MPI ranks of this "
                    "job (start with mpiexec/srun; a single process runs them serially).")
    parser.add_argument("campaign_dir")
    parser.add_argument("trial_id", type=int)
    parser.add_argument("--spec", required=True, help="EvaluationSpec JSON file")
    parser.add_argument("--ranks", type=int, default=None,
                        help="the number of ranks the launcher was asked for (checked)")
    args = parser.parse_args(argv)
    try:    # a bad spec file: a one-line error and exit 2, before any work
        spec = EvaluationSpec.from_dict(json.loads(Path(args.spec).read_text()))
    except (OSError, ValueError) as error:
        parser.error(str(error))
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if args.ranks is not None and comm.Get_size() != args.ranks:
        # e.g. srun without the right --mpi starts R one-rank jobs that all redo everything
        raise SystemExit(f"expected {args.ranks} MPI ranks but this process sees "
                         f"{comm.Get_size()}: the launcher does not match mpi4py's MPI; set "
                         f"{MPI_LAUNCHER_ENV} (e.g. 'srun --mpi=pmix -n {{ranks}}')")
    result = characterise_trial(args.campaign_dir, args.trial_id, spec, comm)
    if result is not None:
        print(json.dumps({"trial_id": args.trial_id, "n_samples": result["n_samples"],
                          "ranks": comm.Get_size()}))


if __name__ == "__main__":
    main()
