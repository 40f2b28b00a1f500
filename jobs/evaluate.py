"""One design end to end: params -> voxels -> metrics -> cell -> objective. What one array task runs.

Idempotent: a finished trial returns its stored ``result.json``; a half-finished one continues
from what is stored (done voxel samples, per-sample metrics). A stage that raises propagates
(the executor records and retries it) and everything written before it stays. An infeasible
cell is not an error: objective 0.0 with the reason.

Files, under ``<campaign>/trials/<id>/``: ``spec.json``, ``params.json``, ``metrics_<i>.json``,
``metrics.json`` (mean/std), ``result.json``; voxels in ``<campaign>/voxels.zarr/trial_<id>``.
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

from jobs.contract.spec import EvaluationSpec, read_job_inputs, validate_params
from jobs.store import json_safe, read_json, trial_dir, write_json_atomic

DASK_SCHEDULER_ENV = "MICROLOOP_DASK_SCHEDULER"
RESULT_NAME = "result.json"


def result_path(campaign_dir: str | Path, trial_id: int) -> Path:
    return trial_dir(campaign_dir, trial_id) / RESULT_NAME


def cathode_thickness_um(params: dict[str, float], spec: EvaluationSpec,
                         am_volume_fraction: float) -> float:
    """Thickness from the mass loading (params first, then the cell spec), else the fixed one."""
    loading = params.get("mass_loading_mg_cm2", spec.cell.mass_loading_mg_cm2)
    if loading is None:
        return float(spec.cell.thickness_um)
    from kernels.cell.model import thickness_from_mass_loading_um

    return float(thickness_from_mass_loading_um(loading, am_volume_fraction))


def evaluate_design(campaign_dir: str, trial_id: int, params: dict[str, float],
                    spec: dict | EvaluationSpec,
                    dask_scheduler_address: str | None = None) -> dict[str, Any]:
    """Evaluate one design; returns (and stores) the result dict:

    ``{"trial_id", "objective", "feasible", "reason", "metrics": {"mean", "std", ...},
    "results": {"objective": DischargeResult dict, "ragone": [...], "thickness_um", ...},
    "timings_s": {"generate", "characterise", "simulate", "total"}, "params"}``

    Cell sweeps go to the Dask scheduler at `dask_scheduler_address` (or the
    ``MICROLOOP_DASK_SCHEDULER`` environment variable) when one is given, else run in process.
    """
    # stage modules import kernels (torch, pybamm): load them only when a trial runs
    from jobs.characterise import run_characterise
    from jobs.generate import generate_samples
    from jobs.simulate import simulate_design, unscorable_result

    spec = EvaluationSpec.from_dict(spec)
    params = validate_params(params)
    trial_id = int(trial_id)
    stored = read_json(result_path(campaign_dir, trial_id))
    if stored is not None:
        if stored.get("params") != params:
            raise ValueError(f"trial {trial_id} in {campaign_dir} was evaluated with params "
                             f"{stored.get('params')}, not {params}: use a new trial id")
        return stored

    start = time.perf_counter()
    folder = trial_dir(campaign_dir, trial_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "spec.json", spec.to_dict())
    write_json_atomic(folder / "params.json", params)

    timings: dict[str, float] = {}
    tick = time.perf_counter()
    generate_samples(campaign_dir, trial_id, params, spec)
    timings["generate"] = time.perf_counter() - tick

    tick = time.perf_counter()
    metrics = run_characterise(campaign_dir, trial_id, spec)
    timings["characterise"] = time.perf_counter() - tick

    tick = time.perf_counter()
    mean = metrics["mean"]
    address = dask_scheduler_address or os.environ.get(DASK_SCHEDULER_ENV) or None
    try:
        thickness_um = cathode_thickness_um(params, spec, mean["volume_fraction"]["am"])
    except ValueError as error:    # e.g. an AM fraction the loading formula does not accept
        results = unscorable_result(None, f"no cathode thickness for this design: {error}", tick)
    else:
        # a non-percolating mean design comes back infeasible (objective 0) from the cell model
        results = simulate_design(mean, thickness_um, spec, client=address)
    spread = None
    if spec.objective.noise_from_samples and results["feasible"]:
        spread = per_sample_spread(campaign_dir, trial_id, spec, thickness_um, address)
    timings["simulate"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start

    result = json_safe({
        "trial_id": trial_id,
        "params": params,
        "objective": _objective_value(results, spec),
        "feasible": bool(results["feasible"]),
        "reason": results["reason"],
        "metrics": metrics,
        "results": results,
        "timings_s": timings,
        "objective_spread": spread,
        "training_envelope": training_envelope(params, spec),
    })
    write_json_atomic(result_path(campaign_dir, trial_id), result)
    return result


def per_sample_spread(campaign_dir: str | Path, trial_id: int, spec: EvaluationSpec,
                      thickness_um: float, address: str | None) -> dict[str, Any] | None:
    """The objective of each sample on its own, and their spread (kernels.cell.objective_spread):
    `noise_var` (variance of the mean) is the design's known noise for the optimiser. None with
    fewer than two samples; an infeasible sample counts as 0, as it would for the design."""
    from jobs.characterise import metrics_path
    from jobs.simulate import simulate_design
    from kernels.cell.objective_spread import objective_spread

    records = [read_json(metrics_path(campaign_dir, trial_id, i))
               for i in range(spec.fidelity.n_cubes)]
    if len(records) < 2 or any(r is None for r in records):
        return None
    objective_only = dataclasses.replace(spec, cell=dataclasses.replace(spec.cell, ragone_powers_W=[]))
    values = [_objective_value(simulate_design(r, thickness_um, objective_only, client=address),
                               spec) for r in records]
    return dict(objective_spread(values).to_dict(), per_sample=values)


def training_envelope(params: dict[str, float], spec: EvaluationSpec) -> dict[str, Any] | None:
    """For a trained generator: whether the design lies where it saw training data (a design
    outside it is flagged, its microstructures are extrapolated). None for the simulator."""
    if spec.generator.is_procedural:
        return None
    from jobs.generate import load_generator
    from kernels.generator.model import in_training_envelope

    inside, reason = in_training_envelope(params, load_generator(spec))
    return {"inside": bool(inside), "reason": reason}


def _objective_value(results: dict[str, Any], spec: EvaluationSpec) -> float:
    """The objective's number; 0.0 for an infeasible design."""
    if not results["feasible"] or results["objective"] is None:
        return 0.0
    value = results["objective"].get(spec.objective.kind)
    if value is None or not math.isfinite(value):
        raise ValueError(f"the cell model gave no {spec.objective.kind} for this objective "
                         f"(objective.kind={spec.objective.kind!r}, half_cell="
                         f"{spec.objective.half_cell}); choose a kind it reports")
    return float(value)


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
    result = evaluate_design(args.campaign_dir, args.trial_id, params, spec, args.dask_scheduler)
    print(json.dumps({k: result[k] for k in ("trial_id", "objective", "feasible", "reason")}))


if __name__ == "__main__":
    main()
