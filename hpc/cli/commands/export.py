"""`microloop export DIR --out obs.json`: a campaign's observations without its microstructures.

What another campaign (at this site or another) needs to warm-start from this one: the
parameters, objective values, feasibility, and the context they were made in (fidelity,
generator, cell, operating point), with provenance and a schema_version. No voxels and no
generator weights leave the folder (a trained generator is named by its sha256 only);
`--surrogate` adds the GP fitted on them (hpc/campaign/surrogate.py). Import it
with `[warm_start] from_file = "obs.json"`; the same checks as for a campaign folder apply
(hpc/campaign/warm_start.py).

A folder that keeps only a campaign's trials.csv (the case-study data under
docs/data/case-studies: no journal, no frozen config) exports with `--campaign NAME [--profile P]
[--seed S]`: the campaign file it was run with supplies the context the table does not record
(a report summary.json kept beside it as report_summary.json must agree with it).
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
    campaign: str | None = typer.Option(
        None, "--campaign", metavar="FILE|NAME",
        help="DIR holds only a trials.csv (no campaign.toml): the campaign file it was run "
             "with, which supplies the context the table does not record."),
    profile: str | None = typer.Option(None, "--profile", help="With --campaign: its profile."),
    seed: int | None = typer.Option(None, "--seed", help="With --campaign: its optimiser seed."),
) -> None:
    """Write a campaign's observations (no voxels, no weights) for `[warm_start] from_file`."""
    from hpc.campaign.config import ConfigError, load_campaign
    from hpc.campaign.folder import FROZEN_CONFIG, TABLE_SUMMARY_NAME
    from hpc.campaign.warm_start import export_observations, observations_from_table

    try:
        if (directory / FROZEN_CONFIG).exists():
            if campaign is not None:
                raise ValueError(f"{directory} is a campaign folder (it has {FROZEN_CONFIG}): "
                                 "its own config is the context; drop --campaign")
            data = export_observations(directory, surrogate=surrogate)
        elif campaign is None:
            raise ValueError(f"{directory} is not a campaign folder (no {FROZEN_CONFIG}); for a "
                             "folder with a trials.csv only, name the campaign file it was run "
                             "with: --campaign NAME [--profile P] [--seed S]")
        else:
            config = load_campaign(campaign, overrides={"optimizer": {"seed": seed}},
                                   profile=profile)
            data = observations_from_table(directory, config, TABLE_SUMMARY_NAME,
                                           surrogate=surrogate)
    except (ValueError, ConfigError) as error:
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
