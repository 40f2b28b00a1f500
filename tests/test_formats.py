"""Stable, versioned output formats (docs/formats.md): the same keys whatever the input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.cli.app import app

STUDY = """
[material]
design = {{ am_wt_frac = 0.92, porosity = 0.40, binder_adhesion = 0.5, mean_diameter_um = 3.0 }}
source_voxels = 32
voxel_um = 0.5
[study]
cube_voxels = [16, 24]
cubes_per_size = 3
n_bootstrap = 200
metric = "{metric}"
"""


@pytest.mark.parametrize("metric", ["tortuosity_factor", "effective_conductivity_S_m"])
def test_convergence_json_keys_do_not_depend_on_the_metric(tmp_path: Path, metric: str) -> None:
    spec = tmp_path / "study.toml"
    spec.write_text(STUDY.format(metric=metric))
    result = CliRunner().invoke(app, ["convergence", str(spec), "--dir", str(tmp_path / "s"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["schema_version"] == "microloop.convergence/1" and summary["metric"] == metric
    for row in summary["per_size"]:
        assert {"cube_voxels", "n_cubes", "mean", "sd", "ci95", "bias_vs_largest",
                "cubes_needed", "solve_cpu_s"} <= set(row)
        assert not any(key.startswith(("tau_", "metric_")) for key in row)
        low, high = row["ci95"]
        assert low <= row["mean"] <= high and row["mean"] > 0


@pytest.fixture(scope="module")
def real_result(tmp_path_factory) -> dict:
    """One real evaluation (simulator -> metrics -> PyBaMM) of a cheap design, as journaled."""
    from jobs.contract.spec import EvaluationSpec
    from jobs.evaluate import evaluate

    spec = EvaluationSpec.from_dict({
        "fidelity": {"n_cubes": 1, "cube_voxels": 24, "voxel_um": 1.0, "rel_tol": 1e-2},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0}, "seed": 3})
    params = {"am_wt_frac": 0.92, "porosity": 0.35, "binder_adhesion": 0.5,
              "mass_loading_mg_cm2": 15.0}
    result = evaluate(tmp_path_factory.mktemp("eval"), 0, params, spec)
    assert result.objective.feasible, result.objective.infeasible_reason
    return {"params": params, "result": result.to_dict()}


def _events(real_result: dict, trial_ids: list[int]) -> list[dict]:
    """Journal events: even ids complete with the real result, odd ones fail."""
    events = []
    for tid in trial_ids:
        t0 = 1_764_590_400.0 + 100 * tid     # 2025-12-01T12:00:00Z + 100 s per trial
        events += [{"event": "proposed", "trial_id": tid, "params": real_result["params"],
                    "time": t0},
                   {"event": "submitted", "trial_id": tid, "attempt": 1, "job_id": f"j{tid}",
                    "time": t0 + 1}]
        if tid % 2 == 0:
            events.append({"event": "completed", "trial_id": tid,
                           "result": real_result["result"], "time": t0 + 61})
        else:
            events.append({"event": "failed", "trial_id": tid, "reason": "job died",
                           "time": t0 + 5})
    return events


def test_trials_csv_columns_are_fixed_and_rows_carry_units_and_times(tmp_path: Path,
                                                                     real_result: dict) -> None:
    import csv
    import datetime as dt

    from hpc.campaign.trials import fold_events, write_trials_csv

    names = list(real_result["params"])
    headers = []
    for k, ids in enumerate([[1], [1, 0], [0, 1, 2]]):     # a failure first, then results
        folder = tmp_path / str(k)
        folder.mkdir()
        write_trials_csv(folder, fold_events(_events(real_result, ids)), names)
        with open(folder / "trials.csv") as handle:
            reader = csv.DictReader(handle)
            rows = {int(r["trial_id"]): r for r in reader}
            headers.append(reader.fieldnames)
    assert headers[0] == headers[1] == headers[2]
    good, bad = rows[0], rows[1]
    objective = real_result["result"]["objective"]
    assert good["objective_unit"] == objective["unit"] == "Wh/L"
    assert float(good["objective"]) == pytest.approx(objective["value"])
    assert good["reason"] == "" and good["stop_event"]        # PyBaMM's event, not a failure
    assert bad["reason"] == "job died" and bad["stop_event"] == ""
    submitted = dt.datetime.fromisoformat(good["submitted_utc"])
    finished = dt.datetime.fromisoformat(good["finished_utc"])
    assert submitted.utcoffset() == dt.timedelta(0)
    assert (finished - submitted).total_seconds() == pytest.approx(float(good["wall_s"])) == 60
