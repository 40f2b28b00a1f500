"""A multi-objective campaign end to end: cs3_pareto (Wh/L at 10 W and at 200 W) reduced to 4
real evaluations of one 24^3 cube, in-process. Each design is discharged once per power; the
200 W objective must equal the Ragone sweep's own 200 W discharge (an independent path through
the cell model) and, by the Ragone physics, not exceed the 10 W one; the optimiser is told
vectors; the report draws the front."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from bayes.multiobjective import non_dominated
from hpc.analysis.report import write_report
from hpc.campaign.config import ConfigError, load_campaign
from hpc.campaign.controller import Campaign
from hpc.campaign.folder import OPTIMIZER_STATE
from jobs.contract.result import EvaluationResult, Objective

REDUCED = {
    "optimizer": {"budget": 4, "n_initial": 3, "max_concurrent": 1, "mode": "sync",
                  "options": {"num_restarts": 2, "raw_samples": 64, "mc_samples": 32}},
    "fidelity": {"n_cubes": 1, "cube_voxels": 24},
    "cell": {"ragone_powers_W": [200.0]},
    "resources": {"executor": "debug", "dask_workers": 0, "poll_interval_s": 0.1},
}


def test_cs3_pareto_campaign_tells_vectors_and_reports_the_front(tmp_path):
    config = load_campaign("cs3_pareto", REDUCED)
    assert config.bayes_optimizer()[0] == "botorch_pareto"
    campaign = Campaign.create(config, tmp_path / "cs3_pareto")
    try:
        campaign.run()
    finally:
        campaign.close()
    results = [EvaluationResult.from_dict(json.loads(p.read_text()))
               for p in sorted((tmp_path / "cs3_pareto").glob("trials/*/result.json"))]
    assert len(results) == 4
    for result in results:
        (at_200,) = result.outcomes
        assert at_200.kind == "energy_density_Wh_L"
        (sweep,) = result.cell.ragone
        if at_200.feasible:
            assert at_200.value == pytest.approx(sweep.energy_density_Wh_L, rel=1e-9)
            assert result.objective.feasible and at_200.value <= result.objective.value
        else:
            assert not sweep.feasible and result.told()[:2] == (None, False)
    # trials.csv: every objective has its own named column with its unit; the 200 W one holds
    # the Ragone sweep's own 200 W discharge (empty where that design cannot deliver 200 W)
    with open(tmp_path / "cs3_pareto" / "trials.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = {int(row["trial_id"]): row for row in reader}
    header = reader.fieldnames
    assert header.index("energy_density_Wh_L_at_200W") < header.index("am_wt_frac")
    for result in results:
        row, (sweep,) = rows[result.trial_id], result.cell.ragone
        assert row["objective_unit"] == row["energy_density_Wh_L_at_200W_unit"] == "Wh/L"
        if sweep.feasible:
            assert float(row["energy_density_Wh_L_at_200W"]) == pytest.approx(
                sweep.energy_density_Wh_L, rel=1e-9)
            assert float(row["objective"]) == pytest.approx(result.objective.value, rel=1e-12)
        else:
            assert row["energy_density_Wh_L_at_200W"] == ""
    saved = json.loads((tmp_path / "cs3_pareto" / OPTIMIZER_STATE).read_text())
    state = saved["state"]
    assert state["backend"] == "botorch_pareto"
    told = [o["value"] for o in state["observations"]]
    assert len(told) == len(saved["told"]) >= 3 and all(v is None or len(v) == 2 for v in told)

    write_report(tmp_path / "cs3_pareto")
    report = tmp_path / "cs3_pareto" / "report"
    summary = json.loads((report / "summary.json").read_text())
    front = np.array([row["values"] for row in summary["pareto_front"]])
    assert len(front) >= 1 and non_dominated(front).all()
    assert (report / "pareto_front.png").stat().st_size > 1000
    assert "## Pareto front" in (report / "summary.md").read_text()
    # the outcomes survive the JSON round trip; a single-objective result keeps its old shape
    assert EvaluationResult.from_dict(results[0].to_dict()).outcomes == results[0].outcomes
    assert "outcomes" not in dataclasses.replace(results[0], outcomes=()).to_dict()


def test_infeasible_outcome_is_told_as_infeasible_not_as_zero():
    feasible = Objective("energy_density_Wh_L", 500.0, "Wh/L", True)
    cannot = Objective("energy_density_Wh_L", None, "Wh/L", False, "cannot deliver 200 W")

    def result(*outcomes):  # told() reads the objective and the outcomes only
        return EvaluationResult(trial_id=0, params={}, objective=feasible, metrics=None,
                                cell=None, objective_spread=None, timings_s=None,
                                training_envelope=None, outcomes=outcomes)

    value, ok, reason = result(cannot).told()
    assert value is None and not ok and "cannot deliver 200 W" in reason
    assert result(Objective("energy_density_Wh_L", 300.0, "Wh/L", True)).told() == (
        [500.0, 300.0], True, "")
    assert result().told() == (500.0, True, "")  # one objective: a scalar, as before


def test_outcomes_need_the_botorch_backend_and_name_their_fields():
    with pytest.raises(ConfigError, match="need optimizer.backend = 'botorch'"):
        load_campaign("cs3_pareto", {"optimizer": {"backend": "sobol"}})
    with pytest.raises(ConfigError, match="exactly one of min or max"):
        load_campaign("cs3_pareto", {"objective": {"constraints": [
            {"kind": "specific_energy_Wh_kg", "power_W": 10.0}]}})
    with pytest.raises(ConfigError, match="cannot be warm-started"):
        load_campaign("cs3_pareto", {"warm_start": {"campaigns": ["elsewhere"]}})
    constrained = load_campaign("cs3_pareto", {"objective": {"constraints": [
        {"kind": "specific_energy_Wh_kg", "power_W": 10.0, "min": 250.0}]}})
    assert constrained.bayes_optimizer() == (
        "botorch_pareto", {"n_objectives": 2, "outcome_constraints": [[">=", 250.0]]})
    spec = constrained.to_spec_dict()["objective"]
    assert spec["constraints"][0]["min"] == 250.0

