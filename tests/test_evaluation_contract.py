"""The evaluation contract: typed, versioned results; a failure is a failure with its real error
(never "infeasible, 0"); the per-cube objective spread is real. Real PyBaMM, real volumes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import tomli_w

from jobs.contract.result import (
    SCHEMA_VERSION,
    CubeMetrics,
    EvaluationFailure,
    EvaluationResult,
    MetricsSummary,
    Objective,
    ResultSchemaError,
    SpreadRecord,
    Timings,
)
from jobs.evaluate import evaluate_design

PARAMS = {"am_wt_frac": 0.9, "porosity": 0.4, "binder_adhesion": 0.3}
REFERENCE_DESIGN = dict(porosity=0.335, am_volume_fraction=0.665, thickness_um=75.6,
                        tortuosity_factor=0.335**-0.5,
                        specific_surface_area_per_um=3 * 0.665 / 5.22,
                        effective_conductivity_S_m=0.18)


def _result() -> EvaluationResult:
    mean = CubeMetrics({"pore": 0.4, "am": 0.5, "cbd": 0.1}, {"am_pore": 0.4, "am_cbd": 0.1},
                       0.2, 2.5, 0.3, True, True)
    summary = MetricsSummary(mean, {"tortuosity_factor": 0.1}, 2, 2, 1.0, [0, 1], [0, 1],
                             [0.5, 0.6])
    return EvaluationResult(
        trial_id=3, params={"porosity": 0.4, "am_wt_frac": 0.9},
        objective=Objective("energy_density_Wh_L", 500.0, "Wh/L", True),
        metrics=summary, cell=None,
        objective_spread=SpreadRecord([490.0, 510.0], 2, 500.0, 14.1, 100.0, 0.028),
        timings_s=Timings(1.0, 2.0, 3.0, 6.0), training_envelope=None)


def test_result_round_trips_through_json_and_refuses_other_schemas_by_name():
    result = _result()
    assert EvaluationResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    stale = dict(result.to_dict(), schema_version="microloop.evaluation/0")
    with pytest.raises(ResultSchemaError, match=r"'microloop.evaluation/0'.*accepted.*"
                                                + SCHEMA_VERSION):
        EvaluationResult.from_dict(stale)
    # main's result.json had no schema_version and a bare number as objective
    with pytest.raises(ResultSchemaError, match="schema_version None"):
        EvaluationResult.from_dict({"trial_id": 0, "objective": 684.7, "feasible": True})
    with pytest.raises(ResultSchemaError, match=r"unknown key\(s\) \['objectiv'\]"):
        EvaluationResult.from_dict(dict(result.to_dict(), objectiv=1.0))
    # an infeasible objective has no value, and a feasible one must have a finite value
    with pytest.raises(ValueError, match="value None"):
        Objective("energy_density_Wh_L", 0.0, "Wh/L", False, "cannot deliver")
    with pytest.raises(ValueError, match="finite value"):
        Objective("energy_density_Wh_L", None, "Wh/L", True)


def _innermost(depth: int) -> None:
    if depth == 0:
        {"a": 1}["b"]      # noqa: B018 - the KeyError under test
    _innermost(depth - 1)


def test_a_failure_keeps_type_message_and_innermost_frame_from_a_remote_traceback():
    try:
        try:
            _innermost(2)
        except KeyError as error:
            raise TypeError("cell model API changed: solve() got an unexpected keyword") from error
    except TypeError as error:
        text = traceback.format_exc()   # what submitit hands back for a failed job
        local = EvaluationFailure.from_exception(error)
    parsed = EvaluationFailure.from_traceback_text(text)
    assert parsed == local
    assert parsed.exception_type == "TypeError" and "unexpected keyword" in parsed.message
    assert parsed.file == __file__ and parsed.function.startswith("test_a_failure")
    reason = parsed.reason()
    assert reason.startswith("TypeError: cell model API changed")
    assert f"{__file__}:{parsed.line}:" in reason
    # the innermost frame of the chain's first exception is where the KeyError was raised
    inner = EvaluationFailure.from_traceback_text(text.split("The above exception")[0])
    assert inner.exception_type == "KeyError" and inner.function == "_innermost"
    # a job killed without a traceback keeps its whole message
    killed = EvaluationFailure.from_traceback_text("Job 17 (task: 0) exited without a result")
    assert "exited without a result" in killed.reason()


def test_a_dfn_solve_that_stops_without_a_cut_off_fails_instead_of_scoring_zero():
    # Ai2020's half cell at 1C stops after ~3300 s with a solver failure that the end-of-
    # discharge variant does not catch: it delivered for an hour, so it is no infeasible
    # design; main returned "solver failure", energy 0, feasible False
    from kernels.cell.model import CellModel, CellSolveFailed, ElectrodeDesign

    model = CellModel("Ai2020", half_cell=True)
    with pytest.raises(CellSolveFailed, match="without a cut-off event after"):
        model.discharge_c_rate(ElectrodeDesign(**REFERENCE_DESIGN), 1.0)
    # ... while a load the cell cannot carry is still infeasible, with the physical reason
    chen = CellModel("Chen2020")
    too_much = chen.discharge_power(ElectrodeDesign(**REFERENCE_DESIGN), 15000.0)
    assert too_much.feasible is False and too_much.energy_Wh == 0.0
    assert "t = 0" in too_much.reason or "collapses under this load" in too_much.reason


def _tiny_spec(n_cubes: int) -> dict:
    return {
        "fidelity": {"n_cubes": n_cubes, "cube_voxels": 32, "voxel_um": 0.5, "mpi_ranks": 1},
        "generator": {"kind": "procedural", "mean_diameter_um": 4.0},
        "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0,
                      "noise_from_samples": True},
        "cell": {"thickness_um": 70.0, "ragone_powers_W": []},
        "seed": 3,
    }


@pytest.mark.slow
def test_per_cube_objectives_are_real_and_their_mean_is_the_design_objective(tmp_path):
    # main scored each cube's whole file record instead of its metrics: per_sample [0.0, 0.0]
    # next to a design objective of hundreds of Wh/L, and noise 0 for the optimiser
    result = EvaluationResult.from_dict(evaluate_design(str(tmp_path), 0, PARAMS, _tiny_spec(2)))
    spread = result.objective_spread
    design = result.objective.value
    assert result.objective.feasible and design > 100
    assert spread is not None and spread.n == 2 and all(v > 100 for v in spread.per_sample)
    assert spread.per_sample[0] != spread.per_sample[1]           # two different cubes
    assert abs(spread.mean - design) / design < 0.05
    assert spread.std > 0 and spread.noise_var == pytest.approx(spread.std ** 2 / 2)
    assert result.noise_var == spread.noise_var > 0

    # one cube: the spread is unknown, said as None (never 0), for the optimiser to fill
    one = EvaluationResult.from_dict(evaluate_design(str(tmp_path), 1, PARAMS, _tiny_spec(1)))
    assert one.objective.feasible
    assert one.objective_spread.noise_var is None and one.noise_var is None
    assert one.objective_spread.per_sample == [one.objective.value]


def _env() -> dict[str, str]:
    return dict(os.environ, PYBAMM_DISABLE_TELEMETRY="true", OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_a_campaign_whose_evaluations_all_fail_records_the_error_and_exits_1(tmp_path):
    campaign = tmp_path / "failing.toml"
    campaign.write_text(tomli_w.dumps({
        "name": "failing",
        "space": {"am_wt_frac": [0.88, 0.92], "porosity": [0.36, 0.42], "binder_adhesion": 0.3},
        "objective": {"kind": "capacity_mAh_g", "half_cell": True, "c_rate": 1.0},
        "cell": {"parameter_set": "Ai2020", "thickness_um": 70.0, "ragone_powers_W": []},
        "fidelity": {"n_cubes": 1, "cube_voxels": 32, "voxel_um": 0.5},
        "generator": {"mean_diameter_um": 4.0},
        "optimizer": {"backend": "sobol", "budget": 1, "max_concurrent": 1, "seed": 3},
        "resources": {"executor": "local", "dask_workers": 0, "max_retries": 0,
                      "poll_interval_s": 0.5},
    }))
    folder = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "hpc.cli", "run", str(campaign), "--dir",
                           str(folder), "--quiet", "--no-report"], capture_output=True,
                          text=True, env=_env(), timeout=480)
    # main: exit 0, the trial "complete" with objective 0 and "solver failure" as the reason
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no trial completed" in done.stderr
    with open(folder / "trials.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"] == "failed" and row["objective"] == ""
    assert "kernels.cell.model.CellSolveFailed" in row["reason"]
    assert f"{Path('kernels', 'cell', 'model.py')}:" in row["reason"]
    assert ":_discharge)" in row["reason"]
    events = [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines()]
    (failed,) = [e for e in events if e["event"] == "failed"]
    failure = EvaluationFailure.from_dict(failed["failure"])
    assert failure.function == "_discharge" and failure.line > 0
    # resuming the finished campaign says the same: nothing completed, exit 1
    resumed = subprocess.run([sys.executable, "-m", "hpc.cli", "resume", str(folder), "--quiet",
                              "--no-report"], capture_output=True, text=True, env=_env(),
                             timeout=240)
    assert resumed.returncode == 1 and "no trial completed" in resumed.stderr
