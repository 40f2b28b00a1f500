"""`microloop doctor`: prove the machine room works before a campaign depends on it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer

#: `doctor --json` (docs/formats.md)
DOCTOR_SCHEMA_VERSION = "microloop.doctor/1"


def doctor(
    executor: str = typer.Option("local", help="Where jobs run: local, slurm or debug."),
    partition: str = typer.Option(None, help="SLURM partition (default: the cluster's default)."),
    interface: str = typer.Option(None, help="Network interface Dask workers use (e.g. ib0; lo on a one-node test cluster)."),
    mpi_ranks: int = typer.Option(2, min=1, help="Ranks for the MPI checks."),
    gpus: int = typer.Option(0, min=0, help="SLURM: GPUs the in-job MPI check asks for; each "
                             "rank must plan a different one (the evaluation role's GPUs)."),
    folder: Path = typer.Option(None, help="Folder for job logs and the shared-file-system, "
                                "flock and port checks: put it where your campaigns go "
                                "(default: a temporary folder, often node-local)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Submit a job, an array of 8, a failing job, a 2-rank MPI program, a probe of the shared
    folder, cross-node flock and the controller's port, and (on SLURM) Dask workers and a job
    starting its MPI ranks (and, with --gpus, mapping them to GPUs) as an evaluation does."""
    from rich.console import Console
    from rich.table import Table

    from hpc.machine.selfcheck import run_all

    if executor not in ("local", "slurm", "debug"):
        raise typer.BadParameter("must be one of local, slurm, debug", param_hint="--executor")
    work = folder or Path(tempfile.mkdtemp(prefix="microloop-doctor-"))
    results = run_all(executor, work, partition=partition, interface=interface,
                      mpi_ranks=mpi_ranks, gpus=gpus)
    if as_json:
        typer.echo(json.dumps({"schema_version": DOCTOR_SCHEMA_VERSION,
                               "ok": all(r.ok for r in results), "checks": [r.to_dict() for r in results]}))
    else:
        table = Table(title=f"microloop doctor ({executor})")
        for column in ("check", "ok", "seconds", "detail"):
            table.add_column(column)
        for r in results:
            table.add_row(r.name, "yes" if r.ok else "[red]NO[/red]", f"{r.seconds:.1f}", r.detail)
        Console().print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
