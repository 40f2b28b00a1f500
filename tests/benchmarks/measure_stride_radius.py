"""Measurement: the opt-in particle split on 2×2×2 blocks (``watershed_stride=2``) against the
default voxel split, radius for radius, on procedural 128³ cubes at 0.4 and 1 um.

Not a timing: it prints R at stride 1 and 2 and their relative difference per cube (recipes
am_wt_frac / porosity / adhesion at the corners and the bench's 0.9 / 0.35 / 0.5, "flatten"),
for the claim in kernels/metrics/particle_size.py and docs/solvers.md.

    OMP_NUM_THREADS=1 python tests/benchmarks/measure_stride_radius.py [--size 128] [--seeds 1]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from kernels.metrics.particle_size import am_particle_radius_um  # noqa: E402
from kernels.structure.procedural import ManufacturingParams, generate_structure  # noqa: E402

RECIPES = ((0.9, 0.35, 0.5), (0.98, 0.2, 1.0), (0.8, 0.55, 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=1, help="cubes per recipe and voxel")
    args = parser.parse_args()
    print("| voxel | recipe | seed | R stride 1 (um) | R stride 2 (um) | stride 2 / 1 - 1 |")
    print("|---|---|---|---|---|---|")
    for voxel_um in (0.4, 1.0):
        for recipe in RECIPES:
            for seed in range(args.seeds):
                volume = generate_structure(ManufacturingParams(*recipe), args.size, voxel_um,
                                            seed=seed)
                r1, r2 = (am_particle_radius_um(volume, voxel_um, watershed_stride=s)
                          for s in (1, 2))
                print(f"| {voxel_um} um | {'/'.join(map(str, recipe))} | {seed} | {r1:.3f} "
                      f"| {r2:.3f} | {100 * (r2 / r1 - 1):+.1f} % |", flush=True)


if __name__ == "__main__":
    main()
