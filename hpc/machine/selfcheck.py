"""Self-checks of the machine room: does submitit reach the scheduler, do arrays and errors come
back, do MPI ranks start, do Dask workers join? `microloop doctor` runs them on the user's cluster
before a campaign is trusted to it; the test suite runs them on the single-node test cluster.

The job functions live here (not in tests) because submitit unpickles them on the compute node.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from jobs.mpi_probe import mpiexec_path


@dataclass
class CheckResult:
    name: str
    ok: bool
    seconds: float
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


# --- functions that run on compute nodes ---------------------------------------------------------

def square(x: float) -> float:
    return x * x


def where_am_i() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID")}


def node_view(folder: str, token_name: str, lock_name: str, host: str, port: int) -> dict:
    """What a compute node sees of the controller's world: the token file the controller wrote
    (shared file system), the lock the controller holds (cross-node flock) and its TCP port
    (how Dask workers and evaluations reach the controller's scheduler)."""
    import fcntl

    shared = Path(folder)
    view: dict = {"host": socket.gethostname()}
    token = shared / token_name
    view["token"] = token.read_text() if token.exists() else None
    (shared / f"{token_name}.reply").write_text(view["host"])
    with open(shared / lock_name, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            view["lock"] = "held by the controller, as it must be"
        except OSError as error:  # e.g. ENOLCK: the file system has no locking
            view["lock"] = f"flock failed: {error}"
        else:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            view["lock"] = "acquired while the controller held it"
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            view["port"] = "connected"
    except OSError as error:
        view["port"] = f"{type(error).__name__}: {error}"
    return view


def gpu_env() -> dict:
    """The GPUs SLURM gave this job, as the job sees them."""
    keys = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE")
    return {key: os.environ.get(key) for key in keys}


class SelfCheckError(RuntimeError):
    """Raised on purpose by `fail_on_node` so the caller can see a remote traceback come back."""


def fail_on_node(message: str) -> None:
    raise SelfCheckError(message)


# --- the checks ----------------------------------------------------------------------------------

def make_executor(kind: str, folder: str | Path, partition: str | None = None,
                  timeout_min: int = 5, mem_gb: float = 1.0):
    """A submitit executor for the checks (`local`, `slurm` or `debug`)."""
    import submitit

    if kind not in ("local", "slurm", "debug"):
        raise ValueError(f"executor must be one of local, slurm, debug (got {kind!r})")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    params: dict = {"timeout_min": timeout_min}
    if kind == "slurm":
        params.update(slurm_mem=f"{int(mem_gb * 1024)}M", cpus_per_task=1)
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return executor


def _timed(name: str, body: Callable[[], str]) -> CheckResult:
    start = time.perf_counter()
    try:
        detail = body()
        ok = True
    except Exception as error:  # a check reports, it does not crash the doctor
        detail = f"{type(error).__name__}: {error}"
        ok = False
    return CheckResult(name, ok, round(time.perf_counter() - start, 2), detail)


def check_submit(executor) -> CheckResult:
    def body() -> str:
        job = executor.submit(square, 7)
        value = job.result()
        if value != 49:
            raise AssertionError(f"square(7) came back as {value!r}")
        return f"job {job.job_id} returned 49"

    return _timed("submit", body)


def check_array(executor, n: int = 8) -> CheckResult:
    def body() -> str:
        jobs = executor.map_array(square, list(range(n)))
        values = [job.result() for job in jobs]
        if values != [i * i for i in range(n)]:
            raise AssertionError(f"array results {values}")
        return f"{n} array tasks returned their squares ({jobs[0].job_id.split('_')[0]})"

    return _timed("array", body)


def check_remote_error(executor) -> CheckResult:
    from submitit.core.utils import FailedJobError, UncompletedJobError

    def body() -> str:
        job = executor.submit(fail_on_node, "raised on purpose by microloop doctor")
        try:
            job.result()
        except (FailedJobError, UncompletedJobError) as error:
            text = str(error)
            if "SelfCheckError" not in text or "Traceback" not in text:
                raise AssertionError(f"error came back without the remote traceback: {text[:300]}") from error
            return "the remote SelfCheckError came back with its traceback"
        except SelfCheckError:  # the debug executor raises in-process
            return "the SelfCheckError came back (in-process executor)"
        raise AssertionError("a failing job returned normally")

    return _timed("remote_error", body)


def run_mpi_probe(n_ranks: int = 2, timeout_s: float = 120.0) -> dict:
    """Launch `jobs.mpi_probe` on n ranks with the venv's (or PATH's) mpiexec; return its JSON."""
    launcher = mpiexec_path()
    if launcher is None:
        raise RuntimeError("no mpiexec found beside the Python interpreter or on PATH "
                           "(install the `mpich` extra: pip install 'microloop-electrodes[mpich]')")
    completed = subprocess.run(
        [launcher, "-n", str(n_ranks), sys.executable, "-m", "jobs.mpi_probe"],
        capture_output=True, text=True, timeout=timeout_s,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"mpiexec exited {completed.returncode}: {completed.stderr[-2000:]}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"mpi probe printed no result: {completed.stdout[-2000:]}")
    return json.loads(lines[-1])


def check_mpi(n_ranks: int = 2) -> CheckResult:
    def body() -> str:
        report = run_mpi_probe(n_ranks)
        ranks = sorted(r["rank"] for r in report["ranks"])
        if ranks != list(range(n_ranks)):
            raise AssertionError(f"ranks reported: {ranks}")
        return f"ranks {ranks} of {n_ranks} ({report['mpi_library'].splitlines()[0]})"

    return _timed("mpi", body)


def make_slurm_dask_cluster(partition: str | None, folder: str | Path, interface: str | None = None,
                            walltime: str = "00:15:00", memory: str = "1GiB"):
    """A dask-jobqueue SLURMCluster with one single-threaded worker per job."""
    from dask_jobqueue import SLURMCluster

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return SLURMCluster(
        queue=partition, cores=1, processes=1, memory=memory, walltime=walltime,
        interface=interface, local_directory=str(folder / "dask-local"),
        log_directory=str(folder / "dask-logs"), python=sys.executable,
        scheduler_options={"dashboard_address": ":0"},
    )


def check_dask(partition: str | None, folder: str | Path, interface: str | None = None,
               n_workers: int = 2, timeout_s: float = 120.0) -> CheckResult:
    def body() -> str:
        from dask.distributed import Client

        with make_slurm_dask_cluster(partition, folder, interface) as cluster, Client(cluster) as client:
            cluster.scale(n_workers)
            client.wait_for_workers(n_workers, timeout=timeout_s)
            values = client.gather(client.map(square, range(10)))
            if values != [i * i for i in range(10)]:
                raise AssertionError(f"dask results {values}")
            hosts = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
            return f"{len(hosts)} SLURM-job workers (jobs {sorted(hosts.values())}) mapped square over 10"

    return _timed("dask", body)


def _controller_address(interface: str | None) -> str:
    """The address compute nodes use to reach this process (as Dask's scheduler picks it)."""
    from distributed.utils import get_ip, get_ip_interface

    return get_ip_interface(interface) if interface else get_ip()


def check_shared_world(executor, folder: str | Path, interface: str | None = None
                       ) -> list[CheckResult]:
    """The campaign's three assumptions about the cluster, seen from a compute node:
    the campaign folder is the same folder there (shared file system), a lock taken here is
    seen there (flock works across nodes: the campaign lock and zarr writers rely on it), and
    the node can open a TCP connection to this process (the Dask scheduler's port)."""
    import fcntl
    import uuid

    shared = Path(folder).absolute()
    shared.mkdir(parents=True, exist_ok=True)
    token_name, lock_name = f"doctor-token-{uuid.uuid4().hex[:8]}", "doctor.lock"
    token = uuid.uuid4().hex
    (shared / token_name).write_text(token)
    start = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server, \
            open(shared / lock_name, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        server.bind(("", 0))
        server.listen(8)  # the kernel completes the handshake; nothing needs to accept()
        host, port = _controller_address(interface), server.getsockname()[1]
        try:
            view = executor.submit(node_view, str(shared), token_name, lock_name, host,
                                   port).result()
        except Exception as error:  # the job itself failed: every check fails with why
            seconds = round(time.perf_counter() - start, 2)
            detail = f"the probe job failed: {type(error).__name__}: {str(error)[-500:]}"
            return [CheckResult(name, False, seconds, detail)
                    for name in ("shared_folder", "flock", "port")]
    seconds = round(time.perf_counter() - start, 2)
    node = view["host"]
    reply = shared / f"{token_name}.reply"
    same = view["token"] == token and reply.exists() and reply.read_text() == node
    results = [
        CheckResult("shared_folder", same, seconds,
                    f"node {node} read and wrote {shared}" if same else
                    f"node {node} does not see {shared} as this machine does (token "
                    f"{'missing' if view['token'] is None else 'differs'}): put the campaign "
                    "folder on a file system all nodes mount (pass it with --folder)"),
        CheckResult("flock", view["lock"].startswith("held"), seconds,
                    f"node {node}: lock {view['lock']}"),
        CheckResult("port", view["port"] == "connected", seconds,
                    f"node {node} -> {host}:{port}: {view['port']}"
                    + ("" if view["port"] == "connected" else
                       " (Dask workers and evaluations could not reach the controller; "
                       "choose resources.dask_interface / --interface)")),
    ]
    for path in (shared / token_name, reply):
        path.unlink(missing_ok=True)
    return results


def check_mpi_in_job(partition: str | None, folder: str | Path, n_ranks: int = 2,
                     gpus: int = 0) -> CheckResult:
    """The MPI ranks of a job started as an evaluation starts them (a nested `srun --overlap
    --mem=0` step), in a job shaped like one (`n_ranks` CPUs, memory per CPU); with `gpus`, the
    job asks for that many GPUs and every rank must plan a different one when it can."""
    def body() -> str:
        import submitit

        from hpc.machine.evaluation_task import probe_job_devices, probe_job_launcher

        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params: dict = {"timeout_min": 5, "cpus_per_task": n_ranks, "slurm_mem_per_cpu": "700M"}
        if partition:
            params["slurm_partition"] = partition
        if gpus:
            params["slurm_gpus_per_node"] = gpus
        executor.update_parameters(**params)
        report = executor.submit(probe_job_launcher, n_ranks).result()
        ranks = sorted(r["rank"] for r in report["ranks"])
        if ranks != list(range(n_ranks)):
            raise AssertionError(f"ranks reported: {ranks}")
        detail = f"ranks {ranks} via {' '.join(report['launcher'][:3])} ..."
        if gpus:
            devices = [r["planned_device"] for r in executor.submit(probe_job_devices,
                                                                     n_ranks).result()]
            if len(set(devices)) != min(n_ranks, gpus):
                raise AssertionError(f"ranks planned devices {devices} for {gpus} GPU(s)")
            detail += f"; ranks on {devices}"
        return detail

    return _timed("mpi_in_job", body)


def run_all(executor_kind: str, folder: str | Path, partition: str | None = None,
            interface: str | None = None, mpi_ranks: int = 2, gpus: int = 0
            ) -> list[CheckResult]:
    folder = Path(folder)
    executor = make_executor(executor_kind, folder / "submitit", partition)
    results = [check_submit(executor), check_array(executor), check_remote_error(executor),
               check_mpi(mpi_ranks)]
    if executor_kind != "debug":
        results += check_shared_world(executor, folder / "shared", interface)
    if executor_kind == "slurm":
        results.append(check_dask(partition, folder / "dask", interface))
        results.append(check_mpi_in_job(partition, folder / "submitit", mpi_ranks, gpus))
    return results
