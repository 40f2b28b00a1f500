"""`microloop export DIR --out obs.json`: a campaign's observations without its microstructures.

What another campaign (at this site or another) needs to warm-start from this one: the
parameters, objective values, feasibility, and the context they were made in (fidelity,
generator, cell, operating point), with provenance and a schema_version. No voxels and no
generator weights leave the folder (a trained generator is named by its sha256 only);
`--surrogate` adds the GP fitted on them (hpc/campaign/surrogate.py). Import it
with `[warm_start] from_file = "obs.json"`; the same checks as for a campaign folder apply
(hpc/campaign/warm_start.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer


def export(
    directory: Path = typer.Argument(..., metavar="DIR", help="A campaign folder."),
    out: Path = typer.Option(..., "--out", metavar="obs.json", help="Observations file to write."),
    surrogate: bool = typer.Option(False, "--surrogate",
                                   help="Also the fitted GP: hyper-parameters and training data "
                                        "(microloop.surrogate/1, docs/formats.md)."),
) -> None:
    """Write a campaign's observations (no voxels, no weights) for `[warm_start] from_file`."""
    from hpc.campaign.warm_start import export_observations

    try:
        data = export_observations(directory, surrogate=surrogate)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    text = json.dumps(data, indent=2, allow_nan=False)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(text + "\n")
    os.replace(tmp, out)
    typer.echo(f"wrote {out}: {len(data['observations'])} observations of "
               f"{data['provenance']['campaign']!r}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
