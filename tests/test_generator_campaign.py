"""A campaign with the trained generator (`generator.kind = "default"`) runs end to end and
records, per trial, whether the design lies inside the model's training envelope."""

from __future__ import annotations

import csv

import pytest


@pytest.mark.slow
def test_default_generator_campaign_completes_and_records_the_envelope(tmp_path):
    from hpc.campaign.config import parse_campaign
    from hpc.campaign.controller import Campaign
    from kernels.generator.model import in_training_envelope, load_default_model

    config = parse_campaign({
        "space": {"am_wt_frac": [0.86, 0.97], "porosity": [0.28, 0.42], "mass_loading_mg_cm2": 15.0},
        "objective": {"power_W": 10.0},
        "generator": {"kind": "default"},        # fidelity.voxel_um comes from the model (0.4)
        "fidelity": {"n_cubes": 1, "cube_voxels": 32, "rel_tol": 1e-2},
        "optimizer": {"backend": "sobol", "budget": 3, "max_concurrent": 2},
        "resources": {"executor": "local", "dask_workers": 0, "poll_interval_s": 0.5},
    })
    controller = Campaign.create(config, tmp_path / "run")
    try:
        progress = controller.run(report=None)
    finally:
        controller.close()
    assert progress.failed == 0 and progress.complete == 3
    with open(tmp_path / "run" / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = load_default_model()
    for row in rows:
        params = {k: float(row[k]) for k in ("am_wt_frac", "porosity", "binder_adhesion")}
        inside, _ = in_training_envelope(params, model)
        assert row["in_training_envelope"] == str(inside)
        assert (row["envelope_reason"] == "") == inside
