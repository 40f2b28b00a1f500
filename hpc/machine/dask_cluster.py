"""The Dask cluster that runs the cell sweeps, kept alive for the whole campaign.

Why one cluster per campaign: each worker builds the PyBaMM model once and keeps it; a cluster
per evaluation would rebuild it every time. Evaluations connect to it by address (passed to
`jobs.evaluate.evaluate_design` and in ``MICROLOOP_DASK_SCHEDULER``).

- local / debug executors: `distributed.LocalCluster(processes=True)`, one thread per worker.
- slurm: `dask_jobqueue.SLURMCluster`, one single-core worker per SLURM job, restarted before
  its walltime by ``--lifetime`` (workers die at walltime otherwise).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DASK_SCHEDULER_ENV = "MICROLOOP_DASK_SCHEDULER"


@dataclass
class DaskCluster:
    """A started cluster and its scheduler address; `close()` when the campaign ends."""

    cluster: Any
    address: str

    def close(self) -> None:
        try:
            self.cluster.close()
        except Exception as error:  # closing must never lose a campaign's results
            log.warning("closing the Dask cluster: %s", error)


def _walltime_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def start_campaign_dask(resources: Any, folder: Path) -> DaskCluster | None:
    """The campaign's cluster from its `[resources]`: the Dask role's own partition, account,
    qos/constraint/gres, setup lines and walltime (the controller's by default: the workers
    live for the campaign; hpc.campaign.resources_config), none of the evaluations' options."""
    from hpc.campaign.resources_config import resolve_role

    role = resolve_role(resources, "dask")
    kind = "slurm" if resources.executor == "slurm" else "local"
    return start_dask_cluster(kind, resources.dask_workers, folder, partition=role.partition,
                              account=role.account, memory_gb=resources.dask_memory_gb,
                              walltime_min=role.walltime_min, interface=resources.dask_interface,
                              sbatch_options=role.sbatch_options, setup=list(role.setup),
                              max_workers=resources.dask_workers_max)


def slurm_cluster_kwargs(folder: Path, *, partition: str | None, account: str | None,
                         memory_gb: float, walltime_min: int, interface: str | None,
                         sbatch_options: dict[str, str] | None = None,
                         setup: list[str] | None = None) -> dict[str, Any]:
    """dask_jobqueue.SLURMCluster arguments: one single-core worker per job, retired (with
    staggering) before its walltime and replaced, so the pool outlives any one allocation."""
    lifetime_min = max(1, walltime_min - max(2, walltime_min // 10))
    kwargs: dict[str, Any] = dict(
        queue=partition, account=account, cores=1, processes=1,
        memory=f"{int(memory_gb * 1024)}MiB", walltime=_walltime_text(walltime_min),
        local_directory=str(folder / "local"), log_directory=str(folder / "logs"),
        python=sys.executable, scheduler_options={"dashboard_address": ":0",
                                                 "local_directory": str(folder / "scheduler")},
        # --lifetime: retire before walltime; death_timeout: a worker whose controller (and
        # scheduler) was killed gives its allocation back after 2 minutes
        worker_extra_args=["--lifetime", f"{lifetime_min}m", "--lifetime-stagger", "1m"],
        death_timeout=120,
        job_name="microloop-dask",
        job_extra_directives=[f"--{key}={value}"
                              for key, value in sorted((sbatch_options or {}).items())],
        job_script_prologue=list(setup or []),
    )
    if interface:
        kwargs["interface"] = interface
    return kwargs


def start_dask_cluster(executor: str, n_workers: int, folder: Path, *,
                       partition: str | None = None, account: str | None = None,
                       memory_gb: float = 2.0, walltime_min: int = 60,
                       interface: str | None = None, sbatch_options: dict[str, str] | None = None,
                       setup: list[str] | None = None,
                       max_workers: int | None = None) -> DaskCluster | None:
    """Start the campaign's cluster; None when n_workers is 0 (sweeps then run in each job).

    On SLURM the pool adapts between n_workers and max_workers (default: n_workers) worker
    jobs: busy sweeps get more, an idle pool shrinks back, never below n_workers."""
    if n_workers <= 0:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    import distributed  # noqa: F401 - configures its loggers on import; quieten them after

    for name in ("distributed", "distributed.scheduler", "distributed.core", "distributed.nanny",
                 "distributed.deploy.adaptive", "dask_jobqueue"):
        logging.getLogger(name).setLevel(logging.WARNING)  # per-connection INFO lines
    if executor == "slurm":
        from dask_jobqueue import SLURMCluster

        kwargs = slurm_cluster_kwargs(folder, partition=partition, account=account,
                                      memory_gb=memory_gb, walltime_min=walltime_min,
                                      interface=interface, sbatch_options=sbatch_options,
                                      setup=setup)
        cluster = SLURMCluster(**kwargs)
        # adaptive: a worker retired by --lifetime is replaced by a fresh job
        cluster.adapt(minimum=n_workers, maximum=max(n_workers, max_workers or n_workers))
    else:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", local_directory=str(folder / "local"),
                               # the scheduler's scratch too stays inside the campaign folder
                               scheduler_kwargs={"local_directory": str(folder / "scheduler")})
    log.info("Dask cluster for cell sweeps at %s (%d workers)", cluster.scheduler_address,
             n_workers)
    return DaskCluster(cluster, cluster.scheduler_address)
