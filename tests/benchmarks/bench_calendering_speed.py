"""Procedural generation at 128^3 with calendering="rearrange" against the default "flatten",
both in the same process, one thread, CPU time (the machine may be shared), interleaved so a
change of load hits both alike. The anchor is "flatten" of the same run; the ratio column is
rearrange / flatten of the median CPU time over the repeats (different seeds each repeat).

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_calendering_speed.py [--size 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

# (am_wt_frac, porosity, voxel_um): the generator speed benchmark's design, the Kokam porosity,
# and the densest corner of the recipe box (the most relaxation for "rearrange")
DESIGNS = ((0.90, 0.35, 0.4), (0.96, 0.30, 1.0), (0.80, 0.20, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from kernels.structure.procedural import ManufacturingParams, generate_structure

    for wt, porosity, voxel_um in DESIGNS:
        params = ManufacturingParams(wt, porosity)
        generate_structure(params, args.size, voxel_um, seed=0)  # warm-up (numba, caches)
        times: dict[str, list[float]] = {"flatten": [], "rearrange": []}
        for k in range(args.repeats):
            for model in times:
                start = time.process_time()
                generate_structure(params, args.size, voxel_um, seed=k + 1, calendering=model)
                times[model].append(time.process_time() - start)
        flatten, rearrange = (statistics.median(times[m]) for m in ("flatten", "rearrange"))
        print(json.dumps({"am_wt_frac": wt, "porosity": porosity, "voxel_um": voxel_um,
                          "size": args.size, "flatten_cpu_s": round(flatten, 3),
                          "rearrange_cpu_s": round(rearrange, 3),
                          "ratio": round(rearrange / flatten, 3),
                          "cpu_s_all": {m: [round(t, 3) for t in v] for m, v in times.items()},
                          "load_average": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
