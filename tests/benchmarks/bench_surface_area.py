"""The fused marching-cubes surface pass against today's skimage path, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/bench_surface_area.py [--quick]

Three parts, each measured against the skimage path (method="skimage") in the same run:

1. speed: 128³ procedural cubes (0.9 / 0.35 / 0.5) at 0.4 and 1 um, both methods, each also
   with the box clip as first built (_surface_kernels.FAST_CLIP = False, the anchor of the
   fast clip; same sums to the bit), interleaved in random order, the stage's CPU seconds
   (time.process_time, best of --repeats) and the ratios to skimage;
2. electrodes: procedural volumes over recipe corners, both calendering models, 0.4 and 1 um,
   64³-128³: relative differences of the total AM area and of AM-pore and AM-CBD, and of the
   particle radius (kernels.metrics.particle_size given each method's area);
3. spheres at random sub-voxel centres, radius 3.5-40 voxels: each method's error against
   4 pi r^2 (the table of kernels.metrics.surface_area's docstring).
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import kernels.metrics._surface_kernels as sk  # noqa: E402
from kernels.metrics.particle_size import am_particle_radius_um  # noqa: E402
from kernels.metrics.surface_area import interface_areas_voxels  # noqa: E402
from kernels.structure.procedural import (  # noqa: E402
    AM,
    CBD,
    PORE,
    ManufacturingParams,
    generate_structure,
)

METHODS = ("skimage", "fused")
RECIPES = ((0.9, 0.35, 0.5), (0.80, 0.20, 0.0), (0.98, 0.55, 1.0), (0.80, 0.55, 1.0),
           (0.98, 0.20, 0.0))


def _areas(volume: np.ndarray, method: str) -> dict[int, float]:
    # "<method>_first_clip": the box clip as first built (_surface_kernels.FAST_CLIP = False)
    first_clip = method.endswith("_first_clip")
    try:
        sk.FAST_CLIP = not first_clip
        return interface_areas_voxels(volume, solid_label=AM, other_labels=(PORE, CBD),
                                      method=method.removesuffix("_first_clip"))
    finally:
        sk.FAST_CLIP = True


def speed(repeats: int) -> None:
    print("## speed: 128³ cube 0.9/0.35/0.5, CPU-s of the stage (best of", repeats,
          "interleaved in random order)")
    print("| voxel um | skimage first clip | fused first clip | ratio first clip | skimage | "
          "fused | ratio | total diff | pore diff | cbd diff | clips equal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    methods = (*METHODS, "skimage_first_clip", "fused_first_clip")
    for voxel_um in (0.4, 1.0):
        volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 128, voxel_um, seed=1)
        for method in methods:  # warm-up: imports and compilation out of the timings
            _areas(volume, method)
        times: dict[str, list[float]] = {m: [] for m in methods}
        result = {}
        for _ in range(repeats):
            for method in rng.permutation(methods):
                start = time.process_time()
                result[method] = _areas(volume, method)
                times[method].append(time.process_time() - start)
        best = {m: min(t) for m, t in times.items()}
        a, b = result["skimage"], result["fused"]
        same = (result["skimage_first_clip"] == a and result["fused_first_clip"] == b)
        print(f"| {voxel_um} | {best['skimage_first_clip']:.3f} | {best['fused_first_clip']:.3f} | "
              f"{best['skimage_first_clip'] / best['fused_first_clip']:.2f}x | "
              f"{best['skimage']:.3f} | {best['fused']:.3f} | "
              f"{best['skimage'] / best['fused']:.2f}x | "
              f"{(b[PORE] + b[CBD]) / (a[PORE] + a[CBD]) - 1:+.4%} | "
              f"{b[PORE] / a[PORE] - 1:+.4%} | {b[CBD] / a[CBD] - 1:+.4%} | {same} |")
    print(f"load average {os.getloadavg()[0]:.2f}\n")


def electrodes(sizes: list[int], radius_size: int) -> None:
    print("## electrodes: fused relative to skimage")
    print("| size | voxel um | calendering | recipe | CBD coverage | total | AM-pore | AM-CBD | "
          "coverage (abs) | radius |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = {"total": 0.0, "pore": 0.0, "cbd": 0.0, "coverage": 0.0, "radius": 0.0}
    for size in sizes:
        recipes = RECIPES if size == sizes[0] else RECIPES[:3]
        for voxel_um in (0.4, 1.0):
            for calendering in ("flatten", "rearrange"):
                for seed, recipe in enumerate(recipes):
                    volume = generate_structure(ManufacturingParams(*recipe), size, voxel_um,
                                                seed=seed, calendering=calendering)
                    a, b = _areas(volume, "skimage"), _areas(volume, "fused")
                    total = (b[PORE] + b[CBD]) / (a[PORE] + a[CBD]) - 1
                    pore = b[PORE] / a[PORE] - 1
                    cbd = b[CBD] / a[CBD] - 1
                    coverage = a[CBD] / (a[PORE] + a[CBD])
                    shift = b[CBD] / (b[PORE] + b[CBD]) - coverage
                    radius = ""
                    if size == radius_size:
                        r = [am_particle_radius_um(
                            volume, voxel_um, (x[PORE] + x[CBD]) / volume.size / voxel_um)
                            for x in (a, b)]
                        worst["radius"] = max(worst["radius"], abs(r[1] / r[0] - 1))
                        radius = f"{r[1] / r[0] - 1:+.3%}"
                    for key, value in (("total", total), ("pore", pore), ("cbd", cbd),
                                       ("coverage", shift)):
                        worst[key] = max(worst[key], abs(value))
                    print(f"| {size} | {voxel_um} | {calendering} | {recipe} | {coverage:.3f} | "
                          f"{total:+.3%} | {pore:+.3%} | {cbd:+.3%} | {shift:+.5f} | {radius} |")
    print("max |difference| (coverage: absolute, others relative):",
          {k: f"{v:.5f}" if k == "coverage" else f"{v:.3%}" for k, v in worst.items()})
    print(f"load average {os.getloadavg()[0]:.2f}\n")


def spheres(per_radius: int) -> None:
    print("## spheres at random sub-voxel centres: error against 4 pi r^2")
    print("| radius vox | skimage min | skimage max | fused min | fused max |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for radius in (3.0, 3.5, 4.0, 5.0, 6.0, 10.0, 20.0, 40.0):
        n = int(2 * radius + 8)
        errors = {m: [] for m in METHODS}
        for _ in range(per_radius):
            centre = n / 2 + rng.uniform(-0.5, 0.5, 3)
            z, y, x = np.ogrid[:n, :n, :n]
            inside = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2
                      + (x - centre[2]) ** 2 <= radius**2)
            volume = np.where(inside, AM, PORE).astype(np.uint8)
            for method in METHODS:
                area = sum(_areas(volume, method).values())
                errors[method].append(area / (4 * math.pi * radius**2) - 1)
        print(f"| {radius} | {min(errors['skimage']):+.2%} | {max(errors['skimage']):+.2%} | "
              f"{min(errors['fused']):+.2%} | {max(errors['fused']):+.2%} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64³ electrodes only, fewer spheres")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--speed-only", action="store_true", help="part 1 only")
    args = parser.parse_args()
    speed(args.repeats)
    if args.speed_only:
        return
    sizes = [64] if args.quick else [64, 96, 128]
    electrodes(sizes, radius_size=sizes[-1])
    spheres(3 if args.quick else 8)


if __name__ == "__main__":
    main()
