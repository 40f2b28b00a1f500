"""Calibration against a known truth: curves simulated with perturbed corrections plus noise
must be recovered; the calibration must reach kernels.cell.model; the command must run end to end.

Tolerances: with 3 mV noise on 2 curves x 60 points the fitted values land within 5 % of the
truth (contact resistance within 1 Ohm.cm2) and within 4 standard errors, and the RMSE falls
to within 30 % of the noise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kernels.cell.calibration import (
    FIT_PARAMETERS,
    Calibration,
    DischargeCurve,
    _subsample,
    design_parameter_values,
    fit_discharge_curves,
    resolve_start,
    simulate_discharge,
)

NOISE_V = 0.003
POINTS = 60


@pytest.fixture(scope="module")
def cell():
    """The default Chen2020 4680 cell: its model, a design and the whole-cell parameter values."""
    import pybamm

    from kernels.cell.model import ElectrodeDesign, get_cell_model

    pybamm.set_logging_level("ERROR")
    model = get_cell_model()
    design = ElectrodeDesign(porosity=0.335, am_volume_fraction=0.665, thickness_um=75.6,
                             tortuosity_factor=0.335**-0.5,
                             specific_surface_area_per_um=3 * 0.665 / 5.22,
                             effective_conductivity_S_m=0.18)
    return model, design, design_parameter_values(model, design)


def _measure(values, truth, seed, *, c_rates=(), powers_W=(), capacity_Ah=None, dt_s=20.0,
             temperature_C=None):
    """Synthetic measurements: the truth's voltage at `dt_s` spacing plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    curves = []
    drives = [("current", c * capacity_Ah, f"{c:g}C") for c in c_rates]
    drives += [("power", p, f"{p:g}W") for p in powers_W]
    for kind, level, name in drives:
        t = np.arange(0.0, 8 * 3600.0, dt_s)
        drive = np.full(t.size, level)
        kwargs = {"current_A": drive} if kind == "current" else {"power_W": drive}
        voltage = simulate_discharge(values, t, values=truth, temperature_C=temperature_C,
                                     **kwargs)
        ok = np.flatnonzero(~np.isnan(voltage))
        keep = ok[_subsample(ok.size, POINTS)]
        kwargs = {k: v[keep] for k, v in kwargs.items()}
        if temperature_C is not None:
            kwargs["temperature_C"] = np.full(keep.size, temperature_C)
        curves.append(DischargeCurve(name, t[keep],
                                     voltage[keep] + rng.normal(0, NOISE_V, keep.size), **kwargs))
    return curves


def _check_recovered(result, truth, absolute=None):
    absolute = absolute or {}
    for name, true_value in truth.items():
        fitted, stderr = result.values[name], result.stderr[name]
        tolerance = absolute.get(name, 0.05 * abs(true_value))
        assert abs(fitted - true_value) <= tolerance, (name, fitted, true_value)
        assert abs(fitted - true_value) <= 4 * stderr + 1e-3 * abs(true_value), (
            name, fitted, stderr, true_value)
    assert result.rmse_fitted_V < 1.3 * NOISE_V
    assert result.rmse_initial_V > 10 * result.rmse_fitted_V


@pytest.mark.slow
def test_recovers_diffusivity_resistance_and_capacity_from_two_rates(cell):
    model, design, values = cell
    truth = {"cathode_diffusivity_scale": 0.4, "contact_resistance_Ohm_cm2": 15.0,
             "capacity_factor": 0.93}
    curves = _measure(values, truth, seed=1, c_rates=(0.5, 2.0),
                      capacity_Ah=model.nominal_capacity_Ah(design))
    result = fit_discharge_curves(values, curves, list(truth), max_points_per_curve=POINTS)
    _check_recovered(result, truth, absolute={"contact_resistance_Ohm_cm2": 1.0})
    assert result.success
    assert set(result.calibration.values) == set(truth)
    # the final plunge (within tail_V = 0.1 V of each curve's lowest voltage) is left out
    n_points = result.calibration.metadata["n_points"]
    assert 0.85 * sum(c.time_s.size for c in curves) < n_points < sum(c.time_s.size for c in curves)
    assert all(c.measured_V.min() > 0.1 + m.voltage_V.min() - 0.02
               for c, m in zip(result.curves, curves, strict=True))
    corr = np.asarray(result.correlation)
    assert corr.shape == (3, 3)
    np.testing.assert_allclose(np.diag(corr), 1.0, atol=1e-9)


def test_recovers_kinetics_from_constant_power_curve_at_another_temperature(cell):
    _, _, values = cell
    truth = {"cathode_exchange_current_scale": 0.2, "capacity_factor": 1.05}
    curves = _measure(values, truth, seed=2, powers_W=(150.0,), dt_s=15.0, temperature_C=35.0)
    result = fit_discharge_curves(values, curves, list(truth), max_points_per_curve=POINTS,
                                  initial={"cathode_exchange_current_scale": 1.0})
    _check_recovered(result, truth)


def test_fixed_corrections_are_applied_and_carried(cell):
    model, design, values = cell
    truth = {"capacity_factor": 0.9, "contact_resistance_Ohm_cm2": 20.0}
    curves = _measure(values, truth, seed=3, c_rates=(1.0,),
                      capacity_Ah=model.nominal_capacity_Ah(design))
    result = fit_discharge_curves(values, curves, ["capacity_factor"],
                                  fixed={"contact_resistance_Ohm_cm2": 20.0},
                                  max_points_per_curve=POINTS)
    assert abs(result.values["capacity_factor"] - 0.9) < 0.01
    assert result.calibration.values["contact_resistance_Ohm_cm2"] == 20.0


def test_calibration_reaches_the_campaign_cell_model(cell):
    """kernels.cell.model with the calibration gives the energy the fitted model delivers."""
    from kernels.cell.model import get_cell_model

    model, design, values = cell
    corrections = {"cathode_diffusivity_scale": 0.5, "contact_resistance_Ohm_cm2": 10.0,
                   "capacity_factor": 0.9}
    calibrated = get_cell_model(calibration=Calibration(values=corrections).to_dict())
    power_W = 100.0
    result = calibrated.discharge_power(design, power_W)
    plain = model.discharge_power(design, power_W)
    t = np.arange(0.0, 3 * 3600.0, 5.0)
    voltage = simulate_discharge(values, t, power_W=np.full(t.size, power_W), values=corrections)
    energy_Wh = power_W * t[~np.isnan(voltage)][-1] / 3600.0
    assert result.feasible and plain.feasible
    assert result.energy_Wh == pytest.approx(energy_Wh, rel=0.01)
    assert result.energy_Wh < 0.93 * plain.energy_Wh


def _number(value) -> float:
    return float(value.evaluate()) if hasattr(value, "evaluate") else float(value)


def test_apply_scales_numbers_and_functions_and_resistance_per_area(cell):
    _, _, values = cell
    area_m2 = float(values["Electrode width [m]"]) * float(values["Electrode height [m]"])
    calibration = Calibration(values={
        "cathode_diffusivity_scale": 2.0, "cathode_exchange_current_scale": 3.0,
        "contact_resistance_Ohm_cm2": 12.0, "capacity_factor": 0.8})
    out = calibration.apply_to_parameter_values(values)
    assert out["Positive particle diffusivity [m2.s-1]"] == pytest.approx(
        2.0 * values["Positive particle diffusivity [m2.s-1]"])
    args = (1000.0, 25000.0, 50000.0, 298.15)
    j0 = "Positive electrode exchange-current density [A.m-2]"
    assert _number(out[j0](*args)) == pytest.approx(3.0 * _number(values[j0](*args)))
    assert out["Contact resistance [Ohm]"] == pytest.approx(12.0e-4 / area_m2)
    assert out["Electrode width [m]"] == pytest.approx(0.8 * values["Electrode width [m]"])
    assert calibration.model_options() == {"contact resistance": "true"}
    assert values["Electrode width [m]"] == pytest.approx(area_m2)   # input untouched


def test_half_cell_recovery_and_mAh_per_g_follow_the_calibration():
    """Lithium-metal half cell: the fit uses the cell model's half-cell options, and the
    calibrated model's mAh/g moves with the fitted corrections."""
    from kernels.cell.calibration import cell_model_options
    from kernels.cell.model import ElectrodeDesign, get_cell_model

    model = get_cell_model(half_cell=True)
    design = ElectrodeDesign(porosity=0.335, am_volume_fraction=0.665, thickness_um=75.6,
                             tortuosity_factor=1.728, specific_surface_area_per_um=0.382,
                             effective_conductivity_S_m=0.18)
    values = design_parameter_values(model, design)
    options = cell_model_options(model)
    assert options == {"working electrode": "positive"}
    truth = {"cathode_diffusivity_scale": 0.3, "capacity_factor": 0.9}
    rng = np.random.default_rng(5)
    curves = []
    for c_rate in (0.5, 2.0):
        t = np.arange(0.0, 3 * 3600.0 / c_rate, 20.0)
        current = np.full(t.size, c_rate * model.nominal_capacity_Ah(design))
        voltage = simulate_discharge(values, t, current_A=current, values=truth,
                                     model_options=options)
        ok = ~np.isnan(voltage)
        curves.append(DischargeCurve(f"{c_rate}C", t[ok],
                                     voltage[ok] + rng.normal(0, NOISE_V, ok.sum()),
                                     current_A=current[ok]))
    result = fit_discharge_curves(values, curves, list(truth), model_options=options,
                                  max_points_per_curve=POINTS)
    _check_recovered(result, truth)
    calibrated = get_cell_model(half_cell=True, calibration=result.calibration.to_dict())
    plain_mAh_g = model.discharge_c_rate(design, 0.5).capacity_mAh_g
    assert calibrated.discharge_c_rate(design, 0.5).capacity_mAh_g < 0.9 * plain_mAh_g


def test_half_cell_rejects_anode_corrections():
    from kernels.cell.pybamm_model import parameter_values

    half = parameter_values("Chen2020", True, 12e-6)
    curve = DischargeCurve("c", np.arange(10.0), np.linspace(4, 3.5, 10), current_A=np.ones(10))
    with pytest.raises(ValueError, match="anode_diffusivity_scale: a lithium-metal half cell"):
        fit_discharge_curves(half, [curve], ["anode_diffusivity_scale"],
                             model_options={"working electrode": "positive"})


def test_fit_arguments_are_checked(cell):
    _, _, values = cell
    with pytest.raises(ValueError, match="unknown fit parameter 'nope'; accepted: "
                       + ", ".join(FIT_PARAMETERS)):
        resolve_start(["nope"], None)
    with pytest.raises(ValueError, match="initial capacity_factor = 2.0 is outside"):
        resolve_start(["capacity_factor"], {"capacity_factor": 2.0})
    with pytest.raises(ValueError, match="not being fitted"):
        resolve_start(["capacity_factor"], {"cathode_diffusivity_scale": 1.0})
    curve = DischargeCurve("c", np.arange(10.0), np.linspace(4, 3.5, 10), current_A=np.ones(10))
    with pytest.raises(ValueError, match="both fitted and fixed"):
        fit_discharge_curves(values, [curve], ["capacity_factor"], fixed={"capacity_factor": 1})
    with pytest.raises(ValueError, match="curve ids must be unique"):
        fit_discharge_curves(values, [curve, curve], ["capacity_factor"])


def test_microloop_calibrate_end_to_end(cell, tmp_path):
    """The command: CSV + design JSON in, calibration file + plot out, usable by a campaign."""
    from typer.testing import CliRunner

    from hpc.cli.app import app
    from jobs.calibrate import load_calibration
    from jobs.discharge_data import write_csv

    model, design, values = cell
    truth = {"capacity_factor": 0.95}
    curves = _measure(values, truth, seed=4, c_rates=(1.0,),
                      capacity_Ah=model.nominal_capacity_Ah(design))
    write_csv(curves, tmp_path / "data.csv")
    (tmp_path / "design.json").write_text(json.dumps({"design": vars(design)}))
    runner = CliRunner()
    out = tmp_path / "cal.json"
    result = runner.invoke(app, [
        "calibrate", "--measured", str(tmp_path / "data.csv"), "--design",
        str(tmp_path / "design.json"), "--fit", "capacity_factor", "--out", str(out),
        "--plot", str(tmp_path / "fit.png"), "--max-points", "40", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.strip().splitlines()[-1])
    loaded = load_calibration(out)
    assert printed["values"] == loaded["values"]
    assert abs(loaded["values"]["capacity_factor"] - 0.95) < 0.01
    assert loaded["metadata"]["rmse_fitted_V"] < loaded["metadata"]["rmse_initial_V"]
    assert loaded["metadata"]["cell"]["parameter_set"] == "Chen2020"
    assert (tmp_path / "fit.png").stat().st_size > 10_000

    bad = runner.invoke(app, [
        "calibrate", "--measured", str(tmp_path / "data.csv"), "--design",
        str(tmp_path / "design.json"), "--fit", "diffusivity", "--out", str(out)])
    assert bad.exit_code == 2
    assert "--fit diffusivity: unknown parameter" in bad.output
