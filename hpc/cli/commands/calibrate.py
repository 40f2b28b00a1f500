"""`microloop calibrate`: fit the cell model to measured discharge curves of a built cell.

    microloop calibrate --measured DATA [DATA ...] --design DESIGN.json --fit PARAM [PARAM ...]
                        --out calibration.json [--plot fit.png] [--initial NAME=VALUE ...]
                        [--fix NAME=VALUE ...] [--max-points N] [--json]

Several values follow one flag (`--measured a.csv b.mpr`), which typer cannot express, so the
arguments are parsed with argparse (as `microloop cell` does); every usage error exits with 2.
The calibration file is named by a campaign as `[cell] calibration = "calibration.json"`.
Data formats, parameter names and the workflow: docs/calibration.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import typer


def _parser() -> argparse.ArgumentParser:
    from kernels.cell.calibration import FIT_PARAMETERS

    names = "; ".join(f"{p.name} [{p.lower:g}, {p.upper:g}] {p.unit}, default {p.default:g}"
                      for p in FIT_PARAMETERS.values())
    parser = argparse.ArgumentParser(
        prog="microloop calibrate",
        description="Fit named corrections of the PyBaMM cell model to measured discharge "
        "curves by bounded least squares over all curves at once; write a calibration file a "
        "campaign can name.",
    )
    parser.add_argument("--measured", type=Path, nargs="+", action="extend", required=True,
                        metavar="DATA", help="CSV (time_s, voltage_V, current_A or power_W, "
                        "optional temperature_C, curve_id) or BioLogic .mpr/.mpt files")
    parser.add_argument("--design", type=Path, required=True, metavar="DESIGN.json",
                        help="the cell as built: `microloop cell --json` output, or metrics "
                        "with thickness_um, or ElectrodeDesign fields (+ parameter_set, "
                        "half_cell, packaging, cbd_blocking)")
    parser.add_argument("--fit", nargs="+", action="extend", required=True, metavar="PARAM",
                        help=f"parameters to fit: {names}")
    parser.add_argument("--out", type=Path, required=True, metavar="calibration.json")
    parser.add_argument("--plot", type=Path, metavar="fit.png",
                        help="measured vs simulated curves, before and after")
    parser.add_argument("--initial", nargs="+", action="extend", default=[],
                        metavar="NAME=VALUE", help="starting values (default: the defaults)")
    parser.add_argument("--fix", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                        help="corrections held at a value and written into the calibration")
    parser.add_argument("--max-points", type=int, default=200,
                        help="points per curve used in the fit, evenly spread (default 200)")
    parser.add_argument("--max-iterations", type=int, default=30,
                        help="most least-squares evaluations (default 30)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _pairs(items: list[str], flag: str, parser: argparse.ArgumentParser) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            parser.error(f"{flag} {item!r}: expected NAME=VALUE with a number")
    return out


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from kernels.cell.calibration import FIT_PARAMETERS

    for name in args.fit:
        if name not in FIT_PARAMETERS:
            parser.error(f"--fit {name}: unknown parameter; accepted: {', '.join(FIT_PARAMETERS)}")
    for path in args.measured:
        if not path.is_file():
            parser.error(f"--measured {path}: no such file")
    if not args.design.is_file():
        parser.error(f"--design {args.design}: no such file")
    if args.max_points < 10:
        parser.error(f"--max-points {args.max_points}: give at least 10")
    if args.max_iterations < 1:
        parser.error(f"--max-iterations {args.max_iterations}: give at least 1")


def _print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    from kernels.cell.calibration import fit_parameter

    start = result.calibration.metadata.get("initial_values", {})
    table = Table(title=f"calibration: RMSE {1e3 * result.rmse_initial_V:.2f} mV -> "
                  f"{1e3 * result.rmse_fitted_V:.2f} mV over "
                  f"{result.calibration.metadata.get('n_points')} points, "
                  f"{result.n_solves} solves, {result.wall_s:.0f} s")
    for column in ("parameter", "start", "fitted", "± std. error", "unit"):
        table.add_column(column)
    for name, value in result.values.items():
        table.add_row(name, f"{start.get(name, float('nan')):.4g}", f"{value:.4g}",
                      f"{result.stderr[name]:.2g}", fit_parameter(name).unit)
    console = Console()
    console.print(table)
    for curve in result.curves:
        console.print(f"  {curve.curve_id}: RMSE {1e3 * curve.rmse_initial_V:.2f} -> "
                      f"{1e3 * curve.rmse_fitted_V:.2f} mV")
    if not result.success:
        console.print(f"[yellow]the optimiser stopped early: {result.message}[/yellow]")


def calibrate(ctx: typer.Context) -> None:
    """Fit the cell model to measured discharges: --measured a.csv --design d.json --fit ... --out c.json."""
    parser = _parser()
    args = parser.parse_args(ctx.args)
    _check(args, parser)
    initial = _pairs(args.initial, "--initial", parser)
    fixed = _pairs(args.fix, "--fix", parser)
    from jobs.calibrate import calibrate as run_calibration

    try:
        result = run_calibration(
            args.measured, args.design, args.fit, args.out, plot=args.plot, initial=initial,
            fixed=fixed, max_points_per_curve=args.max_points,
            max_iterations=args.max_iterations)
    except ValueError as error:
        parser.error(str(error))
    if args.json:
        sys.stdout.write(json.dumps(result.calibration.to_dict()) + "\n")
    else:
        _print_table(result)
        typer.echo(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))


def register(app: typer.Typer) -> None:
    app.command(
        "calibrate",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "help_option_names": []},
        add_help_option=False,
    )(calibrate)
