"""`microloop cell`: score one cathode design as a 4680 cell (or a lithium-metal half cell).

    microloop cell --metrics METRICS.json --thickness-um 80 --power-W 10 --power-W 200
                   [--c-rate 0.1 --c-rate 1] [--half-cell] [--json] [--ragone out.png]

The design comes from a metrics file (`VolumeMetrics.to_dict()`, or a results file holding it
under "metrics") and/or flags, flags winning. A list is given as every other command takes one:
repeat the flag. Every usage error exits with status 2 and names the flag.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import typer

from kernels.cell.design import RANGES  # plain numbers, no pybamm: the help shows the ranges


def _span(name: str, unit: str = "") -> str:
    low, high = RANGES[name]
    return f"{low:g}-{high:g}{' ' + unit if unit else ''}"


_DESIGN_FLAGS = {
    # ElectrodeDesign field: (flag, help)
    "porosity": ("--porosity", f"cathode porosity, {_span('porosity')}"),
    "am_volume_fraction": ("--am-fraction",
                           f"active-material volume fraction, {_span('am_volume_fraction')}"),
    "tortuosity_factor": ("--tortuosity", f"pore tortuosity factor, {_span('tortuosity_factor')}"),
    "specific_surface_area_per_um": ("--ssa-per-um", "AM specific surface area, "
                                     f"{_span('specific_surface_area_per_um', '1/um')}"),
    "effective_conductivity_S_m": ("--conductivity-S-m", "effective electronic conductivity, "
                                   f"{_span('effective_conductivity_S_m', 'S/m')}"),
    "cbd_coverage": ("--cbd-coverage", "fraction of the AM surface covered by carbon-binder, "
                     f"{_span('cbd_coverage')}, default 0"),
}

_THICKNESS_HELP = f"Cathode thickness, {_span('thickness_um', 'um')}."
_POWER_HELP = (f"Constant power per 4680 cell, {_span('power_W', 'W')}; repeat the flag for "
               "several (full cell only).")
_C_RATE_HELP = f"Constant-current discharge, {_span('c_rate', 'C')}; repeat the flag for several."


class CellUsageError(ValueError):
    """A bad combination or value of flags; the command prints it and exits with 2."""


def _usage_error(message: str) -> NoReturn:
    raise CellUsageError(message)


@dataclass(frozen=True)
class CellRequest:
    """The command's options, typed: what `run` needs to score one design."""

    metrics: Path | None = None
    thickness_um: float | None = None
    mass_loading_mg_cm2: float | None = None
    porosity: float | None = None
    am_volume_fraction: float | None = None
    tortuosity_factor: float | None = None
    specific_surface_area_per_um: float | None = None
    effective_conductivity_S_m: float | None = None
    cbd_coverage: float | None = None
    power_W: tuple[float, ...] = ()
    c_rate: tuple[float, ...] = ()
    half_cell: bool = False
    parameter_set: str = "Chen2020"
    packaging: Path | None = None
    calibration: Path | None = None
    cbd_blocking: float | None = None
    ragone: Path | None = None


def _load_metrics(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        _usage_error(f"--metrics {path}: {error}")
    # `characterise --json` of a (1, L, L, L) volume, e.g. from `generate --n 1`: one sample
    if isinstance(data, list):
        if len(data) != 1:
            _usage_error(f"--metrics {path}: a list of {len(data)} samples; give one sample's "
                         "metrics, or their mean under 'mean'")
        data = data[0]
    # a results file holds the metrics under "metrics"; jobs.characterise writes "mean" / "std"
    for key in ("metrics", "mean"):
        if isinstance(data, dict) and "volume_fraction" not in data and key in data:
            data = data[key]
    if not isinstance(data, dict) or "volume_fraction" not in data:
        _usage_error(f"--metrics {path}: no 'volume_fraction' (expected VolumeMetrics.to_dict())")
    return data


def _load_packaging(path: Path):
    import tomllib

    from kernels.cell.model import Packaging4680

    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        _usage_error(f"--packaging {path}: {error}")
    table = table.get("packaging", table)
    try:
        return Packaging4680.from_dict(table)
    except (TypeError, ValueError) as error:
        _usage_error(f"--packaging {path}: {error}")


def build_design(args: CellRequest):
    """ElectrodeDesign from the metrics file and the flags; a missing quantity names its flag."""
    from kernels.cell.model import (
        ElectrodeDesign,
        design_from_metrics,
        thickness_from_mass_loading_um,
    )

    values: dict[str, float] = {}
    if args.metrics is not None:
        metrics = _load_metrics(args.metrics)
        try:
            values = vars(design_from_metrics(metrics, thickness_um=100.0)).copy()
        except ValueError as error:
            _usage_error(f"--metrics {args.metrics}: {error}")
        del values["thickness_um"]
    for field in _DESIGN_FLAGS:
        flag_value = getattr(args, field)
        if flag_value is not None:
            values[field] = flag_value
    values.setdefault("cbd_coverage", 0.0)
    missing = [_DESIGN_FLAGS[f][0] for f in _DESIGN_FLAGS if f not in values]
    if missing:
        _usage_error(f"missing design quantities: give {', '.join(missing)} or --metrics")
    if args.thickness_um is not None and args.mass_loading_mg_cm2 is not None:
        _usage_error("give --thickness-um or --mass-loading-mg-cm2, not both")
    try:
        if args.thickness_um is not None:
            values["thickness_um"] = args.thickness_um
        elif args.mass_loading_mg_cm2 is not None:
            values["thickness_um"] = thickness_from_mass_loading_um(
                args.mass_loading_mg_cm2, values["am_volume_fraction"])
        else:
            _usage_error("missing design quantity: give --thickness-um (or --mass-loading-mg-cm2)")
        return ElectrodeDesign(**values)
    except ValueError as error:
        _usage_error(str(error))


def run(args: CellRequest) -> dict:
    """All requested discharges of one design, as the JSON object the command prints."""
    from kernels.cell.model import RANGES, get_cell_model

    if not args.power_W and not args.c_rate:
        _usage_error("nothing to run: give --power-W and/or --c-rate")
    if args.ragone is not None and not args.power_W:
        _usage_error("--ragone needs --power-W values")
    if args.ragone is not None and not args.ragone.absolute().parent.is_dir():  # before solving
        _usage_error(f"--ragone {args.ragone}: folder {args.ragone.absolute().parent} does not "
                     "exist; create it first")
    if args.half_cell and args.power_W:
        _usage_error("--power-W needs a full cell; a --half-cell is discharged with --c-rate")
    for flag, name, levels in (("--power-W", "power_W", args.power_W),
                               ("--c-rate", "c_rate", args.c_rate)):
        low, high = RANGES[name]
        for level in levels:
            if not low <= level <= high:
                _usage_error(f"{flag} {level} is outside the accepted range [{low}, {high}]")
    design = build_design(args)
    packaging = _load_packaging(args.packaging) if args.packaging else None
    options: dict = {} if args.cbd_blocking is None else {"cbd_blocking": args.cbd_blocking}
    if args.calibration is not None:
        try:
            options["calibration"] = json.loads(args.calibration.read_text())
        except (OSError, json.JSONDecodeError) as error:
            _usage_error(f"--calibration {args.calibration}: {error}")
    try:
        model = get_cell_model(args.parameter_set, half_cell=args.half_cell,
                               packaging=packaging, **options)
    except ValueError as error:
        _usage_error(str(error))
    results = [model.discharge_power(design, p) for p in args.power_W]
    results += [model.discharge_c_rate(design, c) for c in args.c_rate]
    roll = model.jelly_roll(design)
    design_dict = vars(design).copy()
    if design_dict["tortuosity_factor"] == math.inf:
        design_dict["tortuosity_factor"] = None
    return {
        "schema_version": "microloop.cell/2",      # docs/formats.md
        "capacity_Ah": model.nominal_capacity_Ah(design),
        "design": design_dict,
        "jelly_roll": {
            "roll_length_m": roll.roll_length_m,
            "turns": roll.turns,
            "electrode_area_m2": roll.electrode_area_m2,
            "mass_g": roll.total_mass_g,
        },
        "results": [_result_row(r) for r in results],
    }


def _result_row(result) -> dict:
    """One load's entry: `reason` says why a load is infeasible and is empty for a feasible one
    (as in trials.csv); the solver's stop event (e.g. `event: Minimum voltage [V]`), which the
    cell model keeps in `reason` for every discharge, goes to `stop_event`."""
    row = result.to_dict()
    row["stop_event"] = row["reason"] if row["feasible"] else ""
    if row["feasible"]:
        row["reason"] = ""
    return row


def _print_table(report: dict, half_cell: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    roll = report["jelly_roll"]
    if half_cell:
        table = Table(title="lithium-metal half cell")
        columns = ["load", "mAh/g of AM"]
    else:
        table = Table(title=f"4680 cell: nominal {report['capacity_Ah']:.2f} Ah, roll "
                      f"{roll['roll_length_m']:.2f} m ({roll['turns']:.0f} turns), "
                      f"{roll['mass_g']:.0f} g")
        columns = ["load", "energy Wh", "Wh/L", "Wh/kg"]
    for column in columns + ["feasible", "reason"]:
        table.add_column(column)
    for r in report["results"]:
        load = f"{r['power_W']:g} W" if r["power_W"] is not None else f"{r['c_rate']:g} C"
        if half_cell:
            row = [load, f"{r['capacity_mAh_g']:.1f}"]
        else:
            row = [load, f"{r['energy_Wh']:.2f}", f"{r['energy_density_Wh_L']:.0f}",
                   f"{r['specific_energy_Wh_kg']:.0f}"]
        table.add_row(*row, str(r["feasible"]), r["reason"])
    Console().print(table)


def _plot_ragone(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in report["results"] if r["power_W"] is not None),
                  key=lambda r: r["power_W"])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([r["power_W"] for r in rows], [r["energy_density_Wh_L"] for r in rows], "o-",
            label="discharges")
    failed = [r for r in rows if not r["feasible"]]
    if failed:
        ax.plot([r["power_W"] for r in failed], [0.0] * len(failed), "x", color="red",
                markersize=9, label="infeasible (scored 0)")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("power per 4680 cell [W]")
    ax.set_ylabel("energy density [Wh/L]")
    ax.set_title("Ragone, one 4680 cell")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cell(
    metrics: Path = typer.Option(None, "--metrics", help="JSON from VolumeMetrics.to_dict() (or a "
                                 "file holding it under 'metrics' or 'mean', as `characterise "
                                 "--json` writes)."),
    thickness_um: float = typer.Option(None, "--thickness-um", help=_THICKNESS_HELP),
    mass_loading_mg_cm2: float = typer.Option(None, "--mass-loading-mg-cm2",
                                              help="AM mass loading [mg/cm2] instead of "
                                              "--thickness-um."),
    porosity: float = typer.Option(None, "--porosity",
                                   help=_DESIGN_FLAGS["porosity"][1] + " (overrides --metrics)."),
    am_volume_fraction: float = typer.Option(
        None, "--am-fraction", help=_DESIGN_FLAGS["am_volume_fraction"][1] + " (overrides --metrics)."),
    tortuosity_factor: float = typer.Option(
        None, "--tortuosity", help=_DESIGN_FLAGS["tortuosity_factor"][1] + " (overrides --metrics)."),
    specific_surface_area_per_um: float = typer.Option(
        None, "--ssa-per-um",
        help=_DESIGN_FLAGS["specific_surface_area_per_um"][1] + " (overrides --metrics)."),
    effective_conductivity_S_m: float = typer.Option(
        None, "--conductivity-S-m",
        help=_DESIGN_FLAGS["effective_conductivity_S_m"][1] + " (overrides --metrics)."),
    cbd_coverage: float = typer.Option(
        None, "--cbd-coverage", help=_DESIGN_FLAGS["cbd_coverage"][1] + " (overrides --metrics)."),
    power_W: list[float] = typer.Option([], "--power-W", help=_POWER_HELP),
    c_rate: list[float] = typer.Option([], "--c-rate", help=_C_RATE_HELP),
    half_cell: bool = typer.Option(False, "--half-cell", help="Lithium-metal half cell: report "
                                   "mAh/g of active material."),
    parameter_set: str = typer.Option("Chen2020", "--parameter-set",
                                      help="PyBaMM parameter set (an unknown name lists them)."),
    packaging: Path = typer.Option(None, "--packaging", help="TOML file whose table (top level "
                                   "or [packaging]) overrides Packaging4680 values."),
    calibration: Path = typer.Option(None, "--calibration",
                                     help="Calibration JSON written by `microloop calibrate`."),
    cbd_blocking: float = typer.Option(None, "--cbd-blocking", help="Share of the CBD-covered AM "
                                       "surface lost to reaction, 0-1 (default 0.5)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ragone: Path = typer.Option(None, "--ragone", help="Write energy density vs power (PNG)."),
) -> None:
    """Score one cathode design as a 4680 cell (PyBaMM DFN): energy, Wh/L, Wh/kg at constant
    power, capacity at constant C-rate, mAh/g in a lithium-metal half cell."""
    request = CellRequest(
        metrics=metrics, thickness_um=thickness_um, mass_loading_mg_cm2=mass_loading_mg_cm2,
        porosity=porosity, am_volume_fraction=am_volume_fraction,
        tortuosity_factor=tortuosity_factor,
        specific_surface_area_per_um=specific_surface_area_per_um,
        effective_conductivity_S_m=effective_conductivity_S_m, cbd_coverage=cbd_coverage,
        power_W=tuple(power_W), c_rate=tuple(c_rate), half_cell=half_cell,
        parameter_set=parameter_set, packaging=packaging, calibration=calibration,
        cbd_blocking=cbd_blocking, ragone=ragone)
    try:
        report = run(request)
    except CellUsageError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if request.ragone is not None:
        _plot_ragone(report, request.ragone)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print_table(report, request.half_cell)


def register(app: typer.Typer) -> None:
    app.command("cell")(cell)
