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
        "cell": {"ragone_powers_W": [5.0, 20.0, 100.0, 400.0, 10000.0]}, "seed": 3})
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
    assert not sweep[-1]["feasible"]            # 10 kW: the curve ends (drawn on the edge)
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


def test_eta_is_the_remaining_trials_at_this_runs_pace() -> None:
    """At a constant 30 s per trial, after 4 of 10 (1 of them from before a resume) in 90 s
    the 6 left take 180 s; no ETA before this run finished one."""
    from hpc.cli.commands._progress import eta_s

    assert eta_s(90.0, finished_now=4, finished_at_start=1, budget=10) == pytest.approx(180.0)
    assert eta_s(5.0, finished_now=1, finished_at_start=1, budget=10) is None
    assert eta_s(300.0, finished_now=10, finished_at_start=0, budget=10) == 0.0


@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_a_batch_run_logs_one_line_per_trial_event_with_an_eta(tmp_path: Path,
                                                               quiet: list[str]) -> None:
    """`microloop run` without a terminal (sbatch, CliRunner): timestamped lines, one per
    change of the trial counts, the last with every trial finished; no progress bar. The
    sbatch template passes --quiet: the lines are written all the same."""
    import re

    import tomli_w

    campaign = {
        "name": "tiny-log",
        "space": {"am_wt_frac": [0.86, 0.96], "porosity": [0.28, 0.42], "binder_adhesion": 0.5,
                  "mass_loading_mg_cm2": 15.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "fidelity": {"n_cubes": 1, "cube_voxels": 24, "voxel_um": 1.0, "rel_tol": 1e-2},
        "cell": {"ragone_powers_W": []},
        "optimizer": {"backend": "sobol", "n_initial": 2, "budget": 2, "max_concurrent": 1,
                      "seed": 1},
        "resources": {"executor": "debug", "dask_workers": 0, "max_retries": 0,
                      "poll_interval_s": 0.1},
    }
    spec = tmp_path / "c.toml"
    spec.write_text(tomli_w.dumps(campaign))
    result = CliRunner().invoke(app, ["run", str(spec), "--dir", str(tmp_path / "run"),
                                      "--no-report", *quiet])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if " finished (complete " in line]
    assert lines, result.stderr
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 run: (\d)/2 finished "
                         r"\(complete (\d), failed (\d)\), running (\d), best \S+; (ETA .*)$")
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    states = [m.groups()[:4] for m in parsed]
    assert len(set(states)) == len(states)                  # a line per change, no repeats
    assert states[-1][:3] == ("2", "2", "0")
    assert re.match(r"ETA 0:00:00 \(\d\d:\d\d UTC\)", parsed[-1].group(5))
    assert "━" not in result.output                          # no rich bar in a log file
    # the last line says the best value with its unit and operating point, and the design
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "trials.csv").open()))
    best = max((r for r in rows if r["objective"]), key=lambda r: float(r["objective"]))
    last = result.stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"best energy_density_Wh_L at 10 W: (\S+) Wh/L \((.*)\)", last)
    assert found, last
    assert float(found.group(1)) == pytest.approx(float(best["objective"]), rel=1e-3)
    assert best["objective_unit"] == "Wh/L"
    design = dict(pair.split("=") for pair in found.group(2).split(", "))
    assert set(design) == {"am_wt_frac", "porosity", "binder_adhesion", "mass_loading_mg_cm2"}
    assert float(design["porosity"]) == pytest.approx(float(best["porosity"]), rel=1e-3)


def test_characterise_json_feeds_cell_json_and_both_are_versioned(tmp_path: Path) -> None:
    """The README's flow: characterise's one-record list is a valid --metrics file, and the
    cell's answer carries its schema version too."""
    import numpy as np

    from kernels.structure.procedural import ManufacturingParams, generate_structure

    np.save(tmp_path / "v.npy", generate_structure(ManufacturingParams(0.92, 0.35, 0.5), 24,
                                                   voxel_um=1.0, seed=2))
    metrics = CliRunner().invoke(app, ["characterise", str(tmp_path / "v.npy"), "--voxel-um",
                                       "1", "--json"])
    assert metrics.exit_code == 0, metrics.output
    (tmp_path / "m.json").write_text(metrics.stdout)
    cell = CliRunner().invoke(app, ["cell", "--metrics", str(tmp_path / "m.json"),
                                    "--thickness-um", "80", "--power-W", "10", "--power-W",
                                    "20000", "--json"])
    assert cell.exit_code == 0, cell.output
    answer = json.loads(cell.stdout)
    assert answer["schema_version"] == "microloop.cell/2"
    # `reason` is empty for a feasible load, as in trials.csv (schema 1 held PyBaMM's stop
    # event there); the stop event has its own key; an infeasible load says why
    good, bad = answer["results"]
    assert good["feasible"] and good["reason"] == "" and "event" in good["stop_event"]
    assert not bad["feasible"] and bad["reason"] and bad["stop_event"] == ""
    assert answer["design"]["porosity"] == pytest.approx(
        json.loads(metrics.stdout)[0]["volume_fraction"]["pore"])


def test_generate_zarr_output_opens_in_xarray_with_dimensions_and_micrometres(tmp_path):
    """`generate --out x.zarr` is a group xarray can open (main wrote a root array it could not),
    with OME-Zarr axes in micrometres, and `characterise` still reads it with the file's voxel."""
    import zarr
    from typer.testing import CliRunner

    from hpc.cli.app import app

    xr = pytest.importorskip("xarray")
    out = tmp_path / "v.zarr"
    runner = CliRunner()
    made = runner.invoke(app, ["generate", "-p", "am_wt_frac=0.9", "-p", "porosity=0.35",
                               "--size", "16", "--n", "2", "--voxel-um", "0.5", "--out", str(out)])
    assert made.exit_code == 0, made.output
    dataset = xr.open_zarr(str(out), consolidated=False, mask_and_scale=False)
    assert dataset["vol"].dims == ("sample", "z", "y", "x")
    assert dataset["vol"].shape == (2, 16, 16, 16)
    ome = zarr.open_group(str(out), mode="r").attrs["ome"]
    axes = ome["multiscales"][0]["axes"]
    assert [a.get("unit") for a in axes if a["type"] == "space"] == ["micrometer"] * 3
    measured = runner.invoke(app, ["characterise", str(out), "--json"])
    assert measured.exit_code == 0, measured.output
    records = json.loads(measured.stdout)
    assert len(records) == 2 and all(r["voxel_um"] == 0.5 for r in records)


REPO = Path(__file__).resolve().parents[1]
_VERSION = r"microloop\.[\w-]+/\d+"


def test_every_schema_version_the_code_writes_is_listed_in_formats_md() -> None:
    """One page lists them all: a version string in the code that the page does not name is
    an undocumented format (versions only read, never written, need their name there)."""
    import re

    from hpc.campaign.warm_start import OBSERVATIONS_SCHEMA, READABLE_SCHEMAS

    in_code = {version for folder in ("hpc", "jobs", "kernels")
               for path in (REPO / folder).rglob("*.py")
               for version in re.findall(rf'"({_VERSION})"', path.read_text())}
    assert {"microloop.status/1", "microloop.report/1", "microloop.case-study/1",
            "microloop.generate/1", "microloop.train-generator/1", "microloop.doctor/1",
            "microloop.campaigns/1", "microloop.cell/2", "microloop.trials-csv/3"} <= in_code
    page = (REPO / "docs" / "formats.md").read_text()
    read_only = set(READABLE_SCHEMAS) - {OBSERVATIONS_SCHEMA}
    missing = sorted(v for v in in_code if f"`{v}`" not in page
                     and not (v in read_only and f"`{v.split('/')[0]}/" in page))
    assert not missing, f"not in docs/formats.md: {missing}"


def test_json_of_status_report_generate_and_campaigns_list_carries_its_version(
        tmp_path: Path) -> None:
    """A real two-trial campaign, then what a script reads of it and of the other commands:
    each JSON object names its schema version first, as docs/formats.md lists it."""
    import re

    from hpc.analysis.report import write_report_logged
    from hpc.campaign.config import parse_campaign
    from hpc.campaign.controller import Campaign

    config = parse_campaign({
        "name": "tiny-versions",
        "space": {"am_wt_frac": [0.86, 0.96], "porosity": [0.28, 0.42], "binder_adhesion": 0.5,
                  "mass_loading_mg_cm2": 15.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "fidelity": {"n_cubes": 1, "cube_voxels": 24, "voxel_um": 1.0, "rel_tol": 1e-2},
        "cell": {"ragone_powers_W": []},
        "optimizer": {"backend": "sobol", "n_initial": 2, "budget": 2, "max_concurrent": 1,
                      "seed": 1},
        "resources": {"executor": "debug", "dask_workers": 0, "max_retries": 0,
                      "poll_interval_s": 0.1}})
    folder = tmp_path / "c"
    campaign = Campaign.create(config, folder)
    try:
        campaign.run(report=write_report_logged)
    finally:
        campaign.close()
    runner = CliRunner()
    status = runner.invoke(app, ["status", str(folder), "--json"])
    generated = runner.invoke(app, ["generate", "-p", "am_wt_frac=0.9", "-p", "porosity=0.35",
                                    "--size", "16", "--out", str(tmp_path / "v.npy")])
    listed = runner.invoke(app, ["campaigns", "list", "--json"])
    for result in (status, generated, listed):
        assert result.exit_code == 0, result.output
    answers = {
        "status": json.loads(status.stdout),
        "report": json.loads((folder / "report" / "summary.json").read_text()),
        "generate": json.loads(generated.stdout.strip().splitlines()[-1]),
        "campaigns": json.loads(listed.stdout),
    }
    page = (REPO / "docs" / "formats.md").read_text()
    for name, answer in answers.items():
        version = answer.get("schema_version", "")
        assert re.fullmatch(_VERSION, version) and f"`{version}`" in page, (name, answer)
        assert next(iter(answer)) == "schema_version", name
    assert answers["status"]["counts"]["complete"] == 2
    assert answers["report"]["n_complete"] == 2
    assert answers["generate"]["shape"] == [1, 16, 16, 16]
    # docs/microstructure.md: `characterise <campaign>/voxels.zarr/trial_N/vol --json`, one
    # record per stored sample, at the voxel size the store carries
    stored = runner.invoke(app, ["characterise", str(folder / "voxels.zarr" / "trial_1" / "vol"),
                                 "--json"])
    assert stored.exit_code == 0, stored.output
    records = json.loads(stored.stdout)
    assert [r["sample"] for r in records] == [0] and records[0]["voxel_um"] == 1.0
    assert records[0]["schema_version"] == "microloop.characterise/1"
