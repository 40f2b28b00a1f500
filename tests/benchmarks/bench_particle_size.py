"""Benchmark: the particle-size stage of one 128³ cube, skimage's watershed against the numba
flood (kernels.metrics._watershed_kernels), interleaved in one process.

One process, one thread, CPU time (``time.process_time``; wall time on a shared machine means
little). For each cube (the design 0.9/0.35/0.5 at 0.4 um, ``--cubes`` seeds, plus one at
1 um) it times, alternating which path goes first:

* the sub-stages: the distance transform (the same numba kernel in both), the seeds
  (skimage's peak_local_max, the same in both), the watershed (``old``: skimage's;
  ``new``: the numba flood) and the contact faces (``old``: numpy; ``new``: numba);
* the whole ``am_particle_radius_um`` (free surface given, as kernels.metrics passes it), at
  stride 1 and at the opt-in stride 2, ``old`` being ``particle_size.USE_FUSED_FLOOD = False``;

and checks that the labels are equal voxel for voxel and the radii equal exactly.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_particle_size.py --cubes 2 [--repeats 2]

About 30 CPU-s at the defaults.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kernels.metrics import particle_size as P  # noqa: E402
from kernels.metrics._particle_kernels import contact_faces  # noqa: E402
from kernels.metrics._watershed_kernels import FLOODED, flood_labels  # noqa: E402
from kernels.metrics.surface_area import interface_areas_voxels  # noqa: E402
from kernels.structure.procedural import ManufacturingParams, generate_structure  # noqa: E402

PARAMS = ManufacturingParams(am_wt_frac=0.9, porosity=0.35, binder_adhesion=0.5)
ROWS = ("distance", "seeds", "watershed", "contact faces", "radius (stride 1)",
        "radius (stride 2)")


def _cpu(fn):
    start = time.process_time()
    value = fn()
    return time.process_time() - start, value


def _one(volume: np.ndarray, voxel_um: float, surface_per_um: float, mode: str):
    """CPU s per row and (labels, radius at stride 1, radius at stride 2) for one path."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    times: dict[str, float] = {}
    am = volume == P.AM_LABEL
    times["distance"], distance = _cpu(lambda: P.distance_to_background(am))
    spacing = max(2, int(round(P.SEED_SPACING_FRACTION * np.percentile(distance[am], 99))))

    def seeds() -> np.ndarray:
        peaks = peak_local_max(distance, min_distance=spacing, labels=am.astype(np.int32),
                               exclude_border=False)
        markers = np.zeros(am.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        return markers

    times["seeds"], markers = _cpu(seeds)
    if mode == "old":
        times["watershed"], labels = _cpu(lambda: watershed(-distance, markers, mask=am))
        times["contact faces"], faces = _cpu(lambda: P._contact_faces_numpy(labels))
    else:
        times["watershed"], (status, _, labels) = _cpu(
            lambda: flood_labels(distance, am, markers))
        assert status == FLOODED
        times["contact faces"], faces = _cpu(lambda: int(contact_faces(labels)))
    P.USE_FUSED_FLOOD = mode == "new"
    radii = []
    for stride in (1, 2):
        times[f"radius (stride {stride})"], radius = _cpu(
            lambda s=stride: P.am_particle_radius_um(volume, voxel_um, surface_per_um,
                                                     watershed_stride=s))
        radii.append(radius)
    P.USE_FUSED_FLOOD = True
    return times, (labels, faces, *radii)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cubes", type=int, default=2, help="seeds at 0.4 um (plus one at 1)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="old/new pairs per cube")
    args = parser.parse_args()
    cases = [(0.4, seed) for seed in range(args.cubes)] + [(1.0, 0)]
    warm = generate_structure(PARAMS, 64, 0.4, seed=99)  # compile every kernel once
    _one(warm, 0.4, 1.0, "new")
    _one(warm, 0.4, 1.0, "old")
    rows: dict[tuple[str, str], list[float]] = {}
    for voxel_um, seed in cases:
        volume = generate_structure(PARAMS, args.size, voxel_um, seed=seed)
        others = tuple(int(v) for v in np.unique(volume) if v != P.AM_LABEL)
        surface = sum(interface_areas_voxels(volume, solid_label=P.AM_LABEL,
                                             other_labels=others).values())
        surface_per_um = surface / (volume.size * voxel_um)
        results = {}
        for rep in range(args.repeats):
            for mode in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                times, results[mode] = _one(volume, voxel_um, surface_per_um, mode)
                for row, value in times.items():
                    rows.setdefault((f"{voxel_um} um {mode}", row), []).append(value)
        old, new = results["old"], results["new"]
        assert np.array_equal(old[0], new[0]), "labels differ"
        assert old[1:] == new[1:], f"faces/radii differ: {old[1:]} != {new[1:]}"
        print(f"cube {voxel_um} um seed {seed}: labels equal, {int(old[0].max())} particles, "
              f"R = {old[2]:.6f} um (stride 1) = old, {old[3]:.6f} um (stride 2) = old")
    print(f"\n{platform.processor() or platform.machine()}, load average "
          f"{os.getloadavg()[0]:.2f}, {args.size}³, median CPU s over cubes and repeats")
    print("| voxel | stage | old (skimage, numpy) | new (numba) | old / new |")
    print("|---|---|---|---|---|")
    for voxel in sorted({v for v, _ in cases}):
        for row in ROWS:
            old = statistics.median(rows[(f"{voxel} um old", row)])
            new = statistics.median(rows[(f"{voxel} um new", row)])
            print(f"| {voxel} um | {row} | {old:.3f} | {new:.3f} | {old / new:.2f} |")


if __name__ == "__main__":
    main()
