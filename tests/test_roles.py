"""Resources per role: the controller job, the evaluation jobs and the Dask workers each get
their own partition/account/qos/gres/walltime/setup lines, and only their own. Checked on the
scripts the real renderers write: our controller template, submitit's sbatch script and
dask-jobqueue's job script."""

from __future__ import annotations

import pytest
from test_campaign import tiny_campaign

from hpc.campaign.config import ConfigError, load_campaign
from hpc.cli.commands.submit import render_controller
from hpc.machine.dask_cluster import slurm_cluster_kwargs
from hpc.machine.executor import Executor

ROLES = {
    "executor": "slurm", "account": "proj", "partition": "shared",
    "sbatch_options": {"nice": "10"}, "walltime_min": 30, "controller_walltime_min": 600,
    "controller": {"partition": "ctl", "setup": ["module load python/3.11"]},
    "evaluation": {"partition": "gpu", "gres": "gpu:1", "qos": "gpuq",
                   "setup": ["export CUDA_MODULE_LOADING=LAZY"]},
    "dask": {"qos": "long", "constraint": "cpu"},
}


def _sbatch_lines(script: str) -> set[str]:
    return {line.strip() for line in script.splitlines() if line.startswith("#SBATCH")}


@pytest.fixture
def config(tmp_path):
    return load_campaign(tiny_campaign(tmp_path / "c.toml", resources=ROLES))


def test_controller_job_gets_only_the_controller_role(config, tmp_path):
    script = render_controller(config, "c.toml", tmp_path / "run")
    lines = _sbatch_lines(script)
    assert {"#SBATCH --partition=ctl", "#SBATCH --account=proj", "#SBATCH --time=600"} <= lines
    assert "module load python/3.11" in script
    for foreign in ("gpu", "gres", "qos", "nice", "CUDA_MODULE_LOADING"):
        assert foreign not in script, foreign


def test_evaluation_jobs_get_only_the_evaluation_role(config, tmp_path):
    executor = Executor.from_resources(config.resources, tmp_path, job_name="e",
                                       cpus_per_task=2, max_concurrent=7)
    script = executor.scheduler.sbatch_script(9)
    lines = _sbatch_lines(script)
    assert {"#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --gres=gpu:1",
            "#SBATCH --qos=gpuq", "#SBATCH --nice=10", "#SBATCH --time=30",
            "#SBATCH --cpus-per-task=2", "#SBATCH --array=0-8%7"} <= lines, lines
    assert "export CUDA_MODULE_LOADING=LAZY" in script
    assert "ctl" not in script and "long" not in script and "module load" not in script


def test_dask_workers_get_only_the_dask_role_and_live_for_the_campaign(config, tmp_path):
    from dask_jobqueue import SLURMCluster

    from hpc.campaign.resources_config import resolve_role

    role = resolve_role(config.resources, "dask")
    kwargs = slurm_cluster_kwargs(tmp_path, partition=role.partition, account=role.account,
                                  memory_gb=1.0, walltime_min=role.walltime_min,
                                  interface="lo", sbatch_options=role.sbatch_options,
                                  setup=list(role.setup))
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    lines = _sbatch_lines(script)
    assert {"#SBATCH -p shared", "#SBATCH -A proj", "#SBATCH -t 10:00:00", "#SBATCH --qos=long",
            "#SBATCH --constraint=cpu"} <= lines, lines
    assert "--lifetime 540m" in script  # retired before the walltime, not the evaluations'
    assert "gres" not in script and "gpuq" not in script and "nice" not in script


def test_conflicting_or_unsafe_role_settings_are_refused(tmp_path):
    both = tiny_campaign(tmp_path / "a.toml",
                         resources={"gpus_per_task": 1, "evaluation": {"gres": "gpu:1"}})
    with pytest.raises(ConfigError, match="gpus_per_task"):
        load_campaign(both)
    hostile = tiny_campaign(tmp_path / "b.toml", resources={"dask": {"qos": "x; rm -rf ~"}})
    with pytest.raises(ConfigError, match="allowed characters"):
        load_campaign(hostile)
    short = tiny_campaign(tmp_path / "c.toml",
                          resources={"controller_requeue_signal_s": 120,
                                     "controller": {"walltime_min": 2}})
    with pytest.raises(ConfigError, match="controller_requeue_signal_s"):
        load_campaign(short)


@pytest.mark.slurm
@pytest.mark.slow
def test_dask_pool_adapts_between_its_bounds_on_slurm(tmp_path):
    """One worker job at rest; a burst of sweeps-sized tasks brings more worker jobs, up to the
    maximum and not beyond."""
    import time

    from dask.distributed import Client

    from hpc.machine.dask_cluster import start_dask_cluster

    pool = start_dask_cluster("slurm", 1, tmp_path, memory_gb=0.5, walltime_min=10,
                              interface="lo", max_workers=3)
    try:
        with Client(pool.address) as client:
            client.wait_for_workers(1, timeout=120)
            futures = client.map(time.sleep, [1.0] * 60, pure=False)
            most, deadline = 1, time.monotonic() + 150
            while time.monotonic() < deadline and most < 3:
                most = max(most, len(client.scheduler_info()["workers"]))
                time.sleep(1)
            client.gather(futures)
            assert most == 3
            assert len(client.scheduler_info()["workers"]) <= 3
    finally:
        pool.close()
    with pytest.raises(ConfigError, match="dask_workers_max"):
        load_campaign(tiny_campaign(tmp_path / "c.toml",
                                    resources={"dask_workers": 2, "dask_workers_max": 1}))
