"""Which modelling assumption decides which case-study answer (issue 15's sensitivity table).

A fixed grid of procedural designs over the case-study boxes (hpc/campaigns/cs1, cs2, cs3) is
characterised ONCE (phase fractions, areas, coverage, pore tortuosity, measured particle size,
and the effective conductivity for each conductivity set), cached as JSON in
tests/benchmarks/data/cell_sensitivity_metrics.json. Then, for each modelling choice changed
alone from the defaults, every design is scored and the grid's argmax and objective reported:

    cs1      half cell, mAh/g at 3C, 10 mg/cm^2, over AM wt fraction x porosity
    cs2      4680, Wh/L at 10 W and at 200 W, 20 mg/cm^2, same grid
    cs3      4680, Wh/L at 10 W and at 200 W, over wt fraction x porosity x adhesion x loading

    OMP_NUM_THREADS=1 PYBAMM_DISABLE_TELEMETRY=true python tests/benchmarks/bench_cell_sensitivity.py

Writes a markdown table to stdout and each choice's best design per study to
tests/benchmarks/data/cell_sensitivity_results.json. Each microstructure is characterised on
three independent 48^3 cubes at 1 um (seeds 0, 1, 2; native solver), once with the CBD as the
simulator's solid and once as the nanoporous domain (CellModelOptions.cbd_volume). A design is
scored on the mean of its cubes' metrics (as jobs.simulate scores a campaign's designs); the
grid's argmax is then scored on each cube alone, so every cell also gives the cube-to-cube
spread: "obj ± s" is the objective's standard deviation over the cubes at that optimum and
"(+c ± d %)" the change against the defaults' optimum, cube by cube (mean ± standard deviation
over the three cubes). The table ranks assumptions, it does not certify optima.

The generator's calendering model (kernels.structure.procedural: "rearrange", round particles,
by default since 2026-12-03; "flatten", oblate particles, before) changes the structure, so the
"calendering: flatten" row is scored on cubes of its own, characterised with the solid CBD. The
flattened cubes' cache keys are those of the runs before the option existed; the rearranged
cubes' keys end in the model's name.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
METRICS_FILE = DATA / "cell_sensitivity_metrics.json"
RESULTS_FILE = DATA / "cell_sensitivity_results.json"

CUBE_VOXELS = 48
VOXEL_UM = 1.0
SEEDS = (0, 1, 2)
CBD_PHASES = ("solid", "nanoporous_domain")  # CellModelOptions.cbd_volume
# (CBD phase, generator calendering model) of the cubes characterised per microstructure: the
# default model with both CBD phases, the other model with the solid CBD
STRUCTURES = (("solid", "rearrange"), ("nanoporous_domain", "rearrange"), ("solid", "flatten"))
GRID_WT = (0.80, 0.86, 0.92, 0.97)
GRID_POROSITY = (0.25, 0.33, 0.42, 0.50)
CS3_WT = (0.80, 0.88, 0.97)
CS3_POROSITY = (0.25, 0.375, 0.50)
CS3_ADHESION = (0.0, 1.0)
CS3_LOADING = (8.0, 20.0, 40.0)
CS1_LOADING, CS2_LOADING = 10.0, 20.0
# conductivity sets (sigma_AM, sigma_CBD) in S/m for the transport solve; contrasts <= 1.2e4
SIGMA_SETS = {
    "default": None,  # kernels.cell.cbd_model defaults
    "sigma_am_legacy": (0.18, None),
    "sigma_cbd_legacy": (None, 10.0),
    "legacy": (0.18, 10.0),
}


def _sigma_values(name: str) -> tuple[float, float]:
    from kernels.cell.cbd_model import DEFAULT_CONDUCTIVITY_AM_S_M, DEFAULT_CONDUCTIVITY_CBD_S_M

    pair = SIGMA_SETS[name] or (None, None)
    return (pair[0] if pair[0] is not None else DEFAULT_CONDUCTIVITY_AM_S_M,
            pair[1] if pair[1] is not None else DEFAULT_CONDUCTIVITY_CBD_S_M)


def microstructures() -> list[tuple[float, float, float]]:
    keys = {(w, p, 0.5) for w in GRID_WT for p in GRID_POROSITY}
    keys |= {(w, p, a) for w in CS3_WT for p in CS3_POROSITY for a in CS3_ADHESION}
    return sorted(keys)


def characterise(key: tuple[float, float, float], seed: int, cbd_phase: str,
                 calendering: str) -> dict:
    """Metrics of one procedural cube, with sigma_eff for every conductivity set (solid CBD) or
    the default set (the CBD as a nanoporous domain, placed, conducting and ion-permeable)."""
    from kernels.cell.options import CellModelOptions
    from kernels.metrics.particle_size import am_particle_radius_um
    from kernels.metrics.volume import (
        effective_conductivity_S_m,
        electrolyte_volume_fraction,
        specific_surface_areas,
        tortuosity_factor,
        volume_fractions,
    )
    from kernels.structure.procedural import RHO_CBD_G_CM3, ManufacturingParams, generate_structure

    wt, porosity, adhesion = key
    domain = CellModelOptions(cbd_volume=cbd_phase).cbd_domain()
    density = RHO_CBD_G_CM3 if domain is None else domain.domain_density_g_cm3
    volume = generate_structure(ManufacturingParams(wt, porosity, adhesion), CUBE_VOXELS,
                                VOXEL_UM, seed=seed, cbd_density_g_cm3=density,
                                calendering=calendering)
    areas, coverage = specific_surface_areas(volume, VOXEL_UM)
    tau, percolating = tortuosity_factor(volume, 0, "native", 1e-3, cbd_domain=domain)
    sets = SIGMA_SETS if domain is None else {"default": None}
    sigmas = {name: effective_conductivity_S_m(volume, 0, *_sigma_values(name), backend="native",
                                               rel_tol=1e-3) for name in sets}
    out = {"am_wt_frac": wt, "porosity_recipe": porosity, "binder_adhesion": adhesion,
           "seed": seed, "cbd_volume": cbd_phase, "calendering": calendering,
           "volume_fraction": volume_fractions(volume), "specific_surface_area_per_um": areas,
           "cbd_coverage": coverage, "tortuosity_factor": tau if percolating else None,
           "percolating": percolating, "am_particle_radius_um": am_particle_radius_um(
               volume, VOXEL_UM), "effective_conductivity_S_m_by_set": sigmas}
    if domain is not None:
        out["electrolyte_volume_fraction"] = electrolyte_volume_fraction(volume, domain)
    return out


def cache_key(key: tuple[float, float, float], seed: int, cbd_phase: str,
              calendering: str) -> str:
    if calendering == "flatten":  # the only model before the option: the keys of those runs
        return json.dumps([*key, seed, cbd_phase])
    return json.dumps([*key, seed, cbd_phase, calendering])


def load_or_characterise() -> dict[str, dict]:
    cached = json.loads(METRICS_FILE.read_text()) if METRICS_FILE.exists() else {}
    changed = False
    for key in microstructures():
        for cbd_phase, calendering in STRUCTURES:
            for seed in SEEDS:
                name = cache_key(key, seed, cbd_phase, calendering)
                if name not in cached:
                    start = time.process_time()
                    cached[name] = characterise(key, seed, cbd_phase, calendering)
                    changed = True
                    print(f"characterised {key} seed {seed} {cbd_phase} {calendering} in "
                          f"{time.process_time() - start:.1f} CPU-s", file=sys.stderr)
    if changed:
        DATA.mkdir(exist_ok=True)
        METRICS_FILE.write_text(json.dumps(cached, indent=1, sort_keys=True))
    return cached


def mean_metrics(cubes: list[dict]) -> dict:
    """The cubes' mean metrics, as jobs.characterise.aggregate forms them: every number averaged,
    transport over the cubes whose pore phase percolates (None when none does)."""
    def mean(values):
        return sum(values) / len(values)

    through = [c for c in cubes if c["percolating"] and c["tortuosity_factor"] is not None]
    out = {
        "volume_fraction": {k: mean([c["volume_fraction"][k] for c in cubes])
                            for k in cubes[0]["volume_fraction"]},
        "specific_surface_area_per_um": {
            k: mean([c["specific_surface_area_per_um"][k] for c in cubes])
            for k in cubes[0]["specific_surface_area_per_um"]},
        "cbd_coverage": mean([c["cbd_coverage"] for c in cubes]),
        "am_particle_radius_um": mean([c["am_particle_radius_um"] for c in cubes]),
        "percolating": bool(through),
        "tortuosity_factor": mean([c["tortuosity_factor"] for c in through]) if through else None,
        "effective_conductivity_S_m_by_set": {
            k: mean([c["effective_conductivity_S_m_by_set"][k] for c in (through or cubes)])
            for k in cubes[0]["effective_conductivity_S_m_by_set"]},
    }
    if "electrolyte_volume_fraction" in cubes[0]:
        out["electrolyte_volume_fraction"] = mean([c["electrolyte_volume_fraction"]
                                                   for c in cubes])
    return out


def choices() -> dict[str, tuple[dict, dict, str]]:
    """name -> (CellModelOptions changes, Packaging4680 changes, conductivity set); the
    cbd_volume change also selects the cubes characterised with that CBD phase."""
    from kernels.cell.options import CellModelOptions

    legacy = CellModelOptions.legacy().to_dict()
    # the issue's tortuosities: anode 6 at eps 0.25, separator 3.5 at eps 0.47, as exponents
    b_anode = 1.0 - math.log(6.0) / math.log(0.25)
    b_separator = 1.0 - math.log(3.5) / math.log(0.47)
    return {
        "defaults": ({}, {}, "default"),
        "radius: 3phi/a_total (no particle size)": ({"_no_measured_radius": True}, {}, "default"),
        "radius: legacy 3phi/a_eff": ({"radius_rule": "legacy_3phi_over_a_eff"}, {}, "default"),
        "blocking 0": ({"cbd_blocking": 0.0}, {}, "default"),
        "blocking 1": ({"cbd_blocking": 1.0}, {}, "default"),
        "capacity: Chen2020 c_max": ({"capacity_basis": "parameter_set"}, {}, "default"),
        "sigma_AM 0.18 (legacy)": ({}, {}, "sigma_am_legacy"),
        "sigma_CBD 10 (solid CBD)": ({}, {}, "sigma_cbd_legacy"),
        "N/P 1.0": ({}, {"np_ratio": 1.0}, "default"),
        "N/P 1.2": ({}, {"np_ratio": 1.2}, "default"),
        "anode tau 6": ({"anode_bruggeman": round(b_anode, 3)}, {}, "default"),
        "separator tau 3.5": ({"separator_bruggeman": round(b_separator, 3)}, {}, "default"),
        "thermal lumped": ({"thermal": "lumped"}, {}, "default"),
        "CBD as nanoporous domain": ({"cbd_volume": "nanoporous_domain"}, {}, "default"),
        "calendering: flatten (oblate particles, the default until 2026-12-03)": (
            {"_calendering": "flatten"}, {}, "default"),
        # the model before issue 15: its cell-model choices on its (flattened) structures
        "all legacy": ({**legacy, "_no_measured_radius": True, "_calendering": "flatten"}, {},
                       "legacy"),
    }


def design_of(metrics: dict, loading_mg_cm2: float, sigma_set: str, measured_radius: bool):
    from kernels.cell.model import design_from_metrics, thickness_from_mass_loading_um

    flat = {**metrics, "effective_conductivity_S_m":
            metrics["effective_conductivity_S_m_by_set"][sigma_set]}
    if not measured_radius:
        flat.pop("am_particle_radius_um")
    phi_am = metrics["volume_fraction"]["am"]
    return design_from_metrics(flat, thickness_from_mass_loading_um(loading_mg_cm2, phi_am))


def score(model, metrics, loading, sigma_set, measured_radius, load) -> tuple[float, str]:
    """(objective, reason) of one design; a design out of the documented ranges is named."""
    try:
        design = design_of(metrics, loading, sigma_set, measured_radius)
    except ValueError as error:
        return 0.0, f"out of range: {error}"
    if load[0] == "c_rate":
        result = model.discharge_c_rate(design, load[1])
        return (result.capacity_mAh_g or 0.0), result.reason
    result = model.discharge_power(design, load[1])
    return result.energy_density_Wh_L, result.reason


def _spread(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def main() -> None:
    from kernels.cell.model import CellModel, CellModelOptions, Packaging4680
    from kernels.structure.procedural import DEFAULT_CALENDERING

    start = time.perf_counter()
    cpu_start = time.process_time()
    metrics = load_or_characterise()
    cubes = {(key, structure): [metrics[cache_key(key, seed, *structure)] for seed in SEEDS]
             for key in microstructures() for structure in STRUCTURES}
    means = {k: mean_metrics(v) for k, v in cubes.items()}
    print(f"metrics ready after {time.perf_counter() - start:.0f} s", file=sys.stderr)
    studies = {
        "cs1 3C mAh/g": (True, ("c_rate", 3.0),
                         [(w, p, 0.5, CS1_LOADING) for w in GRID_WT for p in GRID_POROSITY]),
        "cs2 10 W Wh/L": (False, ("power", 10.0),
                          [(w, p, 0.5, CS2_LOADING) for w in GRID_WT for p in GRID_POROSITY]),
        "cs2 200 W Wh/L": (False, ("power", 200.0),
                           [(w, p, 0.5, CS2_LOADING) for w in GRID_WT for p in GRID_POROSITY]),
        "cs3 10 W Wh/L": (False, ("power", 10.0),
                          [(w, p, a, m) for w in CS3_WT for p in CS3_POROSITY
                           for a in CS3_ADHESION for m in CS3_LOADING]),
        "cs3 200 W Wh/L": (False, ("power", 200.0),
                           [(w, p, a, m) for w in CS3_WT for p in CS3_POROSITY
                            for a in CS3_ADHESION for m in CS3_LOADING]),
    }
    results: dict[str, dict] = {}
    for name, (option_changes, packaging_changes, sigma_set) in choices().items():
        option_changes = dict(option_changes)
        measured_radius = not option_changes.pop("_no_measured_radius", False)
        calendering = option_changes.pop("_calendering", DEFAULT_CALENDERING)
        options = CellModelOptions.from_dict({**CellModelOptions().to_dict(), **option_changes})
        phase = (options.cbd_volume, calendering)
        packaging = Packaging4680.from_dict(packaging_changes)
        results[name] = {}
        for study, (half_cell, load, grid) in studies.items():
            model = CellModel("Chen2020", half_cell=half_cell, packaging=packaging, options=options)
            rows = []
            for w, p, a, m in grid:
                value, reason = score(model, means[((w, p, a), phase)], m, sigma_set,
                                      measured_radius, load)
                rows.append({"am_wt_frac": w, "porosity": p, "binder_adhesion": a,
                             "mass_loading_mg_cm2": m, "objective": value, "reason": reason})
            best = max(rows, key=lambda row: row["objective"])
            key = (best["am_wt_frac"], best["porosity"], best["binder_adhesion"])
            per_cube = [score(model, cube, best["mass_loading_mg_cm2"], sigma_set,
                              measured_radius, load)[0] for cube in cubes[(key, phase)]]
            results[name][study] = {"best": best, "per_cube_objective": per_cube,
                                    "n_designs": len(rows),
                                    "n_feasible": sum(row["objective"] > 0 for row in rows)}
        print(f"{name}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
    RESULTS_FILE.write_text(json.dumps(results, indent=1))

    header = "| choice | " + " | ".join(studies) + " |"
    print(header)
    print("|" + "---|" * (len(studies) + 1))
    base = results["defaults"]
    for name, by_study in results.items():
        cells = []
        for study, entry in by_study.items():
            best = entry["best"]
            where = f"{best['am_wt_frac']:.2f}/{best['porosity']:.2f}"
            if study.startswith("cs3"):
                where += f"/{best['binder_adhesion']:.1f}/{best['mass_loading_mg_cm2']:.0f}"
            ref = base[study]["best"]["objective"]
            cube_spread = _spread(entry["per_cube_objective"])
            if name == "defaults" or ref <= 0:
                change = ""
            else:
                by_cube = [100 * (v / r - 1) for v, r in zip(
                    entry["per_cube_objective"], base[study]["per_cube_objective"], strict=True)
                    if r > 0]
                change = (f" ({100 * (best['objective'] / ref - 1):+.0f} %; cubes "
                          f"{sum(by_cube) / len(by_cube):+.0f} ± {_spread(by_cube):.0f})")
            cells.append(f"{best['objective']:.0f} ± {cube_spread:.0f}{change} @ {where}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s wall, "
          f"{time.process_time() - cpu_start:.0f} CPU-s", file=sys.stderr)


if __name__ == "__main__":
    main()
