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
    assert summary["schema_version"] == 1 and summary["metric"] == metric
    for row in summary["per_size"]:
        assert {"cube_voxels", "n_cubes", "mean", "sd", "ci95", "bias_vs_largest",
                "cubes_needed", "solve_cpu_s"} <= set(row)
        assert not any(key.startswith(("tau_", "metric_")) for key in row)
        low, high = row["ci95"]
        assert low <= row["mean"] <= high and row["mean"] > 0
