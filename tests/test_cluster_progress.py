"""ETA on `microloop report` and `microloop calibrate` (issue 21): in batch mode (stderr not a
terminal, e.g. a SLURM job's log) one timestamped line per step with its count and the time
left at the mean step time so far; on a terminal a bar with the time left."""

from __future__ import annotations

import json
import re

from test_calibration import _measure, cell  # noqa: F401  (the module-scoped cell fixture)
from test_hardening import tiny_config
from typer.testing import CliRunner

from hpc.analysis.report import REPORT_STAGES
from hpc.campaign.controller import Campaign
from hpc.cli.app import app

STEP = re.compile(r"^\d{4}-\d\d-\d\dT\S+ (?P<label>.+?): (?P<what>.+) \((?P<elapsed>[\d.]+) s, "
                  r"step (?P<k>\d+)/(?P<n>\d+)(, ETA (?P<eta>\d+:\d\d:\d\d))?\)$")


def _steps(output: str) -> list[re.Match]:
    return [m for m in map(STEP.match, output.splitlines()) if m]


def test_report_logs_each_stage_with_its_count_and_eta(tmp_path):
    folder = tmp_path / "c"
    Campaign.create(tiny_config(), folder).close()   # a campaign with nothing run yet
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    steps = _steps(result.output)
    assert [m["what"] for m in steps] == list(REPORT_STAGES)
    assert [int(m["k"]) for m in steps] == [1, 2, 3, 4]
    assert all(int(m["n"]) == 4 and m["eta"] for m in steps)
    assert steps[-1]["eta"] == "0:00:00"
    elapsed = [float(m["elapsed"]) for m in steps]
    assert elapsed == sorted(elapsed)


def test_calibrate_logs_each_model_evaluation_with_an_eta(cell, tmp_path):  # noqa: F811
    from jobs.discharge_data import write_csv

    model, design, values = cell
    curves = _measure(values, {"capacity_factor": 0.95}, seed=4, c_rates=(1.0,),
                      capacity_Ah=model.nominal_capacity_Ah(design))
    write_csv(curves, tmp_path / "data.csv")
    (tmp_path / "design.json").write_text(json.dumps({"design": vars(design)}))
    result = CliRunner().invoke(app, [
        "calibrate", "--measured", str(tmp_path / "data.csv"), "--design",
        str(tmp_path / "design.json"), "--fit", "capacity_factor", "--out",
        str(tmp_path / "cal.json"), "--max-points", "40", "--max-iterations", "5"])
    assert result.exit_code == 0, result.output
    steps = _steps(result.output)
    assert steps, result.output
    assert [int(m["k"]) for m in steps] == list(range(1, len(steps) + 1))
    assert all(int(m["n"]) == 6 and m["eta"] for m in steps)
    assert steps[0]["what"] == "model evaluation 1 of at most 6"
