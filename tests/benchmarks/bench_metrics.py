"""Time the structure generator and each microstructure metric at several cube sizes.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_metrics.py [--sizes 64 96 128]
        [--backends taufactor native] [--out table.md]

Prints a markdown table (seconds, one thread, one run each after a warm-up) with, per column,
the ratio to the smallest size so that runs on a busy machine can still be compared. The volume
is a procedural electrode (am_wt_frac 0.9, porosity 0.35, adhesion 0.5, 0.5 um voxels).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from kernels.metrics.volume import (  # noqa: E402
    effective_conductivity_S_m,
    specific_surface_areas,
    tortuosity_factor,
    volume_fractions,
)
from kernels.structure.procedural import ManufacturingParams, generate_structure  # noqa: E402

PARAMS = ManufacturingParams(am_wt_frac=0.9, porosity=0.35, binder_adhesion=0.5)
VOXEL_UM = 0.5


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run(sizes: list[int], backends: list[str], rel_tol: float) -> tuple[list[str], list[list]]:
    # Warm-up: imports (torch, scikit-image) and first-call costs stay out of the table.
    warm = generate_structure(PARAMS, 24, VOXEL_UM, seed=0)
    specific_surface_areas(warm, VOXEL_UM)
    for backend in backends:
        tortuosity_factor(warm, 0, backend, rel_tol)
    columns = ["generate", "volume fractions", "surface areas"]
    for backend in backends:
        columns += [f"tortuosity ({backend})", f"conductivity ({backend})"]
    rows = []
    for size in sizes:
        t_gen, volume = _timed(lambda s=size: generate_structure(PARAMS, s, VOXEL_UM, seed=1))
        times = [t_gen, _timed(lambda v=volume: volume_fractions(v))[0],
                 _timed(lambda v=volume: specific_surface_areas(v, VOXEL_UM))[0]]
        values = {}
        for backend in backends:
            t_tau, (tau, _) = _timed(lambda v=volume, b=backend: tortuosity_factor(v, 0, b, rel_tol))
            t_sig, sigma = _timed(
                lambda v=volume, b=backend: effective_conductivity_S_m(v, 0, backend=b,
                                                                       rel_tol=rel_tol))
            times += [t_tau, t_sig]
            values[backend] = (tau, sigma)
        rows.append([size, times, values])
        print(f"{size}^3 done: {', '.join(f'{t:.2f}' for t in times)} s; tau, sigma = {values}",
              flush=True)
    return columns, rows


def markdown(columns: list[str], rows: list[list], rel_tol: float) -> str:
    base = rows[0][1]
    lines = [
        f"| size | {' | '.join(columns)} |",
        "|---|" + "---|" * len(columns),
    ]
    for size, times, _ in rows:
        cells = [f"{t:.2f} s" + ("" if size == rows[0][0] else f" (x{t / b:.1f})")
                 for t, b in zip(times, base, strict=True)]
        lines.append(f"| {size}^3 | {' | '.join(cells)} |")
    lines.append("")
    lines.append(f"Seconds, 1 thread, rel_tol {rel_tol:g}, {platform.processor() or platform.machine()}"
                 f", {os.cpu_count()} cores; (xN) = ratio to {rows[0][0]}^3 in the same run.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--backends", nargs="+", default=["taufactor"])
    parser.add_argument("--rel-tol", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args()
    columns, rows = run(args.sizes, args.backends, args.rel_tol)
    table = markdown(columns, rows, args.rel_tol)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
