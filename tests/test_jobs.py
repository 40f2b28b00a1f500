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
from jobs.contract.result import SCHEMA_VERSION, CubeMetrics, EvaluationResult
from jobs.contract.spec import EvaluationSpec, validate_params
from jobs.evaluate import evaluate_design, failure_path, percolation_shortfall, result_path
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


def _cube(i, tau, sigma, pore=True, solid=None, pore_fraction=0.3):
    metrics = {"volume_fraction": {"pore": pore_fraction},
               "specific_surface_area_per_um": {"am_pore": 0.5 + i},
               "tortuosity_factor": tau, "effective_conductivity_S_m": sigma, "percolating": pore}
    if solid is not None:
        metrics["solid_percolating"] = solid
    return {"schema_version": SCHEMA_VERSION, "sample": i, "metrics": metrics, "wall_s": 0.1,
            "device": "cpu", "rank": 0}


def test_aggregate_counts_a_cube_as_percolating_only_when_pore_and_solid_both_do():
    # all percolate: every mean is over all cubes, and the fraction is 1
    every = aggregate([_cube(0, 2.0, 1.0, solid=True), _cube(1, 4.0, 3.0, solid=True)])
    assert every.percolating_fraction == 1.0 and every.n_percolating == 2
    assert every.mean.tortuosity_factor == pytest.approx(3.0)
    assert every.mean.effective_conductivity_S_m == pytest.approx(2.0)
    # a cube whose solid does not percolate is not a percolating cube, even with a pore path
    # (main counted the design as percolating when ANY cube's pore phase did)
    mixed = aggregate([_cube(0, 2.0, 1.0, solid=True), _cube(1, 4.0, 0.0, solid=False),
                       _cube(2, None, 5.0, pore=False, solid=True)])
    assert mixed.n_percolating == 1 and mixed.percolating_fraction == pytest.approx(1 / 3)
    assert mixed.transport_over == [0]
    assert mixed.mean.tortuosity_factor == pytest.approx(2.0)
    assert mixed.mean.specific_surface_area_per_um["am_pore"] == pytest.approx(1.5)  # all 3
    # a metrics record without solid_percolating is unknown, not True: its measured
    # conductivity decides (0.0 is what the metrics give a solid that does not connect)
    unknown = aggregate([_cube(0, 2.0, 1.0), _cube(1, 3.0, 0.0)])
    assert unknown.mean.solid_percolating is True and unknown.n_percolating == 1
    assert CubeMetrics.from_dict(_cube(1, 3.0, 0.0)["metrics"]).solid_percolating is None
    none = aggregate([_cube(0, None, 0.0, pore=False)])
    assert none.mean.tortuosity_factor is None and none.n_percolating == 0


def test_too_few_percolating_cubes_make_the_design_infeasible_naming_k_of_n():
    spec = EvaluationSpec.from_dict(tiny_spec())
    mixed = aggregate([_cube(0, 2.0, 1.0, solid=True), _cube(1, 4.0, 0.0, solid=False)])
    reason = percolation_shortfall(mixed, spec)
    assert reason is not None and "1 of 2 cubes" in reason and "[1]" in reason
    assert percolation_shortfall(aggregate([_cube(0, 2.0, 1.0, solid=True)]), spec) is None


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
    assert via_dask["objective"]["feasible"] and via_dask["objective"]["value"] > 100
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


def _built_modes() -> list[str]:
    from kernels.cell.pybamm_model import SIMULATIONS

    return sorted({key[2] for key in SIMULATIONS})


def test_a_dask_worker_warms_once_and_only_the_objectives_discharge_mode():
    """A power objective never builds (or solves) the constant-current model on the worker,
    and the second evaluation's warm-up is a no-op: before, every evaluation re-ran two
    reference solves per worker and built a model the objective never used."""
    from distributed import Client, LocalCluster

    from jobs.simulate import cell_options, simulate_cell, warm_model

    metrics = {"volume_fraction": {"pore": 0.35, "am": 0.5, "cbd": 0.15},
               "specific_surface_area_per_um": {"am_pore": 0.3, "am_cbd": 0.1},
               "cbd_coverage": 0.25, "tortuosity_factor": 2.5,
               "effective_conductivity_S_m": 1.0, "percolating": True}
    spec = EvaluationSpec.from_dict({"cell": {"ragone_powers_W": [40.0]},
                                     "objective": {"kind": "energy_density_Wh_L",
                                                   "power_W": 10.0}})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        first = simulate_cell(metrics, 80.0, spec, client=client)
        second = simulate_cell(metrics, 75.0, spec, client=client)
        assert first.objective.feasible and second.objective.feasible
        assert list(client.run(_built_modes).values()) == [["power"]]
        warm_again = client.run(warm_model, cell_options(spec), ("power",))
        assert list(warm_again.values()) == [0.0]


@pytest.mark.slow
def test_evaluate_design_end_to_end_is_idempotent_and_repairs(tmp_path):
    result = evaluate_design(str(tmp_path), 1, PARAMS, tiny_spec())
    typed = EvaluationResult.from_dict(result)          # the stored JSON is the typed schema
    assert typed.to_dict() == result and result["schema_version"] == SCHEMA_VERSION
    assert typed.objective.feasible and typed.objective.value > 100          # Wh/L of a 4680
    assert typed.objective.unit == "Wh/L"
    assert typed.objective.value == typed.cell.objective.energy_density_Wh_L
    assert len(typed.cell.ragone) == 1
    assert typed.cell.thickness_um == 70.0
    assert typed.metrics.percolating_fraction == 1.0 and typed.metrics.transport_over == [0, 1]
    assert math.isfinite(typed.metrics.mean.tortuosity_factor)
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
    assert not failure_path(tmp_path, 1).exists()


@pytest.mark.slow
def test_mass_loading_sets_thickness_and_an_undeliverable_power_is_infeasible_not_zero(tmp_path):
    # a deliberately impossible objective power: the cell reports infeasible, not an exception,
    # and the objective has no value (main stored 0.0 and told it to the optimiser)
    spec = tiny_spec()
    spec["objective"]["power_W"] = 15000.0
    params = {**PARAMS, "mass_loading_mg_cm2": 20.0}
    result = EvaluationResult.from_dict(evaluate_design(str(tmp_path), 2, params, spec))
    assert result.objective.value is None and result.objective.feasible is False
    reason = result.objective.infeasible_reason
    assert "t = 0" in reason or "collapses under this load" in reason
    am = result.metrics.mean.volume_fraction["am"]
    expected_um = 20.0 / (am * 4.75) * 10.0          # mg/cm^2 / (phi_AM rho_AM)
    assert result.cell.thickness_um == pytest.approx(expected_um)


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


def test_metrics_outside_the_cell_models_range_fail_naming_the_field():
    # a design the model cannot score is a failure, not an infeasible design scored 0 (main)
    from kernels.cell.model import RANGES

    too_tortuous = 2.0 * RANGES["tortuosity_factor"][1]
    metrics = {"volume_fraction": {"pore": 0.35, "am": 0.5, "cbd": 0.15},
               "specific_surface_area_per_um": {"am_pore": 0.3, "am_cbd": 0.1},
               "cbd_coverage": 0.25, "tortuosity_factor": too_tortuous,
               "effective_conductivity_S_m": 1.0, "percolating": True}
    with pytest.raises(ValueError, match="tortuosity_factor.*accepted range"):
        simulate_design(metrics, 80.0, EvaluationSpec())


def test_failed_stage_raises_and_keeps_what_was_written(tmp_path):
    spec = tiny_spec()
    spec["fidelity"]["backend"] = "no-such-solver"
    with pytest.raises(Exception, match="no-such-solver") as raised:
        evaluate_design(str(tmp_path), 3, PARAMS, spec)
    store = DesignStore.open(tmp_path, 3)
    assert store.done_samples() == [0, 1]
    assert not result_path(tmp_path, 3).exists()
    failure = json.loads(failure_path(tmp_path, 3).read_text())   # why, for whoever looks
    assert failure["exception_type"].endswith(type(raised.value).__name__)
    assert failure["file"].endswith(".py") and failure["line"] > 0 and failure["function"]


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
