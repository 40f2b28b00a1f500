"""Read and write labelled volumes in the formats users bring: .npy, .tif/.tiff and zarr.

A zarr location is a path whose first component ending in `.zarr` is the store, optionally
followed by the path of an array inside it: `voxels.zarr/trial_3/vol`. A store or group holding
exactly one array opens that array. Arrays are returned lazily for zarr (so a 4D stack of samples
is read one sample at a time) and as numpy arrays otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

NPY_SUFFIXES = (".npy",)
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"
ACCEPTED = ".npy, .tif, .tiff or a .zarr store (optionally store.zarr/path/to/array)"


class VolumeFileError(ValueError):
    """A volume file that cannot be read as a labelled array; the message says why."""


def split_zarr_path(path: str | Path) -> tuple[Path, str] | None:
    """(store, array path inside it) when `path` goes through a `.zarr` component, else None."""
    parts = Path(path).parts
    for k, part in enumerate(parts):
        if part.endswith(ZARR_SUFFIX):
            return Path(*parts[: k + 1]), "/".join(parts[k + 1 :])
    return None


def _open_zarr(store: Path, inner: str) -> Any:
    import zarr

    if not store.exists():
        raise VolumeFileError(f"zarr store {store} does not exist")
    try:
        node = zarr.open(str(store), mode="r", path=inner or None)
    except Exception as error:  # zarr raises several types for a missing or broken node
        where = f"{store}/{inner}" if inner else str(store)
        raise VolumeFileError(f"cannot open zarr array {where}: {error}") from None
    if isinstance(node, zarr.Group):
        arrays = [name for name, _ in node.arrays()]
        groups = [name for name, _ in node.groups()]
        if len(arrays) == 1 and not groups:
            return node[arrays[0]]
        listing = ", ".join(sorted(arrays + [g + "/" for g in groups])[:20]) or "nothing"
        where = f"{store}/{inner}" if inner else str(store)
        raise VolumeFileError(
            f"{where} is a zarr group holding {listing}: name the array, "
            f"e.g. {store}/<group>/<array>"
        )
    return node


def open_volume(path: str | Path) -> Any:
    """The array at `path`: numpy for .npy/.tif, a lazy zarr array for zarr."""
    zarr_parts = split_zarr_path(path)
    if zarr_parts is not None:
        return _open_zarr(*zarr_parts)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in NPY_SUFFIXES + TIFF_SUFFIXES:
        raise VolumeFileError(f"unsupported volume file {path}: expected {ACCEPTED}")
    if not path.exists():
        raise VolumeFileError(f"volume file {path} does not exist")
    if suffix in NPY_SUFFIXES and not _has_npy_magic(path):
        raise VolumeFileError(f"{path} is not an NPY file (it does not start with the NPY magic "
                              "bytes \\x93NUMPY); give an array written by numpy.save, a .tif or "
                              "a .zarr store")
    try:
        if suffix in NPY_SUFFIXES:
            return np.load(path, allow_pickle=False)
        import tifffile

        return tifffile.imread(path)
    except Exception as error:  # corrupt files raise many types
        raise VolumeFileError(f"cannot read {path}: {error}") from None


def _has_npy_magic(path: Path) -> bool:
    """Whether the file starts like an NPY file (numpy would otherwise try it as a pickle and
    answer with advice to allow pickles, which a volume never needs)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(6) == b"\x93NUMPY"
    except OSError as error:
        raise VolumeFileError(f"cannot read {path}: {error}") from None


def read_volume(path: str | Path) -> np.ndarray:
    """The whole array at `path` as numpy."""
    return np.asarray(open_volume(path)[...])


def write_volume(path: str | Path, volume: np.ndarray, chunk_voxels: int = 64) -> None:
    """Write `volume` as .npy, .tif/.tiff (one page per slice of axis 0) or a zarr array."""
    volume = np.asarray(volume)
    zarr_parts = split_zarr_path(path)
    if zarr_parts is not None:
        import zarr

        store, inner = zarr_parts
        chunks = tuple(min(n, chunk_voxels) for n in volume.shape)
        array = zarr.create_array(str(store), name=inner or None, shape=volume.shape,
                                  dtype=volume.dtype, chunks=chunks, overwrite=True)
        array[...] = volume
        return
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in NPY_SUFFIXES:
        np.save(path, volume)
    elif suffix in TIFF_SUFFIXES:
        import tifffile

        tifffile.imwrite(path, volume)
    else:
        raise VolumeFileError(f"unsupported volume file {path}: expected {ACCEPTED}")
