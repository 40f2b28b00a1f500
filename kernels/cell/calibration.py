"""Calibrate the PyBaMM cell model to measured discharge curves (sim-to-real).

A built cell rarely matches the simulated one: its cathode diffuses slower, its kinetics are
off, its tabs add resistance, some capacity is lost to formation. Rather than refit the whole
parameter set we fit a few named, bounded corrections (`FIT_PARAMETERS`) by least squares over
all measured curves at once, and carry them as a `Calibration` that any `pybamm.ParameterValues`
(the campaign's cell model included) can take with `apply_to_parameter_values`.

Pure: parameter values + curves as arrays in, a `FitResult` out; no files. The optimiser is
`scipy.optimize.least_squares` (trust-region reflective, bounds) with the exact Jacobian from
IDAKLU's forward sensitivities: on the benchmark in `tests/benchmarks/bench_calibration.py` it
reached the truth in fewer solves than PyBOP's optimisers and gives the Jacobian for the
uncertainty for free (docs/calibration.md has the numbers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernels.cell.corrections import (  # noqa: F401  (re-exported: the calibration API)
    CALIBRATION_SCHEMA,
    FIT_PARAMETERS,
    Calibration,
    FitParameter,
    _apply,
    fit_parameter,
    required_model_options,
)

MIN_POINTS_PER_CURVE = 5


@dataclass
class DischargeCurve:
    """One measured discharge: arrays of equal length, time from any origin, discharge current or
    power positive (PyBaMM's sign convention). Exactly one of `current_A` / `power_W` drives it.
    `time_origin_s`: when the discharge started, if before the first row (a curve digitised from
    capacity starts at capacity 0, not at its first point); None: at the first row."""

    curve_id: str
    time_s: np.ndarray
    voltage_V: np.ndarray
    current_A: np.ndarray | None = None
    power_W: np.ndarray | None = None
    temperature_C: np.ndarray | None = None
    time_origin_s: float | None = None

    @property
    def drive(self) -> str:
        return "current" if self.current_A is not None else "power"

    def validate(self) -> None:
        """ValueError naming the curve, the column and what is wrong with it."""
        where = f"curve {self.curve_id!r}"
        if (self.current_A is None) == (self.power_W is None):
            raise ValueError(f"{where}: give exactly one of current_A or power_W as the drive")
        columns = {"time_s": self.time_s, "voltage_V": self.voltage_V, "current_A": self.current_A,
                   "power_W": self.power_W, "temperature_C": self.temperature_C}
        n = None
        for name, column in columns.items():
            if column is None:
                continue
            array = np.asarray(column)
            if array.ndim != 1:
                raise ValueError(f"{where}: {name} must be one-dimensional, got shape {array.shape}")
            if n is None:
                n = array.size
            if array.size != n:
                raise ValueError(f"{where}: {name} has {array.size} values but time_s has {n}")
            bad = np.flatnonzero(~np.isfinite(array.astype(float)))
            if bad.size:
                raise ValueError(f"{where}: {name} is missing or not finite at row {bad[0]} "
                                 f"({bad.size} rows in all)")
        if n is None or n < MIN_POINTS_PER_CURVE:
            raise ValueError(f"{where}: has {n or 0} data rows, at least {MIN_POINTS_PER_CURVE} "
                             "are needed")
        steps = np.diff(np.asarray(self.time_s, dtype=float))
        if np.any(steps <= 0):
            row = int(np.flatnonzero(steps <= 0)[0]) + 1
            raise ValueError(f"{where}: time_s must increase strictly; row {row} goes from "
                             f"{self.time_s[row - 1]} to {self.time_s[row]} s (sort the rows or "
                             "split the file into one curve per discharge)")
        voltage = np.asarray(self.voltage_V, dtype=float)
        if voltage.min() <= 0.5 or voltage.max() >= 6.0:
            hint = " (millivolts? give volts)" if voltage.max() >= 6.0 else ""
            raise ValueError(f"{where}: voltage_V spans {voltage.min():.4g}..{voltage.max():.4g}, "
                             f"expected a Li-ion cell voltage in volts within (0.5, 6){hint}")
        drive = np.asarray(self.current_A if self.current_A is not None else self.power_W, float)
        name = "current_A" if self.current_A is not None else "power_W"
        if np.mean(drive) <= 0:
            raise ValueError(f"{where}: {name} averages {np.mean(drive):.4g}, expected a "
                             "discharge, positive by PyBaMM's convention (negate a cycler's "
                             "negative discharge current)")
        if self.temperature_C is not None:
            temperature = np.asarray(self.temperature_C, dtype=float)
            if temperature.min() < -60 or temperature.max() > 120:
                hint = " (kelvin? give degrees Celsius)" if temperature.max() > 200 else ""
                raise ValueError(f"{where}: temperature_C spans {temperature.min():.4g}.."
                                 f"{temperature.max():.4g}, expected degrees Celsius within "
                                 f"[-60, 120]{hint}")


@dataclass
class CurveFit:
    """Per-curve result, on the (sub-sampled) times the fit used."""

    curve_id: str
    time_s: np.ndarray
    measured_V: np.ndarray
    initial_V: np.ndarray       # simulated with the starting values
    fitted_V: np.ndarray        # simulated with the fitted values
    rmse_initial_V: float
    rmse_fitted_V: float


@dataclass
class FitResult:
    calibration: Calibration
    values: dict[str, float]
    stderr: dict[str, float]
    correlation: np.ndarray
    rmse_initial_V: float
    rmse_fitted_V: float
    curves: list[CurveFit]
    n_solves: int
    wall_s: float
    success: bool
    message: str


def _end_of_fit(voltage_V: np.ndarray, tail_V: float) -> int:
    """Rows of a curve the fit uses: all but its final stretch within `tail_V` of the lowest
    voltage. That last plunge to the cut-off is where the DFN stiffens or fails (a cathode
    surface at full lithiation) and where a residual jumps as the simulated end moves past a
    data point; the knee before it still fixes capacity and rate capability."""
    if tail_V <= 0:
        return voltage_V.size
    above = np.flatnonzero(voltage_V > voltage_V.min() + tail_V)
    if above.size == 0:
        return voltage_V.size
    return max(int(above[-1]) + 1, min(MIN_POINTS_PER_CURVE, voltage_V.size))


def _subsample(n: int, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` rows, evenly spread, keeping the first and last."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(int))


class CurveSimulator:
    """One curve's DFN simulation, built once: the measured drive as an interpolant of time, the
    fitted corrections as PyBaMM inputs. `voltage()` solves for new values (0.05–0.5 s)."""

    def __init__(
        self,
        parameter_values: Any,
        curve: DischargeCurve,
        fit: Sequence[str],
        *,
        model_options: Mapping[str, str] | None = None,
        fixed: Mapping[str, float] | None = None,
        initial_soc: float | None = None,
        max_points: int = 200,
        tail_V: float = 0.0,
    ) -> None:
        import pybamm

        curve.validate()
        self.curve = curve
        self.fit = list(fit)
        origin_s = float(curve.time_s[0]) if curve.time_origin_s is None else curve.time_origin_s
        if origin_s > float(curve.time_s[0]):
            raise ValueError(f"curve {curve.curve_id!r}: time_origin_s {origin_s} is after its "
                             f"first row ({curve.time_s[0]} s)")
        time_s = np.asarray(curve.time_s, dtype=float) - origin_s
        voltage = np.asarray(curve.voltage_V, dtype=float)
        n_fit = _end_of_fit(voltage, tail_V)
        keep = _subsample(n_fit, max_points)
        self.time_s = time_s[keep]
        self.measured_V = voltage[keep]

        values = parameter_values.copy()
        if initial_soc is not None:
            # before the cut-offs move: PyBaMM defines SoC between them
            values.set_initial_state(float(initial_soc))
        corrections: dict[str, Any] = dict(fixed or {})
        corrections.update({name: pybamm.InputParameter(name) for name in self.fit})
        values = _apply(values, corrections)
        drive = curve.current_A if curve.current_A is not None else curve.power_W
        interpolant = pybamm.Interpolant(time_s, np.asarray(drive, dtype=float), pybamm.t,
                                         interpolator="linear")
        updates: dict[str, Any] = {}
        if curve.drive == "current":
            updates["Current function [A]"] = interpolant
        else:
            updates["Power function [W]"] = interpolant
        if curve.temperature_C is not None:
            kelvin = float(np.mean(curve.temperature_C)) + 273.15   # isothermal at the mean
            updates["Ambient temperature [K]"] = kelvin
            updates["Initial temperature [K]"] = kelvin
        # let the simulation follow the data a little past its own voltage window
        updates["Lower voltage cut-off [V]"] = min(
            float(values["Lower voltage cut-off [V]"]), float(voltage.min()) - 0.05)
        updates["Upper voltage cut-off [V]"] = max(
            float(values["Upper voltage cut-off [V]"]), float(self.measured_V.max()) + 0.1)
        values.update(updates, check_already_exists=False)

        options = dict(model_options or {})
        anode = [n for n in list(self.fit) + list(fixed or {}) if n.startswith("anode_")]
        if anode and options.get("working electrode") == "positive":
            raise ValueError(f"{', '.join(anode)}: a lithium-metal half cell has no graphite "
                             "anode; fit cathode corrections, contact_resistance_Ohm_cm2 or "
                             "capacity_factor")
        options.update(required_model_options(list(self.fit) + list(fixed or {})))
        if curve.drive == "power":
            options["operating mode"] = "power"
        else:
            options.pop("operating mode", None)
        model = pybamm.lithium_ion.DFN(options=options)
        from kernels.cell.pybamm_model import quiet_sundials_errors

        quiet_sundials_errors()
        self.simulation = pybamm.Simulation(
            model, parameter_values=values, solver=pybamm.IDAKLUSolver(on_failure="ignore"))
        self.n_solves = 0

    def voltage(self, values: Mapping[str, float], sensitivities: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """Voltage at the curve's times, and d voltage / d value (n_times x n_fit) if asked.

        Past the simulation's end (it hit the cut-off, or failed) the last voltage is held, so
        a cell that empties too early is penalised smoothly instead of raising."""
        import pybamm

        inputs = {name: float(values[name]) for name in self.fit}
        self.n_solves += 1
        n = self.time_s.size
        try:
            solution = self.simulation.solve(
                t_eval=[0.0, float(self.time_s[-1])], t_interp=self.time_s, inputs=inputs,
                calculate_sensitivities=self.fit if sensitivities else False)
            voltage_var = solution["Voltage [V]"]
            sim_t = np.asarray(solution.t, dtype=float).ravel()
            simulated = np.asarray(voltage_var.entries, dtype=float).ravel()
            columns = [np.asarray(voltage_var.sensitivities[name], dtype=float).ravel()
                       for name in self.fit] if sensitivities else []
        except (pybamm.SolverError, ValueError, RuntimeError):
            sim_t, simulated, columns = np.zeros(0), np.zeros(0), []
        # a solver that lost the solution returns NaN from there on (seen in power mode with
        # sensitivities): treat the first non-finite value as the end of the simulation
        finite = np.isfinite(simulated)
        for column in columns:
            finite &= np.isfinite(column)
        end = int(np.argmin(finite)) if not finite.all() else simulated.size
        sim_t, simulated, columns = sim_t[:end], simulated[:end], [c[:end] for c in columns]
        if simulated.size == 0:   # failed at the start: a flat, clearly wrong curve
            out = np.full(n, float(self.measured_V.min()) - 0.5)
            return out, (np.zeros((n, len(self.fit))) if sensitivities else None)
        # the solution holds the requested times up to its end, then the event time itself;
        # past the end the last (cut-off) voltage is held, which keeps the residual continuous
        out = np.interp(self.time_s, sim_t, simulated)
        if not sensitivities:
            return out, None
        jacobian = np.zeros((n, len(self.fit)))
        inside = self.time_s <= sim_t[-1]
        for j, column in enumerate(columns):
            jacobian[inside, j] = np.interp(self.time_s[inside], sim_t, column)
        return out, jacobian


# The optimiser works in coordinates x in [1, 2]: each parameter's bounds mapped linearly (log
# bounds for scales) and shifted by 1. Comparable coordinates make one trust radius fit all, and
# keeping |x| >= 1 matters: scipy's initial trust radius and its xtol test are relative to |x|,
# so a start near x = 0 (a scale of 1 in plain log space) would stall the fit at once.
def _warp(name: str, value: float) -> float:
    return math.log(value) if fit_parameter(name).log_scale else float(value)


def _span(name: str) -> float:
    spec = fit_parameter(name)
    return _warp(name, spec.upper) - _warp(name, spec.lower)


def _to_x(name: str, value: float) -> float:
    return 1.0 + (_warp(name, value) - _warp(name, fit_parameter(name).lower)) / _span(name)


def _from_x(name: str, x: float) -> float:
    warped = _warp(name, fit_parameter(name).lower) + (x - 1.0) * _span(name)
    return math.exp(warped) if fit_parameter(name).log_scale else float(warped)


def _dvalue_dx(name: str, value: float) -> float:
    return _span(name) * (value if fit_parameter(name).log_scale else 1.0)


def resolve_start(fit: Sequence[str], initial: Mapping[str, float] | None) -> dict[str, float]:
    """Starting values: the given ones, else the documented defaults; checked against the bounds.

    The trust-region method needs a start strictly inside the bounds and moves slowly off a
    bound, so a start on a bound (contact resistance 0) is moved 1 % of the range inwards."""
    if not fit:
        raise ValueError("fit: name at least one parameter; accepted: " + ", ".join(FIT_PARAMETERS))
    if len(set(fit)) != len(fit):
        raise ValueError(f"fit: parameters repeated in {list(fit)}")
    start = {}
    for name in fit:
        spec = fit_parameter(name)
        value = float((initial or {}).get(name, spec.default))
        if not spec.lower <= value <= spec.upper:
            raise ValueError(f"initial {name} = {value} is outside [{spec.lower}, {spec.upper}]")
        x = min(max(_to_x(name, value), 1.01), 1.99)    # 1 % of the (log) range inwards
        start[name] = value if x == _to_x(name, value) else _from_x(name, x)
    for name in initial or {}:
        if name not in fit:
            raise ValueError(f"initial value given for {name!r}, which is not being fitted "
                             f"({', '.join(fit)})")
    return start


def _rmse(residual: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(residual)))) if residual.size else math.nan


def fit_discharge_curves(
    parameter_values: Any,
    curves: Sequence[DischargeCurve],
    fit: Sequence[str],
    *,
    model_options: Mapping[str, str] | None = None,
    initial: Mapping[str, float] | None = None,
    fixed: Mapping[str, float] | None = None,
    initial_soc: float | None = None,
    max_points_per_curve: int = 200,
    max_iterations: int = 30,
    tail_V: float = 0.1,
    metadata: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Least squares fit of the named corrections to all curves at once, within their bounds.

    `progress(done, most)` is called after each model evaluation (all curves solved once):
    `most` = `max_iterations` + 1 (the start), an upper bound since the fit may stop earlier.

    `parameter_values` describe the cell as built (all design quantities as numbers). Residuals are
    measured minus simulated voltage at up to `max_points_per_curve` evenly spread times per curve,
    so long and short curves weigh alike; each curve's final plunge within `tail_V` of its lowest
    voltage is left out (see `_end_of_fit`). Uncertainty: the standard error from the Jacobian at the
    optimum, sqrt(diag((J^T J)^-1) s^2) with s^2 = SSE / (n - p), mapped back from log space."""
    from scipy.optimize import least_squares

    started = time.perf_counter()
    if not curves:
        raise ValueError("curves: at least one measured discharge curve is needed")
    ids = [c.curve_id for c in curves]
    if len(set(ids)) != len(ids):
        raise ValueError(f"curves: curve ids must be unique, got {ids}")
    fit = list(fit)
    start = resolve_start(fit, initial)
    for name in fixed or {}:
        if name in fit:
            raise ValueError(f"{name} is both fitted and fixed")
        fit_parameter(name)
    simulators = [
        CurveSimulator(parameter_values, curve, fit, model_options=model_options, fixed=fixed,
                       initial_soc=initial_soc, max_points=max_points_per_curve,
                       tail_V=tail_V)
        for curve in curves
    ]
    measured = np.concatenate([s.measured_V for s in simulators])
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    evaluations = [0]

    def evaluate(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = np.asarray(x, dtype=float).tobytes()
        if key not in cache:
            values = {name: _from_x(name, xi) for name, xi in zip(fit, x, strict=True)}
            parts = [s.voltage(values, sensitivities=True) for s in simulators]
            simulated = np.concatenate([p[0] for p in parts])
            jac_values = np.vstack([p[1] for p in parts])
            # chain rule into the fitted coordinates
            scale = np.array([_dvalue_dx(n, values[n]) for n in fit])
            cache.clear()
            cache[key] = (simulated - measured, jac_values * scale)
            evaluations[0] += 1
            if progress is not None:
                progress(min(evaluations[0], max_iterations + 1), max_iterations + 1)
        return cache[key]

    x0 = np.array([_to_x(name, start[name]) for name in fit])
    lower = np.array([_to_x(n, fit_parameter(n).lower) for n in fit])
    upper = np.array([_to_x(n, fit_parameter(n).upper) for n in fit])
    initial_residual = evaluate(x0)[0].copy()
    initial_split = np.split(initial_residual + measured,
                             np.cumsum([s.time_s.size for s in simulators])[:-1])
    result = least_squares(
        lambda x: evaluate(x)[0], x0, jac=lambda x: evaluate(x)[1], bounds=(lower, upper),
        method="trf", x_scale=1.0, max_nfev=max_iterations, xtol=1e-4, ftol=1e-6, gtol=1e-8)
    residual, jacobian = evaluate(result.x)
    values = {name: _from_x(name, xi) for name, xi in zip(fit, result.x, strict=True)}

    n, p = residual.size, len(fit)
    s2 = float(residual @ residual) / max(n - p, 1)
    u, singular, vt = np.linalg.svd(jacobian, full_matrices=False)
    tiny = singular.max(initial=0.0) * 1e-12
    inv_s2 = np.where(singular > tiny, 1.0 / np.where(singular > tiny, singular, 1.0) ** 2, np.inf)
    with np.errstate(invalid="ignore"):
        covariance_x = (vt.T * inv_s2) @ vt * s2
    sd_x = np.sqrt(np.abs(np.diag(covariance_x)))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance_x / np.outer(sd_x, sd_x)
    stderr = {
        name: float(_dvalue_dx(name, values[name]) * sd_x[i])
        for i, name in enumerate(fit)
    }

    simulated_split = np.split(residual + measured,
                               np.cumsum([s.time_s.size for s in simulators])[:-1])
    curve_fits = [
        CurveFit(s.curve.curve_id, s.time_s, s.measured_V, initial_split[i], simulated_split[i],
                 _rmse(initial_split[i] - s.measured_V), _rmse(simulated_split[i] - s.measured_V))
        for i, s in enumerate(simulators)
    ]
    rmse_initial, rmse_fitted = _rmse(initial_residual), _rmse(residual)
    wall_s = time.perf_counter() - started
    n_solves = sum(s.n_solves for s in simulators)
    info = {
        "method": "scipy.optimize.least_squares (trf, IDAKLU sensitivities)",
        "initial_values": start,
        "fixed": dict(fixed or {}),
        "initial_soc": initial_soc,
        "tail_V": tail_V,
        "rmse_initial_V": rmse_initial,
        "rmse_fitted_V": rmse_fitted,
        "rmse_per_curve_V": {c.curve_id: c.rmse_fitted_V for c in curve_fits},
        "n_curves": len(curves),
        "n_points": int(n),
        "n_solves": n_solves,
        "wall_s": wall_s,
        "correlation": [[float(v) if math.isfinite(v) else None for v in row]
                        for row in correlation],
        "converged": bool(result.success),
        "message": str(result.message),
    }
    info.update(dict(metadata or {}))
    all_values = {**{k: float(v) for k, v in (fixed or {}).items()}, **values}
    calibration = Calibration(values=all_values, stderr=stderr, metadata=info)
    return FitResult(
        calibration=calibration, values=values, stderr=stderr, correlation=correlation,
        rmse_initial_V=rmse_initial, rmse_fitted_V=rmse_fitted, curves=curve_fits,
        n_solves=n_solves, wall_s=wall_s, success=bool(result.success),
        message=str(result.message))


def simulate_discharge(
    parameter_values: Any,
    time_s: np.ndarray,
    *,
    current_A: np.ndarray | None = None,
    power_W: np.ndarray | None = None,
    values: Mapping[str, float] | None = None,
    model_options: Mapping[str, str] | None = None,
    initial_soc: float | None = None,
    temperature_C: float | None = None,
) -> np.ndarray:
    """Terminal voltage at `time_s` for the given drive and corrections (NaN past the cut-off),
    isothermal at `temperature_C` (default: the parameter set's ambient temperature).

    What the fit compares against, exposed for synthetic data, plots and checks."""
    values = dict(values or {})
    time_s = np.asarray(time_s, dtype=float)
    # a placeholder voltage inside every Li-ion window, so the cut-offs stay the parameter set's
    curve = DischargeCurve(
        "simulated", time_s, np.full(time_s.size, 3.7), current_A=current_A, power_W=power_W,
        temperature_C=None if temperature_C is None else np.full(time_s.size, temperature_C))
    simulator = CurveSimulator(parameter_values, curve, list(values), model_options=model_options,
                               initial_soc=initial_soc, max_points=time_s.size)
    solution = simulator.simulation.solve(
        t_eval=[0.0, float(simulator.time_s[-1])], t_interp=simulator.time_s,
        inputs={k: float(v) for k, v in values.items()})
    sim_t = np.asarray(solution.t, dtype=float).ravel()
    voltage = np.asarray(solution["Voltage [V]"].entries, dtype=float).ravel()
    # the solution ends with the event time itself, which is not one of `time_s`
    return np.where(simulator.time_s <= sim_t[-1], np.interp(simulator.time_s, sim_t, voltage),
                    np.nan)


def design_parameter_values(cell_model: Any, design: Any) -> Any:
    """The PyBaMM parameter values of one built cell, as numbers: the cell model's parameter
    set with the design's quantities and the whole 4680 electrode area, so measured amps,
    watts and ohms apply as they are. Uncalibrated: the fit starts from the model the
    campaigns use. `cell_model` is a `kernels.cell.model.CellModel`, `design` an `ElectrodeDesign`."""
    from kernels.cell.pybamm_model import parameter_values

    reason = design.infeasible_reason()
    if reason is not None:
        raise ValueError(f"design: cannot calibrate an infeasible design: {reason}")
    # the campaign model's own capacity basis (c_max from the AM density, kernels.cell.options)
    values = parameter_values(cell_model.parameter_set, cell_model.half_cell,
                              cell_model.packaging.separator_thickness_um * 1e-6,
                              c_p_max_mol_m3=cell_model.c_p_max_override_mol_m3)
    values.update(cell_model.inputs(design), check_already_exists=False)
    values.update({"Electrode width [m]": cell_model.jelly_roll(design).electrode_area_m2},
                  check_already_exists=False)
    return values


def cell_model_options(cell_model: Any) -> dict[str, str]:
    """The DFN options the campaign's cell model uses, so the fit calibrates the same physics."""
    return {"working electrode": "positive"} if cell_model.half_cell else {}


def parameter_set_values(parameter_set: str, cell_capacity_Ah: float) -> Any:
    """A PyBaMM parameter set as the whole cell of `cell_capacity_Ah`: its electrode width scaled
    so its nominal capacity is the cell's, so measured amps apply as they are.

    Why: PyBaMM's sets describe one electrode pair (Ecker2015: one 0.156 A h layer of a 7.5 A h
    pouch cell); a whole cell is that layer repeated, which a wider electrode models exactly."""
    import pybamm

    if parameter_set not in pybamm.parameter_sets.keys():
        raise ValueError(f"parameter_set {parameter_set!r} is not a PyBaMM parameter set; known: "
                         f"{', '.join(sorted(pybamm.parameter_sets.keys()))}")
    if not (math.isfinite(cell_capacity_Ah) and cell_capacity_Ah > 0):
        raise ValueError(f"cell_capacity_Ah {cell_capacity_Ah!r}: expected a positive number")
    values = pybamm.ParameterValues(parameter_set)
    nominal_Ah = float(values["Nominal cell capacity [A.h]"])
    factor = cell_capacity_Ah / nominal_Ah
    values.update({"Electrode width [m]": float(values["Electrode width [m]"]) * factor,
                   "Nominal cell capacity [A.h]": float(cell_capacity_Ah)})
    return values


def predict_curves(
    parameter_values: Any,
    curves: Sequence[DischargeCurve],
    values: Mapping[str, float],
    *,
    model_options: Mapping[str, str] | None = None,
    initial_soc: float | None = None,
    max_points_per_curve: int = 200,
    tail_V: float = 0.1,
) -> list[CurveFit]:
    """Curves the fit did not see, simulated uncalibrated (`initial_V`: every correction at its
    neutral value, i.e. the parameter set as it is) and calibrated (`fitted_V`: `values`), on the
    same points and with the same tail rule as the fit, so their RMSEs compare with its own."""
    names = list(values)
    neutral = {name: (0.0 if fit_parameter(name).kind == "areal_resistance" else 1.0)
               for name in names}
    out = []
    for curve in curves:
        simulator = CurveSimulator(parameter_values, curve, names, model_options=model_options,
                                   initial_soc=initial_soc, max_points=max_points_per_curve,
                                   tail_V=tail_V)
        before, _ = simulator.voltage(neutral)
        after, _ = simulator.voltage(values)
        out.append(CurveFit(curve.curve_id, simulator.time_s, simulator.measured_V, before, after,
                            _rmse(before - simulator.measured_V),
                            _rmse(after - simulator.measured_V)))
    return out
