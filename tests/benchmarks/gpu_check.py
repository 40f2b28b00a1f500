"""GPU check: generation and transport solves on the GPU against the CPU, and against TauFactor
on the GPU, in one run (prepared for when a GPU machine is lent; see docs/solvers.md).

Per size it times, on the same volumes and in the same process:
- generation: the shipped generator's `sample` on cuda vs cpu (the GPU-friendly stage), and the
  procedural simulator (numpy, CPU only) as the anchor;
- pore tortuosity and electronic conductivity: the native solver on cuda vs cpu, TauFactor on
  cuda (and on the CPU up to --taufactor-cpu-max, where it is slow);
- a batch: `--batch` cubes solved one after another on one GPU by one process, against the
  same cubes on as many processes (ranks) sharing the GPU (`jobs.devices`: ranks dealt
  round-robin to GPUs, i.e. several sub-volumes per GPU at once).
Each timing is the median of --repeats runs after one warm-up; GPU timings synchronise the
device. Values are compared between devices (the same number to rel_tol). CPU timings are CPU
seconds of one thread (the project's anchor); GPU timings are wall seconds.

    python tests/benchmarks/gpu_check.py --sizes 64 128 256 --repeats 3 --json gpu_check.json
    python tests/benchmarks/gpu_check.py --dry-run --sizes 16 --repeats 1 --batch 2   # no GPU

--dry-run runs every stage of the GPU run, the batch of processes included, on the CPU only
(whatever GPUs are visible): it shows the script works before GPU time is spent on it. Its rows
say device "cpu" and the header `"dry_run": true`; it produces no GPU number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the repository root: the batch's processes import this module from it, wherever run from
REPO_ROOT = Path(__file__).resolve().parents[2]

DESIGN = {"am_wt_frac": 0.94, "porosity": 0.35, "binder_adhesion": 0.5}
ELECTRONIC_S_M = (0.18, 10.0)   # the loop's defaults (kernels.metrics.volume)


def _timed(fn: Callable[[], Any], device: str, repeats: int) -> tuple[float, Any]:
    """Median seconds of `repeats` calls after a warm-up (CPU: process time, GPU: wall)."""
    import torch

    gpu = device.startswith("cuda")
    value = fn()
    times = []
    for _ in range(repeats):
        if gpu:
            torch.cuda.synchronize()
            start = time.perf_counter()
            value = fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        else:
            start = time.process_time()
            value = fn()
            times.append(time.process_time() - start)
    return statistics.median(times), value


def _volume(size: int, seed: int = 0):
    from kernels.structure.procedural import ManufacturingParams, generate_structure

    return generate_structure(ManufacturingParams(**DESIGN), size, 1.0, seed=seed)


def _fields(labels):
    import numpy as np

    pore = (labels == 0).astype(np.float32)
    electronic = np.array([0.0, *ELECTRONIC_S_M], dtype=np.float32)[labels]
    return {"pore": pore, "electronic": electronic}


def check_size(size: int, devices: list[str], repeats: int, taufactor_cpu_max: int,
               rel_tol: float) -> list[dict[str, Any]]:
    from kernels.generator.model import load_default_model, sample
    from kernels.metrics.solvers import solve

    rows: list[dict[str, Any]] = []
    seconds, labels = _timed(lambda: _volume(size), "cpu", repeats)
    rows.append({"size": size, "stage": "generate", "method": "procedural", "device": "cpu",
                 "seconds": seconds})
    model = load_default_model()
    generated = {}
    for device in devices:
        seconds, volume = _timed(lambda d=device: sample(DESIGN, 1, size, 0, d,
                                                         model.to(d)), device, repeats)
        generated[device] = volume
        rows.append({"size": size, "stage": "generate", "method": "generator", "device": device,
                     "seconds": seconds})
    if len(generated) > 1:   # exact-fraction decoding: devices may differ by a few voxels only
        a, b = (generated[d] for d in devices[:2])
        rows[-1]["voxels_differing_from_cpu"] = int((a != b).sum())
    for case, field in _fields(labels).items():
        values = {}
        for backend in ("native", "taufactor"):
            for device in devices:
                if backend == "taufactor" and device == "cpu" and size > taufactor_cpu_max:
                    continue
                seconds, result = _timed(
                    lambda b=backend, d=device, f=field: solve(f, 0, b, rel_tol, d), device,
                    repeats)
                values[(backend, device)] = result.relative_conductance
                rows.append({"size": size, "stage": case, "method": backend, "device": device,
                             "seconds": seconds, "value": result.relative_conductance,
                             "converged": result.converged, "iterations": result.iterations})
        reference = values.get(("native", "cpu"))
        for row in rows:
            if row["size"] == size and row["stage"] == case and reference:
                row["rel_diff_vs_native_cpu"] = abs(row["value"] - reference) / reference
    return rows


def _solve_share(size: int, n_cubes: int, device: str, rel_tol: float, first_seed: int = 0
                 ) -> float:
    """One rank's share of a batch: solve `n_cubes` pore fields on `device`; wall seconds."""
    import torch

    from kernels.metrics.solvers import solve

    fields = [_fields(_volume(size, first_seed + i))["pore"] for i in range(n_cubes)]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for field in fields:
        solve(field, 0, "native", rel_tol, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def check_batch(size: int, batch: int, rel_tol: float, device: str = "cuda:0"
                ) -> list[dict[str, Any]]:
    """`batch` cubes on one device (GPU 0; the CPU in a dry run): one process in sequence vs
    `batch` processes at once (wall seconds both)."""
    rows = []
    one = _solve_share(size, batch, device, rel_tol)
    rows.append({"size": size, "stage": "batch", "method": f"1 process x {batch} cubes",
                 "device": device, "seconds": one})
    if batch > 1:
        def script(seed: int) -> str:
            return (f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); from "
                    "tests.benchmarks.gpu_check import _solve_share; "
                    f"print(_solve_share({size}, 1, {device!r}, {rel_tol!r}, {seed}))")

        start = time.perf_counter()   # includes each process's start-up and generation
        procs = [subprocess.Popen([sys.executable, "-c", script(seed)], stdout=subprocess.PIPE,
                                  text=True) for seed in range(batch)]
        outs = [p.communicate(timeout=1800)[0] for p in procs]
        wall = time.perf_counter() - start
        failed = [p.returncode for p in procs if p.returncode != 0]
        if failed:
            raise RuntimeError(f"batch processes exited {failed}")
        rows.append({"size": size, "stage": "batch", "method": f"{batch} processes x 1 cube",
                     "device": device, "seconds": wall,
                     "solve_seconds_per_process": [float(o.strip().splitlines()[-1])
                                                   for o in outs]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rel-tol", type=float, default=1e-3)
    parser.add_argument("--taufactor-cpu-max", type=int, default=128,
                        help="largest size TauFactor also runs on the CPU (it grows ~N^4.2)")
    parser.add_argument("--batch", type=int, default=4, help="cubes for the batch check (0: skip)")
    parser.add_argument("--dry-run", "--allow-cpu", dest="dry_run", action="store_true",
                        help="every stage, the batch included, on the CPU only (no GPU number): "
                        "proves the script works before a GPU session")
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    has_gpu = torch.cuda.is_available() and not args.dry_run
    if not has_gpu and not args.dry_run:
        raise SystemExit("no CUDA device visible to torch "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                         "pass --dry-run for a CPU-only run of every stage")
    devices = ["cpu", "cuda:0"] if has_gpu else ["cpu"]
    header = {"torch": torch.__version__, "cuda": torch.version.cuda,
              "gpu": torch.cuda.get_device_name(0) if has_gpu else None,
              "cpu_threads": torch.get_num_threads(), "dry_run": bool(args.dry_run)}
    print(json.dumps(header), flush=True)
    rows = []
    for size in args.sizes:
        for row in check_size(size, devices, args.repeats, args.taufactor_cpu_max,
                              args.rel_tol):
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.batch:
        for row in check_batch(min(args.sizes[-1], 128), args.batch, args.rel_tol,
                               "cuda:0" if has_gpu else "cpu"):
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"header": header, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
