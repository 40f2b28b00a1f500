"""`microloop cell` end to end (in-process through the real CLI app, real PyBaMM solves)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hpc.cli.app import app

METRICS = {
    "volume_fraction": {"pore": 0.335, "am": 0.6, "cbd": 0.065},
    "specific_surface_area_per_um": {"am_pore": 0.3, "am_cbd": 0.1},
    "cbd_coverage": 0.25,
    "tortuosity_factor": 2.1,
    "effective_conductivity_S_m": 1.5,
    "percolating": True,
}


@pytest.fixture()
def metrics_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(METRICS))
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["cell", *args])


def test_json_report_with_powers_c_rates_and_ragone(metrics_file, tmp_path):
    png = tmp_path / "ragone.png"
    result = invoke("--metrics", str(metrics_file), "--thickness-um", "80", "--power-W", "10",
                    "--power-W", "200", "--c-rate", "0.1", "--c-rate", "1", "--json", "--ragone", str(png))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["capacity_Ah"] > 10
    rows = report["results"]
    assert [r["power_W"] for r in rows] == [10.0, 200.0, None, None]
    assert [r["c_rate"] for r in rows] == [None, None, 0.1, 1.0]
    for row in rows:
        assert set(row) >= {"energy_Wh", "energy_density_Wh_L", "specific_energy_Wh_kg",
                            "capacity_mAh_g", "feasible", "reason"}
        assert row["feasible"]
    assert rows[0]["energy_Wh"] > rows[1]["energy_Wh"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_under_mean_as_jobs_characterise_writes_them(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"mean": METRICS, "std": {}, "percolating_fraction": 1.0}))
    result = invoke("--metrics", str(path), "--thickness-um", "80", "--power-W", "10", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["design"]["porosity"] == 0.335 and report["results"][0]["feasible"]


def test_flags_override_metrics_and_half_cell_reports_mAh_g(metrics_file):
    base = invoke("--metrics", str(metrics_file), "--thickness-um", "80", "--c-rate", "0.1",
                  "--c-rate", "3", "--half-cell", "--json")
    dense = invoke("--metrics", str(metrics_file), "--thickness-um", "80", "--c-rate", "0.1",
                   "--c-rate", "3", "--half-cell", "--json", "--porosity", "0.25")
    assert base.exit_code == 0 and dense.exit_code == 0, base.output + dense.output
    base_rows = json.loads(base.stdout.strip().splitlines()[-1])["results"]
    dense_report = json.loads(dense.stdout.strip().splitlines()[-1])
    assert dense_report["design"]["porosity"] == 0.25
    assert base_rows[0]["capacity_mAh_g"] > base_rows[1]["capacity_mAh_g"] > 0


def test_design_from_flags_only_and_a_table():
    result = invoke("--thickness-um", "60", "--porosity", "0.35", "--am-fraction", "0.6",
                    "--tortuosity", "2", "--ssa-per-um", "0.5", "--conductivity-S-m", "1",
                    "--power-W", "10")
    assert result.exit_code == 0, result.output
    assert "4680 cell" in result.stdout and "10 W" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thickness-um", "80", "--power-W", "10", "--porosity", "0.3"], "--am-fraction"),
        (["--power-W", "10"], "--thickness-um"),
        (["--thickness-um", "80"], "--power-W"),
        (["--thickness-um", "500", "--power-W", "10"], "thickness_um"),
        (["--thickness-um", "80", "--power-W", "50000"], "--power-W"),
        (["--thickness-um", "80", "--power-W", "10", "--half-cell"], "--half-cell"),
    ],
)
def test_usage_errors_exit_2_and_name_the_flag(metrics_file, args, message):
    if "--am-fraction" != message:
        args = ["--metrics", str(metrics_file), *args]
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_non_percolating_metrics_give_infeasible_rows(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**METRICS, "tortuosity_factor": None, "percolating": False}))
    result = invoke("--metrics", str(path), "--thickness-um", "80", "--power-W", "10", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[-1])["results"][0]
    assert row["feasible"] is False and row["energy_Wh"] == 0.0 and "percolat" in row["reason"]


def test_packaging_toml_calibrates_and_unknown_keys_exit_2(metrics_file, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[packaging]\nhardware_mass_g = 120.0\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[packaging]\nhardware_mas_g = 120.0\n")
    common = ["--metrics", str(metrics_file), "--thickness-um", "80", "--power-W", "10", "--json"]
    heavy = invoke(*common, "--packaging", str(good))
    light = invoke(*common)
    assert heavy.exit_code == 0 and light.exit_code == 0, heavy.output + light.output
    heavy_row = json.loads(heavy.stdout.strip().splitlines()[-1])["results"][0]
    light_row = json.loads(light.stdout.strip().splitlines()[-1])["results"][0]
    assert heavy_row["specific_energy_Wh_kg"] < light_row["specific_energy_Wh_kg"]
    assert heavy_row["energy_Wh"] == pytest.approx(light_row["energy_Wh"])
    failed = invoke(*common, "--packaging", str(bad))
    assert failed.exit_code == 2 and "hardware_mas_g" in failed.output


def test_calibration_file_is_used_and_bad_ones_exit_2(metrics_file, tmp_path):
    pytest.importorskip("kernels.cell.calibration", reason="kernels.cell.calibration (issue 11) not present")
    good = tmp_path / "calibration.json"
    good.write_text(json.dumps({"values": {"capacity_factor": 0.8}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"values": {"capacity_factr": 0.8}}))
    common = ["--metrics", str(metrics_file), "--thickness-um", "80", "--power-W", "10", "--json"]
    plain = invoke(*common)
    calibrated = invoke(*common, "--calibration", str(good))
    assert plain.exit_code == 0 and calibrated.exit_code == 0, plain.output + calibrated.output
    energy = [json.loads(r.stdout.strip().splitlines()[-1])["results"][0]["energy_Wh"]
              for r in (plain, calibrated)]
    assert energy[1] == pytest.approx(0.8 * energy[0], rel=0.01)
    failed = invoke(*common, "--calibration", str(bad))
    assert failed.exit_code == 2 and "capacity_factr" in failed.output


def test_metrics_as_characterise_json_prints_them_for_one_sample_and_not_for_two(tmp_path):
    """`characterise --json` of a generated (1, L, L, L) volume is a one-element list."""
    one = tmp_path / "one.json"
    one.write_text(json.dumps([{"sample": 0, **METRICS}]))
    result = invoke("--metrics", str(one), "--thickness-um", "80", "--power-W", "10", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["design"]["porosity"] == 0.335 and report["results"][0]["feasible"]
    two = tmp_path / "two.json"
    two.write_text(json.dumps([METRICS, METRICS]))
    refused = invoke("--metrics", str(two), "--thickness-um", "80", "--power-W", "10")
    assert refused.exit_code == 2 and "2 samples" in refused.output


def test_several_values_are_given_by_repeating_the_flag(metrics_file):
    """One list convention across the CLI; the old `--power-W 10 200` is refused, not misread."""
    old_style = invoke("--metrics", str(metrics_file), "--thickness-um", "80", "--power-W", "10",
                       "200")
    assert old_style.exit_code == 2 and "200" in old_style.output


def test_sundials_error_lines_stay_out_of_stderr_and_the_reason_keeps_the_failure(tmp_path):
    """An infeasible load makes SUNDIALS print three `[ERROR]` lines to the process's stderr
    (from C, so only a fresh process shows them); they go to the null device unless the user
    names a file, and the failure itself stays in the row's reason."""
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "hpc.cli", "cell", "--thickness-um", "80", "--porosity",
            "0.35", "--am-fraction", "0.6", "--tortuosity", "2", "--ssa-per-um", "0.4",
            "--conductivity-S-m", "0.2", "--power-W", "20000", "--power-W", "3000", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "SUNLOGGER_ERROR_FILENAME"}

    def run(extra_env: dict) -> tuple[dict, str]:
        done = subprocess.run(args, capture_output=True, text=True, timeout=600,
                              env={**env, **extra_env})
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    report, stderr = run({})
    collapsed, delivered = report["results"]
    assert not collapsed["feasible"] and "IDA" in collapsed["reason"]
    assert delivered["feasible"] and delivered["energy_Wh"] > 0
    assert "[ERROR]" not in stderr and "sundials" not in stderr.lower(), stderr
    log = tmp_path / "sundials.log"
    again, stderr = run({"SUNLOGGER_ERROR_FILENAME": str(log)})
    assert again["results"] == report["results"]
    assert "[ERROR]" not in stderr
    assert log.read_text().count("[ERROR]") >= 1  # the lines exist: they went to the file
