"""The `microloop` command: `app` holds the typer app, `commands/` one module per sub-command."""

from hpc.cli.app import main

__all__ = ["main"]
