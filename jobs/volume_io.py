"""Read and write labelled volumes in the formats users bring: .npy, .tif/.tiff and zarr.

A zarr location is a path whose first component ending in `.zarr` is the store, optionally
followed by the path of an array inside it: `voxels.zarr/trial_3/vol`. A store or group holding
exactly one array opens that array. Arrays are returned lazily for zarr (so a 4D stack of samples
is read one sample at a time) and as numpy arrays otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

NPY_SUFFIXES = (".npy",)
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"
ACCEPTED = ".npy, .tif, .tiff or a .zarr store (optionally store.zarr/path/to/array)"
#: Axis names of a labelled volume (3-D) and of a stack of samples (4-D): zarr v3
#: `dimension_names`, which xarray reads as the dimensions (docs/formats.md).
DIMENSIONS_3D = ("z", "y", "x")
DIMENSIONS_4D = ("sample", "z", "y", "x")
#: The array attribute holding the voxel edge per spatial axis (z, y, x) in micrometres.
VOXEL_ATTR = "voxel_size_um"
#: OME-Zarr (NGFF) version of the `ome.multiscales` group metadata (zarr v3 stores).
NGFF_VERSION = "0.5"
_TIFF_UM_PER_UNIT = {2: 25400.0, 3: 10000.0}      # TIFF ResolutionUnit INCH, CENTIMETER
_MICRON_NAMES = ("micron", "um", "\u00b5m", "\u03bcm", "micrometer", "micrometre")


class VolumeFileError(ValueError):
    """A volume file that cannot be read as a labelled array; the message says why."""


def dimension_names(ndim: int) -> tuple[str, ...]:
    """The axis names of a 3-D volume or a 4-D stack of samples (else a clear error)."""
    if ndim == 3:
        return DIMENSIONS_3D
    if ndim == 4:
        return DIMENSIONS_4D
    raise VolumeFileError(f"a labelled volume is 3-D (z, y, x) or 4-D (sample, z, y, x); got {ndim}-D")


def voxel_attributes(voxel_um: float) -> dict[str, Any]:
    """Array attributes stating the (isotropic) voxel size: read back by `file_voxel_um`."""
    _check_voxel(voxel_um, "voxel_um")
    return {VOXEL_ATTR: [float(voxel_um)] * 3, "voxel_unit": "micrometer"}


def ngff_multiscales(array_path: str, ndim: int, voxel_um: float) -> dict[str, Any]:
    """OME-Zarr 0.5 `ome` group attribute for one full-resolution labelled array, so napari-style
    readers place it in micrometres: axes with units and one scale transform."""
    _check_voxel(voxel_um, "voxel_um")
    axes: list[dict[str, str]] = [{"name": name, "type": "space", "unit": "micrometer"}
                                  for name in DIMENSIONS_3D]
    scale = [float(voxel_um)] * 3
    if ndim == 4:
        axes.insert(0, {"name": "sample", "type": "sample"})   # a custom (non-space) axis
        scale.insert(0, 1.0)
    elif ndim != 3:
        dimension_names(ndim)
    return {"version": NGFF_VERSION, "multiscales": [{
        "name": array_path, "axes": axes,
        "datasets": [{"path": array_path,
                      "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]}


def _check_voxel(voxel_um: float, field: str) -> None:
    if not (isinstance(voxel_um, int | float) and math.isfinite(voxel_um) and voxel_um > 0):
        raise VolumeFileError(f"{field} must be a positive number of micrometres, got {voxel_um!r}")


def _isotropic(sizes: list[float], where: str) -> float:
    values = [float(v) for v in sizes]
    for value in values:
        _check_voxel(value, where)
    if not all(math.isclose(v, values[0], rel_tol=1e-6) for v in values):
        raise VolumeFileError(f"{where} gives anisotropic voxels {values} um (z, y, x); the "
                              "metrics need cubic voxels: resample the volume first")
    return values[0]


def file_voxel_um(path: str | Path) -> tuple[float, str] | None:
    """(voxel edge in um, where it was found) that a zarr array or a TIFF carries, or None when
    the file states none (.npy never does). Zarr: the array's `voxel_size_um` (or `voxel_um`,
    which older `microloop generate` wrote), else an enclosing group's OME multiscales scale or
    campaign spec `fidelity.voxel_um`. TIFF: ImageJ spacing/unit or the resolution tags."""
    zarr_parts = split_zarr_path(path)
    if zarr_parts is not None:
        return _zarr_voxel_um(open_volume(path))
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in NPY_SUFFIXES + TIFF_SUFFIXES:
        raise VolumeFileError(f"unsupported volume file {path}: expected {ACCEPTED}")
    if not path.exists():
        raise VolumeFileError(f"volume file {path} does not exist")
    return _tiff_voxel_um(path) if suffix in TIFF_SUFFIXES else None


def _zarr_voxel_um(array: Any) -> tuple[float, str] | None:
    import zarr

    attrs = array.attrs.asdict()
    name = array.path or "/"
    if VOXEL_ATTR in attrs:
        return _isotropic(list(attrs[VOXEL_ATTR]), f"attribute {VOXEL_ATTR} of {name}"), \
            f"zarr attribute {VOXEL_ATTR}"
    if "voxel_um" in attrs:
        return _isotropic([attrs["voxel_um"]], f"attribute voxel_um of {name}"), \
            "zarr attribute voxel_um"
    parts = array.path.split("/") if array.path else []
    root = zarr.open_group(store=array.store, mode="r")
    for depth in range(len(parts) - 1, -1, -1):
        group_path = "/".join(parts[:depth])
        group = root[group_path] if group_path else root
        gattrs = group.attrs.asdict()
        relative = "/".join(parts[depth:])
        for multiscale in (gattrs.get("ome") or {}).get("multiscales", []):
            for dataset in multiscale.get("datasets", []):
                if dataset.get("path") != relative:
                    continue
                axes = multiscale.get("axes", [])
                for transform in dataset.get("coordinateTransformations", []):
                    if transform.get("type") == "scale":
                        space = [s for s, a in zip(transform["scale"], axes, strict=True)
                                 if a.get("type") == "space"]
                        return _isotropic(space, f"OME multiscales of {group_path or '/'}"), \
                            "OME-Zarr multiscales scale"
        voxel = ((gattrs.get("spec") or {}).get("fidelity") or {}).get("voxel_um")
        if voxel is not None:
            return _isotropic([voxel], f"spec.fidelity.voxel_um of {group_path or '/'}"), \
                "campaign spec fidelity.voxel_um"
    return None


def _tiff_voxel_um(path: Path) -> tuple[float, str] | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            imagej = tif.imagej_metadata or {}
            tags = {tag.name: tag.value for tag in page.tags.values()}
    except Exception as error:  # corrupt files raise many types
        raise VolumeFileError(f"cannot read {path}: {error}") from None
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    per_unit = [num / den for num, den in (tags["XResolution"], tags["YResolution"])]
    unit = str(imagej.get("unit", "")).strip().lower()
    if unit in _MICRON_NAMES:
        um_per_unit, where = 1.0, "TIFF ImageJ unit and resolution"
    elif unit == "" and int(tags.get("ResolutionUnit", 1)) in _TIFF_UM_PER_UNIT:
        um_per_unit = _TIFF_UM_PER_UNIT[int(tags["ResolutionUnit"])]
        where = "TIFF resolution tags"
    else:
        return None          # no physical unit: the file does not say how big a pixel is
    sizes = [um_per_unit / value for value in per_unit]
    if "spacing" in imagej:
        sizes.append(float(imagej["spacing"]) * um_per_unit)
    return _isotropic(sizes, f"{path} resolution"), where


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


def write_volume(path: str | Path, volume: np.ndarray, chunk_voxels: int = 64,
                 voxel_um: float | None = None) -> None:
    """Write `volume` as .npy, .tif/.tiff (one page per slice of axis 0) or a zarr array.

    Zarr arrays get dimension names (sample,) z, y, x; with `voxel_um` also `voxel_size_um`,
    and a TIFF ImageJ spacing and resolution in micrometres, so readers know the scale."""
    volume = np.asarray(volume)
    if voxel_um is not None:
        _check_voxel(voxel_um, "voxel_um")
    zarr_parts = split_zarr_path(path)
    if zarr_parts is not None:
        import zarr

        store, inner = zarr_parts
        chunks = tuple(min(n, chunk_voxels) for n in volume.shape)
        names = dimension_names(volume.ndim) if volume.ndim in (3, 4) else None
        attributes = voxel_attributes(voxel_um) if voxel_um is not None else None
        array = zarr.create_array(str(store), name=inner or None, shape=volume.shape,
                                  dtype=volume.dtype, chunks=chunks, overwrite=True,
                                  dimension_names=names, attributes=attributes)
        array[...] = volume
        if inner and voxel_um is not None and names is not None:
            # OME-Zarr metadata lives on the enclosing group (a root array has none to hold it)
            parent, _, leaf = inner.rpartition("/")
            group = zarr.open_group(str(store), mode="r+", path=parent or None)
            group.attrs["ome"] = ngff_multiscales(leaf, volume.ndim, voxel_um)
        return
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in NPY_SUFFIXES:
        np.save(path, volume)
    elif suffix in TIFF_SUFFIXES:
        import tifffile

        if voxel_um is None:
            tifffile.imwrite(path, volume)
        else:       # ImageJ hyperstack: x/y from the resolution tags, z from `spacing`
            axes = {3: "ZYX", 4: "TZYX"}.get(volume.ndim)
            if axes is None:
                raise VolumeFileError(f"a TIFF with a voxel size holds a 3-D or 4-D volume, "
                                      f"got shape {volume.shape}")
            tifffile.imwrite(path, volume, imagej=True,
                             resolution=(1.0 / voxel_um, 1.0 / voxel_um),
                             metadata={"axes": axes, "spacing": float(voxel_um),
                                       "unit": "um"})
    else:
        raise VolumeFileError(f"unsupported volume file {path}: expected {ACCEPTED}")
