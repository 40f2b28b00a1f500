"""One design end to end: params -> voxels -> metrics -> cell -> objective. What one array task runs.

Idempotent: a finished trial returns its stored ``result.json``; a half-finished one continues
from what is stored (done voxel samples, per-sample metrics). A stage that raises propagates
(the executor records and retries it), everything written before it stays, and
``failure.json`` says why. An infeasible design is not an error and not a 0: its objective
value is None with the physical reason (jobs.contract.result.Objective).

Files, under ``<campaign>/trials/<id>/``: ``spec.json``, ``params.json``, ``metrics_<i>.json``,
``metrics.json`` (mean/std), ``result.json`` (an `EvaluationResult`); voxels in
``<campaign>/voxels.zarr/trial_<id>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from jobs.contract.result import (
    OBJECTIVE_UNITS,
    CellResults,
    Discharge,
    EvaluationFailure,
    EvaluationResult,
    MetricsSummary,
    Objective,
    SampleMetrics,
    SpreadRecord,
    Timings,
    TrainingEnvelope,
)
from jobs.contract.spec import EvaluationSpec, read_job_inputs, validate_params
from jobs.store import json_safe, read_json, trial_dir, write_json_atomic

DASK_SCHEDULER_ENV = "MICROLOOP_DASK_SCHEDULER"
RESULT_NAME = "result.json"
FAILURE_NAME = "failure.json"


def result_path(campaign_dir: str | Path, trial_id: int) -> Path:
    return trial_dir(campaign_dir, trial_id) / RESULT_NAME


def failure_path(campaign_dir: str | Path, trial_id: int) -> Path:
    """The last failed attempt's `EvaluationFailure` (removed once a result is written)."""
    return trial_dir(campaign_dir, trial_id) / FAILURE_NAME


def cathode_thickness_um(params: dict[str, float], spec: EvaluationSpec,
                         am_volume_fraction: float) -> float:
    """Thickness from the mass loading (params first, then the cell spec), else the fixed one."""
    loading = params.get("mass_loading_mg_cm2", spec.cell.mass_loading_mg_cm2)
    if loading is None:
        return float(spec.cell.thickness_um)
    from kernels.cell.design import thickness_from_mass_loading_um  # no PyBaMM import

    return float(thickness_from_mass_loading_um(loading, am_volume_fraction))


def evaluate_design(campaign_dir: str, trial_id: int, params: dict[str, float],
                    spec: dict | EvaluationSpec,
                    dask_scheduler_address: str | None = None) -> dict[str, Any]:
    """`evaluate` as the JSON dict of its `EvaluationResult` (what a submitted job returns)."""
    return evaluate(campaign_dir, trial_id, params, spec, dask_scheduler_address).to_dict()


def evaluate(campaign_dir: str | Path, trial_id: int, params: dict[str, float],
             spec: dict | EvaluationSpec,
             dask_scheduler_address: str | None = None) -> EvaluationResult:
    """Evaluate one design; returns (and stores) its `EvaluationResult`.

    Infeasible (objective value None with the reason) only for physical reasons: fewer cubes
    percolate than `objective.min_percolating_fraction` asks, or the cell cannot deliver the load
    (kernels.cell.model). Anything else raises with the real error, and
    ``trials/<id>/failure.json`` records it (`EvaluationFailure`).

    Cell sweeps go to the Dask scheduler at `dask_scheduler_address` (or the
    ``MICROLOOP_DASK_SCHEDULER`` environment variable) when one is given, else run in process.
    """
    spec = EvaluationSpec.from_dict(spec)
    params = validate_params(params)
    trial_id = int(trial_id)
    stored = read_json(result_path(campaign_dir, trial_id))
    if stored is not None:
        result = EvaluationResult.from_dict(stored)
        if result.params != params:
            raise ValueError(f"trial {trial_id} in {campaign_dir} was evaluated with params "
                             f"{result.params}, not {params}: use a new trial id")
        return result
    folder = trial_dir(campaign_dir, trial_id)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        result = _evaluate(campaign_dir, trial_id, params, spec, dask_scheduler_address)
    except Exception as error:   # recorded for whoever looks at the trial, then re-raised
        write_json_atomic(failure_path(campaign_dir, trial_id),
                          EvaluationFailure.from_exception(error).to_dict())
        raise
    write_json_atomic(result_path(campaign_dir, trial_id), json_safe(result.to_dict()))
    failure_path(campaign_dir, trial_id).unlink(missing_ok=True)
    return result


def _evaluate(campaign_dir: str | Path, trial_id: int, params: dict[str, float],
              spec: EvaluationSpec, dask_scheduler_address: str | None) -> EvaluationResult:
    # stage modules import kernels (torch, pybamm): load them only when a trial runs
    from jobs.characterise import run_characterise
    from jobs.generate import generate_samples
    from jobs.simulate import simulate_cell

    start = time.perf_counter()
    folder = trial_dir(campaign_dir, trial_id)
    write_json_atomic(folder / "spec.json", spec.to_dict())
    write_json_atomic(folder / "params.json", params)

    tick = time.perf_counter()
    generate_samples(campaign_dir, trial_id, params, spec)
    generate_s = time.perf_counter() - tick

    tick = time.perf_counter()
    summary = MetricsSummary.from_dict(run_characterise(campaign_dir, trial_id, spec))
    characterise_s = time.perf_counter() - tick

    tick = time.perf_counter()
    address = dask_scheduler_address or os.environ.get(DASK_SCHEDULER_ENV) or None
    cell: CellResults | None = None
    spread: SpreadRecord | None = None
    outcomes: tuple[Objective, ...] = ()
    too_few = percolation_shortfall(summary, spec)
    if too_few is not None:
        objective = Objective(spec.objective.kind, None, objective_unit(spec), False, too_few)
    else:
        thickness_um = cathode_thickness_um(params, spec, summary.mean.volume_fraction["am"])
        cell = simulate_cell(summary.mean.to_dict(), thickness_um, spec, client=address)
        objective = objective_of(cell.objective, spec)
        outcomes = outcomes_of(summary.mean.to_dict(), thickness_um, spec, cell, address)
        if spec.objective.noise_from_samples and objective.feasible:
            spread = per_sample_spread(campaign_dir, trial_id, spec, thickness_um, objective,
                                       address)
    simulate_s = time.perf_counter() - tick
    return EvaluationResult(
        trial_id=trial_id,
        params=params,
        objective=objective,
        metrics=summary,
        cell=cell,
        objective_spread=spread,
        timings_s=Timings(generate_s, characterise_s, simulate_s, time.perf_counter() - start),
        training_envelope=training_envelope(params, spec),
        outcomes=outcomes,
    )


def outcome_spec(spec: EvaluationSpec, entry: dict) -> EvaluationSpec:
    """The spec whose objective is one entry of objective.also / objective.constraints (same
    cell, no Ragone sweep): what scores that outcome."""
    objective = dataclasses.replace(spec.objective, kind=entry["kind"],
                                    power_W=entry.get("power_W"), c_rate=entry.get("c_rate"),
                                    also=[], constraints=[])
    return dataclasses.replace(spec, objective=objective,
                               cell=dataclasses.replace(spec.cell, ragone_powers_W=[]))


def outcomes_of(metrics_mean: dict, thickness_um: float, spec: EvaluationSpec,
                cell: CellResults, address: str | None) -> tuple[Objective, ...]:
    """Each extra objective and constrained outcome of a multi-objective campaign: one more
    discharge per operating point (the objective's own discharge is re-used at its point)."""
    from jobs.simulate import simulate_cell

    entries = [*spec.objective.also, *spec.objective.constraints]
    done = {(spec.objective.power_W, spec.objective.c_rate): cell.objective}
    outcomes = []
    for entry in entries:
        target = outcome_spec(spec, entry)
        point = (target.objective.power_W, target.objective.c_rate)
        if point not in done:
            done[point] = simulate_cell(metrics_mean, thickness_um, target,
                                        client=address).objective
        outcomes.append(objective_of(done[point], target))
    return tuple(outcomes)


def min_percolating_fraction(spec: EvaluationSpec) -> float:
    """The share of cubes that must percolate (pore and solid) for a design to be feasible."""
    # ObjectiveSpec gains this field on another branch; 1.0 is its documented default there
    return float(getattr(spec.objective, "min_percolating_fraction", 1.0))


def percolation_shortfall(summary: MetricsSummary, spec: EvaluationSpec) -> str | None:
    """The infeasibility reason when too few cubes percolate, else None."""
    needed = min_percolating_fraction(spec)
    if summary.n_percolating > 0 and summary.percolating_fraction >= needed:
        return None
    blocked = sorted(set(summary.samples) - set(summary.transport_over))
    return (f"{summary.n_percolating} of {summary.n_samples} cubes percolate in both pore and "
            f"solid (cubes {blocked} do not); objective.min_percolating_fraction is {needed:g}")


def objective_unit(spec: EvaluationSpec) -> str:
    return OBJECTIVE_UNITS[spec.objective.kind]


class DischargeLowerBound(RuntimeError):
    """The objective discharge ended on an end-of-discharge event before the voltage cut-off
    (kernels.cell.model, CellModelOptions.caught_discharge "named_failure"): what it delivered is
    a lower bound, so the trial fails with it (the message carries the bound) instead of telling
    the optimiser a value it is not, or an infeasibility the cell did not show."""


def objective_of(discharge: Discharge, spec: EvaluationSpec) -> Objective:
    """The objective of one discharge: its `spec.objective.kind`, or infeasible with the cell
    model's reason. A feasible discharge without that number is an error, not a 0; a lower
    bound (not feasible, `lower_bound` True) raises `DischargeLowerBound`."""
    kind, unit = spec.objective.kind, objective_unit(spec)
    if discharge.lower_bound and not discharge.feasible:
        # not infeasible (the cell did deliver this much) and not a value: a named failure
        raise DischargeLowerBound(
            f"the objective discharge ({kind}) is only a lower bound: "
            f"{getattr(discharge, kind)!r} {unit} delivered up to the end-of-discharge event "
            f"{discharge.end_event!r} at t = {discharge.end_time_s!r} s; {discharge.reason}")
    if not discharge.feasible:
        return Objective(kind, None, unit, False, discharge.reason or "infeasible")
    value = getattr(discharge, kind)
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"the cell model gave {kind} = {value!r} for a feasible discharge "
                         f"(objective.kind={kind!r}, half_cell={spec.objective.half_cell}); "
                         "choose a kind it reports")
    return Objective(kind, float(value), unit, True)


def per_sample_spread(campaign_dir: str | Path, trial_id: int, spec: EvaluationSpec,
                      thickness_um: float, design_objective: Objective,
                      address: str | None) -> SpreadRecord:
    """The objective of each cube scored on its own (at the design's thickness) and their
    spread (kernels.cell.objective_spread): `noise_var`, the variance of the mean, is the
    design's known noise for the optimiser. With one cube, or a cube infeasible on its own,
    the noise is unknown (None, with a note): the optimiser fills it, it is never 0."""
    from jobs.characterise import metrics_path
    from jobs.simulate import simulate_cell
    from kernels.cell.objective_spread import objective_spread

    if spec.fidelity.n_cubes == 1:
        value = design_objective.value
        return SpreadRecord([value], 1, value, None, None, None,
                            note="one cube: the spread over cubes is unknown")
    records = []
    for i in range(spec.fidelity.n_cubes):
        stored = read_json(metrics_path(campaign_dir, trial_id, i))
        if stored is None:
            raise FileNotFoundError(f"trial {trial_id}: metrics of cube {i} are missing "
                                    f"({metrics_path(campaign_dir, trial_id, i)})")
        records.append(SampleMetrics.from_dict(stored))
    objective_only = dataclasses.replace(spec, cell=dataclasses.replace(spec.cell, ragone_powers_W=[]))
    values: list[float | None] = []
    for record in records:
        if not record.metrics.percolation()[0]:
            values.append(None)   # scored on its own it has no path; the design still may
            continue
        cell = simulate_cell(record.metrics.to_dict(), thickness_um, objective_only,
                               client=address)
        if cell.objective.lower_bound and not cell.objective.feasible:
            values.append(None)   # only a lower bound on its own: no number for the spread
            continue
        values.append(objective_of(cell.objective, spec).value)
    known = [v for v in values if v is not None]
    if len(known) < len(values):
        missing = [r.sample for r, v in zip(records, values, strict=True) if v is None]
        return SpreadRecord(values, len(values), None, None, None, None,
                            note=f"cubes {missing} are infeasible or only a lower bound on "
                                 "their own: spread unknown")
    spread = objective_spread(known)
    return SpreadRecord(values, spread.n, spread.mean, spread.std, spread.noise_var,
                        spread.to_dict()["rel_std"])


def training_envelope(params: dict[str, float], spec: EvaluationSpec) -> TrainingEnvelope | None:
    """For a trained generator: whether the design lies where it saw training data (a design
    outside it is flagged, its microstructures are extrapolated). None for the simulator."""
    if spec.generator.is_procedural:
        return None
    from jobs.generate import load_generator
    from kernels.generator.model import in_training_envelope

    inside, reason = in_training_envelope(params, load_generator(spec))
    return TrainingEnvelope(bool(inside), str(reason))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate",
                                     description="Evaluate one design end to end (idempotent).")
    parser.add_argument("campaign_dir")
    parser.add_argument("trial_id", type=int)
    parser.add_argument("--spec", required=True, help="EvaluationSpec JSON file")
    parser.add_argument("--params", required=True, help="design params JSON file")
    parser.add_argument("--dask-scheduler", default=None, help="Dask scheduler address")
    args = parser.parse_args(argv)
    try:    # bad input files: a one-line error and exit 2, before any work
        spec, params = read_job_inputs(args.spec, args.params)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    result = evaluate(args.campaign_dir, args.trial_id, params, spec, args.dask_scheduler)
    print(json.dumps({"trial_id": result.trial_id, **result.objective.to_dict()}))


if __name__ == "__main__":
    main()
