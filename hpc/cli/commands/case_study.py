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
    seeds: list[str] = typer.Option(None, "--seeds", help="Compare seeds instead of running: "
                                    "read DIR/seed_K/NAME for each seed K; repeat the flag for "
                                    "each (--seeds 0 --seeds 1; 0,1,2 in one value is read too); "
                                    "missing seeds are listed. Writes the cross-seed comparison "
                                    "to DIR/NAME_report."),
    out: Path = typer.Option(None, "--out", help="With --seeds: the comparison's folder "
                             "(default DIR/NAME_report)."),
    confirm_cubes: int = typer.Option(4, "--confirm-cubes", help="With --seeds: re-characterise "
                                      "each optimum on this many new cubes (0 = use the "
                                      "campaigns' own measurements)."),
    confirm_voxels: int = typer.Option(128, "--confirm-voxels", help="With --seeds: edge of "
                                       "the confirmation cubes in voxels."),
    confirm_dir: Path = typer.Option(None, "--confirm-dir", help="With --seeds: cache of the "
                                     "confirmation evaluations, voxels included (default "
                                     "OUT/confirm)."),
    alternatives: bool = typer.Option(False, "--alternatives", help="With --seeds (cs2, cs3): "
                                      "also rescore each seed's optima under every alternative "
                                      "modelling choice of docs/cell-model.md and write "
                                      "OUT/alternatives.md and .json (reversal, crossing, "
                                      "discharge times, cs1 design; not re-optimised)."),
) -> None:
    """Run (or resume; finished campaigns are skipped) a case study and write its comparison;
    with --seeds, compare the runs of several optimiser seeds instead."""
    from hpc.analysis.case_studies import CASE_STUDIES, compare_case_study, run_case_study
    from hpc.campaign.config import ConfigError
    from hpc.campaign.controller import CampaignError

    if name not in CASE_STUDIES:
        typer.echo(f"error: unknown case study {name!r}; choose one of "
                   f"{', '.join(CASE_STUDIES)}", err=True)
        raise typer.Exit(2)
    if alternatives and name not in ("cs2", "cs3"):
        typer.echo(f"error: --alternatives needs a Ragone story (cs2 or cs3), not {name}", err=True)
        raise typer.Exit(2)
    if seeds:
        _compare_seeds(name, directory, seeds, out, confirm_cubes, confirm_voxels, confirm_dir,
                       alternatives)
        return
    if alternatives:
        typer.echo("error: --alternatives needs --seeds (it rescores the seeds' optima)", err=True)
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


def _compare_seeds(name: str, directory: Path, seeds: list[str], out: Path | None,
                   confirm_cubes: int, confirm_voxels: int, confirm_dir: Path | None,
                   alternatives: bool = False) -> None:
    from hpc.analysis.case_study_seeds import ConfirmFidelity, compare_seeds, parse_seeds
    from hpc.campaign.config import ConfigError

    try:
        comparison = compare_seeds(name, directory, parse_seeds(",".join(seeds)), out=out,
                                   confirm=ConfirmFidelity(confirm_cubes, confirm_voxels),
                                   confirm_dir=confirm_dir)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    present = ", ".join(str(s) for s in comparison.seeds_present) or "none"
    typer.echo(f"case study {name}: seeds present {present}"
               + (f"; missing {', '.join(str(s) for s in comparison.seeds_missing)}"
                  if comparison.seeds_missing else ""))
    for campaign, interval in comparison.objective_range.items():
        confirmed = comparison.confirmed_range[campaign]
        typer.echo(f"{campaign}: best {interval.text('.4g')}"
                   + (f", confirmed {confirmed.text('.4g')}" if confirmed.values else ""))
    if comparison.crossing_W is not None:
        typer.echo(f"crossing: {comparison.crossing_W.text('.1f', 'W')}; discharge time there "
                   f"{comparison.discharge_time_at_crossing_h.text('.2f', 'h')}")
    if comparison.gain_over_cs1_percent is not None:
        typer.echo(f"energy cell over the cs1 design at {comparison.gain_power_W:g} W: "
                   f"{comparison.gain_over_cs1_percent.text('+.1f', '%')}")
    target = out if out is not None else directory / f"{name}_report"
    typer.echo(f"comparison: {target / 'summary.md'}")
    if alternatives:
        _write_alternatives(name, directory, comparison, target, confirm_dir)


def _write_alternatives(name: str, directory: Path, comparison, target: Path,
                        confirm_dir: Path | None) -> None:
    """Each present seed's optima rescored under every modelling choice (--alternatives)."""
    from hpc.analysis.case_study_alternatives import alternatives_at_seed, write_alternatives
    from hpc.analysis.case_study_seeds import confirm_cache_root

    results = []
    for seed in comparison.seeds_present:
        try:
            results.append(alternatives_at_seed(
                name, directory, seed, comparison.confirm,
                confirm_cache_root(target, comparison.confirm, confirm_dir)))
        except (FileNotFoundError, ValueError) as error:
            typer.echo(f"seed {seed}: no alternatives ({error})", err=True)
            continue
        typer.echo(f"seed {seed}: {len(results[-1].rows)} modelling choices rescored")
    if results:
        typer.echo(f"alternatives: {write_alternatives(results, target)}")


def register(app: typer.Typer) -> None:
    app.command("case-study")(case_study)
