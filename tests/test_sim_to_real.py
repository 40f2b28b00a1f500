"""Sim-to-real on measured curves nobody here produced: the Ecker 2015 Kokam 7.5 A h cell at 1C
and 5C (tests/data/ecker2015/README.md). `microloop calibrate` fits PyBaMM's Ecker2015 set on one
rate and predicts the other; the uncalibrated set is checked against the published yardstick."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hpc.cli.app import app
from jobs.discharge_data import load_curves
from kernels.cell.calibration import parameter_set_values, predict_curves

DATA = Path(__file__).parent / "data" / "ecker2015"
CELL_AH = 7.5
CURRENT_A = {"ecker2015_kokam_1C.csv": 7.5, "ecker2015_kokam_5C.csv": 37.5}
FIT = ("cathode_exchange_current_scale", "capacity_factor")
# Measured on 2026-12-01 (docs/calibration.md): fitted on 1C, the 5C prediction is 21.9 mV worse
# than uncalibrated (78.8 -> 100.7 mV); fitted on 5C, the 1C prediction is 72.3 mV worse
# (26.0 -> 98.3 mV). The model's error depends on the rate, so a correction fitted at one rate
# does not carry to the other; the margins hold that finding to within ~8 mV of its value.
PREDICTION_MARGIN_V = {"ecker2015_kokam_5C": 0.030, "ecker2015_kokam_1C": 0.080}


def test_capacity_based_csv_becomes_time_from_the_start_of_discharge():
    (curve,) = load_curves([DATA / "ecker2015_kokam_1C.csv"],
                           {"ecker2015_kokam_1C.csv": 7.5})
    capacity_Ah = pd.read_csv(DATA / "ecker2015_kokam_1C.csv")["discharged_capacity_Ah"]
    np.testing.assert_allclose(curve.time_s, capacity_Ah.to_numpy() * 3600 / 7.5)
    assert curve.time_origin_s == 0.0 and np.all(curve.current_A == 7.5)
    with pytest.raises(ValueError, match="give its constant discharge current"):
        load_curves([DATA / "ecker2015_kokam_1C.csv"])


@pytest.mark.parametrize(("name", "published_V"), [("ecker2015_kokam_1C.csv", 0.033),
                                                   ("ecker2015_kokam_5C.csv", 0.091)])
def test_uncalibrated_ecker2015_reproduces_the_published_rmse(name, published_V):
    # independent yardstick: the data README's 33 / 91 mV, from PyBaMM's DFN in capacity space;
    # here through the calibrator's own path (time, interpolated drive, whole-cell scaling);
    # it gives 33.0 / 93.3 mV: at 5C it also scores the points past the simulated end (held at
    # the cut-off) and starts at the digitised -0.006 A h, which the README's check leaves out
    curves = load_curves([DATA / name], {name: CURRENT_A[name]})
    values = parameter_set_values("Ecker2015", CELL_AH)
    (check,) = predict_curves(values, curves, {"capacity_factor": 1.0}, tail_V=0.0)
    assert check.rmse_initial_V == pytest.approx(published_V, abs=0.003)


@pytest.mark.parametrize(("fitted", "predicted"), [("1C", "5C"), ("5C", "1C")])
def test_calibrate_on_one_rate_beats_uncalibrated_and_predicts_the_other(tmp_path, fitted,
                                                                         predicted):
    fit_file = DATA / f"ecker2015_kokam_{fitted}.csv"
    other_file = DATA / f"ecker2015_kokam_{predicted}.csv"
    out = tmp_path / "calibration.json"
    args = ["calibrate", "--parameter-set", "Ecker2015", "--cell-capacity-Ah", str(CELL_AH),
            "--measured", str(fit_file), "--predict", str(other_file), "--out", str(out)]
    for name, amps in CURRENT_A.items():
        args += ["--constant-current", f"{name}={amps}"]
    for name in FIT:
        args += ["--fit", name]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    calibration = json.loads(out.read_text())
    checks = {c["role"]: c for c in calibration["metadata"]["validation"]}
    fit, prediction = checks["fit"], checks["predict"]
    assert fit["curve"] == fit_file.stem and prediction["curve"] == other_file.stem
    assert fit["rmse_calibrated_V"] < 0.6 * fit["rmse_uncalibrated_V"]
    assert (prediction["rmse_calibrated_V"]
            <= prediction["rmse_uncalibrated_V"] + PREDICTION_MARGIN_V[other_file.stem])
    assert calibration["metadata"]["cell"] == {"parameter_set": "Ecker2015",
                                               "cell_capacity_Ah": CELL_AH}
    assert set(calibration["values"]) == set(FIT) and set(calibration["stderr"]) == set(FIT)


@pytest.mark.slow
def test_a_campaign_uses_the_calibration_and_its_report_says_what_moved(tmp_path):
    from test_transfer import _campaign

    from hpc.analysis.report import write_report
    from hpc.campaign.config import load_campaign
    from hpc.campaign.controller import Campaign
    from jobs.calibrate import calibrate

    name = "ecker2015_kokam_1C.csv"
    result = calibrate([DATA / name], None, list(FIT), tmp_path / "calibration.json",
                       parameter_set="Ecker2015", cell_capacity_Ah=CELL_AH,
                       constant_current_A={name: CURRENT_A[name]})
    objectives = {}
    for label, cell in (("calibrated", {"calibration": str(tmp_path / "calibration.json")}),
                        ("uncalibrated", {})):
        path = _campaign(tmp_path / f"{label}.toml", cell={"parameter_set": "Ecker2015", **cell})
        controller = Campaign.create(load_campaign(path), tmp_path / label)
        try:
            progress = controller.run(report=None)
        finally:
            controller.close()
        assert progress.complete == 2
        objectives[label] = {t.trial_id: t.objective for t in controller.trials.values()}
    # the same Sobol designs; at 10 W (~C/10 for the 4680 cell) energy is the capacity, so the
    # calibrated campaign scores them lower by the fitted active-area fraction (0.994)
    factor = result.values["capacity_factor"]
    for trial_id, value in objectives["calibrated"].items():
        assert value / objectives["uncalibrated"][trial_id] == pytest.approx(factor, abs=0.002)
    summary = write_report(tmp_path / "calibrated")
    text = summary.read_text()
    assert "## Calibration: what moved" in text
    rows = json.loads((summary.parent / "summary.json").read_text())["calibration"]
    assert {r["parameter"] for r in rows} == set(FIT)
    for row in rows:
        fitted = result.values[row["parameter"]]
        assert row["fitted"] == pytest.approx(fitted)
        assert row["stderr"] == pytest.approx(result.stderr[row["parameter"]])
        assert row["relative_change"] == pytest.approx(fitted - 1.0)
        assert f"{100 * (fitted - 1):+.1f} %" in text


def test_report_rows_say_what_moved_relative_to_the_parameter_set(tmp_path):
    from hpc.analysis.report import calibration_rows, describe_cell_model
    from kernels.cell.calibration import Calibration

    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(Calibration(
        values={"cathode_diffusivity_scale": 0.25, "contact_resistance_Ohm_cm2": 3.0},
        stderr={"cathode_diffusivity_scale": 0.05, "contact_resistance_Ohm_cm2": 0.4},
        metadata={"cell": {"parameter_set": "Ecker2015"}}).to_dict()))
    rows = {r["parameter"]: r for r in calibration_rows({"calibration": str(path)})}
    assert rows["cathode_diffusivity_scale"]["relative_change"] == pytest.approx(-0.75)
    assert rows["contact_resistance_Ohm_cm2"]["relative_change"] is None   # added, no base
    assert rows["contact_resistance_Ohm_cm2"]["stderr"] == 0.4
    line = describe_cell_model({"parameter_set": "Chen2020", "calibration": str(path)})
    assert "fitted on the Ecker2015 parameter set, applied to Chen2020" in line
    assert calibration_rows({}) == []


def test_a_dollar_in_a_curve_id_does_not_crash_the_fit_plot(tmp_path):
    """Curve ids come from file names; matplotlib would parse `$\\frac{$` as broken mathtext."""
    hostile = tmp_path / "run$\\frac{$.csv"
    hostile.write_bytes((DATA / "ecker2015_kokam_1C.csv").read_bytes())
    out = tmp_path / "calibration.json"
    result = CliRunner().invoke(app, [
        "calibrate", "--parameter-set", "Ecker2015", "--cell-capacity-Ah", str(CELL_AH),
        "--measured", str(hostile), "--constant-current", f"{hostile.name}=7.5",
        "--fit", "capacity_factor", "--out", str(out), "--plot", str(tmp_path / "fit.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fit.png").stat().st_size > 0
