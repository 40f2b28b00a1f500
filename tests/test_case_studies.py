"""A reduced cs3 end to end: the energy-cell and power-cell campaigns (2 real evaluations each,
one 24^3 cube, in-process), a one-evaluation cs1 next to it, and the comparison: Ragone curves
of the three optima, the crossing power and the gain at 10 W. The recomputed curves must give
back each campaign's own objective at its own power, which ties the comparison to the runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hpc.analysis.case_studies import CASE_STUDIES, campaign_file, run_case_study
from hpc.analysis.report import find_crossing_W
from hpc.campaign.config import BUILTIN_CAMPAIGNS, load_campaign
from hpc.campaign.controller import Campaign
from hpc.cli.app import app

REDUCED = {
    "optimizer": {"budget": 2, "n_initial": 2, "max_concurrent": 1, "backend": "sobol"},
    "fidelity": {"n_cubes": 1, "cube_voxels": 24},
    "cell": {"ragone_powers_W": []},
    "resources": {"executor": "debug", "dask_workers": 0, "poll_interval_s": 0.1},
}
POWERS_W = (5.0, 10.0, 200.0, 800.0)


def test_every_case_study_campaign_is_a_valid_builtin():
    for name in BUILTIN_CAMPAIGNS:
        load_campaign(name)
    for members in CASE_STUDIES.values():
        for member in members:
            config = load_campaign(campaign_file(member))
            assert config.name == member
    cs1 = [load_campaign(campaign_file(m)).objective for m in CASE_STUDIES["cs1"]]
    assert sorted(o.c_rate for o in cs1) == [0.1, 0.5, 1.0, 2.0, 3.0]
    assert all(o.half_cell and o.kind == "capacity_mAh_g" for o in cs1)
    cs3 = [load_campaign(campaign_file(m)) for m in CASE_STUDIES["cs3"]]
    assert [c.objective.power_W for c in cs3] == [10.0, 200.0]
    assert all(len(c.space.bounds()) == 4 for c in cs3)
    with pytest.raises(ValueError, match="unknown built-in campaign"):
        campaign_file("cs9")


@pytest.mark.slow
def test_reduced_cs3_end_to_end_with_ragone_crossing_and_gain_over_cs1(tmp_path):
    cs1 = Campaign.create(load_campaign(campaign_file("cs1"), {**REDUCED, "optimizer": {
        **REDUCED["optimizer"], "budget": 1, "n_initial": 1}, "cell": {}}), tmp_path / "cs1" / "cs1")
    try:
        cs1.run()
    finally:
        cs1.close()

    summary = run_case_study("cs3", tmp_path / "cs3", REDUCED, powers_W=POWERS_W)

    for member in ("cs3", "cs3_power"):
        report = tmp_path / "cs3" / member / "report"
        assert (report / "summary.md").exists() and (report / "trace.png").exists()
        assert json.loads((report / "summary.json").read_text())["n_complete"] == 2
    assert set(summary["optima"]) == {"cs3", "cs3_power"}
    curves = summary["ragone"]
    energy, power, cs1_curve = (curves[k]["energy_density_Wh_L"] for k in curves)
    assert list(curves)[2].startswith("cs1") and summary["cs1_source"].endswith("cs1")
    # the recomputed curves give back each campaign's own objective at its own power
    i10, i200 = POWERS_W.index(10.0), POWERS_W.index(200.0)
    assert energy[i10] == pytest.approx(summary["optima"]["cs3"]["objective"], rel=1e-3)
    assert power[i200] == pytest.approx(summary["optima"]["cs3_power"]["objective"], rel=1e-3)
    grid_crossing = find_crossing_W(np.array(POWERS_W), np.array(energy), np.array(power))
    assert summary["crossing_power_grid_W"] == grid_crossing
    if grid_crossing is not None:       # bisection stays inside the swept interval around it
        k = int(np.searchsorted(np.array(POWERS_W), grid_crossing))
        assert POWERS_W[k - 1] <= summary["crossing_power_W"] <= POWERS_W[k]
    assert summary["gain_over_cs1_at_10W_percent"] == pytest.approx(
        100 * (energy[i10] - cs1_curve[i10]) / cs1_curve[i10])
    text = (tmp_path / "cs3" / "report" / "summary.md").read_text()
    assert "crossing" in text and "cs1 design at 10 W" in text
    assert (tmp_path / "cs3" / "report" / "cs3_ragone.png").stat().st_size > 1000

    # a second run finds both campaigns finished: no new trial, only the comparison again
    again = run_case_study("cs3", tmp_path / "cs3", REDUCED, powers_W=(10.0, 200.0))
    assert again["optima"] == summary["optima"]
    assert len(json.loads((tmp_path / "cs3" / "cs3" / "report" / "summary.json").read_text())[
        "best_designs"]) == 2


def test_unknown_case_study_is_refused_with_the_choices(tmp_path):
    result = CliRunner().invoke(app, ["case-study", "cs7", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "cs1, cs2, cs3" in result.output
