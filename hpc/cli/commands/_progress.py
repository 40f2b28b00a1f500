"""Progress for the long commands: a rich bar on a terminal, one log line per trial event with
an ETA in batch (a submitted controller's output is a file, where a bar is noise)."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import typer

from hpc.campaign.folder import TRIALS_NAME

if TYPE_CHECKING:
    from hpc.campaign.config import ObjectiveConfig
    from hpc.campaign.controller import Campaign, Progress


def eta_s(elapsed_s: float, finished_now: int, finished_at_start: int, budget: int
          ) -> float | None:
    """Seconds left at this run's mean time per finished trial, None before one finished.

    Only trials finished by this run count (a resumed campaign's earlier ones took no time
    here)."""
    done_here = finished_now - finished_at_start
    if done_here <= 0:
        return None
    return max(budget - finished_now, 0) * elapsed_s / done_here


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class TrialLog:
    """`on_progress` for batch runs: one line when a trial is submitted, finishes or fails
    (the counts change), with the ETA and its UTC time; silent while nothing changes."""

    def __init__(self, label: str, write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.write = write or (lambda line: typer.echo(line, err=True))
        self.clock = clock
        self.started = clock()
        self.last: tuple[int, int, int, int] | None = None
        self.finished_at_start: int | None = None

    def __call__(self, p: Progress) -> None:
        state = (p.complete, p.failed, p.running, p.budget)
        finished = p.complete + p.failed
        if self.last is not None and (p.budget != self.last[3]
                                      or finished < self.last[0] + self.last[1]):
            self.finished_at_start = None     # the next campaign of a case study: start again
        if self.finished_at_start is None:
            self.finished_at_start = finished
            self.started = self.clock()
        if state == self.last:
            return
        self.last = state
        left = eta_s(self.clock() - self.started, finished, self.finished_at_start, p.budget)
        if left is None:
            eta = "ETA after the first trial finishes"
        else:
            at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=left)
            eta = f"ETA {_clock(left)} ({at.strftime('%H:%M')} UTC)"
        best = "-" if p.best_objective is None else f"{p.best_objective:.4g}"
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.write(f"{stamp} {self.label}: {finished}/{p.budget} finished (complete "
                   f"{p.complete}, failed {p.failed}), running {p.running}, best {best}; {eta}")


def interactive() -> bool:
    """Whether a live bar can be drawn (stderr is a terminal)."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def campaign_progress(label: str, budget: int) -> Iterator[Callable[[Progress], None]]:
    """An `on_progress` for one campaign: a rich bar with the time left on a terminal, a
    `TrialLog` otherwise."""
    if not interactive():
        yield TrialLog(label)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    with Bar(TextColumn("[bold]{task.fields[label]}"), BarColumn(), MofNCompleteColumn(),
             TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(label, total=budget, label=f"{label}: starting")

        def show(p: Progress) -> None:
            best = "-" if p.best_objective is None else f"{p.best_objective:.4g}"
            bar.update(task, completed=p.complete + p.failed, total=p.budget,
                       label=f"{label}: done {p.complete} | running {p.running} | failed "
                             f"{p.failed} | best {best}")

        yield show


@contextlib.contextmanager
def steps(label: str, total: int | None = None) -> Iterator[Callable[[str], None]]:
    """Progress over the steps of a long command (`report`, `calibrate`, `characterise`):
    `advance(what)` after each; a rich bar with the time left (or a spinner when `total` is
    None) on a terminal, a timestamped line per step otherwise, with the ETA at the mean step
    time so far when `total` is known (for `calibrate`, an upper bound: the fit may stop
    before its last allowed model solve)."""
    started = time.monotonic()
    if not interactive():
        done = [0]

        def log(what: str) -> None:
            done[0] += 1
            elapsed = time.monotonic() - started
            line = (f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} {label}: "
                    f"{what} ({elapsed:.1f} s")
            if total:
                left = eta_s(elapsed, done[0], 0, total)
                line += f", step {min(done[0], total)}/{total}"
                if left is not None:
                    line += f", ETA {_clock(left)}"
            typer.echo(line + ")", err=True)

        yield log
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    columns = ([SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
               if total is None else
               [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn()])
    with Bar(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(what: str) -> None:
            bar.update(task, advance=1, description=f"{label}: {what}")

        yield advance


def best_line(objective: ObjectiveConfig, final: Progress) -> str:
    """The last line `run` and `resume` print: the best value with its unit and operating
    point, then the design as name=value (the value is the first word after the colon;
    trials.csv has every trial)."""
    from jobs.contract.result import OBJECTIVE_UNITS

    if final.best_objective is None:
        return f"best {objective.label()}: none (no feasible completed trial)"
    design = ", ".join(f"{name}={value:.4g}" for name, value in (final.best_params or {}).items())
    return (f"best {objective.label()}: {final.best_objective:.4g} "
            f"{OBJECTIVE_UNITS[objective.kind]} ({design})")


def drive(controller: Campaign, quiet: bool = False, report: bool = True) -> None:
    """Run an hpc.campaign.controller.Campaign with a rich progress bar (done/running/failed, best).

    `quiet` drops the bar on a terminal; without one (a submitted controller, which the
    sbatch template starts with --quiet) the per-trial log lines are written all the same.
    Exits 1 with a one-line message when the campaign ends without a single completed trial
    (every evaluation failed): a script or `sbatch` sees that the run produced nothing."""
    def describe(p: Progress) -> str:
        best = "-" if p.best_objective is None else f"{p.best_objective:.4g}"
        return (f"done {p.complete} | running {p.running} | failed {p.failed} | "
                f"best {best}")

    from hpc.campaign.controller import CampaignError

    hook = None
    if report:
        from hpc.analysis.report import write_report_logged as hook
    try:
        if quiet and interactive():      # batch output keeps its per-trial log lines
            final = controller.run(report=hook)
        else:
            with campaign_progress(controller.dir.name, controller.budget) as show:
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
    typer.echo(f"results: {controller.dir / TRIALS_NAME}")
    typer.echo(best_line(controller.config.objective, final))
    if final.complete == 0:
        typer.echo(f"error: no trial completed ({final.failed} failed, {final.running} still "
                   f"running); the reasons are in {controller.dir / TRIALS_NAME}", err=True)
        raise typer.Exit(1)
