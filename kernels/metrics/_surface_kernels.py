"""The per-triangle part of kernels.metrics.surface_area as one numba pass (large volumes).

After marching cubes, the numpy path streams the (triangles, 3, 3) arrays a dozen times: the
vertex gather, the normal sum, the box test, the clip, the cross product, the centroid, the
normalisation and three outward probes; at 128³ (750 000 triangles) that was 0.41 of the
stage's 0.63 CPU-s, twice marching cubes itself. Here each triangle is read once and its area
added to the label on its outer side. The arithmetic is the numpy path's, in the same float32
operations and order (clip pieces, centroids, probes rounded half to even), so both give the
same areas up to the summation order (the areas are summed in float64 here).

Compiled on first use and cached on disk (``cache=True``); loading numba costs ~0.3 CPU-s per
process, so small volumes keep the numpy path (surface_area.FUSED_MIN_VOXELS).
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False)

_F0 = np.float32(0.0)
_HALF = np.float32(0.5)
_THIRD_DIVISOR = np.float32(3.0)
_TINY = np.float32(1e-12)
_MAX_PIECES = 64  # each of the six box planes at most doubles a triangle's pieces
#: True: _add_clipped skips the planes that keep a triangle whole and clips without
#: allocating (same pieces to the bit); False: the first version (the benchmark's anchor).
FAST_CLIP = True


@_jit
def _emit_pieces(src, t, i0, i1, i2, t01, t02, count, dst, n_dst):
    """Write the kept part of triangle `t` (odd vertex i0, crossings at t01 and t02 along its
    edges to i1 and i2) to `dst` from `n_dst`: the inside corner and the two crossings when one
    vertex is kept, else the quadrilateral p01, v1, v2, p02 as two triangles; returns the new
    count. Shared by both clips, so their pieces are the same to the bit."""
    if count == 1:
        for k in range(3):
            a = src[t, i0, k]
            dst[n_dst, 0, k] = a
            dst[n_dst, 1, k] = a + t01 * (src[t, i1, k] - a)
            dst[n_dst, 2, k] = a + t02 * (src[t, i2, k] - a)
        return n_dst + 1
    for k in range(3):
        a = src[t, i0, k]
        p01 = a + t01 * (src[t, i1, k] - a)
        p02 = a + t02 * (src[t, i2, k] - a)
        dst[n_dst, 0, k] = p01
        dst[n_dst, 1, k] = src[t, i1, k]
        dst[n_dst, 2, k] = src[t, i2, k]
        dst[n_dst + 1, 0, k] = p01
        dst[n_dst + 1, 1, k] = src[t, i2, k]
        dst[n_dst + 1, 2, k] = p02
    return n_dst + 2


@_jit
def _clip_plane(src, n_src, dst, axis, bound, keep_below):
    """The pieces of the `n_src` triangles in `src` on the kept side of x[axis] = bound (the
    numpy _clip_to_half_space, triangle by triangle); returns how many were written to `dst`."""
    n_dst = 0
    side = np.empty(3, np.float32)  # once per box-crossing triangle and plane: rare
    inside = np.empty(3, np.bool_)
    for t in range(n_src):
        count = 0
        for v in range(3):
            side[v] = src[t, v, axis] - bound
            inside[v] = side[v] <= _F0 if keep_below else side[v] >= _F0
            count += inside[v]
        if count == 3:
            dst[n_dst, :, :] = src[t, :, :]
            n_dst += 1
            continue
        if count == 0:
            continue
        # the odd vertex (the only inside one, or the only outside one) first, same orientation
        first = 0
        for v in range(3):
            if inside[v] == (count == 1):
                first = v
                break
        i0, i1, i2 = first, (first + 1) % 3, (first + 2) % 3
        s0, s1, s2 = side[i0], side[i1], side[i2]
        t01 = s0 / (s0 - s1)
        t02 = s0 / (s0 - s2)
        n_dst = _emit_pieces(src, t, i0, i1, i2, t01, t02, count, dst, n_dst)
    return n_dst


@_jit
def _add_piece(tri, p, normal, volume, solid_label, default_label, steps, out):
    """Add the area of triangle `tri[p]` to the label first met outward of its centroid."""
    ax = tri[p, 1, 0] - tri[p, 0, 0]
    ay = tri[p, 1, 1] - tri[p, 0, 1]
    az = tri[p, 1, 2] - tri[p, 0, 2]
    bx = tri[p, 2, 0] - tri[p, 0, 0]
    by = tri[p, 2, 1] - tri[p, 0, 1]
    bz = tri[p, 2, 2] - tri[p, 0, 2]
    cx = ay * bz - az * by
    cy = az * bx - ax * bz
    cz = ax * by - ay * bx
    area = _HALF * np.sqrt(cx * cx + cy * cy + cz * cz)
    cx0 = (tri[p, 0, 0] + tri[p, 1, 0] + tri[p, 2, 0]) / _THIRD_DIVISOR
    cx1 = (tri[p, 0, 1] + tri[p, 1, 1] + tri[p, 2, 1]) / _THIRD_DIVISOR
    cx2 = (tri[p, 0, 2] + tri[p, 1, 2] + tri[p, 2, 2]) / _THIRD_DIVISOR
    u0, u1, u2 = volume.shape[0] - 1, volume.shape[1] - 1, volume.shape[2] - 1
    label = default_label
    for s in range(steps.shape[0]):
        step = steps[s]
        i0 = min(max(np.intp(np.rint(cx0 + step * normal[0])), 0), u0)
        i1 = min(max(np.intp(np.rint(cx1 + step * normal[1])), 0), u1)
        i2 = min(max(np.intp(np.rint(cx2 + step * normal[2])), 0), u2)
        value = volume[i0, i1, i2]
        if value != solid_label:
            label = value
            break
    out[label] += np.float64(area)


@_jit
def _clip_plane_scalar(src, n_src, dst, axis, bound, keep_below):
    """_clip_plane with the same float32 arithmetic, without its two allocations per call and
    with the whole-triangle copy as a loop: at 128³ the fused pass spent ~25 % of its time in
    the ~3 % of triangles of the box's cell shell (~0.9 us per clipped triangle)."""
    n_dst = 0
    for t in range(n_src):
        s0 = src[t, 0, axis] - bound
        s1 = src[t, 1, axis] - bound
        s2 = src[t, 2, axis] - bound
        if keep_below:
            in0, in1, in2 = s0 <= _F0, s1 <= _F0, s2 <= _F0
        else:
            in0, in1, in2 = s0 >= _F0, s1 >= _F0, s2 >= _F0
        count = np.int64(in0) + np.int64(in1) + np.int64(in2)
        if count == 3:
            for v in range(3):
                for k in range(3):
                    dst[n_dst, v, k] = src[t, v, k]
            n_dst += 1
            continue
        if count == 0:
            continue
        # the odd vertex (the only inside one, or the only outside one) first, same orientation
        odd = count == 1
        if in0 == odd:
            i0, i1, i2, sa, sb, sc = 0, 1, 2, s0, s1, s2
        elif in1 == odd:
            i0, i1, i2, sa, sb, sc = 1, 2, 0, s1, s2, s0
        else:
            i0, i1, i2, sa, sb, sc = 2, 0, 1, s2, s0, s1
        t01 = sa / (sa - sb)
        t02 = sa / (sa - sc)
        n_dst = _emit_pieces(src, t, i0, i1, i2, t01, t02, count, dst, n_dst)
    return n_dst


@_jit
def _all_kept(src, n_src, axis, bound, keep_below):
    """Whether every vertex of the `n_src` pieces is on the kept side (the plane then copies
    them unchanged, so it can be skipped)."""
    for t in range(n_src):
        for v in range(3):
            side = src[t, v, axis] - bound
            if not (side <= _F0 if keep_below else side >= _F0):
                return False
    return True


@_jit
def _inside_box(tri, lower, upper):
    """Whether triangle tri[0] lies in the box [lower, upper] (every plane of _add_clipped would
    keep it whole: the same float32 side tests)."""
    for v in range(3):
        for k in range(3):
            if not (tri[0, v, k] - lower >= _F0 and tri[0, v, k] - upper[k] <= _F0):
                return False
    return True


@_jit
def _add_clipped(buf_a, buf_b, lower, upper, normal, volume, solid_label, default_label, steps,
                 out, fast):
    """Clip the triangle in buf_a[0] to the box [lower, upper] (buf_b as the second buffer)
    and add each piece's area to the label on its outer side. `fast` (FAST_CLIP): skip the
    planes that keep every piece as it is and clip with _clip_plane_scalar; the same pieces
    to the bit as the first version (fast=False, kept for the tests and the benchmark)."""
    n_pieces = 1
    src, dst = buf_a, buf_b
    for k in range(3):
        for side in range(2):
            below = side == 1
            bound = upper[k] if below else lower
            if fast:
                if _all_kept(src, n_pieces, k, bound, below):
                    continue
                n_pieces = _clip_plane_scalar(src, n_pieces, dst, k, bound, below)
            else:
                n_pieces = _clip_plane(src, n_pieces, dst, k, bound, below)
            src, dst = dst, src
    for p in range(n_pieces):
        _add_piece(src, p, normal, volume, solid_label, default_label, steps, out)


@_jit
def areas_by_outer_label(vertices, faces, normals, volume, pad, solid_label, default_label,
                         steps, fast_clip=True):
    """Mesh area (voxel^2) inside the box [-0.5, n - 0.5] per label on the outer side (index =
    label value), from marching cubes' vertices, faces and outward vertex normals on the
    `pad`-padded field."""
    out = np.zeros(256, np.float64)
    upper = np.empty(3, np.float32)
    for k in range(3):
        upper[k] = np.float32(volume.shape[k]) - _HALF
    lower = -_HALF
    shift = np.float32(pad)
    buf_a = np.empty((_MAX_PIECES, 3, 3), np.float32)
    buf_b = np.empty((_MAX_PIECES, 3, 3), np.float32)
    normal = np.empty(3, np.float32)
    for f in range(faces.shape[0]):
        crossing = False
        for v in range(3):
            for k in range(3):
                c = vertices[faces[f, v], k] - shift
                buf_a[0, v, k] = c
                if c < lower or c > upper[k]:
                    crossing = True
        length2 = _F0
        for k in range(3):
            n = (normals[faces[f, 0], k] + normals[faces[f, 1], k]) + normals[faces[f, 2], k]
            normal[k] = n
            length2 += n * n
        length = np.sqrt(length2)
        if length < _TINY:
            length = _TINY
        for k in range(3):
            normal[k] = normal[k] / length
        if not crossing:
            _add_piece(buf_a, 0, normal, volume, solid_label, default_label, steps, out)
            continue
        _add_clipped(buf_a, buf_b, lower, upper, normal, volume, solid_label, default_label,
                     steps, out, fast_clip)
    return out
