"""`microloop case-study NAME --dir D`: run all campaigns of a case study, then compare them."""

from __future__ import annotations

from pathlib import Path

import typer


def case_study(
    name: str = typer.Argument(..., help="cs1 (half cell, 5 C-rates), cs2 (Wh/kg at 10 and "
                               "200 W) or cs3 (energy vs power cell, Ragone crossing)."),
    directory: Path = typer.Option(..., "--dir", help="Case-study folder: one sub-folder per "
                                   "campaign, the comparison in DIR/report/."),
    cs1: Path = typer.Option(None, "--cs1", help="cs3 only: a cs1 case-study (or campaign) "
                             "folder whose 1C optimum is built as a 4680 (default DIR/../cs1)."),
    budget: int = typer.Option(None, "--budget", help="Override optimizer.budget of every new "
                               "campaign."),
    executor: str = typer.Option(None, "--executor", help="Override resources.executor: "
                                 "local, slurm or debug."),
    seed: int = typer.Option(None, "--seed", help="Override optimizer.seed of every new "
                             "campaign (one case-study folder per seed)."),
    profile: str = typer.Option(None, "--profile", help="A named variant of every member file "
                                "([profiles.NAME]; 'paper' = the fidelity docs/case-studies.md "
                                "reports)."),
    compare_only: bool = typer.Option(False, "--compare-only", help="Only redo the comparison "
                                      "of the campaigns already in DIR."),
) -> None:
    """Run (or resume; finished campaigns are skipped) a case study and write its comparison."""
    from hpc.analysis.case_studies import CASE_STUDIES, compare_case_study, run_case_study
    from hpc.campaign.config import ConfigError
    from hpc.campaign.controller import CampaignError

    if name not in CASE_STUDIES:
        typer.echo(f"error: unknown case study {name!r}; choose one of "
                   f"{', '.join(CASE_STUDIES)}", err=True)
        raise typer.Exit(2)
    overrides = {"optimizer": {"budget": budget, "seed": seed},
                 "resources": {"executor": executor}}
    try:
        if compare_only:
            summary = compare_case_study(name, directory, cs1_dir=cs1)
        else:
            typer.echo(f"case study {name}: campaigns {', '.join(CASE_STUDIES[name])} "
                       f"into {directory}")
            from hpc.cli.commands._progress import campaign_progress

            with campaign_progress(f"case study {name}", budget or 1) as show:
                summary = run_case_study(name, directory, overrides, cs1_dir=cs1,
                                         on_progress=show, profile=profile)
    except (ConfigError, CampaignError, FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for campaign, optimum in summary["optima"].items():
        typer.echo(f"{campaign}: best {optimum['objective']:.4g} {optimum['objective_kind']} at "
                   f"{optimum['operating_point']}, {optimum['params']}")
    if "crossing_power_W" in summary:
        crossing = summary["crossing_power_W"]
        typer.echo("energy/power cell crossing: "
                   + (f"{crossing:.0f} W" if crossing is not None else "none in the sweep"))
    if summary.get("gain_over_cs1_at_10W_percent") is not None:
        typer.echo(f"energy cell over the cs1 design at 10 W: "
                   f"{summary['gain_over_cs1_at_10W_percent']:+.1f} %")
    typer.echo(f"comparison: {directory / 'report' / 'summary.md'}")


def register(app: typer.Typer) -> None:
    app.command("case-study")(case_study)
