"""What the voxel staircase in tau does to the case-study answers (issue 15, the Kokam tau gap).

Re-scores the sensitivity table's grid (tests/benchmarks/bench_cell_sensitivity.py: the same
designs, the same three 48^3 cubes at 1 um per design, solid CBD, default model options, the
generator's default calendering, kernels.structure.procedural.DEFAULT_CALENDERING) with
each cube's pore tortuosity replaced by its continuum value from
kernels.metrics.resolution.extrapolated_tortuosity_factor (the cube at 1 um and the same particles
at 0.5 and 0.33 um, 3 tau(1/3) - 2 tau(1/2), accepted only in the first-order range); every other
metric stays the cached 1 um one. Prints one markdown row per study: the defaults' optimum and
objective on the whole grid, the same on the designs that have a continuum tau, the optimum and
objective with the continuum tau on those designs, and the change against the latter (mean
metrics, and cube by cube at that optimum).

    OMP_NUM_THREADS=1 PYBAMM_DISABLE_TELEMETRY=true python tests/benchmarks/bench_tau_continuum.py

Caches the tau pairs in tests/benchmarks/data/tau_continuum_metrics.json. A cube whose pair is
outside the first-order range (ResolutionNotAsymptotic) or does not percolate at both voxel
sizes leaves its design without a continuum value: that design is left out of the re-scored
grid and counted, never given the 1 um value.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_cell_sensitivity as table  # noqa: E402

TAU_FILE = table.DATA / "tau_continuum_metrics.json"


def _calendering() -> str:
    from kernels.structure.procedural import DEFAULT_CALENDERING

    return DEFAULT_CALENDERING


def continuum_tau(key: tuple[float, float, float], seed: int) -> dict:
    """The cube's tau at 1 and 0.5 um and the extrapolated value (None when refused)."""
    from kernels.metrics.resolution import ResolutionNotAsymptotic, extrapolated_tortuosity_factor
    from kernels.structure.procedural import ManufacturingParams, generate_structure

    params = ManufacturingParams(*key)
    side_um = table.CUBE_VOXELS * table.VOXEL_UM

    def volume_at(voxel_um: float):
        return generate_structure(params, round(side_um / voxel_um), voxel_um, seed=seed,
                                  calendering=_calendering())

    try:
        result = extrapolated_tortuosity_factor(volume_at, table.VOXEL_UM)
    except ResolutionNotAsymptotic as error:
        return {"tau_continuum": None, "refused": str(error)}
    if not result.percolating:
        return {"tau_continuum": None, "refused": "pore phase does not percolate"}
    return {"tau_continuum": result.tortuosity_factor, "tau_1um": result.tortuosity_coarse,
            "tau_half_um": result.tortuosity_half, "tau_third_um": result.tortuosity_third,
            "difference_ratio": result.difference_ratio, "refused": ""}


def main() -> None:
    from kernels.cell.model import CellModel

    start, cpu_start = time.perf_counter(), time.process_time()
    metrics = table.load_or_characterise()
    taus = json.loads(TAU_FILE.read_text()) if TAU_FILE.exists() else {}
    for key in table.microstructures():
        for seed in table.SEEDS:
            name = table.cache_key(key, seed, "solid", _calendering())
            if name not in taus:
                taus[name] = continuum_tau(key, seed)
    TAU_FILE.write_text(json.dumps(taus, indent=1, sort_keys=True))
    print(f"tau pairs ready after {time.perf_counter() - start:.0f} s", file=sys.stderr)

    cubes, continuum = {}, {}
    for key in table.microstructures():
        names = [table.cache_key(key, seed, "solid", _calendering()) for seed in table.SEEDS]
        cubes[key] = [metrics[n] for n in names]
        if all(taus[n]["tau_continuum"] is not None for n in names):
            continuum[key] = [{**metrics[n], "tortuosity_factor": taus[n]["tau_continuum"]}
                              for n in names]
    refused = sorted({key for key in cubes if key not in continuum})
    studies = {
        "cs1 3C mAh/g": (True, ("c_rate", 3.0), [(w, p, 0.5, table.CS1_LOADING)
                                                  for w in table.GRID_WT
                                                  for p in table.GRID_POROSITY]),
        "cs2 10 W Wh/L": (False, ("power", 10.0), [(w, p, 0.5, table.CS2_LOADING)
                                                    for w in table.GRID_WT
                                                    for p in table.GRID_POROSITY]),
        "cs2 200 W Wh/L": (False, ("power", 200.0), [(w, p, 0.5, table.CS2_LOADING)
                                                      for w in table.GRID_WT
                                                      for p in table.GRID_POROSITY]),
        "cs3 10 W Wh/L": (False, ("power", 10.0), [(w, p, a, m) for w in table.CS3_WT
                                                    for p in table.CS3_POROSITY
                                                    for a in table.CS3_ADHESION
                                                    for m in table.CS3_LOADING]),
        "cs3 200 W Wh/L": (False, ("power", 200.0), [(w, p, a, m) for w in table.CS3_WT
                                                      for p in table.CS3_POROSITY
                                                      for a in table.CS3_ADHESION
                                                      for m in table.CS3_LOADING]),
    }
    print("| study | defaults, whole grid | defaults, designs with a continuum tau | "
          "continuum tau | change (mean; cubes) | designs left out |")
    print("|---|---|---|---|---|---|")
    for study, (half_cell, load, grid) in studies.items():
        model = CellModel("Chen2020", half_cell=half_cell)

        def best_of(source, keep, model=model, grid=grid, load=load):
            rows = []
            for w, p, a, m in grid:
                if (w, p, a) in keep:
                    mean = table.mean_metrics(source[(w, p, a)])
                    rows.append((table.score(model, mean, m, "default", True, load)[0],
                                 (w, p, a, m)))
            return max(rows)

        whole = best_of(cubes, cubes)
        subset = best_of(cubes, continuum)
        extrapolated = best_of(continuum, continuum)
        where = subset[1]
        by_cube = [100 * (c / v - 1) for c, v in zip(
            [table.score(model, cube, where[3], "default", True, load)[0]
             for cube in continuum[where[:3]]],
            [table.score(model, cube, where[3], "default", True, load)[0]
             for cube in cubes[where[:3]]], strict=True) if v > 0]
        left_out = sum((w, p, a) not in continuum for w, p, a, _ in grid)

        def fmt(entry, study=study):
            value, (w, p, a, m) = entry
            at = f"{w:.2f}/{p:.2f}" + (f"/{a:.1f}/{m:.0f}" if study.startswith("cs3") else "")
            return f"{value:.0f} @ {at}"
        change = 100 * (extrapolated[0] / subset[0] - 1)
        cubes_text = (f"{sum(by_cube) / len(by_cube):+.0f} ± {table._spread(by_cube):.0f}"
                      if by_cube else "n/a")
        print(f"| {study} | {fmt(whole)} | {fmt(subset)} | {fmt(extrapolated)} | "
              f"{change:+.0f} %; {cubes_text} | {left_out} of {len(grid)} |")
    used = [table.cache_key(key, seed, "solid", _calendering())
            for key in table.microstructures() for seed in table.SEEDS]
    ratios = [taus[n]["tau_continuum"] / taus[n]["tau_1um"] for n in used
              if taus[n]["tau_continuum"] is not None]
    print(f"\ntau continuum / tau 1 um over {len(ratios)} of {len(used)} cubes: "
          f"{min(ratios):.2f}-{max(ratios):.2f} (median {sorted(ratios)[len(ratios) // 2]:.2f});"
          f" microstructures left out ({len(refused)}): {refused}", file=sys.stderr)
    print(f"total {time.perf_counter() - start:.0f} s wall, "
          f"{time.process_time() - cpu_start:.0f} CPU-s", file=sys.stderr)


if __name__ == "__main__":
    main()
