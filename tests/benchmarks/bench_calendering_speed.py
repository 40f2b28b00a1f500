"""Procedural generation at 128^3 with calendering="rearrange" against the default "flatten",
both in the same process, one thread, CPU time (the machine may be shared), interleaved so a
change of load hits all alike. Three models per repeat: "flatten" (the anchor), "rearrange" as
shipped (its relaxation on a Verlet list, kernels.structure._verlet) and "rearrange_full_search"
(the same relaxation with a fresh k-d tree search every sweep, `procedural._relax`, as before the
Verlet list). Ratios are of the median CPU times over the repeats (different seeds each repeat);
max_overlap_* is the largest overlap of each rearranged packing (fresh search; limit 0.10) and
max_centre_shift_um how far the two rearranged packings' centres differ.

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_calendering_speed.py [--size 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

# (am_wt_frac, porosity, voxel_um): the generator speed benchmark's design, the Kokam porosity,
# the densest corners of the recipe box (the most relaxation for "rearrange")
DESIGNS = ((0.90, 0.35, 0.4), (0.96, 0.30, 1.0), (0.80, 0.20, 1.0), (0.97, 0.25, 1.0))
MODELS = ("flatten", "rearrange", "rearrange_full_search")


def _generate(params, size: int, voxel_um: float, seed: int, model: str) -> float:
    """CPU-s of one generate_structure call of `model`."""
    from kernels.structure import procedural

    procedural.REARRANGE_ON_VERLET_LIST = model != "rearrange_full_search"
    calendering = "flatten" if model == "flatten" else "rearrange"
    start = time.process_time()
    procedural.generate_structure(params, size, voxel_um, seed=seed, calendering=calendering)
    elapsed = time.process_time() - start
    procedural.REARRANGE_ON_VERLET_LIST = True
    return elapsed


def _packing_check(params, size: int, voxel_um: float, seed: int) -> dict[str, float]:
    """Overlap of both rearranged packings (fresh search) and their largest centre shift."""
    from kernels.structure import procedural

    packings = {}
    for on_list in (True, False):
        procedural.REARRANGE_ON_VERLET_LIST = on_list
        packings[on_list] = procedural.calendered_particles(params, size, voxel_um, seed,
                                                            calendering="rearrange")
    procedural.REARRANGE_ON_VERLET_LIST = True
    (new_c, radii, box_um, _), (old_c, _, _, _) = packings[True], packings[False]
    shift = new_c - old_c
    shift -= box_um * np.round(shift / box_um)
    return {"max_overlap_verlet": round(procedural.max_overlap(new_c, radii, box_um), 6),
            "max_overlap_full_search": round(procedural.max_overlap(old_c, radii, box_um), 6),
            "max_centre_shift_um": float(np.abs(shift).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from kernels.structure.procedural import ManufacturingParams

    for wt, porosity, voxel_um in DESIGNS:
        params = ManufacturingParams(wt, porosity)
        for model in MODELS:  # warm-up (numba compile or cache load)
            _generate(params, args.size, voxel_um, 0, model)
        times: dict[str, list[float]] = {m: [] for m in MODELS}
        for k in range(args.repeats):
            for model in MODELS:
                times[model].append(_generate(params, args.size, voxel_um, k + 1, model))
        median = {m: statistics.median(v) for m, v in times.items()}
        print(json.dumps({"am_wt_frac": wt, "porosity": porosity, "voxel_um": voxel_um,
                          "size": args.size,
                          **{f"{m}_cpu_s": round(median[m], 3) for m in MODELS},
                          "ratio_rearrange_to_flatten":
                              round(median["rearrange"] / median["flatten"], 3),
                          "ratio_full_search_to_flatten":
                              round(median["rearrange_full_search"] / median["flatten"], 3),
                          "speedup_verlet_over_full_search":
                              round(median["rearrange_full_search"] / median["rearrange"], 2),
                          **_packing_check(params, args.size, voxel_um, 1),
                          "cpu_s_all": {m: [round(t, 3) for t in v] for m, v in times.items()},
                          "load_average": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
