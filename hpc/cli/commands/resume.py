"""`microloop resume DIR`: continue a stopped or killed campaign from its journal."""

from __future__ import annotations

from pathlib import Path

import typer


def resume(
    directory: Path = typer.Argument(..., help="The campaign folder to continue."),
    budget: int = typer.Option(None, "--budget", help="Raise (or lower) optimizer.budget."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the report at the end."),
    wait_min: float = typer.Option(0.0, "--wait", min=0.0,
                                   help="Minutes to wait for a controller still driving the "
                                        "folder to finish or die, instead of refusing at once."),
) -> None:
    """Re-attach to running jobs, submit what was proposed but never submitted, and go on."""
    from hpc.campaign.config import ConfigError
    from hpc.campaign.controller import Campaign, CampaignError
    from hpc.campaign.journal import JournalError
    from hpc.campaign.safe_paths import OutsideFolderError
    from hpc.cli.commands._progress import drive

    if budget is not None and budget < 1:
        typer.echo(f"error: --budget must be at least 1, got {budget}", err=True)
        raise typer.Exit(2)
    try:
        controller = Campaign.open(directory, {"optimizer": {"budget": budget}} if budget else None,
                                   wait_s=60.0 * wait_min)
    except (ConfigError, CampaignError, JournalError, OutsideFolderError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except UnicodeDecodeError as error:  # a binary campaign.toml (the journal says its line)
        typer.echo(f"error: {directory}/campaign.toml is not UTF-8 text ({error}); restore the "
                   "campaign's frozen config", err=True)
        raise typer.Exit(2) from None
    p = controller.progress()
    typer.echo(f"resuming {directory}: {p.complete} complete, {p.failed} failed, "
               f"{p.running} running, budget {p.budget}")
    drive(controller, quiet, report=not no_report)


def register(app: typer.Typer) -> None:
    app.command("resume")(resume)
