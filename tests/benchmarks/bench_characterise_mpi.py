"""Characterising one design's cubes: 1 rank in process vs R ranks under mpiexec, same run.

    .venv/bin/python tests/benchmarks/bench_characterise_mpi.py [--cubes 6] [--voxels 64] [--ranks 2]

Reports the wall times, their ratio, each rank's share of the solve time (the dynamic hand-out
should keep them level although single solves differ) and that the metrics are identical.
Timings on a shared machine are noisy: compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from jobs.characterise import metrics_path, run_characterise
from jobs.contract.spec import EvaluationSpec
from jobs.generate import generate_samples

PARAMS = {"am_wt_frac": 0.92, "porosity": 0.36, "binder_adhesion": 0.4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=int, default=6)
    parser.add_argument("--voxels", type=int, default=64)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    spec = EvaluationSpec.from_dict({
        "fidelity": {"n_cubes": args.cubes, "cube_voxels": args.voxels, "voxel_um": 0.5},
        "generator": {"mean_diameter_um": 5.0}, "seed": 0})
    with tempfile.TemporaryDirectory() as tmp:
        walls: dict[int, float] = {}
        records: dict[int, list[dict]] = {}
        for ranks in (1, args.ranks):
            campaign = Path(tmp) / f"ranks{ranks}"
            generate_samples(campaign, 0, PARAMS, spec)
            start = time.perf_counter()
            run_characterise(campaign, 0, spec, ranks=ranks)
            walls[ranks] = time.perf_counter() - start
            records[ranks] = [json.loads(metrics_path(campaign, 0, i).read_text())
                              for i in range(args.cubes)]
    same = all(a["metrics"] == b["metrics"] for a, b in zip(records[1], records[args.ranks],
                                                             strict=True))
    per_rank: dict[int, float] = defaultdict(float)
    for record in records[args.ranks]:
        per_rank[record["rank"]] += record["wall_s"]
    solves = [round(r["wall_s"], 2) for r in records[1]]
    print(f"{args.cubes} cubes of {args.voxels}^3, serial solve times (s): {solves}")
    print(f"1 rank in process : {walls[1]:7.2f} s")
    print(f"{args.ranks} ranks (mpiexec): {walls[args.ranks]:7.2f} s   "
          f"speed-up {walls[1] / walls[args.ranks]:.2f}x (launch + imports included)")
    print("solve seconds per rank: " + ", ".join(f"rank {k}: {v:.2f}"
                                                 for k, v in sorted(per_rank.items())))
    print(f"metrics identical to the serial run: {same}")


if __name__ == "__main__":
    main()
