"""`microloop generate`: microstructure volumes for one design, from the trained generator or the
procedural simulator, written as .npy, .tif or zarr."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

#: the array inside a `--out x.zarr` group
ZARR_ARRAY_NAME = "vol"

def parse_params(items: list[str]) -> dict[str, float]:
    """`name=value` strings -> validated parameters; errors name the field and the accepted ranges."""
    from kernels.generator.model import params_to_dict

    raw: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {item!r} must look like name=value, e.g. am_wt_frac=0.94")
        raw[name.strip()] = value.strip()
    return params_to_dict(raw)


#: the JSON line `generate` prints (docs/formats.md)
GENERATE_SCHEMA_VERSION = "microloop.generate/1"


def generate(
    param: list[str] = typer.Option(..., "--param", "-p", help="name=value; repeat the flag for each: "
                                    "am_wt_frac, porosity, binder_adhesion, mass_loading_mg_cm2, "
                                    "..."),
    size: int = typer.Option(128, help="Cube side in voxels."),
    n: int = typer.Option(1, help="Number of samples (different seeds)."),
    seed: int = typer.Option(0, help="Sample i uses (seed, i); the same seed gives the same volumes."),
    out: Path = typer.Option(..., help="Output: .npy, .tif/.tiff or .zarr (shape (n, size, size, size))."),
    model: str = typer.Option("procedural", help="'procedural' (the simulator, the campaign default), "
                              "'default' (the shipped trained weights) or a model file."),
    voxel_um: float = typer.Option(0.4, help="Voxel size for 'procedural' (a model has its own)."),
    device: str = typer.Option("cpu", help="cpu or cuda (trained models only)."),
) -> None:
    """Generate uint8 volumes (0 pore / 1 AM / 2 CBD, axis 0 through the thickness) for a design."""
    import numpy as np

    try:
        params = parse_params(param)
    except (ValueError, TypeError) as error:
        raise typer.BadParameter(str(error), param_hint="--param") from None
    if size < 8:
        raise typer.BadParameter(f"must be >= 8 voxels, got {size}", param_hint="--size")
    if n < 1:
        raise typer.BadParameter(f"must be >= 1, got {n}", param_hint="--n")
    if seed < 0:
        raise typer.BadParameter(f"must be >= 0 (numpy seeds are non-negative), got {seed}",
                                 param_hint="--seed")
    if not (math.isfinite(voxel_um) and voxel_um > 0):
        raise typer.BadParameter(f"must be a positive number of micrometres, got {voxel_um}",
                                 param_hint="--voxel-um")
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".tif", ".tiff", ".zarr"):
        raise typer.BadParameter(f"must end in .npy, .tif, .tiff or .zarr, got {out.name}",
                                 param_hint="--out")
    if not out.absolute().parent.is_dir():  # checked before the volumes are made
        raise typer.BadParameter(f"folder {out.absolute().parent} does not exist; create it "
                                 "first", param_hint="--out")
    if model == "procedural":
        from kernels.structure.procedural import ManufacturingParams, generate_structure

        mp = ManufacturingParams(**{k: v for k, v in params.items() if k != "mass_loading_mg_cm2"})
        seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(n)]
        volumes = np.stack([generate_structure(mp, size, voxel_um, s) for s in seeds])
        source, voxel = "procedural", voxel_um
        note = ""
    else:
        from jobs.train import load_model
        from kernels.generator.model import in_training_envelope, sample

        try:
            generator = load_model(model)
        except (ValueError, FileNotFoundError) as error:
            raise typer.BadParameter(str(error), param_hint="--model") from None
        inside, note = in_training_envelope(params, generator)
        if not inside:
            typer.echo(f"warning: outside the training envelope: {note}", err=True)
        volumes = sample(params, n=n, size=size, seed=seed, device=device, model=generator)
        source, voxel = model, generator.config.voxel_um
    from jobs.volume_io import write_volume

    target = str(out)
    if suffix == ".zarr":
        # a group holding the array `vol`, not a root array: the group carries the OME-Zarr
        # multiscales, so xarray and napari-style readers open it (characterise reads either)
        target = f"{out}/{ZARR_ARRAY_NAME}"
    write_volume(target, volumes, voxel_um=voxel)
    if suffix == ".zarr":
        import zarr

        zarr.open_array(str(out), mode="r+", path=ZARR_ARRAY_NAME).attrs.update(
            {"params": params, "seed": seed, "generator": source, "voxel_um": voxel})
    fractions = [float(np.mean(volumes == k)) for k in range(3)]
    typer.echo(json.dumps({"schema_version": GENERATE_SCHEMA_VERSION, "out": target, "shape": list(volumes.shape), "voxel_um": voxel,
                           "generator": source, "fractions_pore_am_cbd": fractions}))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
