"""`microloop cell`: score one cathode design as a 4680 cell (or a lithium-metal half cell).

    microloop cell --metrics METRICS.json --thickness-um 80 --power-W 10 200 [--c-rate 0.1 1]
                   [--half-cell] [--json] [--ragone out.png]

The design comes from a metrics file (`VolumeMetrics.to_dict()`, or a results file holding it
under "metrics") and/or flags, flags winning. Lists take several values after one flag
(`--power-W 10 200`), which typer cannot express, so the arguments are parsed with argparse;
argparse also gives the exit status 2 for every usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import typer

_DESIGN_FLAGS = {
    # ElectrodeDesign field: (flag, help)
    "porosity": ("--porosity", "cathode porosity, 0.2-0.55"),
    "am_volume_fraction": ("--am-fraction", "active-material volume fraction, 0.3-0.75"),
    "tortuosity_factor": ("--tortuosity", "pore tortuosity factor, 1-100"),
    "specific_surface_area_per_um": ("--ssa-per-um", "AM specific surface area, 0.05-3 1/um"),
    "effective_conductivity_S_m": ("--conductivity-S-m", "effective electronic conductivity, "
                                   "0.001-1000 S/m"),
    "cbd_coverage": ("--cbd-coverage", "fraction of the AM surface covered by carbon-binder, 0-1"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microloop cell",
        description="Score one cathode design as a 4680 cell (PyBaMM DFN): energy, Wh/L and "
        "Wh/kg at constant power, capacity at constant C-rate, mAh/g in a lithium-metal half cell.",
    )
    parser.add_argument("--metrics", type=Path, help="JSON from VolumeMetrics.to_dict() "
                        "(or a file holding it under 'metrics' or 'mean')")
    parser.add_argument("--thickness-um", type=float, help="cathode thickness, 20-300 um")
    parser.add_argument("--mass-loading-mg-cm2", type=float,
                        help="AM mass loading instead of --thickness-um")
    for field, (flag, text) in _DESIGN_FLAGS.items():
        parser.add_argument(flag, dest=field, type=float, help=text + " (overrides --metrics)")
    parser.add_argument("--power-W", type=float, nargs="+", default=[],
                        help="constant powers per 4680 cell, 0.1-20000 W (full cell only)")
    parser.add_argument("--c-rate", type=float, nargs="+", default=[],
                        help="constant-current discharges, 0.01-20 C")
    parser.add_argument("--half-cell", action="store_true",
                        help="lithium-metal half cell: report mAh/g of active material")
    parser.add_argument("--parameter-set", default="Chen2020", help="PyBaMM parameter set")
    parser.add_argument("--packaging", type=Path,
                        help="TOML file whose table (top level or [packaging]) overrides "
                        "Packaging4680 values")
    parser.add_argument("--calibration", type=Path,
                        help="calibration JSON written by `microloop calibrate`")
    parser.add_argument("--cbd-blocking", type=float, default=None,
                        help="share of CBD-covered AM surface lost to reaction, 0-1 (default 0.5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--ragone", type=Path, help="write energy density vs power (PNG)")
    return parser


def _load_metrics(path: Path, parser: argparse.ArgumentParser) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        parser.error(f"--metrics {path}: {error}")
    # a results file holds the metrics under "metrics"; jobs.characterise writes "mean" / "std"
    for key in ("metrics", "mean"):
        if isinstance(data, dict) and "volume_fraction" not in data and key in data:
            data = data[key]
    if not isinstance(data, dict) or "volume_fraction" not in data:
        parser.error(f"--metrics {path}: no 'volume_fraction' (expected VolumeMetrics.to_dict())")
    return data


def _load_packaging(path: Path, parser: argparse.ArgumentParser):
    import tomllib

    from kernels.cell.model import Packaging4680

    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        parser.error(f"--packaging {path}: {error}")
    table = table.get("packaging", table)
    try:
        return Packaging4680.from_dict(table)
    except (TypeError, ValueError) as error:
        parser.error(f"--packaging {path}: {error}")


def build_design(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """ElectrodeDesign from the metrics file and the flags; a missing quantity names its flag."""
    from kernels.cell.model import (
        ElectrodeDesign,
        design_from_metrics,
        thickness_from_mass_loading_um,
    )

    values: dict[str, float] = {}
    if args.metrics is not None:
        metrics = _load_metrics(args.metrics, parser)
        try:
            values = vars(design_from_metrics(metrics, thickness_um=100.0)).copy()
        except ValueError as error:
            parser.error(f"--metrics {args.metrics}: {error}")
        del values["thickness_um"]
    for field in _DESIGN_FLAGS:
        flag_value = getattr(args, field)
        if flag_value is not None:
            values[field] = flag_value
    values.setdefault("cbd_coverage", 0.0)
    missing = [_DESIGN_FLAGS[f][0] for f in _DESIGN_FLAGS if f not in values]
    if missing:
        parser.error(f"missing design quantities: give {', '.join(missing)} or --metrics")
    if args.thickness_um is not None and args.mass_loading_mg_cm2 is not None:
        parser.error("give --thickness-um or --mass-loading-mg-cm2, not both")
    try:
        if args.thickness_um is not None:
            values["thickness_um"] = args.thickness_um
        elif args.mass_loading_mg_cm2 is not None:
            values["thickness_um"] = thickness_from_mass_loading_um(
                args.mass_loading_mg_cm2, values["am_volume_fraction"])
        else:
            parser.error("missing design quantity: give --thickness-um (or --mass-loading-mg-cm2)")
        return ElectrodeDesign(**values)
    except ValueError as error:
        parser.error(str(error))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """All requested discharges of one design, as the JSON object the command prints."""
    from kernels.cell.model import RANGES, get_cell_model

    if not args.power_W and not args.c_rate:
        parser.error("nothing to run: give --power-W and/or --c-rate")
    if args.ragone is not None and not args.power_W:
        parser.error("--ragone needs --power-W values")
    if args.ragone is not None and not args.ragone.absolute().parent.is_dir():  # before solving
        parser.error(f"--ragone {args.ragone}: folder {args.ragone.absolute().parent} does not "
                     "exist; create it first")
    if args.half_cell and args.power_W:
        parser.error("--power-W needs a full cell; a --half-cell is discharged with --c-rate")
    for flag, name, levels in (("--power-W", "power_W", args.power_W),
                               ("--c-rate", "c_rate", args.c_rate)):
        low, high = RANGES[name]
        for level in levels:
            if not low <= level <= high:
                parser.error(f"{flag} {level} is outside the accepted range [{low}, {high}]")
    design = build_design(args, parser)
    packaging = _load_packaging(args.packaging, parser) if args.packaging else None
    options: dict = {} if args.cbd_blocking is None else {"cbd_blocking": args.cbd_blocking}
    if args.calibration is not None:
        try:
            options["calibration"] = json.loads(args.calibration.read_text())
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"--calibration {args.calibration}: {error}")
    try:
        model = get_cell_model(args.parameter_set, half_cell=args.half_cell,
                               packaging=packaging, **options)
    except ValueError as error:
        parser.error(str(error))
    results = [model.discharge_power(design, p) for p in args.power_W]
    results += [model.discharge_c_rate(design, c) for c in args.c_rate]
    roll = model.jelly_roll(design)
    design_dict = vars(design).copy()
    if design_dict["tortuosity_factor"] == math.inf:
        design_dict["tortuosity_factor"] = None
    return {
        "capacity_Ah": model.nominal_capacity_Ah(design),
        "design": design_dict,
        "jelly_roll": {
            "roll_length_m": roll.roll_length_m,
            "turns": roll.turns,
            "electrode_area_m2": roll.electrode_area_m2,
            "mass_g": roll.total_mass_g,
        },
        "results": [r.to_dict() for r in results],
    }


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


def cell(ctx: typer.Context) -> None:
    """Score one cathode design as a 4680 cell: --metrics M.json --thickness-um 80 --power-W 10 200."""
    parser = _parser()
    args = parser.parse_args(ctx.args)
    report = run(args, parser)
    if args.ragone is not None:
        _plot_ragone(report, args.ragone)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print_table(report, args.half_cell)


def register(app: typer.Typer) -> None:
    app.command(
        "cell",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "help_option_names": []},
        add_help_option=False,
    )(cell)
