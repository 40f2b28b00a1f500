"""`microloop train-generator`: train the conditional generator on procedural or user volumes.

On a SLURM GPU node (see docs/generator.md):
    sbatch --gres=gpu:1 --time=04:00:00 --wrap \
      "microloop train-generator procedural --out model.pt --steps 20000 --device cuda --resume"
`--resume` makes the same line safe to resubmit after a timeout or preemption.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _parse_grid(items: list[str]) -> dict[str, list[float]] | None:
    if not items:
        return None
    grid: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        try:
            grid[name.strip()] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            sep = ""
        if not sep or not grid.get(name.strip()):
            raise typer.BadParameter(f"{item!r} must look like name=v1,v2,v3", param_hint="--grid")
    return grid


#: the JSON line `train-generator` prints (docs/formats.md)
TRAIN_SCHEMA_VERSION = "microloop.train-generator/1"


def train_generator_command(
    data: str = typer.Argument(..., help="'procedural', a zarr group of labelled arrays (params in "
                               "attributes), or a folder of .npy/.tif volumes + a params CSV with a "
                               "'file' column."),
    out: Path = typer.Option(..., help="Model file to write (the checkpoint and loss plot go next to it)."),
    steps: int = typer.Option(2000, help="Total optimiser steps (counting those before --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT.ckpt when it exists."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    crop: int = typer.Option(32, help="Side of the generated training crops, voxels (multiple of 8)."),
    batch: int = typer.Option(4, help="Crops per step."),
    learning_rate: float | None = typer.Option(None, "--lr", help="Adam learning rate (default "
                                               "2e-3 for statistics, 1e-4 for slicegan)."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    seed: int = typer.Option(0, help="Seed of the weights, noise and batch order."),
    crisp_weight: float = typer.Option(0.3, help="Weight of the term that makes fields one-hot."),
    threads: int = typer.Option(0, help="CPU threads for torch (0 = torch's default)."),
    time_limit_min: float = typer.Option(0.0, help="Stop after a checkpoint once this many minutes "
                                         "have passed (0 = no limit); set below a job's wall time."),
    voxel_um: float | None = typer.Option(None, help="Voxel edge of the training volumes, um; "
                                          "default: what the files state (0.4 for procedural). "
                                          "Kept in the model: it generates at this size."),
    method: str = typer.Option("statistics", help="'statistics' (fractions + two-point maps) or "
                               "'slicegan' (2D critics on orthogonal slices, WGAN-GP)."),
    init_from: str | None = typer.Option(None, help="Start from a model file or 'default' "
                                         "(same architecture); e.g. adversarial fine-tuning."),
    n_critic: int = typer.Option(5, help="slicegan only: critic updates per generator update."),
    ensemble: int = typer.Option(1, help="Members of a bootstrap ensemble (>= 2: OUT holds them "
                                 "all, each trained on a resample of the training points; its "
                                 "spread between members is the generator's uncertainty)."),
    grid: list[str] = typer.Option([], "--grid", help="procedural only: name=v1,v2,... (one grid "
                                   "axis; repeat the flag for each); "
                                   "default am_wt_frac=0.85,0.9,0.95 porosity=0.25,0.35,0.45 "
                                   "binder_adhesion=0,0.5,1"),
    volume_voxels: int = typer.Option(96, help="procedural only: side of each training volume."),
    samples_per_point: int = typer.Option(1, help="procedural only: volumes per grid point."),
    widths: list[int] = typer.Option([], "--widths", help="Channels of one of the generator's "
                                     "stages, coarsest first; repeat the flag for each (default "
                                     "48 32 16 8; the shipped model: --widths 64 --widths 48 "
                                     "--widths 32 --widths 16)."),
    max_lag: int = typer.Option(12, help="Largest two-point lag the loss matches, voxels (the "
                                "shipped model: 16; must be below --crop)."),
    calendering: str | None = typer.Option(None, help="procedural only: the simulator's "
                                           "calendering model, 'rearrange' (default) or "
                                           "'flatten'; kept in the model."),
) -> None:
    """Train the conditional 3D generator; writes OUT, OUT.ckpt and the loss plot."""
    import sys

    from jobs.train import (
        TrainOptions,
        checkpoint_path,
        load_checkpoint,
        train_ensemble,
        train_generator,
    )
    from jobs.training_data import load_training_set

    if not out.absolute().parent.is_dir():
        raise typer.BadParameter(f"folder {out.absolute().parent} does not exist; create it first",
                                 param_hint="--out")
    if resume and checkpoint_path(out).is_file():
        try:  # refused before any training data is made (weights only: docs/trust.md)
            load_checkpoint(checkpoint_path(out))
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--resume") from None
    if learning_rate is None:   # a GAN needs a far smaller step than statistics matching
        learning_rate = 1e-4 if method == "slicegan" else 2e-3
    procedural = {}
    if data == "procedural":
        procedural = {"grid": _parse_grid(grid), "size_voxels": volume_voxels,
                      "samples_per_point": samples_per_point}
        if calendering is not None:
            from kernels.cell.ranges import CALENDERING_MODELS

            if calendering not in CALENDERING_MODELS:
                raise typer.BadParameter(f"must be one of {list(CALENDERING_MODELS)}, got "
                                         f"{calendering!r}", param_hint="--calendering")
            procedural["calendering"] = calendering
    elif grid or calendering is not None:
        raise typer.BadParameter("only for DATA = procedural",
                                 param_hint="--grid" if grid else "--calendering")
    stage_widths = tuple(widths) or TrainOptions.widths
    if min(stage_widths) < 1:
        raise typer.BadParameter(f"channels must be >= 1, got {list(stage_widths)}",
                                 param_hint="--widths")
    options = TrainOptions(steps=steps, batch=batch, crop_voxels=crop, learning_rate=learning_rate,
                           widths=stage_widths, max_lag_voxels=max_lag,
                           checkpoint_every=checkpoint_every, seed=seed, device=device,
                           crisp_weight=crisp_weight, method=method, init_from=init_from,
                           n_critic=n_critic,
                           threads=threads or None,
                           time_limit_s=time_limit_min * 60 if time_limit_min > 0 else None)
    try:
        options.validate()
        training_set = load_training_set(data, voxel_um=voxel_um, **procedural)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if ensemble < 1:
        raise typer.BadParameter(f"must be >= 1, got {ensemble}", param_hint="--ensemble")

    def run(*args, **kwargs) -> dict:
        if ensemble == 1:
            return train_generator(*args, **kwargs)
        return train_ensemble(args[0], args[1], ensemble, *args[2:], **kwargs)

    typer.echo(f"training on {len(training_set.volumes)} volumes ({training_set.source})", err=True)
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(TextColumn("[bold]{task.fields[label]}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=False) as bar:
            task = bar.add_task("train", total=steps, label="training")

            def show(step: int, total: int, parts: dict[str, float]) -> None:
                bar.update(task, completed=step, label=f"loss {parts['loss']:.4g}")

            summary = run(training_set, out, options, resume=resume, progress=show)
    else:  # a batch job: one line every ~2 % of the run
        every = max(1, steps // 50)

        def log(step: int, total: int, parts: dict[str, float]) -> None:
            if step % every == 0 or step == total:
                typer.echo(f"step {step}/{total} " + " ".join(f"{k}={v:.4g}" for k, v in parts.items()),
                           err=True)

        summary = run(training_set, out, options, resume=resume, progress=log)
    typer.echo(json.dumps({"schema_version": TRAIN_SCHEMA_VERSION, **summary}))


def register(app: typer.Typer) -> None:
    app.command("train-generator")(train_generator_command)
