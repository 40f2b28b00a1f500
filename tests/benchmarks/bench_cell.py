"""Benchmark of the 4680 cell model: build, first solve, re-solve, a 12-point Ragone serially and
over a Dask LocalCluster of 2 workers, and the symbolic-mesh choice against rebuilding per design.

    OMP_NUM_THREADS=1 PYBAMM_DISABLE_TELEMETRY=true python tests/benchmarks/bench_cell.py

Prints a table; the numbers recorded in docs/cell-model.md come from this script. Timings on a
shared machine are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

REPEATS = 3
POWERS_W = [5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 1000]
DESIGN = {
    "porosity": 0.335, "am_volume_fraction": 0.665, "thickness_um": 75.6,
    "tortuosity_factor": 0.335**-0.5, "specific_surface_area_per_um": 3 * 0.665 / 5.22,
    "effective_conductivity_S_m": 0.18,
}


def warm_worker() -> float:
    """Build this process's cell model (Dask: once per worker, through client.run)."""
    from kernels.cell.model import get_cell_model

    start = time.perf_counter()
    get_cell_model().warm_up()
    return time.perf_counter() - start


def energy_density_Wh_L(design: dict, power_W: float) -> tuple[float, float]:
    """One Dask task: an input dict in, scalars out (never a Solution or a Simulation).

    Returns (Wh/L, seconds spent solving in the worker) so overhead and CPU contention show."""
    from kernels.cell.model import ElectrodeDesign, get_cell_model

    start = time.perf_counter()
    result = get_cell_model().discharge_power(ElectrodeDesign(**design), power_W)
    return result.energy_density_Wh_L, time.perf_counter() - start


def rebuild_per_design(design, model) -> tuple[float, float]:
    """The alternative: a fixed-mesh DFN rebuilt with this design's thicknesses and radius."""
    import pybamm

    from kernels.cell.pybamm_model import parameter_values

    start = time.perf_counter()
    values = parameter_values("Chen2020", False, 12e-6, c_p_max_mol_m3=model.c_p_max_override_mol_m3)
    inputs = model.inputs(design)
    roll = model.jelly_roll(design)
    values.update(inputs, check_already_exists=False)
    values.update({"Power function [W]": 50.0 / roll.electrode_area_m2})
    sim = pybamm.Simulation(
        pybamm.lithium_ion.DFN({"operating mode": "power", "calculate discharge energy": "true"}),
        parameter_values=values, solver=pybamm.IDAKLUSolver(on_failure="ignore"))
    solution = sim.solve([0, 3.0e5])
    energy = solution["Discharge energy [W.h]"].entries[-1] * roll.electrode_area_m2
    return time.perf_counter() - start, energy


def fixed_mesh_ragone_s(design, model) -> float:
    """Ragone time on a fixed-mesh DFN built for this one design (power the only input)."""
    import pybamm

    from kernels.cell.pybamm_model import parameter_values

    values = parameter_values("Chen2020", False, 12e-6, c_p_max_mol_m3=model.c_p_max_override_mol_m3)
    values.update(model.inputs(design), check_already_exists=False)
    values.update({"Power function [W]": "[input]"})
    sim = pybamm.Simulation(
        pybamm.lithium_ion.DFN({"operating mode": "power", "calculate discharge energy": "true"}),
        parameter_values=values, solver=pybamm.IDAKLUSolver(
            on_failure="ignore", output_variables=["Discharge energy [W.h]", "Voltage [V]"]))
    area = model.jelly_roll(design).electrode_area_m2
    sim.solve([0, 3.0e5], inputs={"Power function [W]": 50.0 / area})  # first solve not timed
    start = time.perf_counter()
    for power in POWERS_W:
        try:
            sim.solve([0, 3.0e5], inputs={"Power function [W]": power / area})
        except Exception:  # noqa: BLE001  (collapse at high power, as in the model)
            pass
    return time.perf_counter() - start


def main() -> None:
    from dask.distributed import Client, LocalCluster

    from kernels.cell.model import ElectrodeDesign, get_cell_model

    rows: list[tuple[str, str]] = []
    start = time.perf_counter()
    import pybamm  # noqa: F401  (import cost is not build cost)

    rows.append(("import pybamm", f"{time.perf_counter() - start:.2f} s"))
    model = get_cell_model()
    design = ElectrodeDesign(**DESIGN)
    start = time.perf_counter()
    model._sim("power")
    rows.append(("build (power DFN, symbolic mesh)", f"{time.perf_counter() - start:.2f} s"))

    start = time.perf_counter()
    model.discharge_power(design, 50.0)
    rows.append(("first solve (50 W)", f"{time.perf_counter() - start:.3f} s"))

    designs = [ElectrodeDesign(0.25 + 0.02 * k, 0.55 + 0.01 * k, 50.0 + 10 * k, 1.5 + 0.2 * k,
                               0.3 + 0.05 * k, 1.0) for k in range(8)]
    times = []
    for other in designs:
        start = time.perf_counter()
        model.discharge_power(other, 50.0)
        times.append(time.perf_counter() - start)
    resolve = statistics.median(times)
    rows.append(("re-solve, new design (median of 8)", f"{resolve:.3f} s"))

    rebuild = [rebuild_per_design(other, model) for other in designs[:3]]
    rebuild_s = statistics.median(t for t, _ in rebuild)
    rows.append(("rebuild fixed-mesh DFN + solve per design", f"{rebuild_s:.3f} s"))
    symbolic_energy = [model.discharge_power(other, 50.0).energy_Wh for other in designs[:3]]
    worst = max(abs(s - e) / e for s, (_, e) in zip(symbolic_energy, rebuild, strict=True))
    rows.append(("symbolic vs rebuilt mesh, energy difference", f"{100 * worst:.2f} %"))

    serial_times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        serial = [r.energy_density_Wh_L for r in model.ragone(design, POWERS_W)]
        serial_times.append(time.perf_counter() - start)
    serial_s = min(serial_times)
    rows.append((f"Ragone, 12 points, serial (best of {REPEATS})", f"{serial_s:.2f} s"))

    fixed = fixed_mesh_ragone_s(design, model)
    rows.append(("Ragone, 12 points, fixed mesh (only power an input)", f"{fixed:.2f} s"))
    rows.append(("symbolic / fixed mesh cost per Ragone", f"{serial_s / fixed:.2f} x"))

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        builds = client.run(warm_worker)
        rows.append(("Dask worker import + build + warm solves (client.run)",
                     ", ".join(f"{v:.2f} s" for v in builds.values())))
        parallel_times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            futures = client.map(energy_density_Wh_L, [DESIGN] * len(POWERS_W), POWERS_W,
                                 pure=False)
            pairs = client.gather(futures)
            parallel_times.append(time.perf_counter() - start)
            parallel = [value for value, _ in pairs]
            task_s = sum(seconds for _, seconds in pairs)
    parallel_s = min(parallel_times)
    rows.append((f"Ragone, 12 points, Dask LocalCluster 2 workers (best of {REPEATS})",
                 f"{parallel_s:.2f} s"))
    rows.append(("  sum of in-worker solve times (last run)", f"{task_s:.2f} s"))
    rows.append(("Dask speed-up over serial", f"{serial_s / parallel_s:.2f} x"))
    same = all(abs(a - b) <= 1e-6 * max(1.0, abs(a)) for a, b in zip(serial, parallel, strict=True))
    rows.append(("Dask results identical to serial", str(same)))

    rows.append(("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on "
                 f"{os.cpu_count()} CPUs"))
    width = max(len(name) for name, _ in rows)
    print(f"{'quantity':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("\nRagone (W -> Wh/L):", ", ".join(f"{p}: {e:.0f}" for p, e in zip(POWERS_W, serial,
                                                                           strict=True)))


if __name__ == "__main__":
    main()
