"""Benchmark: the calibration fit with scipy least squares (ours) against PyBOP's optimisers.

One synthetic problem, the same for every method: a Chen2020 4680 cell (the design the cell model
uses by default) discharged at C/2 and 2C, simulated with known corrections plus 3 mV Gaussian
noise; three corrections fitted from the documented defaults. Reports wall time, model solves,
the fitted values against the truth and the final voltage RMSE, all in one run (ratios are what
to compare: the machine is shared).

    .venv/bin/python tests/benchmarks/bench_calibration.py [--skip-pybop]

PyBOP needs the `calibrate` extra (`pip install 'microloop-electrodes[calibrate]'`).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")

TRUTH = {"cathode_diffusivity_scale": 0.4, "contact_resistance_Ohm_cm2": 15.0,
         "capacity_factor": 0.93}
NOISE_V = 0.003
POINTS = 100


def problem():
    """Base parameter values of the built cell and the noisy measured curves."""
    import pybamm

    from kernels.cell.calibration import (
        DischargeCurve,
        _subsample,
        design_parameter_values,
        simulate_discharge,
    )
    from kernels.cell.model import ElectrodeDesign, get_cell_model

    pybamm.set_logging_level("ERROR")
    model = get_cell_model()
    design = ElectrodeDesign(porosity=0.335, am_volume_fraction=0.665, thickness_um=75.6,
                             tortuosity_factor=0.335**-0.5,
                             specific_surface_area_per_um=3 * 0.665 / 5.22,
                             effective_conductivity_S_m=0.18)
    values = design_parameter_values(model, design)
    capacity_Ah = model.nominal_capacity_Ah(design)
    rng = np.random.default_rng(0)
    curves = []
    for curve_id, c_rate in (("C/2", 0.5), ("2C", 2.0)):
        t = np.arange(0.0, 3600.0 / c_rate * 1.05, 10.0)
        current = np.full(t.size, c_rate * capacity_Ah)
        voltage = simulate_discharge(values, t, current_A=current, values=TRUTH)
        ok = ~np.isnan(voltage)
        keep = _subsample(int(ok.sum()), POINTS)
        curves.append(DischargeCurve(curve_id, t[ok][keep],
                                     voltage[ok][keep] + rng.normal(0, NOISE_V, keep.size),
                                     current_A=current[ok][keep]))
    return values, curves


def run_scipy(values, curves) -> dict:
    from kernels.cell.calibration import fit_discharge_curves

    started = time.perf_counter()
    result = fit_discharge_curves(values, curves, list(TRUTH), max_points_per_curve=POINTS)
    return {"method": "scipy least_squares + IDAKLU sensitivities",
            "wall_s": time.perf_counter() - started, "solves": result.n_solves,
            "values": result.values, "rmse_V": result.rmse_fitted_V}


def run_pybop(values, curves, optimiser: str, max_iterations: int) -> dict:
    """The same fit through PyBOP: one Problem per curve joined in a MetaProblem (sum of SSE)."""
    import pybamm
    import pybop

    from kernels.cell.calibration import CurveSimulator, _apply, fit_parameter, resolve_start

    start = resolve_start(list(TRUTH), None)
    problems = []
    for curve in curves:
        pv = _apply(values, {name: pybamm.InputParameter(name) for name in TRUTH})
        for name in TRUTH:
            spec = fit_parameter(name)
            pv.update({name: pybop.Parameter(
                bounds=(spec.lower, spec.upper), initial_value=start[name],
                # the same conditioning as ours: log for scales, the bounds' unit interval else
                transformation=(pybop.LogTransformation() if spec.log_scale
                                else pybop.UnitHyperCube(spec.lower, spec.upper)))},
                check_already_exists=False)
        pv.update({"Lower voltage cut-off [V]": 2.0}, check_already_exists=False)
        dataset = pybop.Dataset({"Time [s]": curve.time_s - curve.time_s[0],
                                 "Current [A]": curve.current_A,
                                 "Voltage [V]": curve.voltage_V})
        simulator = pybop.pybamm.Simulator(
            pybamm.lithium_ion.DFN({"contact resistance": "true"}), parameter_values=pv,
            protocol=dataset, solver=pybamm.IDAKLUSolver(on_failure="ignore"))
        problems.append(pybop.Problem(simulator, pybop.SumSquaredError(dataset)))
    meta = pybop.MetaProblem(*problems)
    if optimiser == "L-BFGS-B":
        optim = pybop.SciPyMinimize(meta, pybop.SciPyMinimizeOptions(
            method="L-BFGS-B", jac=True, maxiter=max_iterations))
    else:
        optim = getattr(pybop, optimiser)(meta, pybop.PintsOptions(
            max_iterations=max_iterations, max_unchanged_iterations=20))
    started = time.perf_counter()
    result = optim.run()
    wall_s = time.perf_counter() - started
    fitted = {k: float(np.asarray(v).ravel()[0]) for k, v in result.best_inputs.items()}
    # the RMSE of the PyBOP optimum, measured the same way as ours
    residuals = []
    for curve in curves:
        sim = CurveSimulator(values, curve, list(TRUTH), max_points=POINTS)
        simulated, _ = sim.voltage(fitted)
        residuals.append(simulated - sim.measured_V)
    rmse = float(np.sqrt(np.mean(np.square(np.concatenate(residuals)))))
    return {"method": f"pybop {optimiser}", "wall_s": wall_s,
            "solves": int(result.n_evaluations) * len(curves), "values": fitted, "rmse_V": rmse,
            "message": str(result.message)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-pybop", action="store_true")
    parser.add_argument("--pybop-iterations", type=int, default=60)
    args = parser.parse_args()
    values, curves = problem()
    runs = [run_scipy(values, curves)]
    if not args.skip_pybop:
        try:
            import pybop  # noqa: F401
        except ImportError:
            print("pybop is not installed: pip install 'microloop-electrodes[calibrate]'")
        else:
            runs.append(run_pybop(values, curves, "L-BFGS-B", args.pybop_iterations))
            runs.append(run_pybop(values, curves, "XNES", args.pybop_iterations))
    print(f"truth {TRUTH}, noise {NOISE_V * 1e3:.0f} mV, {len(curves)} curves x {POINTS} points")
    base = runs[0]["wall_s"]
    for run in runs:
        errors = {k: f"{100 * (run['values'][k] / TRUTH[k] - 1):+.1f}%" for k in TRUTH}
        print(f"{run['method']:45s} {run['wall_s']:7.1f} s ({run['wall_s'] / base:4.1f}x) "
              f"{run['solves']:5d} solves  RMSE {1e3 * run['rmse_V']:.2f} mV  errors {errors}"
              + (f"  ({run['message']})" if run.get("message") else ""))


if __name__ == "__main__":
    main()
