"""`microloop report DIR`: (re)write a campaign's plots and summary into DIR/report/."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    directory: Path = typer.Argument(..., help="A campaign folder (or a case-study folder)."),
) -> None:
    """Write the optimisation trace, GP plots, microstructure slices, Ragone curve and the
    best-design table into DIR/report/ (also done at the end of every run)."""
    from hpc.analysis.report import write_report

    if not (directory / "campaign.toml").exists():
        from hpc.analysis.case_studies import CASE_STUDIES, compare_case_study

        found = [name for name, members in CASE_STUDIES.items()
                 if any((directory / m / "campaign.toml").exists() for m in members)]
        if len(found) != 1:
            typer.echo(f"error: {directory} is neither a campaign folder (no campaign.toml) nor "
                       f"a case-study folder (sub-folders named like {', '.join(CASE_STUDIES)}'s "
                       "campaigns)", err=True)
            raise typer.Exit(2)
        from hpc.cli.commands._progress import steps

        with steps(f"case-study report of {directory}"):   # re-solves the optima's sweeps
            compare_case_study(found[0], directory)
        typer.echo(f"case-study report: {directory / 'report' / 'summary.md'}")
        return
    import tomllib

    from hpc.campaign.journal import JournalError
    from hpc.campaign.safe_paths import OutsideFolderError

    try:
        from hpc.analysis.report import REPORT_STAGES
        from hpc.cli.commands._progress import steps

        with steps(f"report of {directory}", total=len(REPORT_STAGES)) as advance:
            path = write_report(directory, progress=advance)   # a bar with the time left
    except (JournalError, OutsideFolderError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        typer.echo(f"error: {directory}/campaign.toml does not read as TOML ({error}); restore "
                   "the campaign's frozen config", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"report: {path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
