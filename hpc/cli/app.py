"""The `microloop` command.

Each sub-command lives in its own module under `hpc/cli/commands/` and exposes
`register(app: typer.Typer) -> None`. Modules are discovered at start-up, so adding a
command never means editing this file. Command modules import heavy libraries (torch,
pybamm, taufactor) inside their functions, which keeps `microloop --help` fast.

Every command gets the same front door here, not in each module: `-h` as well as `--help`,
`-v/--verbose` before or after the sub-command name, and no `<bool>` type label after a flag.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from importlib.metadata import PackageNotFoundError, version

import typer
from typer.core import TyperGroup, TyperOption

from hpc.cli import commands as command_modules
from jobs.provenance import DISTRIBUTION  # the name on PyPI; `microloop` there is another project

HELP_OPTION_NAMES = ["-h", "--help"]


def _set_debug(ctx: typer.Context, param, value: bool) -> None:
    """`-v` after a sub-command name: the root callback has already configured logging."""
    if value:
        logging.getLogger().setLevel(logging.DEBUG)


def _verbose_option() -> TyperOption:
    """A fresh `-v/--verbose` option, built through typer's public API."""
    probe = typer.Typer()

    @probe.command()
    def _probe(
        verbose: bool = typer.Option(False, "--verbose", "-v", callback=_set_debug,
                                     expose_value=False, help="Log debug messages."),
    ) -> None:
        pass

    return typer.main.get_command(probe).params[0]


def _tidy(command, root: bool) -> None:
    """Give a command (and its sub-commands) -h, a trailing -v, and flags without `<bool>`."""
    taken = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    if not root and not taken & {"-v", "--verbose"}:
        command.params.append(_verbose_option())
    # click builds the help option once per command and caches it: build it now, with -h
    help_option = command.get_help_option(typer.Context(command,
                                                        help_option_names=HELP_OPTION_NAMES))
    for param in [*command.params, help_option]:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # typer would print `<bool>` after a flag that takes no value
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub, root=False)


class _MicroloopGroup(TyperGroup):
    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        _tidy(self, root=True)


app = typer.Typer(
    name="microloop",
    help=(
        "Closed-loop design of Li-ion battery electrodes: Bayesian optimisation -> generated 3D "
        "microstructures -> transport solves -> PyBaMM 4680 scores, on a laptop or a SLURM cluster."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_MicroloopGroup,
    rich_markup_mode=None,  # help texts are plain: units like [mg/cm2] are not markup
    context_settings={"help_option_names": HELP_OPTION_NAMES},
)


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
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
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # basicConfig leaves the level alone if handlers exist
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
