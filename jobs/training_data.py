"""Labelled training volumes for the generator: the procedural simulator over a parameter grid,
or the user's own volumes (a zarr group, or a folder of .npy/.tif files with a CSV of parameters).

Every volume is a 3D array of labels 0 pore / 1 AM / 2 CBD with axis 0 through the thickness,
and comes with the manufacturing parameters it was made with.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernels.generator.model import params_to_dict
from kernels.structure.procedural import ManufacturingParams, generate_structure

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
                "voxel_um": self.voxel_um, "fixed_params": self.fixed_params}


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
                            diameter_spread: float = 0.25) -> TrainingSet:
    """Volumes of the procedural simulator at every point of a parameter grid (a full product)."""
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
            volumes.append(generate_structure(mp, size_voxels, voxel_um, seed=seed + 1000 * k + s))
            params.append({key: values[key] for key in keys})
    fixed = {"mean_diameter_um": mean_diameter_um, "diameter_spread": diameter_spread}
    fixed = {k: v for k, v in fixed.items() if k not in grid}
    return TrainingSet(params, volumes, voxel_um, source=f"procedural grid {json.dumps(grid)}",
                       fixed_params=fixed)


def _read_volume_file(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path)
    if suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    raise ValueError(f"{path.name}: volume files must be .npy, .tif or .tiff")


def _params_from_row(row: dict[str, str], where: str) -> dict[str, float]:
    values = {k.strip(): v for k, v in row.items() if k and k.strip() != PARAMS_CSV_FILE_COLUMN
              and v not in (None, "")}
    try:
        return params_to_dict(values)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def folder_training_set(folder: str | Path, voxel_um: float) -> TrainingSet:
    """A folder of .npy/.tif volumes plus one CSV with a `file` column and one column per parameter."""
    folder = Path(folder)
    csvs = sorted(folder.glob("*.csv"))
    if len(csvs) != 1:
        raise ValueError(f"{folder}: expected exactly one parameters CSV (with a "
                         f"'{PARAMS_CSV_FILE_COLUMN}' column), found {len(csvs)}")
    params, volumes = [], []
    with open(csvs[0], newline="") as handle:
        reader = csv.DictReader(handle)
        if PARAMS_CSV_FILE_COLUMN not in (reader.fieldnames or []):
            raise ValueError(f"{csvs[0].name}: needs a '{PARAMS_CSV_FILE_COLUMN}' column naming "
                             f"each volume file; columns are {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            where = f"{csvs[0].name} line {i}"
            path = folder / row[PARAMS_CSV_FILE_COLUMN].strip()
            if not path.is_file():
                raise ValueError(f"{where}: volume file {path.name!r} not found in {folder}")
            params.append(_params_from_row(row, where))
            volumes.append(_check_volume(_read_volume_file(path), path.name))
    return TrainingSet(params, volumes, voxel_um, source=f"folder {folder.name}")


def zarr_training_set(store: str | Path, voxel_um: float) -> TrainingSet:
    """Every 3D array of a zarr group, with its parameters in the array's attributes (either
    under a `params` key or as top-level numeric attributes)."""
    import zarr

    group = zarr.open_group(str(store), mode="r")
    params, volumes = [], []
    for name, array in sorted(group.arrays(), key=lambda item: item[0]):
        attrs = dict(array.attrs)
        raw = attrs.get("params", {k: v for k, v in attrs.items() if isinstance(v, int | float)})
        try:
            params.append(params_to_dict(raw))
        except ValueError as error:
            raise ValueError(f"zarr array {name!r}: {error}") from None
        volumes.append(_check_volume(array[...], f"zarr array {name!r}"))
    if not volumes:
        raise ValueError(f"{store}: the zarr group holds no arrays")
    return TrainingSet(params, volumes, voxel_um, source=f"zarr {Path(store).name}")


def load_training_set(data: str, voxel_um: float = 0.4, **procedural_options) -> TrainingSet:
    """DATA as the CLI takes it: `procedural`, a zarr group, or a folder with a params CSV."""
    if data == "procedural":
        return procedural_training_set(voxel_um=voxel_um, **procedural_options)
    path = Path(data)
    if not path.exists():
        raise ValueError(f"training data {data!r}: not 'procedural' and no such file or folder")
    if (path / "zarr.json").exists() or (path / ".zgroup").exists():
        return zarr_training_set(path, voxel_um)
    if path.is_dir():
        return folder_training_set(path, voxel_um)
    raise ValueError(f"training data {data!r}: expected 'procedural', a zarr group, or a folder of "
                     ".npy/.tif volumes with a parameters CSV")
