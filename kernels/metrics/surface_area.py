"""Interface areas of a labelled volume, measured on a smooth surface rather than by voxel faces.

Counting voxel faces overestimates the area of a curved surface by about 50 % (an isotropic
surface element exposes |n_x| + |n_y| + |n_z| = 3/2 of its area as faces, on average). Instead the
active-material (AM) indicator is smoothed with a narrow Gaussian (sigma = 0.55 voxel) and
triangulated at level 0.5 with marching cubes (method="fused", the default: a numba pass
with its own case table; method="skimage": scikit-image's Lewiner); the area is the mesh area.
Why 0.55: marching cubes on the raw binary field is +8 % on spheres (facets cut corners of the
staircase), while smoothing pulls curved surfaces inward (-sigma^2 / r) and erases features
thinner than about a voxel. Measured on voxelised spheres at random sub-voxel centres: -2 to -3 %
at radius 3.5 voxels, within +-2.6 % at 4-6, +2.2 to +3.2 % from 10 to 40 (the flat-surface limit;
axis-aligned flat faces are exact); -3 to -7 % at radius 3, below which no method on voxels is
reliable. (sigma 0.5 would sit at +4.4 % on large spheres, too close to the 5 % budget.)
Re-measured with 8 centres per radius (tests/benchmarks/bench_surface_area.py, both methods
equal to the shown digits): -1.5 to -5.0 % at 3.5, -0.6 to -2.2 % at 4, -1.6 to +0.9 % at 5,
-0.3 to +2.0 % at 6, +2.2 to +2.6 % at 10, +2.9 to +3.2 % at 20, +3.1 to +3.2 % at 40, -2.8 to
-6.3 % at 3: radius 3.5 reaches -5 % at some centres.

Each triangle of the AM surface is then given the phase on its outer side (pore or CBD) by looking
0.5, 1 and 1.5 voxels outward along its normal and taking the first non-AM label, so
AM–pore + AM–CBD = the AM surface and the CBD coverage is the AM–CBD share of it.

The box faces are not surfaces, and the box is [-0.5, n - 0.5] in voxel-centre coordinates, not
[0, n - 1]: marching cubes on the volume alone meshes only between the first and last voxel
centres and loses the half-voxel shell at every face (-6.6 % at 32³ on electrodes, more on sub-
volumes, and the areas of the parts of a cut volume did not add up to the whole). So the
indicator is first padded by edge replication (the structure continued straight through the
faces), smoothed and meshed, and the mesh is clipped exactly to the box: a particle cut by the box
boundary contributes its inner surface up to the face, and areas are additive over sub-volumes.

Cost of "skimage": on volumes of FUSED_MIN_VOXELS and more the per-triangle work (clip, area, outward probes)
is one numba pass (kernels.metrics._surface_kernels) with the same float32 arithmetic as the
numpy path below, so the areas agree to ~1e-8; what remains is skimage's marching cubes (~0.19
CPU-s at 128³, ~220 ns per triangle), which a method with the same numbers cannot avoid.

method="fused" (the default since 2026-12-03 for uint8 volumes; "skimage" stays reachable by
name) replaces marching cubes too: one numba pass meshes each cell and measures its triangles
on the spot, storing no mesh (kernels.metrics._marching_kernels), with a case table built from
the cube's geometry (kernels.metrics._mc_table: asymptotic decider on ambiguous faces, the
largest-area split of each loop). Other triangles than Lewiner's, so other numbers: on
procedural 64³-128³ electrodes (5 recipe corners, both calendering models, 0.4 and 1 um) the
total AM area is within 0.12 % of "skimage", the CBD coverage within 0.0025 (absolute) and the
particle radius within 0.05 %; spheres agree to 0.01 %. The outward probes follow skimage's own
edge normals (summed over the cells sharing the edge), rebuilt in the pass, because the
AM-pore / AM-CBD split moved by 2 % with a cell's own gradient alone. Its field is the one
above to the bit, smoothed in one numba pass from the labels (no float, padded copies), and its
pass visits each cell once for its case (the two-scan pass it replaced gives the same sums to
the bit and is kept as the tests' reference). The cells of the box's shell (~3 % of the
triangles) clip without allocating and skip the planes that keep a triangle whole
(_surface_kernels.FAST_CLIP; the same pieces to the bit): they had taken ~25 % of the pass. At
128³ the stage is 3.3x (0.4 um) and 3.6x (1 um) cheaper than "skimage" (best of 21, same run;
docs/solvers.md, "Surface area without skimage").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SMOOTHING_SIGMA_VOXELS = 0.55
_TRUNCATE = 4.0  # Gaussian support in sigmas (scipy's default)
# One replicated layer is enough: the filter's mode="nearest" continues the edge beyond it
# anyway, so the smoothed field is that of the infinitely replicated structure; the layer only
# gives marching cubes room to mesh past the box face at -0.5 (and n - 0.5).
_PAD_VOXELS = 1
_OUTWARD_STEPS_VOXELS = (0.5, 1.0, 1.5)
#: From this many voxels on, the per-triangle work (clip, area, outward label) runs as one numba
#: pass (kernels.metrics._surface_kernels; same numbers to ~1e-7): at 128³ it took 0.41 of the
#: stage's 0.63 CPU-s in numpy. Below it the numpy path is cheaper than loading numba (~0.3
#: CPU-s per process, which a 32³ quick campaign's job would pay for a 10 ms stage).
FUSED_MIN_VOXELS = 64**3
USE_FUSED = True  # False forces the numpy path (the tests compare both)
#: "fused" (the default for uint8 volumes): marching cubes and the per-triangle work in one
#: numba pass (kernels.metrics._marching_kernels), within 0.12 % of "skimage" on electrodes and
#: ~3.3-3.6x cheaper for the stage at 128³ (module docstring). "skimage": skimage's marching
#: cubes, then the per-triangle pass above (the default until 2026-12-03, reachable by name; a
#: volume of any other integer dtype takes it, the fused sums being a table of 256 labels).
METHODS = ("skimage", "fused")
DEFAULT_METHOD = "fused"


def _clip_to_half_space(tri: np.ndarray, parent: np.ndarray, axis: int, bound: float,
                        keep_below: bool) -> tuple[np.ndarray, np.ndarray]:
    """Clip triangles (n, 3, 3) to x[axis] <= bound (or >=): each gives 0, 1 or 2 triangles."""
    side = tri[:, :, axis] - bound
    inside = side <= 0 if keep_below else side >= 0
    count = inside.sum(axis=1)
    kept = [tri[count == 3]]
    parents = [parent[count == 3]]

    def cut(a: np.ndarray, b: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
        t = (sa / (sa - sb))[:, None]  # where the edge a-b crosses the plane
        return a + t * (b - a)

    for n_in in (1, 2):
        sel = np.nonzero(count == n_in)[0]
        if sel.size == 0:
            continue
        # rotate each triangle so that its odd vertex (the only inside, or only outside) is first
        odd = inside[sel] if n_in == 1 else ~inside[sel]
        first = np.argmax(odd, axis=1)
        order = (first[:, None] + np.arange(3)[None, :]) % 3  # keeps the orientation
        t = np.take_along_axis(tri[sel], order[:, :, None], axis=1)
        s = np.take_along_axis(side[sel], order, axis=1)
        p01 = cut(t[:, 0], t[:, 1], s[:, 0], s[:, 1])
        p02 = cut(t[:, 0], t[:, 2], s[:, 0], s[:, 2])
        if n_in == 1:  # the inside corner and the two crossings
            kept.append(np.stack([t[:, 0], p01, p02], axis=1))
            parents.append(parent[sel])
        else:  # the quadrilateral p01, v1, v2, p02 as two triangles
            kept.append(np.stack([p01, t[:, 1], t[:, 2]], axis=1))
            kept.append(np.stack([p01, t[:, 2], p02], axis=1))
            parents += [parent[sel], parent[sel]]
    return np.concatenate(kept), np.concatenate(parents)


def _clip_to_box(corners: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The parts of the triangles inside [-0.5, n - 0.5] per axis, and each part's triangle."""
    upper = np.asarray(shape, dtype=corners.dtype) - 0.5
    crossing = ((corners < -0.5) | (corners > upper)).any(axis=(1, 2))  # only these are cut
    inner = np.nonzero(~crossing)[0]
    cut, parent = corners[crossing], np.nonzero(crossing)[0]
    for axis, n in enumerate(shape):
        cut, parent = _clip_to_half_space(cut, parent, axis, -0.5, keep_below=False)
        cut, parent = _clip_to_half_space(cut, parent, axis, n - 0.5, keep_below=True)
    return np.concatenate([corners[inner], cut]), np.concatenate([inner, parent])


def interface_areas_voxels(
    volume: np.ndarray, solid_label: int = 1, other_labels: tuple[int, ...] = (0, 2),
    method: str | None = None,
) -> dict[int, float]:
    """Area (in voxel faces, i.e. voxel^2) of the `solid_label` surface facing each other label.

    A triangle whose outward probes all land in `solid_label` (a sliver between two touching
    particles) is counted for the first of `other_labels`. `method`: one of METHODS (None:
    DEFAULT_METHOD, or "skimage" where the labels are not uint8); "fused" needs uint8 labels
    (its sums are a table of 256 labels).
    """
    fits_byte = volume.dtype == np.uint8 and all(0 <= label < 256 for label in other_labels)
    if method is None:  # the default; "fused" only where its 256-label table holds the labels
        method = "skimage" if DEFAULT_METHOD == "fused" and not fits_byte else DEFAULT_METHOD
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "fused" and not fits_byte:
        raise ValueError("method 'fused' needs a uint8 volume and labels below 256, got "
                         f"{volume.dtype} and {other_labels}")
    areas = {label: 0.0 for label in other_labels}
    solid = volume == solid_label
    if not solid.any() or solid.all():
        return areas
    steps = np.asarray(_OUTWARD_STEPS_VOXELS, np.float32)
    if method == "fused":
        from kernels.metrics._marching_kernels import fused_areas, smoothed_indicator

        # the same smoothed field as below, to the bit, without its three copies
        field = smoothed_indicator(volume, solid_label, _PAD_VOXELS, SMOOTHING_SIGMA_VOXELS,
                                   _TRUNCATE)
        by_label = fused_areas(field, 0.5, volume, _PAD_VOXELS, solid_label, other_labels[0],
                               steps)
        return {label: float(by_label[label]) for label in other_labels}
    padded = np.pad(solid.astype(np.float32), _PAD_VOXELS, mode="edge")
    field = ndimage.gaussian_filter(padded, SMOOTHING_SIGMA_VOXELS, mode="nearest",
                                    truncate=_TRUNCATE)
    if field.max() <= 0.5 or field.min() >= 0.5:
        return areas
    from skimage import measure  # imported here: a heavy import only the metrics need

    vertices, faces, normals, _ = measure.marching_cubes(field, 0.5)  # normals point outward
    # uint8 labels only: the pass adds areas into a table of 256 labels (campaign volumes are
    # uint8; any other integer dtype takes the numpy path)
    if USE_FUSED and volume.size >= FUSED_MIN_VOXELS and fits_byte:
        from kernels.metrics import _surface_kernels
        from kernels.metrics._surface_kernels import areas_by_outer_label

        by_label = areas_by_outer_label(vertices, faces, normals, volume, _PAD_VOXELS,
                                        solid_label, other_labels[0], steps,
                                        _surface_kernels.FAST_CLIP)
        return {label: float(by_label[label]) for label in other_labels}
    vertex_normal = normals[faces].sum(axis=1)  # per triangle, before clipping
    corners, parent = _clip_to_box(vertices[faces] - _PAD_VOXELS, volume.shape)
    if len(corners) == 0:
        return areas
    triangle_area = 0.5 * np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    centroid = corners.mean(axis=1)
    normal = vertex_normal[parent]
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)

    upper = np.array(volume.shape) - 1
    outer = np.full(len(corners), other_labels[0], dtype=volume.dtype)
    undecided = np.ones(len(corners), dtype=bool)
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
