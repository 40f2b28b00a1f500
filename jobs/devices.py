"""Which device a rank computes on: GPU `local_rank % n_gpus`, or the CPU.

Why a module of its own: the choice is made from facts the job can see (the GPUs torch sees,
the ``CUDA_VISIBLE_DEVICES`` SLURM set from the job's GRES, the rank's index on its node as the
launcher exports it), and as pure functions of those facts it can be tested on a machine without
a GPU; only `select_device` asks torch.

Mapping: ranks on a node are dealt round-robin to its visible GPUs, so with R ranks and G GPUs
each GPU holds the sub-volumes of ceil(R / G) ranks at once (`ranks_per_gpu`): more ranks than
GPUs batch several cubes per GPU, which hides one cube's host work behind another's solve.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Where launchers export a rank's index among the ranks on its node, in the order tried:
#: srun, Open MPI, MPICH/Hydra (and Intel MPI), Cray PALS, MVAPICH.
LOCAL_RANK_VARIABLES = ("SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                        "PALS_LOCAL_RANKID", "MV2_COMM_WORLD_LOCAL_RANK")


@dataclass(frozen=True)
class DeviceChoice:
    """The device of one rank and why."""

    device: str            # "cpu" or "cuda:N" (N counts the GPUs this process sees)
    local_rank: int
    n_gpus: int            # GPUs visible to this process
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES as SLURM (or the user) set it
    reason: str


def local_rank_from_env(environ: Mapping[str, str]) -> int | None:
    """The rank's index on its node from the launcher's variables, None when none is set."""
    for name in LOCAL_RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def visible_gpu_count(environ: Mapping[str, str]) -> int | None:
    """How many GPUs CUDA_VISIBLE_DEVICES lets this process see; None when it is unset.

    SLURM writes the job's GRES indices there ("0,1"); "" or "NoDevFiles" mean none."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = [item for item in value.split(",") if item.strip()]
    return 0 if not entries or entries == ["NoDevFiles"] else len(entries)


def choose_device(local_rank: int, n_gpus: int, visible_devices: str | None = None
                  ) -> DeviceChoice:
    """GPU `local_rank % n_gpus` when there is one, else the CPU."""
    if local_rank < 0 or n_gpus < 0:
        raise ValueError(f"local_rank and n_gpus must be >= 0; got {local_rank}, {n_gpus}")
    if n_gpus == 0:
        return DeviceChoice("cpu", local_rank, 0, visible_devices, "no GPU visible")
    gpu = local_rank % n_gpus
    return DeviceChoice(f"cuda:{gpu}", local_rank, n_gpus, visible_devices,
                        f"local rank {local_rank} of a node with {n_gpus} GPU(s)")


def rank_gpu_map(n_ranks: int, n_gpus: int) -> list[str]:
    """The device of every local rank 0..n_ranks-1 on a node with `n_gpus` GPUs."""
    return [choose_device(rank, n_gpus).device for rank in range(int(n_ranks))]


def ranks_per_gpu(n_ranks: int, n_gpus: int) -> int:
    """Sub-volumes a GPU holds at once: the ranks dealt to the busiest GPU (0 without GPUs)."""
    return math.ceil(n_ranks / n_gpus) if n_gpus > 0 else 0


def select_device(comm: Any = None, environ: Mapping[str, str] | None = None) -> DeviceChoice:
    """This rank's device, with torch's view of the GPUs; sets torch's current CUDA device.

    The local rank comes from `comm` (ranks sharing this node) or, without one, from the
    launcher's variables (0 when none). A job that SLURM gave GPUs (CUDA_VISIBLE_DEVICES set and
    not empty) but whose torch sees none (a CPU-only torch build, no driver) runs on the CPU
    with a warning that says so."""
    import torch

    environ = os.environ if environ is None else environ
    if comm is not None and comm.Get_size() > 1:
        from jobs.mpi_pool import local_rank

        local = local_rank(comm)
    else:
        local = local_rank_from_env(environ) or 0
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    choice = choose_device(local, n_gpus, visible)
    if n_gpus == 0 and visible_gpu_count(environ):
        log.warning("the job was given GPU(s) %s but torch sees none (torch %s, CUDA build %s): "
                    "computing on the CPU", visible, torch.__version__, torch.version.cuda)
        choice = DeviceChoice("cpu", local, 0, visible,
                              f"GPU(s) {visible} given, but torch sees none")
    if choice.device.startswith("cuda"):
        torch.cuda.set_device(int(choice.device.split(":")[1]))
    return choice


def probe_rank_devices() -> dict[str, Any]:
    """What this rank sees and chooses (run on every rank of a job by the tests and doctor)."""
    environ = dict(os.environ)
    local = local_rank_from_env(environ) or 0
    visible = visible_gpu_count(environ) or 0
    planned = choose_device(local, visible, environ.get("CUDA_VISIBLE_DEVICES"))
    return {"local_rank": local, "visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
            "planned_device": planned.device, "rank": environ.get("SLURM_PROCID"),
            "host": os.uname().nodename}


def main() -> None:
    import json

    print(json.dumps(probe_rank_devices()), flush=True)


if __name__ == "__main__":
    main()
