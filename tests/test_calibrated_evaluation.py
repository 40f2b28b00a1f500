"""A calibration file carried through the evaluation spec changes the scores; bad cell settings
fail at validation, before any evaluation runs."""

from __future__ import annotations

import pytest

from jobs.contract.spec import EvaluationSpec
from jobs.simulate import simulate_design

METRICS_MEAN = {
    "volume_fraction": {"pore": 0.35, "am": 0.55, "cbd": 0.10},
    "specific_surface_area_per_um": {"am_pore": 0.30, "am_cbd": 0.15},
    "cbd_coverage": 0.33,
    "tortuosity_factor": 2.5,
    "effective_conductivity_S_m": 0.5,
    "percolating": True,
}


def spec_with(cell: dict) -> dict:
    return {"objective": {"kind": "energy_density_Wh_L", "power_W": 10.0}, "cell": cell}


def test_calibration_in_the_spec_reaches_the_cell_model():
    plain = simulate_design(METRICS_MEAN, 80.0, spec_with({}))
    calibration = {"values": {"capacity_factor": 0.8}}
    calibrated = simulate_design(METRICS_MEAN, 80.0, spec_with({"calibration": calibration}))
    assert plain["feasible"] and calibrated["feasible"]
    ratio = calibrated["objective"]["energy_Wh"] / plain["objective"]["energy_Wh"]
    assert ratio == pytest.approx(0.8, rel=0.03)  # 80 % of the electrode active


def test_bad_packaging_key_and_bad_calibration_fail_at_spec_validation():
    with pytest.raises(ValueError, match=r"cell\.packaging: unknown Packaging4680 key.*can_wal_mm"):
        EvaluationSpec.from_dict(spec_with({"packaging": {"can_wal_mm": 0.5}}))
    with pytest.raises(ValueError, match=r"cell\.calibration: calibration\.values\.capacity_factor"):
        EvaluationSpec.from_dict(spec_with({"calibration": {"values": {"capacity_factor": 9.0}}}))


def test_report_says_whether_the_cell_model_was_calibrated(tmp_path):
    import json

    from hpc.analysis.report import describe_cell_model

    assert describe_cell_model({}) == "Chen2020 (uncalibrated)"
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"values": {"capacity_factor": 0.93}, "stderr": {"capacity_factor": 0.01},
                                "metadata": {"rmse_initial_V": 0.2066, "rmse_fitted_V": 0.0030}}))
    line = describe_cell_model({"parameter_set": "Chen2020", "calibration": str(path)})
    assert "calibrated" in line and "capacity_factor = 0.93 ± 0.01" in line
    assert "RMSE 206.6 -> 3.0 mV" in line
