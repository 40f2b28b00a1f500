"""The particle size of the active material (AM) phase: the radius the DFN's spheres should have.

Why not 3 phi_AM / a: the AM phase's surface a (AM-pore + AM-CBD) misses the faces where
particles touch, so 3 phi_AM / a is the size of the *agglomerate*, 30-80 % above the particles'
own 3V/S radius in calendered procedural electrodes (docs/cell-model.md). Solid diffusion runs
inside one particle, so the DFN needs the particle's 3V/S with its whole surface.

Measurement: split the AM phase into particles by a watershed of its distance transform (one
seed per local maximum), then R = 3 V / (S_free + S_contact), where S_free is the smoothed
marching-cubes AM surface (kernels.metrics.surface_area) and S_contact counts each
particle-particle face twice (both particles own it), voxel faces divided by 1.5 (the mean
face-count excess of a randomly oriented plane). Checked against the simulator's own particles
in tests/test_cell_physics.py (within 10 % at 1 and 0.5 um voxels), and against spheres of known
radius, separate and fused, in tests/test_particle_size.py.

Cost at 128³ (CPU-s, tests/benchmarks/bench_particle_size.py, 2026-12-03, load 1.8): the
distance transform 0.07 (numba, exact; scipy's took 0.45), the seeds 0.03 (skimage's
peak_local_max: 0.09 at 0.4 um, 0.26 at 1 um, where the spacing is 2 and the candidates many),
the watershed 0.14 (skimage's: 0.34-0.36; the replica on two arrays, before its state and
buckets were packed into one: 0.20); the whole stage 0.26 at 0.4 um and 0.27 at 1 um (0.57 and
0.78 with skimage's seeds and watershed).

The seeds are a numba replica of skimage's peak_local_max (kernels.metrics._seed_kernels): the
same peaks in the same order, which numbers the markers; where it cannot promise that
(non-finite values, or every AM voxel a maximum: skimage's binary-opening rule) it says so and
skimage's is called. The watershed is a numba replica of skimage's priority flood
(kernels.metrics._watershed_kernels): the same labels, voxel for voxel. A FIFO per exact
distance value would be cheaper still but is skimage's order only when no two seeds share a
distance (equal seeds pop in the heap's layout order); on electrodes they always tie, so the
replica keeps skimage's binary heap, on flat keys.

Opt-in cheaper split (``watershed_stride=2``): the seeds and the flood run on 2×2×2 blocks
(block maximum of the exact fine distance, a block is AM if any of its voxels is), the block
labels are copied back to the fine AM voxels and the contact faces counted at the fine
resolution (a staircase plane has the same face-count excess at any step size). 0.52-0.55 ->
0.20-0.22 CPU-s at 128³ (the bench above). Its radius shift grows with the voxel size
(tests/benchmarks/measure_stride_radius.py, 2026-12-03, 128³, recipes 0.9/0.35/0.5,
0.98/0.2/1.0, 0.8/0.55/0.0, two cubes each): at 0.4 um
-0.8 % to +2.7 % (+2.6/+2.7 % at 0.98/0.2/1.0; the earlier claim, within 1.2 %, held for the
other two); at 1 um -7 % to -14 % (-13.2/-13.9 % at 0.9/0.35/0.5: 3.57 against 4.14 um), where a
block is 2 um, half a particle's radius. Spheres within 5 % as the default
(tests/test_particle_size.py). Not the default: it would move the documented case-study numbers
(docs/solvers.md), and at 1 um it is no longer the same measurement.
"""

from __future__ import annotations

import math

import numpy as np

AM_LABEL = 1
# The seeds of the watershed are maxima of the distance transform at least this share of a large
# particle's inscribed radius apart (smaller: over-split particles; larger: merged ones).
SEED_SPACING_FRACTION = 0.3
VOXEL_FACE_EXCESS = 1.5  # faces of a randomly oriented voxelised plane / its area
#: From this many voxels on, the distance transform is the numba kernel
#: (kernels.metrics._particle_kernels: the same exact distances, 0.46 -> 0.10 CPU-s at 128³);
#: below it scipy's, cheaper than loading numba in a process that would not need it otherwise.
FUSED_MIN_VOXELS = 64**3
#: False: scipy's transform, skimage's seeds and watershed, numpy faces (the tests compare both)
USE_FUSED = True
#: From FUSED_MIN_VOXELS on (and with USE_FUSED), the watershed and the contact faces are the
#: numba kernels (kernels.metrics._watershed_kernels: skimage's labels; the same face count);
#: False keeps skimage's watershed and the numpy faces (the benchmark compares both).
USE_FUSED_FLOOD = True
#: From FUSED_MIN_VOXELS on (and with USE_FUSED), the seeds are the numba kernel
#: (kernels.metrics._seed_kernels: skimage's peak_local_max peaks in its order); False keeps
#: skimage's (the benchmark and the tests compare both).
USE_FUSED_SEEDS = True
#: block size of the watershed (1: on the voxels; 2: on 2×2×2 blocks, the opt-in cheaper split)
WATERSHED_STRIDES = (1, 2)


def distance_to_background(foreground: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (voxels, float64) of each True voxel to the nearest False one,
    0 on False voxels: scipy's `distance_transform_edt`, by a numba kernel on large volumes."""
    if USE_FUSED and foreground.size >= FUSED_MIN_VOXELS and not foreground.all():
        from kernels.metrics._particle_kernels import distance_to_background as fused

        return fused(np.ascontiguousarray(foreground, dtype=np.bool_))
    from scipy import ndimage

    return ndimage.distance_transform_edt(foreground)


def _contact_faces(labels: np.ndarray) -> int:
    """Voxel faces between two different particles (labels > 0); one numba pass on large
    volumes (kernels.metrics._particle_kernels.contact_faces, the same count)."""
    if USE_FUSED and USE_FUSED_FLOOD and labels.size >= FUSED_MIN_VOXELS:
        from kernels.metrics._particle_kernels import contact_faces

        return int(contact_faces(np.ascontiguousarray(labels)))
    return _contact_faces_numpy(labels)


def _contact_faces_numpy(labels: np.ndarray) -> int:
    """_contact_faces in three boolean numpy passes (small volumes; the reference)."""
    count = 0
    for axis in range(3):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis] = slice(0, -1)
        high[axis] = slice(1, None)
        a, b = labels[tuple(low)], labels[tuple(high)]
        count += int(np.count_nonzero((a > 0) & (b > 0) & (a != b)))
    return count


def _seeds(am: np.ndarray, distance: np.ndarray, spacing: int) -> np.ndarray:
    """The watershed's seeds (n, 3): skimage's peak_local_max of the distance inside the AM,
    ``spacing`` apart, in its order (it numbers the markers); the numba replica on large
    volumes, skimage's where the replica says it is not exact (non-finite values, or every AM
    voxel a maximum)."""
    from skimage.feature import peak_local_max

    if USE_FUSED and USE_FUSED_SEEDS and am.size >= FUSED_MIN_VOXELS:
        from kernels.metrics._seed_kernels import EXACT, seed_peaks

        status, peaks = seed_peaks(distance, am, spacing)
        if status == EXACT:
            return peaks
    return peak_local_max(distance, min_distance=spacing, labels=am.astype(np.int32),
                          exclude_border=False)


def _split_particles(am: np.ndarray, distance: np.ndarray, spacing: int,
                     stride: int) -> np.ndarray:
    """Particle labels (0 off the AM) of the watershed of -distance, seeds ``spacing`` apart,
    on blocks of ``stride`` voxels per axis (labels copied back to the voxels)."""
    from skimage.segmentation import watershed

    if stride > 1:
        shape = am.shape
        padded = np.pad(distance, [(0, (-n) % stride) for n in shape])
        blocks = [n // stride for n in padded.shape]
        coarse = padded.reshape(blocks[0], stride, blocks[1], stride, blocks[2], stride).max(
            axis=(1, 3, 5))
        labels = _split_particles(coarse > 0, coarse, max(1, int(round(spacing / stride))), 1)
        for axis in range(3):
            labels = np.repeat(labels, stride, axis=axis)
        return labels[: shape[0], : shape[1], : shape[2]] * am
    peaks = _seeds(am, distance, spacing)
    markers = np.zeros(am.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    if USE_FUSED and USE_FUSED_FLOOD and am.size >= FUSED_MIN_VOXELS:
        from kernels.metrics._watershed_kernels import FLOODED, flood_labels

        status, _, labels = flood_labels(distance, am, markers)
        if status == FLOODED:  # else a distance that is not sqrt of an integer: skimage's
            return labels
    return watershed(-distance, markers, mask=am)


def am_particle_radius_um(volume: np.ndarray, voxel_um: float,
                          am_surface_per_um: float | None = None, *,
                          watershed_stride: int = 1) -> float:
    """3V/S radius (um) of the AM particles of a labelled volume (0 pore, 1 AM, 2 CBD).

    am_surface_per_um: the AM free surface per volume (a_AM-pore + a_AM-CBD, 1/um) when the
    caller has measured it already (kernels.metrics does): saves the marching-cubes pass,
    about half of the 3.5 CPU-s at 128^3.
    watershed_stride: 1 (default) splits the particles on the voxels, 2 on 2×2×2 blocks (the
    opt-in cheaper split, see the module docstring).
    """
    from kernels.metrics.surface_area import interface_areas_voxels

    if not (isinstance(volume, np.ndarray) and volume.ndim == 3):
        raise ValueError("volume must be a 3D array of labels (0 pore, 1 AM, 2 CBD)")
    if not (isinstance(voxel_um, int | float) and math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
    if (isinstance(watershed_stride, bool) or not isinstance(watershed_stride, int)
            or watershed_stride not in WATERSHED_STRIDES):
        raise ValueError(f"watershed_stride: accepted values are {WATERSHED_STRIDES}, "
                         f"got {watershed_stride!r}")
    am = volume == AM_LABEL
    if not am.any():
        raise ValueError("volume holds no AM voxels (label 1): no particle size to measure")
    distance = distance_to_background(am)
    spacing = max(2, int(round(SEED_SPACING_FRACTION * np.percentile(distance[am], 99))))
    labels = _split_particles(am, distance, spacing, watershed_stride)
    if am_surface_per_um is None:
        others = tuple(int(v) for v in np.unique(volume) if v != AM_LABEL) or (0,)
        free_faces = sum(interface_areas_voxels(volume, solid_label=AM_LABEL,
                                                other_labels=others).values())
    elif math.isfinite(am_surface_per_um) and am_surface_per_um >= 0:
        free_faces = am_surface_per_um * volume.size * voxel_um  # 1/um -> voxel faces
    else:
        raise ValueError(f"am_surface_per_um must be a number >= 0, got {am_surface_per_um!r}")
    contact_faces = 2.0 * _contact_faces(labels) / VOXEL_FACE_EXCESS
    surface_faces = free_faces + contact_faces
    if surface_faces <= 0:
        raise ValueError("the AM phase has no surface inside the volume (it fills the box)")
    return 3.0 * float(am.sum()) / surface_faces * voxel_um
