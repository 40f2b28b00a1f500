"""`microloop characterise VOLUME`: the four microstructure metrics of a labelled volume file.

VOLUME is a .npy, .tif/.tiff or zarr array (`store.zarr` or `store.zarr/path/to/array`) of labels
0 pore / 1 active material / 2 CBD; a 4D (n, L, L, L) array characterises each sample. The voxel
size is the one the file carries, else --voxel-um. `--json` prints a list, one record per sample
(schema in docs/formats.md).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import typer

AXES = {"z": 0, "y": 1, "x": 2, "0": 0, "1": 1, "2": 2}
AXIS_NAMES = ("z", "y", "x")
BACKEND_NAMES = ("taufactor", "native")
#: Version of the `characterise --json` records (docs/formats.md); bump on any change of keys.
SCHEMA_VERSION = "microloop.characterise/1"


def _parse_axis(value: str) -> int:
    key = value.strip().lower()
    if key not in AXES:
        raise ValueError(f"--axis must be one of z, y, x, 0, 1, 2; got {value!r}")
    return AXES[key]


def resolve_voxel_um(volume_path: str, voxel_um: float | None) -> tuple[float, str]:
    """(voxel edge in um, its source): the file's own (zarr attributes, OME-Zarr, TIFF
    resolution) or --voxel-um; both given and different, or neither, is an error: a wrong voxel
    size scales every surface area and no default can be right for every file."""
    from jobs.volume_io import file_voxel_um

    if voxel_um is not None and not (math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"--voxel-um must be a positive number, got {voxel_um}")
    carried = file_voxel_um(volume_path)
    if carried is None:
        if voxel_um is None:
            raise ValueError(f"{volume_path} does not state its voxel size: give --voxel-um "
                             "(micrometres per voxel edge)")
        return float(voxel_um), "--voxel-um"
    file_um, where = carried
    if voxel_um is not None and not math.isclose(voxel_um, file_um, rel_tol=1e-6):
        raise ValueError(f"--voxel-um {voxel_um} disagrees with the {file_um} um that "
                         f"{volume_path} carries ({where}); drop --voxel-um or fix the file")
    return file_um, where


def characterise_file(
    volume_path: str,
    axis: int = 0,
    voxel_um: float | None = None,
    backend: str = "native",
    conductivity_am_S_m: float | None = None,
    conductivity_cbd_S_m: float | None = None,
    rel_tol: float = 1e-3,
    on_step: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Metrics (VolumeMetrics.to_dict, plus `sample` index and the voxel size used, from
    `resolve_voxel_um`) of each sample in the file:
    one (sample 0) for 3D, n for 4D; the same keys either way. `on_step(what)` is called after
    each stage of each sample (progress: len(STAGES) steps per sample)."""
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
    voxel, voxel_source = resolve_voxel_um(volume_path, voxel_um)
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
            voxel_um=voxel,
            axis=axis,
            backend=backend,
            conductivity_am_S_m=(DEFAULT_CONDUCTIVITY_AM_S_M if conductivity_am_S_m is None
                                 else conductivity_am_S_m),
            conductivity_cbd_S_m=(DEFAULT_CONDUCTIVITY_CBD_S_M if conductivity_cbd_S_m is None
                                  else conductivity_cbd_S_m),
            rel_tol=rel_tol,
            on_stage=None if on_step is None else _stage_reporter(
                on_step, f"sample {len(results) + 1} of {len(samples)}"),
        ).to_dict()
        results.append({"voxel_um": voxel, "voxel_um_source": voxel_source,
                        "sample": 0 if index is None else index, **metrics})
    return results


def _stage_reporter(on_step: Callable[[str], None], sample: str) -> Callable[[str], None]:
    return lambda stage: on_step(f"{sample}: {stage}")


#: Volumes at least this many voxels (one sample) or this many samples show progress.
PROGRESS_MIN_VOXELS = 128 ** 3
PROGRESS_MIN_SAMPLES = 2


@contextlib.contextmanager
def _progress(volume_path: str) -> Iterator[Callable[[str], None] | None]:
    """Progress (on stderr) after each stage of each sample for a stack of samples or a large
    sample (a 512^3 one takes minutes per stage); none for a small single volume, which
    finishes in about a second."""
    from jobs.volume_io import open_volume

    shape = tuple(open_volume(volume_path).shape)
    n_samples = shape[0] if len(shape) == 4 else 1
    if n_samples < PROGRESS_MIN_SAMPLES and math.prod(shape[-3:]) < PROGRESS_MIN_VOXELS:
        yield None
        return
    from hpc.cli.commands._progress import steps
    from kernels.metrics.volume import STAGES

    with steps(f"characterising {volume_path}", total=n_samples * len(STAGES)) as advance:
        yield advance


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
    multi = len(results) > 1
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
    voxel_um: float | None = typer.Option(
        None, "--voxel-um", help="Voxel edge length in micrometres [um]; default: the size the "
        "file carries (zarr attributes, OME-Zarr, TIFF resolution); required for .npy."),
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
        axis_index = _parse_axis(axis)
        with _progress(volume) as on_step:
            results = characterise_file(volume, axis_index, voxel_um, backend,
                                        conductivity_am_S_m, conductivity_cbd_S_m, rel_tol,
                                        on_step)
    except (ValueError, OSError, ImportError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        context = {"schema_version": SCHEMA_VERSION, "volume": volume,
                   "axis": AXIS_NAMES[axis_index], "backend": backend}
        typer.echo(json.dumps([{**context, **item} for item in results], indent=2))
        return
    first = results[0]
    _print_table(results, f"{volume} (axis {AXIS_NAMES[axis_index]}, voxel "
                          f"{first['voxel_um']:g} um from {first['voxel_um_source']}, {backend})")


def register(app: typer.Typer) -> None:
    app.command("characterise")(characterise)
