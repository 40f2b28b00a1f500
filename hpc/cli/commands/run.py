"""`microloop run CAMPAIGN`: start a campaign (a TOML file or a built-in name) and drive it."""

from __future__ import annotations

from pathlib import Path

import typer


def _default_dir(name: str) -> Path:
    from datetime import datetime

    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def run(
    campaign: str = typer.Argument(..., help="Campaign TOML file, or a built-in name: microloop campaigns list."),
    directory: Path = typer.Option(None, "--dir", help="Folder (default runs/<name>-<time>)."),
    executor: str = typer.Option(None, "--executor", help="Override resources.executor: local, slurm or "
                                  "debug (in-process, for pdb)."),
    budget: int = typer.Option(None, "--budget", help="Override optimizer.budget."),
    seed: int = typer.Option(None, "--seed", help="Override optimizer.seed."),
    profile: str = typer.Option(None, "--profile", help="A named variant defined in the file "
                                "([profiles.NAME], e.g. 'paper': the documented case-study "
                                "fidelity); overrides still win over it."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the report at the end."),
) -> None:
    """Run a campaign: ask -> evaluate (jobs) -> tell, until the budget is spent."""
    from hpc.campaign.config import ConfigError, load_campaign
    from hpc.campaign.controller import Campaign, CampaignError
    from hpc.campaign.safe_paths import OutsideFolderError
    from hpc.cli.commands._progress import drive

    overrides = {"resources": {"executor": executor}, "optimizer": {"budget": budget, "seed": seed}}
    try:
        config = load_campaign(campaign, overrides, profile=profile)
        folder = directory or _default_dir(config.name)
        controller = Campaign.create(config, folder)
    except (ConfigError, CampaignError, OutsideFolderError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except (OSError, UnicodeDecodeError) as error:  # a directory, a binary or unreadable file
        typer.echo(f"error: campaign {campaign!r} cannot be read as a TOML text file: {error}",
                   err=True)
        raise typer.Exit(2) from None
    typer.echo(f"campaign {config.name!r} in {folder} ({config.resources.executor} executor, "
               f"budget {config.optimizer.budget})")
    drive(controller, quiet, report=not no_report)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
