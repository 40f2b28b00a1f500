"""`microloop calibrate`: fit the cell model to measured discharge curves of a built cell.

    microloop calibrate --measured a.csv [--measured b.mpr ...] --design DESIGN.json
                        --fit PARAM [--fit PARAM ...] --out calibration.json [--plot fit.png]
                        [--initial NAME=VALUE ...] [--fix NAME=VALUE ...] [--max-points N] [--json]
                        [--predict c.csv ...] [--constant-current FILE=AMPS ...]
    microloop calibrate --measured 1C.csv --parameter-set Ecker2015 --cell-capacity-Ah 7.5 ...

A list is given as every other command takes one: repeat the flag. Every usage error exits
with status 2 and names the flag. The calibration file is named by a campaign as
`[cell] calibration = "calibration.json"`. Data formats, parameter names and the workflow:
docs/calibration.md.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import typer

from kernels.cell.corrections import FIT_PARAMETERS  # plain numbers: the help lists them

_FIT_HELP = ("Parameter to fit; repeat the flag for several. Accepted (bounds, unit, default): "
             + "; ".join(f"{p.name} [{p.lower:g}, {p.upper:g}] {p.unit}, {p.default:g}"
                         for p in FIT_PARAMETERS.values()) + ".")


class CalibrateUsageError(ValueError):
    """A bad flag value; the command prints it and exits with 2."""


def _usage_error(message: str) -> NoReturn:
    raise CalibrateUsageError(message)


@dataclass(frozen=True)
class CalibrateRequest:
    """The command's options, typed."""

    measured: tuple[Path, ...]
    design: Path | None
    fit: tuple[str, ...]
    out: Path
    plot: Path | None = None
    initial: tuple[str, ...] = ()
    fix: tuple[str, ...] = ()
    max_points: int = 200
    max_iterations: int = 30
    parameter_set: str | None = None
    cell_capacity_Ah: float | None = None
    constant_current: tuple[str, ...] = ()
    predict: tuple[Path, ...] = ()


def _pairs(items: tuple[str, ...], flag: str) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            _usage_error(f"{flag} {item!r}: expected NAME=VALUE with a number")
    return out


def _check(args: CalibrateRequest) -> None:
    for name in args.fit:
        if name not in FIT_PARAMETERS:
            _usage_error(f"--fit {name}: unknown parameter; accepted: {', '.join(FIT_PARAMETERS)}")
    for flag, paths in (("--measured", args.measured), ("--predict", args.predict)):
        for path in paths:
            if not path.is_file():
                _usage_error(f"{flag} {path}: no such file")
    if (args.design is None) == (args.parameter_set is None):
        _usage_error("give either --design DESIGN.json (a built 4680 cell) or --parameter-set "
                     "NAME with --cell-capacity-Ah (a PyBaMM parameter set as the measured cell)")
    if args.design is not None and not args.design.is_file():
        _usage_error(f"--design {args.design}: no such file")
    if args.max_points < 10:
        _usage_error(f"--max-points {args.max_points}: give at least 10")
    if args.max_iterations < 1:
        _usage_error(f"--max-iterations {args.max_iterations}: give at least 1")


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
    for check in result.calibration.metadata.get("validation", []):
        console.print(f"  {check['role']:7s} {check['curve']}: RMSE uncalibrated "
                      f"{1e3 * check['rmse_uncalibrated_V']:.1f} mV -> calibrated "
                      f"{1e3 * check['rmse_calibrated_V']:.1f} mV")
    if not result.success:
        console.print(f"[yellow]the optimiser stopped early: {result.message}[/yellow]")


def run(args: CalibrateRequest, progress=None):
    """Check the request, fit, write the calibration file; the fit result. `progress(done,
    most)` after each model evaluation of the fit."""
    _check(args)
    initial = _pairs(args.initial, "--initial")
    fixed = _pairs(args.fix, "--fix")
    currents = _pairs(args.constant_current, "--constant-current")
    from jobs.calibrate import calibrate as run_calibration

    try:
        return run_calibration(
            list(args.measured), args.design, list(args.fit), args.out, plot=args.plot,
            initial=initial, fixed=fixed, max_points_per_curve=args.max_points,
            max_iterations=args.max_iterations, parameter_set=args.parameter_set,
            cell_capacity_Ah=args.cell_capacity_Ah, constant_current_A=currents,
            predict=list(args.predict), progress=progress)
    except ValueError as error:
        _usage_error(str(error))


def calibrate(
    measured: list[Path] = typer.Option(..., "--measured", metavar="DATA", help="Measured "
                                        "discharges; repeat the flag for several files: CSV "
                                        "(time_s, voltage_V, current_A or power_W, optional "
                                        "temperature_C, curve_id) or BioLogic .mpr/.mpt."),
    design: Path = typer.Option(None, "--design", metavar="DESIGN.json", help="The cell as built: "
                                "`microloop cell --json` output, or metrics with thickness_um, or "
                                "ElectrodeDesign fields (+ parameter_set, half_cell, packaging, "
                                "cbd_blocking)."),
    fit: list[str] = typer.Option(..., "--fit", metavar="PARAM", help=_FIT_HELP),
    out: Path = typer.Option(..., "--out", metavar="calibration.json",
                             help="Calibration file to write."),
    plot: Path = typer.Option(None, "--plot", metavar="fit.png",
                              help="Measured vs simulated curves, before and after."),
    initial: list[str] = typer.Option([], "--initial", metavar="NAME=VALUE", help="Starting "
                                      "value of a fitted parameter (default: its default); "
                                      "repeat the flag for several."),
    fix: list[str] = typer.Option([], "--fix", metavar="NAME=VALUE", help="A correction held at "
                                  "a value and written into the calibration; repeat the flag."),
    max_points: int = typer.Option(200, "--max-points", help="Points per curve used in the fit, "
                                   "evenly spread (at least 10)."),
    max_iterations: int = typer.Option(30, "--max-iterations",
                                       help="Most least-squares evaluations (at least 1)."),
    parameter_set: str = typer.Option(None, "--parameter-set", metavar="NAME", help="Instead of "
                                      "--design: a PyBaMM parameter set as the measured cell "
                                      "(e.g. Ecker2015), scaled to --cell-capacity-Ah."),
    cell_capacity_Ah: float = typer.Option(None, "--cell-capacity-Ah", help="Nominal capacity "
                                           "of the measured cell, with --parameter-set."),
    constant_current: list[str] = typer.Option([], "--constant-current", metavar="FILE=AMPS",
                                               help="Discharge current of a CSV that gives "
                                               "discharged_capacity_Ah instead of time; "
                                               "repeat the flag."),
    predict: list[Path] = typer.Option([], "--predict", metavar="DATA", help="Curves not fitted, "
                                       "only predicted with and without the calibration (RMSE "
                                       "in the table and the file); repeat the flag."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Fit named corrections of the PyBaMM cell model to measured discharge curves by bounded
    least squares over all curves at once; write a calibration file a campaign can name."""
    request = CalibrateRequest(
        measured=tuple(measured), design=design, fit=tuple(fit), out=out, plot=plot,
        initial=tuple(initial), fix=tuple(fix), max_points=max_points,
        max_iterations=max_iterations, parameter_set=parameter_set,
        cell_capacity_Ah=cell_capacity_Ah, constant_current=tuple(constant_current),
        predict=tuple(predict))
    from hpc.cli.commands._progress import steps

    try:
        with steps(f"calibrating {', '.join(fit)}", total=max_iterations + 1) as advance:
            # the bar's time left is an upper bound: the fit may converge before its last solve
            result = run(request, progress=lambda done, most: advance(
                f"model evaluation {done} of at most {most}"))
    except CalibrateUsageError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(result.calibration.to_dict()) + "\n")
    else:
        _print_table(result)
        typer.echo(f"wrote {out}" + (f" and {plot}" if plot else ""))


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
