"""Peak memory of one convergence-study rank solving one cube, by metric, back-end and size.

Why: a study's solve task requests memory per rank (`--mem-per-cpu`). A rank solves only the
studied metric, a fraction of what an evaluation (every metric of a design) holds, so the
evaluation's model (hpc/campaign/memory_estimate.py) would over-request. For each case the source
volume is made in one process and the cube solved in a fresh one, as in a study's tasks
(jobs.convergence.solve_cube, the real code); the solving process reports its peak RSS
(getrusage) after the imports and after the solve.

    python tests/benchmarks/bench_convergence_memory.py --sizes 96 160 --out mem.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DESIGN = {"am_wt_frac": 0.94, "porosity": 0.35, "binder_adhesion": 0.5}

MAKE = """
import sys
from jobs.convergence import ConvergencePlan, init_study
plan = ConvergencePlan(cube_voxels=[{size}], cubes_per_size=2, design={design!r},
                       source_voxels={source}, chunk_voxels=64, voxel_um=0.5,
                       metric={metric!r}, backend={backend!r}, rel_tol=1e-3)
init_study(sys.argv[1], plan)
"""
SOLVE = """
import json, resource, sys
from jobs.convergence import load_plan, plan_cubes, solve_cube
import torch, zarr
from kernels.metrics import volume
after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
plan = load_plan(sys.argv[1])
result = solve_cube(sys.argv[1], plan, plan_cubes(sys.argv[1], plan)[0])
print(json.dumps({"after_imports_mib": after_imports, "peak_rss_mib": result["peak_rss_mib"],
                  "solve_cpu_s": result["solve_cpu_s"]}))
"""


def measure(size: int, metric: str, backend: str, folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    study = folder / f"{metric}-{backend}-{size}"
    fields = dict(size=size, design=DESIGN, source=size + 16, metric=metric, backend=backend)
    subprocess.run([sys.executable, "-c", MAKE.format(**fields), str(study)], check=True,
                   env=env, timeout=1800)
    done = subprocess.run([sys.executable, "-c", SOLVE, str(study)], check=True, env=env,
                          capture_output=True, text=True, timeout=3600)
    return {"size": size, "metric": metric, "backend": backend,
            **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 160])
    parser.add_argument("--metrics", nargs="+",
                        default=["tortuosity_factor", "effective_conductivity_S_m"])
    parser.add_argument("--backends", nargs="+", default=["native", "taufactor"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for metric in args.metrics:
            for backend in args.backends:
                for size in args.sizes:
                    rows.append(measure(size, metric, backend, Path(folder)))
                    print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
