"""`microloop campaigns list|show|copy`: the built-in campaign and study files.

They live inside the installed package (hpc/campaigns), so a user of a wheel has no repository
path to give: `list` names them, `show` prints one, `copy` writes an editable copy to start a
campaign of one's own from (`microloop run my.toml`).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

campaigns_app = typer.Typer(
    help="The built-in campaign and convergence-study files: list, show, copy to edit.",
    no_args_is_help=True,
    add_completion=False,
)


def _lookup(name: str):
    from hpc.campaigns import builtin_file

    try:
        return builtin_file(name)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


#: `campaigns list --json` (docs/formats.md)
CAMPAIGNS_SCHEMA_VERSION = "microloop.campaigns/1"


@campaigns_app.command("list")
def list_builtins(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: "
                                 "schema_version and files: name -> {kind, description}."),
) -> None:
    """One line per built-in file: name, kind (campaign or convergence study), description."""
    from hpc.campaigns import builtin_files

    files = builtin_files()
    if as_json:
        typer.echo(json.dumps({"schema_version": CAMPAIGNS_SCHEMA_VERSION, "files": {
            f.name: {"kind": f.kind, "description": f.description} for f in files.values()}}))
        return
    width = max(len(name) for name in files)
    for f in files.values():
        tag = "" if f.kind == "campaign" else f"[{f.kind}] "
        typer.echo(f"{f.name:<{width}}  {tag}{f.description}")


@campaigns_app.command("show")
def show(name: str = typer.Argument(..., help="A name from `microloop campaigns list`.")) -> None:
    """Print a built-in file's TOML, comments included."""
    typer.echo(_lookup(name).text, nl=False)


@campaigns_app.command("copy")
def copy(
    name: str = typer.Argument(..., help="A name from `microloop campaigns list`."),
    dest: Path = typer.Argument(..., help="File to write, or an existing folder (NAME.toml "
                                "is written into it). An existing file is never overwritten."),
) -> None:
    """Write an editable copy of a built-in file (then `microloop run DEST` or `convergence DEST`)."""
    builtin = _lookup(name)
    target = dest / f"{name}.toml" if dest.is_dir() else dest
    try:
        with target.open("x", encoding="utf-8") as handle:  # "x": refuse to overwrite
            handle.write(builtin.text)
    except FileExistsError:
        typer.echo(f"error: {target} exists; not overwritten (remove it or give another DEST)",
                   err=True)
        raise typer.Exit(1) from None
    except OSError as error:
        typer.echo(f"error: cannot write {target}: {error}", err=True)
        raise typer.Exit(1) from None
    command = "convergence" if builtin.kind == "convergence study" else "run"
    typer.echo(f"wrote {target}; edit it, then: microloop {command} {target}")


def register(app: typer.Typer) -> None:
    app.add_typer(campaigns_app, name="campaigns")
