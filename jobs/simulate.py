"""Metrics -> cell results: the objective's discharge and a Ragone sweep, on Dask workers or here.

A built PyBaMM simulation costs ~0.5 s and pickles badly, a re-solve with new inputs ~0.05 s:
so each worker builds the model once (`kernels.cell.model.get_cell_model` caches it per process;
`client.run` warms every worker), and tasks carry only small dicts in and scalars out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from jobs.contract.result import CellResults, Discharge, MetricsSummary
from jobs.contract.spec import EvaluationSpec

DASK_WORKER_WAIT_S = 300.0   # how long a sweep waits for the campaign's first Dask worker
#: A TCP connect to the scheduler's port must succeed this fast: a dead controller's port refuses
#: at once, a vanished host times out here; only then is the Client's own handshake (up to
#: DASK_HANDSHAKE_S, a live but busy scheduler) waited for. Before, every orphaned job of a
#: killed controller waited the whole 60 s handshake on a scheduler that no longer existed.
DASK_CONNECT_TIMEOUT_S = 5.0
DASK_HANDSHAKE_S = 60.0


def cell_options(spec: EvaluationSpec) -> dict[str, Any]:
    """The arguments that select the (cached) cell model, as plain data for a worker."""
    return {"parameter_set": spec.cell.parameter_set, "half_cell": spec.objective.half_cell,
            "packaging": dict(spec.cell.packaging), "calibration": spec.cell.calibration,
            "model_options": dict(spec.cell.model_options)}


def _model(options: dict[str, Any]) -> Any:
    from kernels.cell.model import Packaging4680, get_cell_model

    packaging = Packaging4680.from_dict(options["packaging"]) if options["packaging"] else None
    from kernels.cell.options import cell_model_options

    extra: dict[str, Any] = {}
    if options.get("calibration"):
        extra["calibration"] = options["calibration"]
    if options.get("model_options"):
        extra["options"] = cell_model_options(options["model_options"])
    return get_cell_model(parameter_set=options["parameter_set"],
                          half_cell=options["half_cell"], packaging=packaging, **extra)


#: (model options, discharge mode) pairs this process has warmed: the warm-up runs once per
#: worker, not once per evaluation (every evaluation calls `client.run(warm_model, ...)` so
#: that workers joining later are warmed too)
_WARMED: set[tuple[str, str]] = set()


def warm_model(options: dict[str, Any], modes: tuple[str, ...] = ("power", "current")) -> float:
    """Build this process's cell model for `modes` ("power", "current") now, once per process
    (run on every worker); returns the seconds it took (0.0 when it was warm already)."""
    key = json.dumps(options, sort_keys=True, default=str)
    todo = tuple(mode for mode in modes if (key, mode) not in _WARMED)
    if not todo:
        return 0.0
    start = time.perf_counter()
    _model(options).warm_up(todo)
    _WARMED.update((key, mode) for mode in todo)
    return time.perf_counter() - start


def discharge(options: dict[str, Any], design: dict[str, float], mode: str,
              value: float) -> dict[str, Any]:
    """One discharge of `design` at `value` W (mode "power") or `value` C (mode "c_rate")."""
    from kernels.cell.model import ElectrodeDesign

    model = _model(options)
    electrode = ElectrodeDesign(**design)
    if mode == "power":
        result = model.discharge_power(electrode, float(value))
    elif mode == "c_rate":
        result = model.discharge_c_rate(electrode, float(value))
    else:
        raise ValueError(f"mode must be 'power' or 'c_rate', got {mode!r}")
    return result.to_dict()


def electrode_design(metrics_mean: dict[str, Any], thickness_um: float) -> dict[str, float]:
    """The cell-model design of the mean metrics, as a plain dict."""
    from kernels.cell.design import design_from_metrics  # no PyBaMM: the job only maps

    return dataclasses.asdict(design_from_metrics(metrics_mean, float(thickness_um)))


def simulate_design(metrics_mean: dict[str, Any], thickness_um: float,
                    spec: EvaluationSpec | dict, client: Any = None) -> dict[str, Any]:
    """`simulate_cell` as plain JSON: ``{"design", "thickness_um", "objective", "ragone",
    "wall_s", "feasible", "reason"}``, `feasible`/`reason` being the objective discharge's."""
    cell = simulate_cell(metrics_mean, thickness_um, spec, client)
    return dict(cell.to_dict(), feasible=cell.objective.feasible, reason=cell.objective.reason)


def simulate_cell(metrics_mean: dict[str, Any], thickness_um: float,
                  spec: EvaluationSpec | dict, client: Any = None) -> CellResults:
    """The objective's discharge and the Ragone sweep of one electrode.

    `client` is a `distributed.Client`, a scheduler address (a client is opened and closed
    here), or None to solve in this process. Metrics outside the cell model's accepted ranges
    raise ValueError naming the field: a design the model cannot score is a failure, not an
    infeasible design. The objective discharge's `feasible`/`reason` say whether the cell
    delivers the load.
    """
    spec = EvaluationSpec.from_dict(spec)
    start = time.perf_counter()
    options = cell_options(spec)
    design = electrode_design(metrics_mean, thickness_um)
    objective = spec.objective
    mode, value = (("power", objective.power_W) if objective.power_W is not None
                   else ("c_rate", objective.c_rate))
    jobs = [(mode, value)] + [("power", p) for p in spec.cell.ragone_powers_W]
    if client is None:
        outputs = [discharge(options, design, m, v) for m, v in jobs]
    else:
        outputs = _on_dask(client, options, design, jobs)
    ragone = [Discharge.from_dict(dict(output, power_W_requested=float(v)))
              for output, (_, v) in zip(outputs[1:], jobs[1:], strict=True)]
    return CellResults(design=design, thickness_um=float(thickness_um),
                       objective=Discharge.from_dict(outputs[0]), ragone=ragone,
                       wall_s=time.perf_counter() - start)


def _on_dask(client: Any, options: dict[str, Any], design: dict[str, float],
             jobs: list[tuple[str, float]]) -> list[dict[str, Any]]:
    from distributed import Client

    own = isinstance(client, str)
    if own:
        probe_scheduler(client)
        client = Client(client, timeout=f"{DASK_HANDSHAKE_S:g}s")
    try:
        # a scheduler whose workers are gone (walltime, scancel) would queue the tasks forever:
        # fail with TimeoutError instead, so the caller can solve in its own process
        client.wait_for_workers(1, timeout=DASK_WORKER_WAIT_S)
        # warm only the discharge modes these tasks use (a power objective never builds the
        # constant-current model); a no-op on a worker that is warm already
        modes = tuple(sorted({"current" if m == "c_rate" else "power" for m, _ in jobs}))
        client.run(warm_model, options, modes)
        futures = [client.submit(discharge, options, design, m, v, pure=False) for m, v in jobs]
        return client.gather(futures)
    finally:
        if own:
            client.close()


def probe_scheduler(address: str, timeout_s: float = DASK_CONNECT_TIMEOUT_S) -> None:
    """ConnectionError (an OSError) at once when nothing listens at a tcp/tls
    scheduler address, so the caller falls back to solving here (other schemes: not probed)."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    host, port = parse_host_port(location)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as error:
        raise ConnectionError(f"Dask scheduler {address} does not answer a TCP connect within "
                          f"{timeout_s:g} s ({error})") from error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.simulate",
        description="Score one characterised design in the cell model (objective + Ragone).")
    parser.add_argument("metrics", help="metrics.json written by jobs.characterise")
    parser.add_argument("--spec", required=True, help="EvaluationSpec JSON file")
    parser.add_argument("--thickness-um", type=float, required=True)
    parser.add_argument("--dask-scheduler", default=None, help="Dask scheduler address")
    parser.add_argument("--out", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    try:    # bad input files: a one-line error and exit 2, before any work
        spec = EvaluationSpec.from_dict(json.loads(Path(args.spec).read_text()))
        metrics = json.loads(Path(args.metrics).read_text())
    except (OSError, ValueError) as error:
        parser.error(str(error))
    summary = MetricsSummary.from_dict(metrics)
    results = simulate_design(summary.mean.to_dict(), args.thickness_um, spec,
                              args.dask_scheduler)
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
