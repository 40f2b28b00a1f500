"""The campaign's voxel store: one zarr 3 group per design in ``<campaign>/voxels.zarr``.

Layout of group ``trial_<id>``:

- ``vol``  uint8 ``(samples, L, L, L)``, one sample (or one sub-cube of it) per chunk, zstd.
  Fill value 255 is never a phase label, so a chunk that was never written, or whose file was
  lost, reads as 255 and is detected.
- ``done`` uint8 ``(samples,)``, one chunk per sample, set to 1 *after* the sample's voxels are
  written: a killed writer leaves the sample "not done", never half written.
- attributes ``params``, ``spec``, ``provenance``: written once, by whoever creates the group, in
  the same write that creates it (concurrent attribute writes lose updates in zarr).

Only one writer ever touches a given chunk (one sample = whole chunks), which is the only kind
of concurrent write zarr makes safe.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.errors

from jobs.volume_io import DIMENSIONS_4D, ngff_multiscales, voxel_attributes

FILL_VALUE = 255
VALID_LABELS = (0, 1, 2)
STORE_NAME = "voxels.zarr"


class OutsideFolderError(ValueError):
    """A path inside a campaign folder that (through a symlink) leads out of it."""


def resolve_inside(root: str | Path, path: str | Path, what: str) -> Path:
    """`path` (under `root`) with its symlinks followed, refusing one that leads outside `root`:
    a link planted in a campaign folder must not make microloop read or write elsewhere."""
    base = Path(root).resolve()
    target = Path(path) if Path(path).is_absolute() else base / path
    resolved = target.resolve()
    if resolved != base and base not in resolved.parents:
        raise OutsideFolderError(f"{what} {target} leads outside the campaign folder {base} "
                                 f"(to {resolved}); symlinks out of a campaign folder are "
                                 "refused (docs/trust.md): replace the link by the real file")
    return resolved


def store_path(campaign_dir: str | Path) -> Path:
    """Where a campaign keeps its voxels (a `voxels.zarr` linked out of the folder is refused)."""
    path = Path(campaign_dir) / STORE_NAME
    if path.is_symlink() or path.exists():
        resolve_inside(campaign_dir, path, "the voxel store")
    return path


def group_name(trial_id: int) -> str:
    return f"trial_{int(trial_id)}"


@dataclass
class SampleCheck:
    """The state of one stored sample. `status` is one of
    ``ok``, ``not_done``, ``missing_chunk``, ``corrupted``, ``bad_labels``."""

    index: int
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class DesignStore:
    """The stored samples of one design (one zarr group). Create with `create`, else `open`."""

    def __init__(self, group: zarr.Group, path: Path) -> None:
        self.group = group
        self.path = path          # the group's folder on disk
        self.vol = group["vol"]
        self.done = group["done"]

    # ---- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, campaign_dir: str | Path, trial_id: int, n_samples: int, size_voxels: int,
               attributes: dict[str, Any], chunk_voxels: int | None = None,
               zstd_level: int = 3, voxel_um: float | None = None) -> DesignStore:
        """Create the design's group (or open it when it exists with the same shape and params).

        `attributes` (JSON-safe: params, spec, provenance) are written with the group, once.
        `chunk_voxels` < `size_voxels` splits a sample into sub-cubes (must divide it).
        `voxel_um` is recorded as `vol`'s `voxel_size_um` and as OME-Zarr multiscales on the
        group, so xarray and napari-style readers see micrometres (docs/formats.md).
        """
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if size_voxels < 1:
            raise ValueError(f"size_voxels must be >= 1, got {size_voxels}")
        chunk = size_voxels if chunk_voxels is None else int(chunk_voxels)
        if chunk < 1 or size_voxels % chunk:
            raise ValueError(
                f"chunk_voxels must divide size_voxels={size_voxels}, got {chunk_voxels}")
        root = zarr.open_group(store_path(campaign_dir), mode="a")
        name = group_name(trial_id)
        vol_attributes: dict[str, Any] = {}
        if voxel_um is not None:
            vol_attributes = voxel_attributes(voxel_um)
            attributes = {**attributes, "ome": ngff_multiscales("vol", 4, voxel_um)}
        try:
            group = root.create_group(name, attributes=attributes)
        except zarr.errors.ContainsGroupError:
            group = root[name]
            stored = group.attrs.get("params")
            if "params" in attributes and stored != attributes["params"]:
                raise ValueError(
                    f"trial {trial_id} is already stored with params {stored}, "
                    f"not {attributes['params']}: use a new trial id") from None
        shape = (n_samples, size_voxels, size_voxels, size_voxels)
        _require_array(group, "vol", shape, (1, chunk, chunk, chunk), "uint8", FILL_VALUE,
                       zarr.codecs.ZstdCodec(level=zstd_level), DIMENSIONS_4D, vol_attributes)
        _require_array(group, "done", (n_samples,), (1,), "uint8", 0, None, ("sample",), {})
        return cls(root[name], Path(store_path(campaign_dir)) / name)

    @classmethod
    def open(cls, campaign_dir: str | Path, trial_id: int) -> DesignStore:
        """Open an existing design group; KeyError when the design was never created."""
        root = zarr.open_group(store_path(campaign_dir), mode="r+")
        name = group_name(trial_id)
        if name not in root:
            raise KeyError(f"no stored design {name} in {store_path(campaign_dir)}")
        return cls(root[name], Path(store_path(campaign_dir)) / name)

    # ---- reading and writing --------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.vol.shape[0])

    @property
    def size_voxels(self) -> int:
        return int(self.vol.shape[1])

    @property
    def attributes(self) -> dict[str, Any]:
        return self.group.attrs.asdict()

    def write_sample(self, index: int, volume: np.ndarray) -> None:
        """Write one sample's whole chunks, then mark it done (the marker goes last)."""
        self._check_index(index)
        expected = self.vol.shape[1:]
        if volume.shape != expected:
            raise ValueError(f"volume shape must be {expected}, got {volume.shape}")
        if volume.dtype != np.uint8:
            raise ValueError(f"volume dtype must be uint8, got {volume.dtype}")
        self.done[index] = 0          # a rewrite is not done until it is finished
        self.vol[index] = volume
        self.done[index] = 1

    def read_sample(self, index: int) -> np.ndarray:
        """One sample's voxels; ValueError when it is not complete and intact. The chunks are
        decoded once: the check runs on the array that is returned."""
        check, data = self._check_sample(index)
        if not check.ok:
            raise ValueError(f"sample {index} of {self.path.name} is {check.status}: "
                             f"{check.detail}")
        assert data is not None
        return data

    def is_done(self, index: int) -> bool:
        self._check_index(index)
        try:
            return bool(self.done[index] == 1)
        except Exception:          # a corrupted marker chunk counts as not done
            return False

    def done_samples(self) -> list[int]:
        """Indices whose done marker is set (not a proof their chunks are intact: see verify)."""
        return [i for i in range(self.n_samples) if self.is_done(i)]

    # ---- integrity ------------------------------------------------------------------------
    def verify_sample(self, index: int) -> SampleCheck:
        """Decode the sample's chunks and check them: a lost chunk reads as the fill value, a
        damaged one fails to decode, a wrong one holds labels outside {0, 1, 2}."""
        return self._check_sample(index)[0]

    def _check_sample(self, index: int) -> tuple[SampleCheck, np.ndarray | None]:
        """`verify_sample`'s check and the decoded voxels (None when they did not decode)."""
        self._check_index(index)
        if not self.is_done(index):
            return SampleCheck(index, "not_done", "done marker not set"), None
        try:
            data = np.asarray(self.vol[index])
        except Exception as error:   # zstd/codec errors differ by version: report any
            return SampleCheck(index, "corrupted", f"{type(error).__name__}: {error}"), None
        # one pass: the fill value 255 is the largest uint8, so max() finds both problems
        top = int(data.max(initial=0))
        if top == FILL_VALUE:
            n_fill = int(np.count_nonzero(data == FILL_VALUE))
            return SampleCheck(index, "missing_chunk",
                               f"{n_fill} voxels read as the fill value {FILL_VALUE}"), data
        if top > max(VALID_LABELS):
            return SampleCheck(index, "bad_labels",
                               f"labels outside {list(VALID_LABELS)}: max {top}"), data
        return SampleCheck(index, "ok"), data

    def verify(self) -> list[SampleCheck]:
        """Check every sample (not-done ones are reported as such without decoding)."""
        return [self.verify_sample(i) for i in range(self.n_samples)]

    def invalidate(self, index: int) -> None:
        """Clear a sample's done marker so that the next generate rewrites it."""
        self._check_index(index)
        self.done[index] = 0

    def repair(self) -> list[SampleCheck]:
        """Invalidate every done sample that fails verification; returns those problems."""
        bad = [c for c in self.verify() if c.status not in ("ok", "not_done")]
        for check in bad:
            self.invalidate(check.index)
        return bad

    def remove_partials(self) -> list[Path]:
        """Delete orphan ``*.partial`` files a killed writer left in this design's folder.
        Call only when no writer of this design is running (at the start of its job)."""
        removed = []
        for path in sorted(self.path.rglob("*.partial")):
            path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def chunk_paths(self, index: int) -> list[Path]:
        """The files holding sample `index` (default zarr 3 chunk key encoding ``c/i/j/k/l``)."""
        self._check_index(index)
        per_axis = [math.ceil(s / c) for s, c in zip(self.vol.shape[1:], self.vol.chunks[1:],
                                                      strict=True)]
        base = self.path / "vol" / "c" / str(index)
        return [base / str(i) / str(j) / str(k)
                for i in range(per_axis[0]) for j in range(per_axis[1]) for k in range(per_axis[2])]

    def _check_index(self, index: int) -> None:
        if not 0 <= int(index) < self.n_samples:
            raise IndexError(f"sample index must be in [0, {self.n_samples}), got {index}")


def _require_array(group: zarr.Group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
                   dtype: str, fill_value: int, compressor: Any,
                   dimensions: tuple[str, ...], attributes: dict[str, Any]) -> None:
    """Create the array, or check that the existing one has the same layout."""
    try:
        kwargs: dict[str, Any] = {"compressors": compressor} if compressor is not None else {}
        group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill_value,
                           dimension_names=dimensions, attributes=attributes, **kwargs)
    except zarr.errors.ContainsArrayError:
        existing = group[name]
        if tuple(existing.shape) != shape or tuple(existing.chunks) != chunks:
            raise ValueError(
                f"{group.path}/{name} exists with shape {existing.shape} chunks {existing.chunks}, "
                f"not shape {shape} chunks {chunks}: the fidelity changed for a stored trial; "
                f"use a new campaign folder or trial id") from None


# ---- the trial folder: small JSON files next to the voxels ----------------------------------
def trial_dir(campaign_dir: str | Path, trial_id: int) -> Path:
    """``<campaign>/trials/<id>/``: spec, params, per-sample metrics, cell results, result."""
    return Path(campaign_dir) / "trials" / str(int(trial_id))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text so that readers see the old file or the new one, never a torn one (temporary
    file in the same folder, fsync, then os.replace; a failed write leaves no temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON atomically (`write_text_atomic`)."""
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False)   # fails before any write
    write_text_atomic(path, text)


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars made Python numbers and non-finite floats made None (JSON has
    no inf/NaN; a solver's inf means "does not percolate", which the metrics spell None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_json(path: str | Path) -> Any | None:
    """The JSON in `path`, or None when the file does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
