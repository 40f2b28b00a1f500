"""What sets the pore tortuosity at the Kokam cathode's porosity (issue 15; docs/cell-model.md,
"What sets tau at the Kokam cathode's porosity").

The same procedural design at 1, 0.5 and 0.33 um voxels (three 64 um cubes, seeds 0-2,
porosity 0.30), with parts of the generator switched off here, for the measurement only: the
calendering (thickness factor 1, spherical particles) and the CBD (the AM alone at the recipe's
porosity, through the generator's own packing and distance fields). Also fully penetrable
(Boolean) spheres of radius 4 um at the same porosity, and the generator's named option
calendering="rearrange" (spherical particles whose packing is compressed). Prints one JSON line per structure and
voxel size: porosity, through-plane (and, where asked, in-plane) tau as the geometric mean over
the cubes, the cubes' values, CPU seconds.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_tau_kokam_gap.py
    OMP_NUM_THREADS=1 python tests/benchmarks/bench_tau_kokam_gap.py --rearrange  # its rows and the default's
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from kernels.metrics.volume import tortuosity_factor  # noqa: E402
from kernels.structure import procedural as P  # noqa: E402

POROSITY = 0.30
SIDE_UM = 64.0
SEEDS = (0, 1, 2)
VOXELS_UM = (1.0, 0.5, 1.0 / 3.0)


def generated(am_wt_frac: float, voxel_um: float, seed: int, calendered: bool = True,
              with_cbd: bool = True, calendering: str = "flatten") -> np.ndarray:
    """The generator's volume; uncalendered and/or without CBD for the decomposition."""
    n = round(SIDE_UM / voxel_um)
    params = P.ManufacturingParams(am_wt_frac, POROSITY, 0.5)
    if calendering != "flatten":
        return P.generate_structure(params, n, voxel_um, seed, calendering=calendering)
    squash = P.calendering_factor(POROSITY) if calendered else 1.0
    if with_cbd and calendered:
        return P.generate_structure(params, n, voxel_um, seed)
    rng = np.random.default_rng(seed)
    box = np.array([n * voxel_um / squash, n * voxel_um, n * voxel_um])
    fractions = P.target_phase_fractions(am_wt_frac, POROSITY)
    am_fraction = fractions["am"] if with_cbd else 1.0 - POROSITY
    centres, radii = P._pack_particles(box, am_fraction, params, rng)
    reach = max(0.5 * float(np.median(radii)), 3.0 * voxel_um)
    d1, d2 = P._nearest_surface_distances((n, n, n), voxel_um, squash, centres, radii, reach)
    total = n**3
    n_pore = round(POROSITY * total)
    n_cbd = round(fractions["cbd"] * total) if with_cbd else 0
    volume = np.zeros(total, np.uint8)
    am_index = P._lowest(d1.ravel(), total - n_pore - n_cbd)
    volume[am_index] = P.AM
    if n_cbd:
        score = d1.ravel() + np.float32(P.NECK_WEIGHT * 0.5) * d2.ravel()
        score[am_index] = np.inf
        volume[P._lowest(score, n_cbd)] = P.CBD
    return volume.reshape((n, n, n))


def boolean_spheres(voxel_um: float, seed: int, radius_um: float = 4.0) -> np.ndarray:
    """Independent, overlapping spheres whose union leaves POROSITY of the box as pore."""
    n = round(SIDE_UM / voxel_um)
    side = n * voxel_um
    count = round(-math.log(POROSITY) * side**3 / (4.0 / 3.0 * math.pi * radius_um**3))
    tree = cKDTree(np.random.default_rng(seed).random((count, 3)) * side, boxsize=side)
    grid = (np.arange(n) + 0.5) * voxel_um
    out = np.empty((n, n, n), np.uint8)
    for i in range(n):
        points = np.stack(np.meshgrid([grid[i]], grid, grid, indexing="ij"), -1).reshape(-1, 3)
        out[i] = (tree.query(points)[0] <= radius_um).reshape(n, n)
    return out


def measure(label: str, make, axes=(0,)) -> None:
    for voxel in VOXELS_UM:
        start = time.process_time()
        taus = {axis: [] for axis in axes}
        porosity = []
        for seed in SEEDS:
            volume = make(voxel, seed)
            porosity.append(float((volume == P.PORE).mean()))
            for axis in axes:
                taus[axis].append(tortuosity_factor(volume, axis=axis)[0])
        print(json.dumps({
            "structure": label, "voxel_um": round(voxel, 4), "porosity": float(np.mean(porosity)),
            "tau_geometric_mean": {a: math.exp(float(np.mean(np.log(t)))) for a, t in taus.items()},
            "tau_cubes": taus, "cpu_s": round(time.process_time() - start, 1)}), flush=True)


def main() -> None:
    if "--rearrange" in sys.argv[1:]:  # with the default's rows of the same run as the anchor
        measure("the generator, 96 wt%", lambda h, s: generated(0.96, h, s), (0, 1, 2))
        measure("the generator, 90 wt%", lambda h, s: generated(0.90, h, s))
        measure("the generator, calendering='rearrange', 96 wt%",
                lambda h, s: generated(0.96, h, s, calendering="rearrange"), (0, 1, 2))
        measure("the generator, calendering='rearrange', 90 wt%",
                lambda h, s: generated(0.90, h, s, calendering="rearrange"))
        return
    measure("random sphere packing: AM only, uncalendered",
            lambda h, s: generated(0.96, h, s, calendered=False, with_cbd=False))
    measure("Boolean spheres r 4 um", boolean_spheres)
    measure("AM only, calendered", lambda h, s: generated(0.96, h, s, with_cbd=False), (0, 1))
    measure("CBD at the necks, uncalendered", lambda h, s: generated(0.96, h, s, calendered=False),
            (0, 1))
    measure("the generator, 96 wt%", lambda h, s: generated(0.96, h, s), (0, 1, 2))
    measure("the generator, 90 wt%", lambda h, s: generated(0.90, h, s))
    measure("the generator's AM skeleton, 96 wt%", lambda h, s: np.where(
        generated(0.96, h, s) == P.CBD, P.PORE, generated(0.96, h, s)).astype(np.uint8))


if __name__ == "__main__":
    main()
