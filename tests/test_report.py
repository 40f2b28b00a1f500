"""The campaign report: its numbers (GP partial dependence and length-scales, Ragone crossing)
on functions with known answers, and the whole report on real campaigns that are empty, have a
failed trial or only one completed trial ("not enough data", never a crash)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hpc.analysis.report import (
    analyse_gp,
    find_crossing_W,
    to_unit,
    write_report,
    write_report_logged,
)
from hpc.campaign.config import parse_campaign
from hpc.campaign.controller import Campaign
from hpc.cli.app import app


def tiny_config(**sections: dict):
    """The cheapest real campaign: one 24^3 cube, in-process (debug) evaluations."""
    data = {
        "name": "tiny-report",
        "space": {"am_wt_frac": [0.86, 0.96], "porosity": [0.28, 0.42], "binder_adhesion": 0.5,
                  "mass_loading_mg_cm2": 15.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "fidelity": {"n_cubes": 1, "cube_voxels": 24, "voxel_um": 1.0, "rel_tol": 1e-2},
        "cell": {"ragone_powers_W": [10.0, 200.0]},
        "optimizer": {"backend": "sobol", "n_initial": 2, "budget": 2, "max_concurrent": 1,
                      "seed": 1},
        "resources": {"executor": "debug", "dask_workers": 0, "max_retries": 0,
                      "poll_interval_s": 0.1},
    }
    data.update(sections)
    return parse_campaign(data)


def test_crossing_of_log_linear_curves_is_found_exactly():
    powers = np.array([1.0, 5.0, 10.0, 50.0, 100.0])
    energy_cell = 100.0 - 10.0 * np.log(powers)      # better at low power
    power_cell = np.full_like(powers, 80.0)          # flat
    assert find_crossing_W(powers, energy_cell, power_cell) == pytest.approx(math.exp(2.0))
    # never below: no crossing; points where neither delivers (both 0) are ignored
    assert find_crossing_W(powers, energy_cell + 100.0, power_cell) is None
    assert find_crossing_W(powers, [90, 85, 0, 0, 0], [80, 80, 70, 0, 0]) == pytest.approx(
        math.exp(math.log(5.0) + 5.0 / 75.0 * (math.log(10.0) - math.log(5.0))))


def test_gp_partial_dependence_and_length_scales_follow_the_function():
    rng = np.random.default_rng(0)
    x = rng.random((16, 2))
    y = np.sin(3.0 * x[:, 0]) + 0.02 * x[:, 1]       # x0 matters, x1 hardly
    gp = analyse_gp(x, y, n_grid=21, n_base=64)
    assert gp.lengthscales[0] < gp.lengthscales[1]
    assert gp.importance[0] > 0.5 and gp.importance.sum() == pytest.approx(1.0)
    expected = np.sin(3.0 * gp.grid) + 0.01
    assert np.corrcoef(gp.mean[0], expected)[0, 1] > 0.95
    assert np.ptp(gp.mean[1]) < 0.2 * np.ptp(gp.mean[0])
    with pytest.raises(ValueError, match="same for every trial"):
        analyse_gp(x, np.ones(16))


def test_gp_analysis_at_the_report_size_needs_no_joint_covariance_of_its_points():
    """The report's partial dependence uses each point's marginal sd only; at its default grid
    (41 x 256 points per parameter) a joint posterior built their 10 496^2 covariance: a 1.7 GB
    peak (and 9 CPU-s) for a 6-trial campaign's report, where a small SLURM job's memory limit
    would kill it. In a fresh process (the suite's own peak hides any growth) the analysis must
    add less than 200 MB, far below the 881 MB one such matrix of doubles takes."""
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from hpc.analysis.report import analyse_gp\n"
        "from bayes.botorch_backend import fit_gp\n"
        "def hwm():\n"
        "    line = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "    return int(line.split()[1]) * 1024\n"
        "x = np.random.default_rng(0).random((6, 4))\n"
        "y = np.sin(3 * x).sum(axis=1)\n"
        "fit_gp(x, y.reshape(-1, 1), None)\n"          # imports and first-call costs first
        "before = hwm()\n"
        "gp = analyse_gp(x, y)\n"
        "assert gp.sd.shape == (4, 41) and np.isfinite(gp.sd).all()\n"
        "print(hwm() - before)\n")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    added_bytes = int(done.stdout.strip().splitlines()[-1])
    assert added_bytes < 200 * 2**20, f"analyse_gp added {added_bytes / 2**20:.0f} MB"


def test_to_unit_scales_by_the_campaign_bounds():
    unit = to_unit([{"a": 2.0, "b": 10.0}], {"a": (1.0, 3.0), "b": (10.0, 20.0)})
    assert unit.tolist() == [[0.5, 0.0]]


def test_report_of_an_empty_campaign_says_so(tmp_path):
    Campaign.create(tiny_config(), tmp_path / "c").close()
    summary = write_report(tmp_path / "c").read_text()
    assert "no completed trial" in summary.lower() and "Not enough data" in summary
    assert (tmp_path / "c" / "report" / "trace.png").stat().st_size > 0


def test_report_with_a_failed_trial_and_one_completed_trial(tmp_path):
    folder = tmp_path / "c"
    config = tiny_config(faults=[{"trial_id": 1, "attempts": 1, "mode": "raise"}])
    campaign = Campaign.create(config, folder)
    try:
        progress = campaign.run(report=write_report_logged)  # the CLI passes this hook
    finally:
        campaign.close()
    assert progress.complete == 1 and progress.failed == 1
    report = folder / "report"
    summary = (report / "summary.md").read_text()
    assert "Not enough data for the GP plots" in summary
    assert "Trial 1 failed" in summary and "injected fault" in summary
    for name in ("trace.png", "microstructure.png", "ragone.png"):
        assert (report / name).stat().st_size > 1000, name
    assert not (report / "objective_over_params.png").exists()
    data = json.loads((report / "summary.json").read_text())
    assert data["best"]["trial_id"] == 0 and data["n_failed"] == 1
    # the numbers depend on the fidelity: the summary records it
    assert {"n_cubes": 1, "cube_voxels": 24, "voxel_um": 1.0}.items() <= data["fidelity"].items()
    assert "- Fidelity: " in summary and "cube_voxels = 24" in summary
    # ... and on the structures: the generator, calendering included (the default's)
    assert data["generator"]["kind"] == "procedural"
    assert data["generator"]["calendering"] == "rearrange"
    assert data["best"]["objective"] == pytest.approx(
        json.loads((folder / "trials" / "0" / "result.json").read_text())["objective"]["value"])

    # the command rewrites it, also when the voxels are gone (the slices are skipped, with why);
    # a folder that is no campaign is refused with exit code 2
    (report / "summary.md").unlink()
    shutil.rmtree(folder / "voxels.zarr")
    runner = CliRunner()
    assert runner.invoke(app, ["report", str(folder)]).exit_code == 0
    assert "No microstructure slices" in (report / "summary.md").read_text()
    refused = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert refused.exit_code == 2 and "neither a campaign folder" in refused.output


def test_report_of_a_campaign_folder_path_object(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a campaign folder"):
        write_report(Path(tmp_path))


def test_quick_report_gp_band_stays_above_zero_and_its_tick_labels_stay_apart(tmp_path,
                                                                             monkeypatch):
    """The partial-dependence panels of a quick-campaign-like report (its two parameters and
    bounds, 12 trials, some near 0 Wh/L where a +-2 sd band would dip below 0): the band
    starts at 0 (no objective is negative) and no two x tick labels of a panel overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hpc.analysis import report
    from hpc.analysis.report import CampaignData, TrialRecord, plot_partial_dependence

    bounds = {"am_wt_frac": (0.85, 0.97), "porosity": (0.25, 0.45)}   # hpc/campaigns/quick.toml
    rng = np.random.default_rng(3)
    params = [{"am_wt_frac": float(a), "porosity": float(p)}
              for a, p in zip(rng.uniform(0.85, 0.97, 12), rng.uniform(0.25, 0.45, 12),
                              strict=True)]
    values = [max(0.0, 900.0 * (p["am_wt_frac"] - 0.9) / 0.07) + 5.0 for p in params]
    trials = [TrialRecord(i, "complete", p, v, True, "", None)
              for i, (p, v) in enumerate(zip(params, values, strict=True))]
    data = CampaignData(tmp_path, "quick", "", {"kind": "energy_density_Wh_L", "power_W": 10.0},
                        bounds, {}, 4, 12, trials)
    gp = analyse_gp(to_unit(params, bounds), np.array(values), n_grid=21, n_base=64)
    assert (gp.mean - 2 * gp.sd).min() < 0     # the unclipped band would go below 0
    captured = []
    original = report.save_figure_atomic
    monkeypatch.setattr(report, "save_figure_atomic",
                        lambda fig, path: (captured.append(fig), original(fig, path)))
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    plot_partial_dependence(data, gp, tmp_path / "pd.png")
    [fig] = captured
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []     # left to right over the panels: neighbours' labels collide too
    for ax in fig.axes:
        [band] = ax.collections[:1]
        lower = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        assert lower.min() >= 0.0
        labels = [t for t in ax.get_xticklabels() if t.get_text() and
                  ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert len(labels) >= 2
        boxes += [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
    for (text_a, a), (text_b, b) in zip(boxes, boxes[1:], strict=False):
        assert a.x1 < b.x0, f"tick labels {text_a!r} and {text_b!r} overlap"


def test_cs1_plot_labels_its_c_rates_as_plain_numbers(tmp_path, monkeypatch):
    """The report draws text literally (no mathtext), so matplotlib's default log labels came
    out as raw `$\\mathdefault{10^{0}}$` on the cs1 plots' C-rate axes."""
    from matplotlib.figure import Figure

    from hpc.analysis.case_studies import Optimum, _plot_cs1

    drawn: list[Figure] = []
    save = Figure.savefig

    def keep(self, *args, **kwargs):
        drawn.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    rates = {"cs1_0p1C": 0.1, "cs1_0p5C": 0.5, "cs1": 1.0, "cs1_2C": 2.0, "cs1_3C": 3.0}
    optima = {name: Optimum(name, "capacity_mAh_g", f"{rate:g}C", rate,
                            {"am_wt_frac": 0.82, "porosity": 0.25}, 200.0 - 10 * rate, None, {})
              for name, rate in rates.items()}
    _plot_cs1(optima, tmp_path / "cs1.png")
    figure = drawn[-1]
    figure.canvas.draw()
    for ax in figure.axes:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels == ["0.1", "0.5", "1", "2", "3"]
