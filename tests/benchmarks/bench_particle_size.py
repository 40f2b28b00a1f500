"""Benchmark: the particle-size stage of one 128³ cube, skimage's seeds and watershed against
the numba kernels (kernels.metrics._seed_kernels, kernels.metrics._watershed_kernels),
interleaved in one process.

One process, one thread, CPU time (``time.process_time``; wall time on a shared machine means
little). For each cube (the design 0.9/0.35/0.5, ``--cubes`` seeds at 0.4 um and as many at
1 um) it times four paths, rotating which goes first:

* ``old``: skimage's peak_local_max and watershed, the numpy contact faces;
* ``flood``: skimage's peak_local_max, the numba flood and faces (the default before the seeds
  kernel: ``particle_size.USE_FUSED_SEEDS = False``);
* ``two arrays``: ``new`` with the heap flood's state and bucket in two arrays, as first built
  (``_watershed_kernels.PACKED_HEAP = False``);
* ``new``: the numba seeds, flood and faces (the default);

each on the sub-stages (the distance transform, the same numba kernel in all three; the seeds;
the watershed; the contact faces) and on the whole ``am_particle_radius_um`` (free surface
given, as kernels.metrics passes it) at stride 1 and at the opt-in stride 2. It checks that the
seeds are equal row for row, the labels voxel for voxel and the radii exactly (all paths), and prints the
stride-2 radius against the stride-1 one per cube.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_particle_size.py --cubes 2 [--repeats 2]

About 80 CPU-s at the defaults.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kernels.metrics import _watershed_kernels as W  # noqa: E402
from kernels.metrics import particle_size as P  # noqa: E402
from kernels.metrics._particle_kernels import contact_faces  # noqa: E402
from kernels.metrics._seed_kernels import EXACT, seed_peaks  # noqa: E402
from kernels.metrics._watershed_kernels import FLOODED, flood_labels  # noqa: E402
from kernels.metrics.surface_area import interface_areas_voxels  # noqa: E402
from kernels.structure.procedural import ManufacturingParams, generate_structure  # noqa: E402

PARAMS = ManufacturingParams(am_wt_frac=0.9, porosity=0.35, binder_adhesion=0.5)
ROWS = ("distance", "seeds", "watershed", "contact faces", "radius (stride 1)",
        "radius (stride 2)")
MODES = ("old", "flood", "two arrays", "new")


def _cpu(fn):
    start = time.process_time()
    value = fn()
    return time.process_time() - start, value


def _one(volume: np.ndarray, voxel_um: float, surface_per_um: float, mode: str):
    """CPU s per row and (peaks, labels, faces, radius at stride 1, at stride 2) for one
    path."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    times: dict[str, float] = {}
    am = volume == P.AM_LABEL
    times["distance"], distance = _cpu(lambda: P.distance_to_background(am))
    spacing = max(2, int(round(P.SEED_SPACING_FRACTION * np.percentile(distance[am], 99))))

    W.PACKED_HEAP = mode != "two arrays"

    def seeds() -> np.ndarray:
        if mode in ("new", "two arrays"):
            status, peaks = seed_peaks(distance, am, spacing)
            assert status == EXACT
        else:
            peaks = peak_local_max(distance, min_distance=spacing,
                                   labels=am.astype(np.int32), exclude_border=False)
        return peaks

    times["seeds"], peaks = _cpu(seeds)
    markers = np.zeros(am.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    if mode == "old":
        times["watershed"], labels = _cpu(lambda: watershed(-distance, markers, mask=am))
        times["contact faces"], faces = _cpu(lambda: P._contact_faces_numpy(labels))
    else:
        times["watershed"], (status, _, labels) = _cpu(
            lambda: flood_labels(distance, am, markers))
        assert status == FLOODED
        times["contact faces"], faces = _cpu(lambda: int(contact_faces(labels)))
    P.USE_FUSED_FLOOD = mode != "old"
    P.USE_FUSED_SEEDS = mode in ("new", "two arrays")
    radii = []
    for stride in (1, 2):
        times[f"radius (stride {stride})"], radius = _cpu(
            lambda s=stride: P.am_particle_radius_um(volume, voxel_um, surface_per_um,
                                                     watershed_stride=s))
        radii.append(radius)
    P.USE_FUSED_FLOOD = P.USE_FUSED_SEEDS = W.PACKED_HEAP = True
    return times, (peaks, labels, faces, *radii)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cubes", type=int, default=2, help="seeds per voxel size")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three paths")
    args = parser.parse_args()
    cases = [(voxel_um, seed) for voxel_um in (0.4, 1.0) for seed in range(args.cubes)]
    warm = generate_structure(PARAMS, 64, 0.4, seed=99)  # compile every kernel once
    for mode in MODES:
        _one(warm, 0.4, 1.0, mode)
    rows: dict[tuple[str, str], list[float]] = {}
    for voxel_um, seed in cases:
        volume = generate_structure(PARAMS, args.size, voxel_um, seed=seed)
        others = tuple(int(v) for v in np.unique(volume) if v != P.AM_LABEL)
        surface = sum(interface_areas_voxels(volume, solid_label=P.AM_LABEL,
                                             other_labels=others).values())
        surface_per_um = surface / (volume.size * voxel_um)
        results = {}
        for rep in range(args.repeats):
            for mode in MODES[rep % len(MODES):] + MODES[:rep % len(MODES)]:
                times, results[mode] = _one(volume, voxel_um, surface_per_um, mode)
                for row, value in times.items():
                    rows.setdefault((f"{voxel_um} um {mode}", row), []).append(value)
        old = results["old"]
        for mode in MODES[1:]:
            assert np.array_equal(old[0], results[mode][0]), f"seeds differ ({mode})"
            assert np.array_equal(old[1], results[mode][1]), f"labels differ ({mode})"
            assert old[2:] == results[mode][2:], f"faces/radii differ ({mode})"
        print(f"cube {voxel_um} um seed {seed}: seeds, labels, radii equal in all paths; "
              f"{len(old[0])} particles, R = {old[3]:.4f} um (stride 1), {old[4]:.4f} um "
              f"(stride 2, {100 * (old[4] / old[3] - 1):+.1f} %)")
    print(f"\n{platform.processor() or platform.machine()}, load average "
          f"{os.getloadavg()[0]:.2f}, {args.size}³, median CPU s over cubes and repeats")
    print("| voxel | stage | old (skimage, numpy) | flood (skimage seeds) | two-array heap "
          "| new (numba) | old / new | flood / new | two arrays / new |")
    print("|---|---|---|---|---|---|---|---|---|")
    for voxel in sorted({v for v, _ in cases}):
        for row in ROWS:
            old, flood, two, new = (statistics.median(rows[(f"{voxel} um {mode}", row)])
                                    for mode in MODES)
            print(f"| {voxel} um | {row} | {old:.3f} | {flood:.3f} | {two:.3f} | {new:.3f} "
                  f"| {old / new:.2f} | {flood / new:.2f} | {two / new:.2f} |")


if __name__ == "__main__":
    main()
