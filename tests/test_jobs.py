"""The jobs chain with its real parts: procedural voxels, TauFactor solves, PyBaMM, Dask workers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from jobs.characterise import aggregate, metrics_path, run_characterise
from jobs.contract.spec import EvaluationSpec, validate_params
from jobs.evaluate import evaluate_design, result_path
from jobs.generate import generate_samples
from jobs.simulate import simulate_design
from jobs.store import DesignStore

PARAMS = {"am_wt_frac": 0.9, "porosity": 0.4, "binder_adhesion": 0.3}


def tiny_spec(**cell) -> dict:
    """Two 32^3 cubes of 4 um particles at 0.5 um per voxel; one rank; a small Ragone sweep."""
    return {
        "fidelity": {"n_cubes": 2, "cube_voxels": 32, "voxel_um": 0.5, "mpi_ranks": 1},
        "generator": {"kind": "procedural", "mean_diameter_um": 4.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
        "cell": {"thickness_um": 70.0, "ragone_powers_W": [40.0], **cell},
        "seed": 3,
    }


def test_spec_round_trips_and_names_bad_fields():
    spec = EvaluationSpec.from_dict(tiny_spec())
    assert EvaluationSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    bad = [
        ({"fidelity": {"n_cubes": 0}}, "fidelity.n_cubes"),
        ({"fidelity": {"cube_size": 32}}, "cube_size"),
        ({"objective": {"kind": "energy"}}, "objective.kind"),
        ({"objective": {"power_W": 10.0, "c_rate": 1.0}}, "exactly one"),
        ({"cell": {"ragone_powers_W": [10, -1]}}, "cell.ragone_powers_W"),
        ({"cell": {"packaging": {"can_wall_mm": "thin"}}}, "cell.packaging.can_wall_mm"),
        ({"seed": 1.5}, "seed"),
        ({"objective": {"kind": "capacity_mAh_g", "power_W": 10.0}}, "objective.kind"),
        ({"objective": {"kind": "capacity_mAh_g", "half_cell": True, "power_W": 10.0}},
         "objective.c_rate"),
        ({"objective": {"kind": "capacity_mAh_g", "half_cell": True, "power_W": None,
                        "c_rate": 1.0}, "cell": {"ragone_powers_W": [10.0]}},
         "cell.ragone_powers_W"),
        ({"objective": {"power_W": 30000.0}}, "objective.power_W"),
        ({"fidelty": {}}, "fidelty"),
    ]
    for data, field in bad:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            EvaluationSpec.from_dict(data)
    half = {"objective": {"kind": "capacity_mAh_g", "half_cell": True, "power_W": None,
                          "c_rate": 1.0}}
    assert EvaluationSpec.from_dict(half).objective.half_cell
    with pytest.raises(ValueError, match="missing key.*porosity"):
        validate_params({"am_wt_frac": 0.9})
    with pytest.raises(ValueError, match="unknown key.*thickness"):
        validate_params({**PARAMS, "thickness": 3.0})
    with pytest.raises(ValueError, match="params.porosity"):
        validate_params({**PARAMS, "porosity": float("nan")})


def test_characterise_serial_writes_each_sample_once_and_aggregates(tmp_path):
    spec = EvaluationSpec.from_dict(tiny_spec())
    generate_samples(tmp_path, 0, PARAMS, spec)
    result = run_characterise(tmp_path, 0, spec)
    records = [json.loads(metrics_path(tmp_path, 0, i).read_text()) for i in range(2)]
    taus = [r["metrics"]["tortuosity_factor"] for r in records]
    assert result["n_samples"] == 2 and result["percolating_fraction"] == 1.0
    assert result["mean"]["tortuosity_factor"] == pytest.approx(np.mean(taus))
    assert result["std"]["tortuosity_factor"] == pytest.approx(np.std(taus, ddof=1))
    assert result["mean"]["volume_fraction"]["pore"] == pytest.approx(PARAMS["porosity"], abs=1e-3)
    # rerun: nothing is solved again (the per-sample files are untouched)
    stamps = [metrics_path(tmp_path, 0, i).stat().st_mtime_ns for i in range(2)]
    assert run_characterise(tmp_path, 0, spec)["mean"] == result["mean"]
    assert [metrics_path(tmp_path, 0, i).stat().st_mtime_ns for i in range(2)] == stamps


def test_aggregate_averages_tortuosity_over_percolating_samples_only():
    def record(i, tau, percolating):
        return {"sample": i, "metrics": {"volume_fraction": {"pore": 0.3}, "tortuosity_factor": tau,
                                         "effective_conductivity_S_m": 1.0 + i,
                                         "percolating": percolating}}

    agg = aggregate([record(0, 2.0, True), record(1, None, False), record(2, 4.0, True)])
    assert agg["mean"]["tortuosity_factor"] == pytest.approx(3.0)
    assert agg["mean"]["effective_conductivity_S_m"] == pytest.approx(2.0)
    assert agg["mean"]["percolating"] is True
    assert agg["percolating_fraction"] == pytest.approx(2 / 3)
    none = aggregate([record(0, None, False)])
    assert none["mean"]["tortuosity_factor"] is None and none["mean"]["percolating"] is False


def _task_prefixes(dask_scheduler) -> list[str]:
    return list(dask_scheduler.task_prefixes)


@pytest.mark.slow
def test_simulate_on_dask_workers_equals_in_process(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    metrics = {"volume_fraction": {"pore": 0.35, "am": 0.5, "cbd": 0.15},
               "specific_surface_area_per_um": {"am_pore": 0.3, "am_cbd": 0.1},
               "cbd_coverage": 0.25, "tortuosity_factor": 2.5,
               "effective_conductivity_S_m": 1.0, "percolating": True}
    spec = EvaluationSpec.from_dict({"cell": {"ragone_powers_W": [5.0, 100.0]}})
    local = simulate_design(metrics, 80.0, spec)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        on_client = simulate_design(metrics, 80.0, spec, client=client)
        by_address = simulate_design(metrics, 80.0, spec, client=cluster.scheduler_address)
        # the model was built once per worker process, in the worker (not shipped)
        pids = client.run(os.getpid)
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        # an evaluation (as an array task would) finds the campaign's cluster by env var
        monkeypatch.setenv("MICROLOOP_DASK_SCHEDULER", cluster.scheduler_address)
        client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.task_prefixes.clear())
        via_dask = evaluate_design(str(tmp_path), 1, PARAMS, tiny_spec())
        assert "discharge" in client.run_on_scheduler(_task_prefixes)
    assert via_dask["feasible"] and via_dask["objective"] > 100
    for remote in (on_client, by_address):
        # identical but for the last bits of the IDAKLU solve in another process
        for got, want in zip([remote["objective"], *remote["ragone"]],
                             [local["objective"], *local["ragone"]], strict=True):
            assert got.keys() == want.keys()
            for key, value in want.items():
                assert got[key] == (pytest.approx(value, rel=1e-9)
                                    if isinstance(value, float) else value)
    assert local["feasible"] and local["objective"]["energy_density_Wh_L"] > 100
    energies = [r["energy_Wh"] for r in local["ragone"]]
    assert energies[0] > energies[1] > 0          # a Ragone curve falls with power


@pytest.mark.slow
def test_evaluate_design_end_to_end_is_idempotent_and_repairs(tmp_path):
    result = evaluate_design(str(tmp_path), 1, PARAMS, tiny_spec())
    assert set(result) >= {"trial_id", "objective", "feasible", "reason", "metrics", "results",
                           "timings_s"}
    assert result["feasible"] and result["objective"] > 100          # Wh/L of a 4680
    assert result["objective"] == result["results"]["objective"]["energy_density_Wh_L"]
    assert len(result["results"]["ragone"]) == 1
    assert result["results"]["thickness_um"] == 70.0
    assert math.isfinite(result["metrics"]["mean"]["tortuosity_factor"])
    folder = tmp_path / "trials" / "1"
    assert {"spec.json", "params.json", "metrics_0.json", "metrics_1.json", "metrics.json",
            "result.json"} <= {p.name for p in folder.iterdir()}

    # a rerun of a finished trial returns the stored result and writes nothing
    stamp = result_path(tmp_path, 1).stat().st_mtime_ns
    assert evaluate_design(str(tmp_path), 1, PARAMS, tiny_spec()) == result
    assert result_path(tmp_path, 1).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="was evaluated with params"):
        evaluate_design(str(tmp_path), 1, {**PARAMS, "porosity": 0.3}, tiny_spec())

    # a half-finished trial (result lost, a chunk lost, one sample's metrics lost) is completed
    # from what is stored, and gives the same answer
    result_path(tmp_path, 1).unlink()
    DesignStore.open(tmp_path, 1).chunk_paths(1)[0].unlink()
    metrics_path(tmp_path, 1, 1).unlink()
    again = evaluate_design(str(tmp_path), 1, PARAMS, tiny_spec())
    assert again["objective"] == result["objective"]
    assert again["metrics"]["mean"] == result["metrics"]["mean"]


@pytest.mark.slow
def test_mass_loading_sets_thickness_and_infeasible_scores_zero(tmp_path):
    # a deliberately impossible objective power: the cell reports infeasible, not an exception
    spec = tiny_spec()
    spec["objective"]["power_W"] = 15000.0
    params = {**PARAMS, "mass_loading_mg_cm2": 20.0}
    result = evaluate_design(str(tmp_path), 2, params, spec)
    assert result["objective"] == 0.0 and result["feasible"] is False
    assert result["reason"]
    am = result["metrics"]["mean"]["volume_fraction"]["am"]
    expected_um = 20.0 / (am * 4.75) * 10.0          # mg/cm^2 / (phi_AM rho_AM)
    assert result["results"]["thickness_um"] == pytest.approx(expected_um)


def test_a_dask_cluster_without_workers_times_out_instead_of_hanging(monkeypatch):
    from distributed import LocalCluster

    import jobs.simulate

    monkeypatch.setattr(jobs.simulate, "DASK_WORKER_WAIT_S", 1.0)
    metrics = {"volume_fraction": {"pore": 0.35, "am": 0.5, "cbd": 0.15},
               "specific_surface_area_per_um": {"am_pore": 0.3, "am_cbd": 0.1},
               "tortuosity_factor": 2.5, "effective_conductivity_S_m": 1.0}
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        with pytest.raises(TimeoutError, match="workers"):
            simulate_design(metrics, 80.0, EvaluationSpec(), client=cluster.scheduler_address)


def test_metrics_outside_the_cell_models_range_score_zero_with_the_reason():
    from kernels.cell.model import RANGES

    too_tortuous = 2.0 * RANGES["tortuosity_factor"][1]
    metrics = {"volume_fraction": {"pore": 0.35, "am": 0.5, "cbd": 0.15},
               "specific_surface_area_per_um": {"am_pore": 0.3, "am_cbd": 0.1},
               "cbd_coverage": 0.25, "tortuosity_factor": too_tortuous,
               "effective_conductivity_S_m": 1.0, "percolating": True}
    result = simulate_design(metrics, 80.0, EvaluationSpec())
    assert result["feasible"] is False and result["objective"] is None
    assert "tortuosity_factor" in result["reason"] and "accepted range" in result["reason"]


def test_failed_stage_raises_and_keeps_what_was_written(tmp_path):
    spec = tiny_spec()
    spec["fidelity"]["backend"] = "no-such-solver"
    with pytest.raises(Exception, match="no-such-solver"):
        evaluate_design(str(tmp_path), 3, PARAMS, spec)
    store = DesignStore.open(tmp_path, 3)
    assert store.done_samples() == [0, 1]
    assert not result_path(tmp_path, 3).exists()


def test_the_evaluate_program_refuses_bad_input_files_with_exit_2(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(tiny_spec()))
    (tmp_path / "params.json").write_text(json.dumps({"am_wt_frac": 0.9}))
    run = subprocess.run([sys.executable, "-m", "jobs.evaluate", str(tmp_path / "c"), "0",
                          "--spec", str(tmp_path / "spec.json"),
                          "--params", str(tmp_path / "params.json")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "missing key(s) ['porosity']" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "c").exists()
