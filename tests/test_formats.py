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
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "cell": {"ragone_powers_W": [5.0, 20.0, 100.0, 400.0, 3000.0]}, "seed": 3})
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


def test_ragone_in_literature_units_uses_the_4680_can(real_result: dict, tmp_path: Path) -> None:
    """W/L and Wh/L divide by the 4680 can's volume, pi (23 mm)^2 80 mm = 0.1330 L (the format's
    geometry, independent of the code); the mass is a 4680's (published ~355 g)."""
    import math

    import matplotlib.image
    import numpy as np

    from hpc.analysis.report import plot_ragone, ragone_per_mass_and_volume

    sweep = real_result["result"]["cell"]["ragone"]
    powers = np.array([r["power_W_requested"] or r["power_W"] for r in sweep])
    curve = ragone_per_mass_and_volume(powers, sweep)
    assert float(curve["cell_volume_L"]) == pytest.approx(math.pi * 0.23 ** 2 * 0.8, rel=2e-3)
    assert 0.25 < float(curve["cell_mass_kg"]) < 0.45
    assert not sweep[-1]["feasible"]            # 3 kW: the curve ends (drawn on the edge)
    path = plot_ragone({"design": curve, "same design": curve}, tmp_path / "r.png", "t",
                       crossing_W=50.0)
    assert matplotlib.image.imread(path).shape[1] >= 900
    with pytest.raises(ValueError, match="no feasible discharge"):
        ragone_per_mass_and_volume(powers[-1:], sweep[-1:])


def test_ragone_plot_is_log_log_and_the_crossing_label_clears_the_legend(real_result: dict,
                                                                         tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hpc.analysis import report

    sweep = real_result["result"]["cell"]["ragone"]
    powers = np.array([r["power_W_requested"] or r["power_W"] for r in sweep])
    curve = report.ragone_per_mass_and_volume(powers, sweep)
    captured = []
    original = report.save_figure_atomic
    try:
        report.save_figure_atomic = lambda fig, path: (captured.append(fig), original(fig, path))
        closing = plt.close
        plt.close = lambda fig=None: None          # keep the figure to inspect it
        report.plot_ragone({"a": curve, "b": curve}, tmp_path / "r.png", "t", crossing_W=50.0)
    finally:
        report.save_figure_atomic = original
        plt.close = closing
    [fig] = captured
    renderer = fig.canvas.get_renderer()
    [legend] = fig.legends
    legend_box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert ax.get_xscale() == ax.get_yscale() == "log"
        [label] = [t for t in ax.texts if "crossing" in t.get_text()]
        assert "50 W per cell" in label.get_text()
        assert not label.get_window_extent(renderer).overlaps(legend_box)
        assert not ax.get_window_extent(renderer).overlaps(legend_box)
    plt.close(fig)
