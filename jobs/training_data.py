"""Labelled training volumes for the generator: the procedural simulator over a parameter grid,
or the user's own volumes (a zarr group, or a folder of .npy/.tif files with a CSV of parameters).

Every volume is a 3D array of labels 0 pore / 1 AM / 2 CBD with axis 0 through the thickness,
and comes with the manufacturing parameters it was made with.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernels.generator.model import params_to_dict
from kernels.structure.procedural import (
    DEFAULT_CALENDERING,
    ManufacturingParams,
    generate_structure,
)

DEFAULT_GRID: dict[str, list[float]] = {
    "am_wt_frac": [0.85, 0.90, 0.95],
    "porosity": [0.25, 0.35, 0.45],
    "binder_adhesion": [0.0, 0.5, 1.0],
}
PARAMS_CSV_FILE_COLUMN = "file"


@dataclass
class TrainingSet:
    """Volumes with their parameters, and where they came from (stored with the model)."""

    params: list[dict[str, float]]
    volumes: list[np.ndarray]
    voxel_um: float
    source: str
    fixed_params: dict[str, float] = field(default_factory=dict)
    #: the procedural simulator's calendering model, None for volumes from files or zarr
    calendering: str | None = None

    def __post_init__(self) -> None:
        if len(self.params) != len(self.volumes) or not self.volumes:
            raise ValueError("a training set needs at least one volume and one params dict per volume")

    def condition_names(self) -> tuple[str, ...]:
        """Parameters that vary across the set (plus am_wt_frac and porosity, always)."""
        names = ["am_wt_frac", "porosity"]
        for key in ("binder_adhesion", "mean_diameter_um", "diameter_spread", "mass_loading_mg_cm2"):
            values = {p[key] for p in self.params if key in p}
            if len(values) > 1:
                if any(key not in p for p in self.params):
                    raise ValueError(f"parameter {key!r} is given for some volumes but not all")
                names.append(key)
        return tuple(names)

    def describe(self) -> dict:
        return {"source": self.source, "n_volumes": len(self.volumes),
                "shapes": sorted({list(v.shape).__repr__() for v in self.volumes}),
                "voxel_um": self.voxel_um, "fixed_params": self.fixed_params,
                **({"calendering": self.calendering} if self.calendering is not None else {})}


def _check_volume(volume: np.ndarray, name: str) -> np.ndarray:
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"{name}: a training volume must be 3D, got shape {vol.shape}")
    if vol.dtype.kind not in "iub":
        raise ValueError(f"{name}: labels must be integers 0 pore / 1 AM / 2 CBD, got dtype {vol.dtype}")
    if vol.size and (vol.min() < 0 or vol.max() > 2):
        raise ValueError(f"{name}: labels must be 0 pore / 1 AM / 2 CBD, found {int(vol.min())}..{int(vol.max())}")
    return vol.astype(np.uint8, copy=False)


def procedural_training_set(grid: dict[str, list[float]] | None = None, size_voxels: int = 64,
                            voxel_um: float = 0.4, samples_per_point: int = 1, seed: int = 0,
                            mean_diameter_um: float = 8.0,
                            diameter_spread: float = 0.25,
                            calendering: str = DEFAULT_CALENDERING) -> TrainingSet:
    """Volumes of the procedural simulator at every point of a parameter grid (a full product),
    calendered by `calendering` (recorded with the model: `trained_calendering`)."""
    grid = dict(DEFAULT_GRID if grid is None else grid)
    for key in ("am_wt_frac", "porosity"):
        if key not in grid:
            raise ValueError(f"the grid must give {key!r} values (grid keys: {sorted(grid)})")
    keys = sorted(grid)
    params, volumes = [], []
    for k, combo in enumerate(itertools.product(*(grid[key] for key in keys))):
        p = dict(zip(keys, (float(x) for x in combo), strict=True))
        p.setdefault("mean_diameter_um", mean_diameter_um)
        p.setdefault("diameter_spread", diameter_spread)
        values = params_to_dict(p)
        mp = ManufacturingParams(**values)
        for s in range(samples_per_point):
            volumes.append(generate_structure(mp, size_voxels, voxel_um, seed=seed + 1000 * k + s,
                                              calendering=calendering))
            params.append({key: values[key] for key in keys})
    fixed = {"mean_diameter_um": mean_diameter_um, "diameter_spread": diameter_spread}
    fixed = {k: v for k, v in fixed.items() if k not in grid}
    return TrainingSet(params, volumes, voxel_um, source=f"procedural grid {json.dumps(grid)}",
                       fixed_params=fixed, calendering=calendering)


#: Parameters that describe the particles, not the recipe: recorded as the model's fixed
#: parameters when a whole training set shares one value (`in_training_envelope` checks them).
PARTICLE_PARAMS = ("mean_diameter_um", "diameter_spread")


def _fixed_params(params: list[dict[str, float]]) -> dict[str, float]:
    fixed = {}
    for key in PARTICLE_PARAMS:
        values = {p.get(key) for p in params}
        if len(values) == 1 and None not in values:
            fixed[key] = float(values.pop())
    return fixed


def _resolve_voxel(stated: list[tuple[float, str]], voxel_um: float | None, what: str) -> float:
    """The one voxel size of a training set: what its files state, checked against the given
    `voxel_um`; neither, two different ones, or a disagreement is an error naming the files."""
    sizes = sorted({round(v, 9) for v, _ in stated})
    if len(sizes) > 1:
        raise ValueError(f"{what}: training volumes must share one voxel size; the files state "
                         f"{sizes} um ({'; '.join(w for _, w in stated[:4])})")
    if sizes:
        if voxel_um is not None and not math.isclose(voxel_um, sizes[0], rel_tol=1e-6):
            raise ValueError(f"--voxel-um {voxel_um:g} disagrees with the {sizes[0]:g} um that "
                             f"{what} states ({stated[0][1]}); drop --voxel-um or fix the files")
        return float(sizes[0])
    if voxel_um is None:
        raise ValueError(f"{what} does not state its voxel size: give --voxel-um "
                         "(micrometres per voxel edge)")
    return float(voxel_um)


def _samples(array, name: str) -> list[np.ndarray]:
    """The labelled volumes of a 3-D array (one) or a 4-D stack with samples first (each)."""
    shape = tuple(array.shape)
    if len(shape) == 3:
        return [_check_volume(np.asarray(array[...]), name)]
    if len(shape) == 4:
        return [_check_volume(np.asarray(array[i]), f"{name} sample {i}") for i in range(shape[0])]
    raise ValueError(f"{name}: a training volume is 3-D (z, y, x) or 4-D (sample, z, y, x), "
                     f"got shape {shape}")


def _params_from_row(row: dict[str, str], where: str) -> dict[str, float]:
    values = {k.strip(): v for k, v in row.items() if k and k.strip() != PARAMS_CSV_FILE_COLUMN
              and v not in (None, "")}
    try:
        return params_to_dict(values)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def folder_training_set(folder: str | Path, voxel_um: float | None = None) -> TrainingSet:
    """.npy/.tif volumes (3-D, or 4-D with samples first as `microloop generate` writes them)
    named in a CSV with a `file` column and one column per parameter. `folder` is the folder
    holding exactly one CSV, or the CSV itself (files are relative to its folder)."""
    from jobs.volume_io import file_voxel_um, open_volume

    folder = Path(folder)
    if folder.is_file():
        csv_path, folder = folder, folder.parent
    else:
        csvs = sorted(folder.glob("*.csv"))
        if len(csvs) != 1:
            raise ValueError(f"{folder}: expected exactly one parameters CSV (with a "
                             f"'{PARAMS_CSV_FILE_COLUMN}' column), found {len(csvs)}")
        csv_path = csvs[0]
    params, volumes, stated = [], [], []
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if PARAMS_CSV_FILE_COLUMN not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path.name}: needs a '{PARAMS_CSV_FILE_COLUMN}' column naming "
                             f"each volume file; columns are {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            where = f"{csv_path.name} line {i}"
            path = folder / row[PARAMS_CSV_FILE_COLUMN].strip()
            if not path.is_file():
                raise ValueError(f"{where}: volume file {path.name!r} not found in {folder}")
            if path.suffix.lower() not in (".npy", ".tif", ".tiff"):
                raise ValueError(f"{where}: volume files must be .npy, .tif or .tiff, got {path.name}")
            p = _params_from_row(row, where)
            carried = file_voxel_um(path)
            if carried is not None:
                stated.append((carried[0], f"{path.name}: {carried[1]}"))
            for vol in _samples(open_volume(path), path.name):
                params.append(p)
                volumes.append(vol)
    if not volumes:
        raise ValueError(f"{csv_path.name}: names no volume files")
    voxel = _resolve_voxel(stated, voxel_um, f"{csv_path.name}'s volumes")
    return TrainingSet(params, volumes, voxel, source=f"folder {folder.name} ({csv_path.name})",
                       fixed_params=_fixed_params(params))


def _array_params(array, parent_attrs: dict, name: str) -> dict[str, float]:
    """An array's parameters: its `params` attribute (as `microloop generate` writes), its
    numeric attributes, or its group's `params` (a campaign's design group)."""
    attrs = dict(array.attrs)
    raw = attrs.get("params")
    if raw is None:
        raw = {k: v for k, v in attrs.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and k != "voxel_um"
               and k != "seed"}
    if not raw or ("am_wt_frac" not in raw and "params" in parent_attrs):
        raw = parent_attrs.get("params", raw)
    spec_gen = (parent_attrs.get("spec") or {}).get("generator") or {}
    raw = dict(raw)
    for key in PARTICLE_PARAMS:   # a campaign's particles are in its spec, not the design
        if key not in raw and isinstance(spec_gen.get(key), int | float):
            raw[key] = spec_gen[key]
    try:
        return params_to_dict(raw)
    except ValueError as error:
        raise ValueError(f"zarr array {name!r}: {error} (parameters go in the array's 'params' "
                         "attribute or its group's)") from None


def zarr_training_set(store: str | Path, voxel_um: float | None = None) -> TrainingSet:
    """Every labelled array in a zarr store or group, with its parameters in attributes.

    Takes what microloop writes: `generate --out x.zarr` (a group holding `vol`, 4-D, samples
    first, params and voxel size in its attributes) and a campaign's `voxels.zarr` (one group
    per trial: `vol` plus `done` markers, params and the spec in the group's attributes; only
    samples marked done and intact are used). Any 3-D array, or 4-D stack, with a `params`
    attribute (or numeric attributes) works too. The voxel size is what the arrays state
    (`voxel_size_um`, OME-Zarr multiscales, the campaign spec), else `voxel_um`.
    """
    import zarr

    from jobs.volume_io import file_voxel_um, split_zarr_path

    parts = split_zarr_path(store)
    root_path, inner = parts if parts is not None else (Path(store), "")
    if not Path(root_path).exists():
        raise ValueError(f"cannot open zarr {store}: no such file or folder")
    try:
        node = zarr.open(str(root_path), mode="r", path=inner or None)
    except (OSError, ValueError) as error:   # zarr's NodeNotFoundError, unreadable zarr.json
        raise ValueError(f"cannot open zarr {store}: it holds no zarr group or array there, "
                         f"or its metadata is unreadable ({type(error).__name__}: {error})") from None
    params, volumes, stated = [], [], []

    def take(array, parent_attrs: dict, name: str, done=None) -> None:
        p = _array_params(array, parent_attrs, name)
        carried = file_voxel_um(f"{root_path}/{'/'.join(x for x in (inner, name) if x)}")
        if carried is not None:
            stated.append((carried[0], f"{name}: {carried[1]}"))
        if done is not None:     # a campaign design: done and intact samples only
            marks = np.asarray(done[...])
            for i in np.flatnonzero(marks == 1):
                vol = np.asarray(array[int(i)])
                if (vol > 2).any():      # a lost chunk reads as the fill value 255
                    continue
                params.append(p)
                volumes.append(_check_volume(vol, f"{name} sample {i}"))
            return
        for vol in _samples(array, name):
            params.append(p)
            volumes.append(vol)

    def walk(group, prefix: str) -> None:
        attrs = group.attrs.asdict()
        arrays = dict(group.arrays())
        if "vol" in arrays and "done" in arrays:
            take(arrays["vol"], attrs, f"{prefix}vol", done=arrays["done"])
        else:
            for name, array in sorted(arrays.items()):
                take(array, attrs, prefix + name)
        for name, sub in sorted(group.groups()):
            walk(sub, f"{prefix}{name}/")

    if isinstance(node, zarr.Group):
        walk(node, "")
    else:
        take(node, {}, "")
    if not volumes:
        raise ValueError(f"{store}: the zarr store holds no labelled volumes (3-D arrays, 4-D "
                         "stacks, or campaign designs with finished samples)")
    voxel = _resolve_voxel(stated, voxel_um, f"zarr {Path(store).name}")
    return TrainingSet(params, volumes, voxel, source=f"zarr {Path(store).name}",
                       fixed_params=_fixed_params(params))


def load_training_set(data: str, voxel_um: float | None = None,
                      **procedural_options) -> TrainingSet:
    """DATA as the CLI takes it: `procedural`, a zarr store/group (a campaign's voxels.zarr,
    `generate --out x.zarr`), or a folder (or CSV) of .npy/.tif volumes with parameters.
    `voxel_um` None means: what the files state (0.4 um for `procedural`)."""
    if data == "procedural":
        return procedural_training_set(voxel_um=0.4 if voxel_um is None else voxel_um,
                                       **procedural_options)
    from jobs.volume_io import split_zarr_path

    path = Path(data)
    if not path.exists():
        raise ValueError(f"training data {data!r}: not 'procedural' and no such file or folder")
    if split_zarr_path(path) is not None or (path / "zarr.json").exists() \
            or (path / ".zgroup").exists():
        return zarr_training_set(path, voxel_um)
    campaign_store = path / "voxels.zarr"
    if path.is_dir() and campaign_store.is_dir() and not list(path.glob("*.csv")):
        return zarr_training_set(campaign_store, voxel_um)   # a campaign folder
    if path.is_dir() or path.suffix.lower() == ".csv":
        return folder_training_set(path, voxel_um)
    raise ValueError(f"training data {data!r}: expected 'procedural', a zarr store, a campaign "
                     "folder, or a folder (or CSV) of .npy/.tif volumes with a parameters CSV")
