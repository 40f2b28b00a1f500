"""`microloop characterise VOLUME`: the four microstructure metrics of a labelled volume file.

VOLUME is a .npy, .tif/.tiff or zarr array (`store.zarr` or `store.zarr/path/to/array`) of labels
0 pore / 1 active material / 2 CBD; a 4D (n, L, L, L) array characterises each sample.
"""

from __future__ import annotations

import json
import math
from typing import Any

import typer

AXES = {"z": 0, "y": 1, "x": 2, "0": 0, "1": 1, "2": 2}
BACKEND_NAMES = ("taufactor", "native")


def _parse_axis(value: str) -> int:
    key = value.strip().lower()
    if key not in AXES:
        raise ValueError(f"--axis must be one of z, y, x, 0, 1, 2; got {value!r}")
    return AXES[key]


def characterise_file(
    volume_path: str,
    axis: int = 0,
    voxel_um: float = 1.0,
    backend: str = "native",
    conductivity_am_S_m: float | None = None,
    conductivity_cbd_S_m: float | None = None,
    rel_tol: float = 1e-3,
) -> list[dict[str, Any]]:
    """Metrics (VolumeMetrics.to_dict) of each sample in the file: one for 3D, n for 4D."""
    from jobs.volume_io import open_volume
    from kernels.metrics.solvers import available_backends
    from kernels.metrics.volume import (
        DEFAULT_CONDUCTIVITY_AM_S_M,
        DEFAULT_CONDUCTIVITY_CBD_S_M,
        characterise_volume,
        validate_labels,
    )

    if backend not in available_backends():
        raise ValueError(f"--backend must be one of {available_backends()}, got {backend!r}")
    array = open_volume(volume_path)
    shape = tuple(array.shape)
    if len(shape) == 3:
        samples = [None]
    elif len(shape) == 4:
        samples = list(range(shape[0]))
    else:
        raise ValueError(
            f"volume must be a 3D array (or 4D: samples x 3D), got shape {shape} in {volume_path}"
        )
    _check_memory(volume_path, shape[-3:], backend)
    results = []
    for index in samples:
        import numpy as np

        volume = np.asarray(array[...] if index is None else array[index])
        try:
            validate_labels(volume)
        except ValueError as error:
            where = "" if index is None else f" (sample {index})"
            hint = ""
            if volume.dtype == np.uint8 and np.any(volume == 255):
                hint = "; 255 is the campaign store's fill value for a sample never written"
            raise ValueError(f"{volume_path}{where}: {error}{hint}") from None
        metrics = characterise_volume(
            volume,
            voxel_um=voxel_um,
            axis=axis,
            backend=backend,
            conductivity_am_S_m=(DEFAULT_CONDUCTIVITY_AM_S_M if conductivity_am_S_m is None
                                 else conductivity_am_S_m),
            conductivity_cbd_S_m=(DEFAULT_CONDUCTIVITY_CBD_S_M if conductivity_cbd_S_m is None
                                  else conductivity_cbd_S_m),
            rel_tol=rel_tol,
        ).to_dict()
        if index is not None:
            metrics = {"sample": index, **metrics}
        results.append(metrics)
    return results


def _check_memory(volume_path: str, shape: tuple[int, ...], backend: str) -> None:
    """Refuse (ValueError) a sample too big for this machine's free memory, before reading it:
    a lazy zarr of 2048^3 would otherwise be read whole and the process OOM-killed (rc 137)."""
    from hpc.campaign.memory_estimate import GIB, available_memory_bytes, volume_peak_bytes

    n_voxels = math.prod(int(n) for n in shape)
    need = volume_peak_bytes(n_voxels, backend)
    free = available_memory_bytes()
    if need > free:
        raise ValueError(
            f"{volume_path}: characterising one {'x'.join(map(str, shape))} sample needs about "
            f"{need / GIB:.1f} GiB (estimate), and {free / GIB:.1f} GiB is available here; "
            "characterise a cropped sub-volume or run on a node with more memory")


def _print_table(results: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    multi = "sample" in results[0]
    for item in results:
        table.add_column(f"sample {item['sample']}" if multi else "value", justify="right")

    def row(label: str, getter) -> None:
        table.add_row(label, *[getter(item) for item in results])

    for phase in ("pore", "am", "cbd"):
        row(f"volume fraction {phase}", lambda m, p=phase: f"{m['volume_fraction'][p]:.4f}")
    row("SSA AM-pore [1/um]", lambda m: f"{m['specific_surface_area_per_um']['am_pore']:.4f}")
    row("SSA AM-CBD [1/um]", lambda m: f"{m['specific_surface_area_per_um']['am_cbd']:.4f}")
    row("CBD coverage of AM", lambda m: f"{m['cbd_coverage']:.3f}")
    row("pore tortuosity factor",
        lambda m: "inf" if m["tortuosity_factor"] is None else f"{m['tortuosity_factor']:.4g}")
    row("pore percolates", lambda m: "yes" if m["percolating"] else "no")
    row("eff. electronic conductivity [S/m]", lambda m: f"{m['effective_conductivity_S_m']:.4g}")
    Console().print(table)


def characterise(
    volume: str = typer.Argument(
        ..., help="Labelled volume (0 pore, 1 AM, 2 CBD): .npy, .tif/.tiff or store.zarr or store.zarr/path/to/array."
    ),
    axis: str = typer.Option("z", "--axis", help="Transport axis: z|y|x (= 0|1|2); z is axis 0."),
    voxel_um: float = typer.Option(1.0, "--voxel-um", help="Voxel edge length in micrometres."),
    backend: str = typer.Option("native", "--backend",
                                help=f"Transport solver: {' | '.join(BACKEND_NAMES)}."),
    conductivity_am_S_m: float | None = typer.Option(
        None, "--conductivity-am-S-m", help="Active-material conductivity [S/m] (default 0.18)."
    ),
    conductivity_cbd_S_m: float | None = typer.Option(
        None, "--conductivity-cbd-S-m", help="CBD conductivity [S/m] (default 10)."
    ),
    rel_tol: float = typer.Option(1e-3, "--rel-tol", help="Solver convergence tolerance."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Volume fractions, surface areas, CBD coverage, tortuosity and conductivity of a volume."""
    try:
        if not (math.isfinite(voxel_um) and voxel_um > 0):
            raise ValueError(f"--voxel-um must be a positive number, got {voxel_um}")
        results = characterise_file(volume, _parse_axis(axis), voxel_um, backend,
                                    conductivity_am_S_m, conductivity_cbd_S_m, rel_tol)
    except (ValueError, OSError, ImportError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        payload: Any = results[0] if len(results) == 1 and "sample" not in results[0] else results
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_table(results, f"{volume} (axis {axis}, voxel {voxel_um} um, {backend})")


def register(app: typer.Typer) -> None:
    app.command("characterise")(characterise)
