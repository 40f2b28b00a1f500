"""`microloop fronts A B C --out OUT`: several multi-objective campaigns' Pareto fronts compared.

For the optimiser seeds of one multi-objective campaign (e.g. cs3_pareto's seeds 0-2): each
front's size, ends and hypervolume on one reference point, and the range over the campaigns
(hpc/analysis/pareto_seeds.py).
"""

from __future__ import annotations

from pathlib import Path

import typer


def fronts(
    sources: list[Path] = typer.Argument(..., metavar="DIR_OR_SUMMARY...",
                                         help="Multi-objective campaign folders (their "
                                              "report/summary.json) or report summary.json files."),
    out: Path = typer.Option(..., "--out", help="Folder for fronts.md, fronts.json, fronts.png."),
    reference: list[float] = typer.Option(None, "--reference", help="Hypervolume reference "
                                          "point, one value per objective: repeat the flag "
                                          "(--reference 0 --reference 0; default: the origin, "
                                          "when every value is >= 0)."),
) -> None:
    """Compare the Pareto fronts of several multi-objective campaigns (e.g. optimiser seeds)."""
    from hpc.analysis.pareto_seeds import compare_fronts, write_fronts

    ref = list(reference) if reference else None
    try:
        comparison = compare_fronts(sources, ref)
    except (FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    md = write_fronts(comparison, out)
    for k, label in enumerate(comparison.labels):
        lo, hi = comparison.end_range(k)
        typer.echo(f"best {label}: {lo:.4g}-{hi:.4g} over {len(comparison.fronts)} front(s)")
    hv = comparison.hypervolumes
    typer.echo(f"hypervolume: {min(hv):.4g}-{max(hv):.4g}; comparison: {md}")


def register(app: typer.Typer) -> None:
    app.command("fronts")(fronts)
