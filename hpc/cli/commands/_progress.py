"""The progress bar shared by `microloop run` and `microloop resume`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from hpc.campaign.folder import TRIALS_NAME

if TYPE_CHECKING:
    from hpc.campaign.controller import Campaign, Progress


def drive(controller: Campaign, quiet: bool = False, report: bool = True) -> None:
    """Run an hpc.campaign.controller.Campaign with a rich progress bar (done/running/failed, best).

    Exits 1 with a one-line message when the campaign ends without a single completed trial
    (every evaluation failed): a script or `sbatch` sees that the run produced nothing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    def describe(p: Progress) -> str:
        best = "-" if p.best_objective is None else f"{p.best_objective:.4g}"
        return (f"done {p.complete} | running {p.running} | failed {p.failed} | "
                f"best {best}")

    from hpc.campaign.controller import CampaignError

    hook = None
    if report:
        from hpc.analysis.report import write_report_logged as hook
    try:
        if quiet:
            final = controller.run(report=hook)
        else:
            with Progress(TextColumn("[bold]{task.fields[label]}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn()) as bar:
                task = bar.add_task("campaign", total=controller.budget, label="starting")

                def show(p: Progress) -> None:
                    bar.update(task, completed=p.complete + p.failed, label=describe(p))

                final = controller.run(on_progress=show, report=hook)
    except CampaignError as error:  # e.g. a full disk: a clear stop, resumable
        typer.echo(f"\nerror: {error}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted: running jobs keep going; continue with "
                   f"`microloop resume {controller.dir}`", err=True)
        raise typer.Exit(130) from None
    finally:
        controller.close()
    typer.echo(describe(final))
    if final.best_params is not None:
        typer.echo(f"best design: {final.best_params}")
    typer.echo(f"results: {controller.dir / TRIALS_NAME}")
    if final.complete == 0:
        typer.echo(f"error: no trial completed ({final.failed} failed, {final.running} still "
                   f"running); the reasons are in {controller.dir / TRIALS_NAME}", err=True)
        raise typer.Exit(1)
