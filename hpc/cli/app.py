"""The `microloop` command.

Each sub-command lives in its own module under `hpc/commands/` and exposes
`register(app: typer.Typer) -> None`. Modules are discovered at start-up, so adding a
command never means editing this file. Command modules import heavy libraries (torch,
pybamm, taufactor) inside their functions, which keeps `microloop --help` fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from importlib.metadata import PackageNotFoundError, version

import typer

from hpc.cli import commands as command_modules

app = typer.Typer(
    name="microloop",
    help=(
        "Closed-loop design of Li-ion battery electrodes: Bayesian optimisation -> generated 3D "
        "microstructures -> transport solves -> PyBaMM 4680 scores, on a laptop or a SLURM cluster."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    try:
        return version("microloop")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"microloop {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version_flag: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(command_modules.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"hpc.cli.commands.{module_info.name}")
        module.register(app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
