"""Interface areas of a labelled volume, measured on a smooth surface rather than by voxel faces.

Counting voxel faces overestimates the area of a curved surface by about 50 % (an isotropic
surface element exposes |n_x| + |n_y| + |n_z| = 3/2 of its area as faces, on average). Instead the
active-material (AM) indicator is smoothed with a narrow Gaussian (sigma = 0.55 voxel) and
triangulated at level 0.5 with marching cubes (scikit-image, Lewiner); the area is the mesh area.
Why 0.55: marching cubes on the raw binary field is +8 % on spheres (facets cut corners of the
staircase), while smoothing pulls curved surfaces inward (-sigma^2 / r) and erases features
thinner than about a voxel. Measured on voxelised spheres at random sub-voxel centres: -2 to -3 %
at radius 3.5 voxels, within +-2.6 % at 4-6, +2.2 to +3.2 % from 10 to 40 (the flat-surface limit;
axis-aligned flat faces are exact); -3 to -7 % at radius 3, below which no method on voxels is
reliable. (sigma 0.5 would sit at +4.4 % on large spheres, too close to the 5 % budget.)

Each triangle of the AM surface is then given the phase on its outer side (pore or CBD) by looking
0.5, 1 and 1.5 voxels outward along its normal and taking the first non-AM label, so
AM–pore + AM–CBD = the AM surface and the CBD coverage is the AM–CBD share of it. The box faces
are not surfaces: a particle cut by the box boundary contributes only its inner surface.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SMOOTHING_SIGMA_VOXELS = 0.55
_OUTWARD_STEPS_VOXELS = (0.5, 1.0, 1.5)


def interface_areas_voxels(
    volume: np.ndarray, solid_label: int = 1, other_labels: tuple[int, ...] = (0, 2)
) -> dict[int, float]:
    """Area (in voxel faces, i.e. voxel^2) of the `solid_label` surface facing each other label.

    A triangle whose outward probes all land in `solid_label` (a sliver between two touching
    particles) is counted for the first of `other_labels`.
    """
    from skimage import measure  # imported here: a heavy import only the metrics need

    areas = {label: 0.0 for label in other_labels}
    solid = volume == solid_label
    if not solid.any() or solid.all():
        return areas
    field = ndimage.gaussian_filter(
        solid.astype(np.float32), SMOOTHING_SIGMA_VOXELS, mode="nearest", truncate=4.0
    )
    if field.max() <= 0.5 or field.min() >= 0.5:
        return areas
    vertices, faces, normals, _ = measure.marching_cubes(field, 0.5)  # normals point outward
    corners = vertices[faces]  # (n, 3, 3)
    triangle_area = 0.5 * np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    centroid = corners.mean(axis=1)
    normal = normals[faces].sum(axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)

    upper = np.array(volume.shape) - 1
    outer = np.full(len(faces), other_labels[0], dtype=volume.dtype)
    undecided = np.ones(len(faces), dtype=bool)
    for step in _OUTWARD_STEPS_VOXELS:
        probe = np.clip(np.rint(centroid + step * normal).astype(np.intp), 0, upper)
        label = volume[probe[:, 0], probe[:, 1], probe[:, 2]]
        found = undecided & (label != solid_label)
        outer[found] = label[found]
        undecided &= ~found
        if not undecided.any():
            break
    for label in other_labels:
        areas[label] = float(triangle_area[outer == label].sum())
    return areas
