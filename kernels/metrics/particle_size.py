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

Cost at 128³ (CPU-s): the distance transform 0.11 (numba, exact; scipy's took 0.45), the seeds
~0.12, the watershed ~0.57. The watershed is skimage's priority flood; a numba copy of the same
flood (the same order, hence the same labels) was measured no faster: the binary heap is the
cost, and any faster queue would order the tied seeds differently and so change the labels.
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
#: (kernels.metrics._particle_kernels: the same exact distances, 0.46 -> ~0.05 CPU-s at 128³);
#: below it scipy's, cheaper than loading numba in a process that would not need it otherwise.
FUSED_MIN_VOXELS = 64**3
USE_FUSED = True  # False forces scipy's transform (the tests compare both)


def distance_to_background(foreground: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (voxels, float64) of each True voxel to the nearest False one,
    0 on False voxels: scipy's `distance_transform_edt`, by a numba kernel on large volumes."""
    if USE_FUSED and foreground.size >= FUSED_MIN_VOXELS and not foreground.all():
        from kernels.metrics._particle_kernels import distance_to_background as fused

        return fused(np.ascontiguousarray(foreground, dtype=np.bool_))
    from scipy import ndimage

    return ndimage.distance_transform_edt(foreground)


def _contact_faces(labels: np.ndarray) -> int:
    """Voxel faces between two different particles (labels > 0)."""
    count = 0
    for axis in range(3):
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis] = slice(0, -1)
        high[axis] = slice(1, None)
        a, b = labels[tuple(low)], labels[tuple(high)]
        count += int(np.count_nonzero((a > 0) & (b > 0) & (a != b)))
    return count


def am_particle_radius_um(volume: np.ndarray, voxel_um: float,
                          am_surface_per_um: float | None = None) -> float:
    """3V/S radius (um) of the AM particles of a labelled volume (0 pore, 1 AM, 2 CBD).

    am_surface_per_um: the AM free surface per volume (a_AM-pore + a_AM-CBD, 1/um) when the
    caller has measured it already (kernels.metrics does): saves the marching-cubes pass,
    about half of the 3.5 CPU-s at 128^3.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    from kernels.metrics.surface_area import interface_areas_voxels

    if not (isinstance(volume, np.ndarray) and volume.ndim == 3):
        raise ValueError("volume must be a 3D array of labels (0 pore, 1 AM, 2 CBD)")
    if not (isinstance(voxel_um, int | float) and math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
    am = volume == AM_LABEL
    if not am.any():
        raise ValueError("volume holds no AM voxels (label 1): no particle size to measure")
    distance = distance_to_background(am)
    spacing = max(2, int(round(SEED_SPACING_FRACTION * np.percentile(distance[am], 99))))
    peaks = peak_local_max(distance, min_distance=spacing, labels=am.astype(np.int32),
                           exclude_border=False)
    markers = np.zeros(volume.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=am)
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
