"""Marching cubes and the per-triangle work of kernels.metrics.surface_area as one numba pass.

Why: skimage's marching cubes builds the whole mesh (~0.75 M triangles at 128³, shared vertices,
normals summed over faces) only for the per-triangle pass to read it once and throw it away.
Here each cell of the padded, smoothed field is meshed and measured on the spot; what is stored
is the per-label sums and a rolling buffer of edge normals for three grid layers:

- the cell's case (corners above the level), its ambiguous faces resolved by the asymptotic
  decider, its triangles from the built table (kernels.metrics._mc_table);
- each crossed edge's point by linear interpolation at the level (as skimage's);
- each crossed edge's normal as skimage's Lewiner code makes it: every cell sharing the edge
  adds its own gradient there (one-sided differences between the cell's corners, low minus
  high: down the field, out of the solid), once per triangle of the cell that uses the edge.
  skimage takes a corner's gradient at the corner mirrored along axis 2 when the corner's
  axis-1 bit is set (its gradient array is in the cube's corner order but indexed in bit
  order); that is reproduced, because the outward probes follow these normals and the AM-pore /
  AM-CBD split moved by 2 % without it (64³ electrode at 1 um). A slab's cells add their
  gradients one slab ahead of the slab whose triangles are measured, so every normal is
  complete when it is read;
- each triangle's area in float64, its normal the sum of its three unit vertex normals (as the
  skimage path), and the first non-solid label 0.5, 1, 1.5 voxels outward of its centroid;
- triangles of the cells that reach past the box [-0.5, n - 0.5] are clipped exactly as the
  skimage path's (kernels.metrics._surface_kernels: the same float32 clip and probes).

Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.metrics._mc_table import build_case_table
from kernels.metrics._surface_kernels import _MAX_PIECES, _add_clipped

_jit = numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")


@_jit
def _load_cell(field, i, j, k, level, g):
    """The 8 corner values minus the level into `g`; returns the case (bit c: corner c above)."""
    case = 0
    for c in range(8):
        v = np.float64(field[i + (c & 1), j + (c >> 1 & 1), k + (c >> 2 & 1)]) - level
        g[c] = v
        if v > 0.0:
            case |= 1 << c
    return case


@_jit
def _config(case, g, n_ambiguous, ambiguous_faces, config_offset, face_corners):
    """The table row of this cell: its case with each ambiguous face resolved (bit a set: the
    a-th ambiguous face joins its inside corners, the bilinear saddle being inside)."""
    cfg = config_offset[case]
    for a in range(n_ambiguous[case]):
        face = ambiguous_faces[case, a]
        g0 = g[face_corners[face, 0]]
        g1 = g[face_corners[face, 1]]
        g2 = g[face_corners[face, 2]]
        g3 = g[face_corners[face, 3]]
        # exact products of float32 values: both cells sharing the face decide alike
        if (g0 * g2 > g1 * g3) if g0 > 0.0 else (g1 * g3 > g0 * g2):
            cfg += 1 << a
    return cfg


@_jit
def _positions(case, g, edge_corners, pos):
    """Point of each crossed edge (cell-local coordinates) by linear interpolation, into pos."""
    for e in range(12):
        a = edge_corners[e, 0]
        b = edge_corners[e, 1]
        if ((case >> a) & 1) == ((case >> b) & 1):
            continue
        for d in range(3):
            pos[e, d] = np.float64((a >> d) & 1)
        pos[e, e >> 2] += g[a] / (g[a] - g[b])


@_jit
def _accumulate_slab(field, level, i, acc, ring, edge_corners, face_corners, n_ambiguous,
                     ambiguous_faces, config_offset, edge_uses, g, cell_grad):
    """Add the gradients of the cells of slab i to their crossed edges' normals (as skimage
    does: each cell adds its own gradient at the edge, once per triangle of the cell that uses
    the edge). acc[layer % ring, axis, y, z] is the edge whose low end is (layer, y, z)."""
    for j in range(field.shape[1] - 1):
        for k in range(field.shape[2] - 1):
            case = _load_cell(field, i, j, k, level, g)
            if case == 0 or case == 255:
                continue
            cfg = _config(case, g, n_ambiguous, ambiguous_faces, config_offset, face_corners)
            # the cell's gradient at each corner: one-sided differences between its corners,
            # low minus high (down the field), taken at the mirrored corner as skimage's
            for c in range(8):
                m = c ^ (((c >> 1) & 1) << 2)
                for d in range(3):
                    bit = 1 << d
                    cell_grad[c, d] = g[m & ~bit] - g[m | bit]
            for e in range(12):
                uses = edge_uses[cfg, e]
                if uses == 0:
                    continue
                a = edge_corners[e, 0]
                b = edge_corners[e, 1]
                t = g[a] / (g[a] - g[b])
                x, y, z = (i + (a & 1)) % ring, j + (a >> 1 & 1), k + (a >> 2 & 1)
                for d in range(3):
                    acc[x, e >> 2, y, z, d] += uses * (cell_grad[a, d]
                                                       + t * (cell_grad[b, d] - cell_grad[a, d]))


@_jit
def _above4(field, i, j, k, level):
    """Bits of the 4 corners (i..i+1, j..j+1) at k above the level (corner bits 0, 1)."""
    return ((field[i, j, k] > level) | (field[i + 1, j, k] > level) << 1
            | (field[i, j + 1, k] > level) << 2 | (field[i + 1, j + 1, k] > level) << 3)


@_jit
def fused_areas_by_outer_label(field, level, volume, pad, solid_label, default_label, steps,
                               edge_corners, face_corners, n_ambiguous, ambiguous_faces,
                               config_offset, n_triangles, triangles, edge_uses):
    """Area (voxel^2) inside the box [-0.5, n - 0.5] of the `level` surface of the `pad`-padded
    `field`, per label on its outer side (index = label value)."""
    out = np.zeros(256, np.float64)
    g = np.empty(8, np.float64)
    pos = np.empty((12, 3), np.float64)
    # edge normals of three grid layers (rolling: layer x at x % 3), never the whole mesh's:
    # slab i's triangles need layers i, i + 1, complete once slabs i and i + 1 are added
    ring = 3
    layers = np.zeros((ring, 3, field.shape[1], field.shape[2], 3), np.float32)
    cell_grad = np.empty((8, 3), np.float64)
    nrm = np.empty((12, 3), np.float64)
    buf_a = np.empty((_MAX_PIECES, 3, 3), np.float32)
    buf_b = np.empty((_MAX_PIECES, 3, 3), np.float32)
    normal32 = np.empty(3, np.float32)
    upper = np.empty(3, np.float32)
    for d in range(3):
        upper[d] = np.float32(volume.shape[d]) - np.float32(0.5)
    lower = np.float32(-0.5)
    n0, n1, n2 = volume.shape[0], volume.shape[1], volume.shape[2]
    level32 = np.float32(level)
    tables = (edge_corners, face_corners, n_ambiguous, ambiguous_faces, config_offset, edge_uses)
    _accumulate_slab(field, level, 0, layers, ring, *tables, g, cell_grad)
    for i in range(field.shape[0] - 1):
        if i + 1 < field.shape[0] - 1:
            layers[(i + 2) % ring, :, :, :, :] = 0.0
            _accumulate_slab(field, level, i + 1, layers, ring, *tables, g, cell_grad)
        edge_i = i < pad or i > pad + n0 - 2
        for j in range(field.shape[1] - 1):
            edge_j = edge_i or j < pad or j > pad + n1 - 2
            high = _above4(field, i, j, 0, level32)
            for k in range(field.shape[2] - 1):
                low = high
                high = _above4(field, i, j, k + 1, level32)
                case = low | high << 4
                if case == 0 or case == 255:
                    continue
                for c in range(8):
                    g[c] = (np.float64(field[i + (c & 1), j + (c >> 1 & 1), k + (c >> 2 & 1)])
                            - level)
                cfg = _config(case, g, n_ambiguous, ambiguous_faces, config_offset,
                              face_corners)
                _positions(case, g, edge_corners, pos)
                for e in range(12):  # the unit normals of the cell's crossed edges
                    if edge_uses[cfg, e] == 0:
                        continue
                    a = edge_corners[e, 0]
                    x, y, z = (i + (a & 1)) % ring, j + (a >> 1 & 1), k + (a >> 2 & 1)
                    sx = layers[x, e >> 2, y, z, 0]
                    sy = layers[x, e >> 2, y, z, 1]
                    sz = layers[x, e >> 2, y, z, 2]
                    inv = 1.0 / np.sqrt(max(sx * sx + sy * sy + sz * sz, 1e-300))
                    nrm[e, 0] = sx * inv
                    nrm[e, 1] = sy * inv
                    nrm[e, 2] = sz * inv
                clip = edge_j or k < pad or k > pad + n2 - 2
                oi, oj, ok = i - pad, j - pad, k - pad
                for t in range(n_triangles[cfg]):
                    e0 = triangles[cfg, t, 0]
                    e1 = triangles[cfg, t, 1]
                    e2 = triangles[cfg, t, 2]
                    # the sum of the three unit vertex normals
                    nx = nrm[e0, 0] + nrm[e1, 0] + nrm[e2, 0]
                    ny = nrm[e0, 1] + nrm[e1, 1] + nrm[e2, 1]
                    nz = nrm[e0, 2] + nrm[e1, 2] + nrm[e2, 2]
                    length = np.sqrt(nx * nx + ny * ny + nz * nz)
                    if length < 1e-12:
                        length = 1e-12
                    nx /= length
                    ny /= length
                    nz /= length
                    if clip:
                        for v in range(3):
                            e = triangles[cfg, t, v]
                            buf_a[0, v, 0] = np.float32(oi + pos[e, 0])
                            buf_a[0, v, 1] = np.float32(oj + pos[e, 1])
                            buf_a[0, v, 2] = np.float32(ok + pos[e, 2])
                        normal32[0] = np.float32(nx)
                        normal32[1] = np.float32(ny)
                        normal32[2] = np.float32(nz)
                        _add_clipped(buf_a, buf_b, lower, upper, normal32, volume,
                                     solid_label, default_label, steps, out)
                        continue
                    ax = pos[e1, 0] - pos[e0, 0]
                    ay = pos[e1, 1] - pos[e0, 1]
                    az = pos[e1, 2] - pos[e0, 2]
                    bx = pos[e2, 0] - pos[e0, 0]
                    by = pos[e2, 1] - pos[e0, 1]
                    bz = pos[e2, 2] - pos[e0, 2]
                    cx = ay * bz - az * by
                    cy = az * bx - ax * bz
                    cz = ax * by - ay * bx
                    area = 0.5 * np.sqrt(cx * cx + cy * cy + cz * cz)
                    c0 = oi + (pos[e0, 0] + pos[e1, 0] + pos[e2, 0]) / 3.0
                    c1 = oj + (pos[e0, 1] + pos[e1, 1] + pos[e2, 1]) / 3.0
                    c2 = ok + (pos[e0, 2] + pos[e1, 2] + pos[e2, 2]) / 3.0
                    label = default_label
                    for s in range(steps.shape[0]):
                        step = np.float64(steps[s])
                        p0 = min(max(np.intp(np.rint(c0 + step * nx)), 0), n0 - 1)
                        p1 = min(max(np.intp(np.rint(c1 + step * ny)), 0), n1 - 1)
                        p2 = min(max(np.intp(np.rint(c2 + step * nz)), 0), n2 - 1)
                        value = volume[p0, p1, p2]
                        if value != solid_label:
                            label = value
                            break
                    out[label] += area
    return out


@_jit
def _count_triangles(field, level, face_corners, n_ambiguous, ambiguous_faces, config_offset,
                     n_triangles):
    g = np.empty(8, np.float64)
    total = 0
    for i in range(field.shape[0] - 1):
        for j in range(field.shape[1] - 1):
            for k in range(field.shape[2] - 1):
                case = _load_cell(field, i, j, k, level, g)
                if case != 0 and case != 255:
                    total += n_triangles[_config(case, g, n_ambiguous, ambiguous_faces,
                                                 config_offset, face_corners)]
    return total


@_jit
def _fill_mesh(field, level, edge_corners, face_corners, n_ambiguous, ambiguous_faces,
               config_offset, n_triangles, triangles, keys, corners):
    g = np.empty(8, np.float64)
    pos = np.empty((12, 3), np.float64)
    s1, s2 = field.shape[1], field.shape[2]
    n = 0
    for i in range(field.shape[0] - 1):
        for j in range(field.shape[1] - 1):
            for k in range(field.shape[2] - 1):
                case = _load_cell(field, i, j, k, level, g)
                if case == 0 or case == 255:
                    continue
                cfg = _config(case, g, n_ambiguous, ambiguous_faces, config_offset,
                              face_corners)
                _positions(case, g, edge_corners, pos)
                for t in range(n_triangles[cfg]):
                    for v in range(3):
                        e = triangles[cfg, t, v]
                        a = edge_corners[e, 0]
                        x, y, z = i + (a & 1), j + (a >> 1 & 1), k + (a >> 2 & 1)
                        keys[n, v] = ((x * s1 + y) * s2 + z) * 3 + (e >> 2)
                        corners[n, v, 0] = i + pos[e, 0]
                        corners[n, v, 1] = j + pos[e, 1]
                        corners[n, v, 2] = k + pos[e, 2]
                    n += 1


def _table_args() -> tuple[np.ndarray, ...]:
    table = build_case_table()
    return (table.edge_corners, table.face_corners, table.n_ambiguous, table.ambiguous_faces,
            table.config_offset, table.n_triangles, table.triangles, table.edge_uses)


def fused_areas(field: np.ndarray, level: float, volume: np.ndarray, pad: int, solid_label: int,
                default_label: int, steps: np.ndarray) -> np.ndarray:
    """fused_areas_by_outer_label with the case table (256 sums, index = label)."""
    return fused_areas_by_outer_label(np.ascontiguousarray(field, np.float32), float(level),
                                      volume, pad, solid_label, default_label,
                                      np.asarray(steps, np.float32), *_table_args())


def mesh(field: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The same triangles as a mesh (for the tests): (n, 3) global edge keys (the vertex
    identity: two cells sharing an edge give it the same key) and (n, 3, 3) vertex positions
    in the field's index coordinates."""
    field = np.ascontiguousarray(field, np.float32)
    edge_c, face_c, n_amb, amb, offset, n_tri, tri, _ = _table_args()
    total = _count_triangles(field, float(level), face_c, n_amb, amb, offset, n_tri)
    keys = np.empty((total, 3), np.int64)
    corners = np.empty((total, 3, 3), np.float64)
    _fill_mesh(field, float(level), edge_c, face_c, n_amb, amb, offset, n_tri, tri, keys,
               corners)
    return keys, corners

