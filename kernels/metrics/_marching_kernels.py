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

Two versions of the pass, same arithmetic in the same order, so the same sums to the bit (the
tests check it): two_scan_areas, as first built (each cell's case found twice, once to add its
gradients, once to measure; each crossed edge's point and unit normal recomputed by every cell
that uses it), kept as the reference; fused_areas (the one used), which finds each cell's case
once, lists the slab's surface cells, and computes each crossed edge's point and unit normal
once, when its last gradient is in (_finish_layer). At 128³ 1.17-1.22x the two-scan pass at
0.4 um, 0.95-1.14x at 1 um across runs (interleaved, load 7-9; docs/solvers.md). The field it meshes comes from
smoothed_indicator: scipy's gaussian_filter of the padded indicator to the bit, from the labels,
2.7x cheaper than building the float and padded copies and calling scipy.

Compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.metrics import _surface_kernels
from kernels.metrics._mc_table import build_case_table
from kernels.metrics._surface_kernels import _MAX_PIECES, _add_clipped, _add_piece, _inside_box

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
                               config_offset, n_triangles, triangles, edge_uses, fast_clip):
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
                                     solid_label, default_label, steps, out, fast_clip)
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


def two_scan_areas(field: np.ndarray, level: float, volume: np.ndarray, pad: int,
                   solid_label: int, default_label: int, steps: np.ndarray,
                   fast_clip: bool | None = None) -> np.ndarray:
    """fused_areas_by_outer_label with the case table (256 sums, index = label): the first
    version of the pass, kept as the reference the one-scan pass must equal to the bit.
    fast_clip: None takes _surface_kernels.FAST_CLIP."""
    fast = _surface_kernels.FAST_CLIP if fast_clip is None else bool(fast_clip)
    return fused_areas_by_outer_label(np.ascontiguousarray(field, np.float32), float(level),
                                      volume, pad, solid_label, default_label,
                                      np.asarray(steps, np.float32), *_table_args(), fast)


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


def _gradient_edges() -> np.ndarray:
    """(8, 3): the cell edge whose difference (low end minus high end) is skimage's gradient at
    corner c along axis d: the edge along d through c mirrored along axis 2 when c's axis-1 bit
    is set (the indexing _accumulate_slab spells out corner by corner)."""
    corners = build_case_table().edge_corners
    out = np.empty((8, 3), np.int64)
    for c in range(8):
        m = c ^ (((c >> 1) & 1) << 2)
        for d in range(3):
            low = m & ~(1 << d)
            out[c, d] = next(e for e in range(12) if corners[e, 0] == low and e >> 2 == d)
    return out


def _used_edges() -> tuple[np.ndarray, np.ndarray]:
    """Per configuration, how many edges its triangles use and which, in edge order (a loop
    over the list instead of a branch per edge of the cube)."""
    uses = build_case_table().edge_uses
    n_used = (uses > 0).sum(axis=1).astype(np.int64)
    used = np.full((len(uses), 12), -1, np.int64)
    for cfg, row in enumerate(uses):
        edges = np.nonzero(row)[0]
        used[cfg, : len(edges)] = edges
    return n_used, used


@_jit
def _nibbles(above, i, j, row):
    """Bits of the 4 grid points (i..i+1, j..j+1) above the level at each k (corner bits 0-3),
    from the per-layer above-level masks (above[layer % 2])."""
    lo = above[i % 2]
    hi = above[(i + 1) % 2]
    for k in range(row.shape[0]):
        row[k] = lo[j, k] | hi[j, k] << 1 | lo[j + 1, k] << 2 | hi[j + 1, k] << 3


@_jit
def _finish_layer(field, level, above, layers, i, ring, has_next, vertex):
    """Each crossed edge whose low end is in layer i: where it crosses the level (t from its
    low end, as _positions) and its unit normal (as the two-scan pass), computed once per edge
    rather than once per cell that uses it; vertex[((i % 2 * 3 + axis) * m1 + j) * m2 + k] =
    (t, unit normal): one cache line per vertex."""
    lo = above[i % 2]
    hi = above[(i + 1) % 2]
    m1, m2 = field.shape[1], field.shape[2]
    p = i % 2
    for axis in range(3):
        if axis == 0 and not has_next:
            continue
        for j in range(m1 - (axis == 1)):
            for k in range(m2 - (axis == 2)):
                if axis == 0:
                    other = hi[j, k]
                    fb = field[i + 1, j, k]
                elif axis == 1:
                    other = lo[j + 1, k]
                    fb = field[i, j + 1, k]
                else:
                    other = lo[j, k + 1]
                    fb = field[i, j, k + 1]
                if lo[j, k] == other:
                    continue
                ga = np.float64(field[i, j, k]) - level
                gb = np.float64(fb) - level
                row = ((p * 3 + axis) * m1 + j) * m2 + k
                vertex[row, 0] = ga / (ga - gb)
                sx = layers[i % ring, axis, j, k, 0]
                sy = layers[i % ring, axis, j, k, 1]
                sz = layers[i % ring, axis, j, k, 2]
                inv = 1.0 / np.sqrt(max(sx * sx + sy * sy + sz * sz, 1e-300))
                vertex[row, 1] = sx * inv
                vertex[row, 2] = sy * inv
                vertex[row, 3] = sz * inv


@_jit
def one_scan_areas_by_outer_label(field, level, volume, pad, solid_label, default_label, steps,
                                  edge_corners, face_corners, n_ambiguous, ambiguous_faces,
                                  config_offset, n_triangles, triangles, edge_uses,
                                  gradient_edges, n_used, used_edges, fast_clip):
    """fused_areas_by_outer_label with each cell visited once for its case: slab i's surface
    cells add their gradients and are listed (j, k, configuration); slab i - 1 is then measured
    from its list, its normals complete. Same arithmetic in the same order: the same sums."""
    out = np.zeros(256, np.float64)
    m0, m1, m2 = field.shape[0], field.shape[1], field.shape[2]
    g = np.empty(8, np.float64)
    diff = np.empty(12, np.float64)  # per cell edge: low end minus high end
    pos = np.empty((12, 3), np.float64)
    ring = 3
    layers = np.zeros((ring, 3, m1, m2, 3), np.float32)
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
    above = np.empty((2, m1, m2), np.uint8)
    row = np.empty(m2, np.uint8)
    n_cells = (m1 - 1) * (m2 - 1)
    vertex = np.empty((2 * 3 * m1 * m2, 4), np.float64)  # see _finish_layer
    vertex_row = np.empty((2, 12), np.int64)  # slab parity, edge: its row at j = k = 0
    for q in range(2):
        for e in range(12):
            a = edge_corners[e, 0]
            vertex_row[q, e] = ((((q + (a & 1)) % 2) * 3 + (e >> 2)) * m1
                                + (a >> 1 & 1)) * m2 + (a >> 2 & 1)
    listed = np.empty((2, n_cells, 3), np.int32)  # per slab parity: j, k, configuration
    n_listed = np.zeros(2, np.int64)
    for j in range(m1):
        for k in range(m2):
            above[0, j, k] = field[0, j, k] > level32
    for i in range(m0):  # accumulate slab i (if any), then measure slab i - 1
        if i < m0 - 1:
            for j in range(m1):
                for k in range(m2):
                    above[(i + 1) % 2, j, k] = field[i + 1, j, k] > level32
            if i > 0:  # layer i + 1 takes the slot of layer i - 2, no longer read
                layers[(i + 1) % ring, :, :, :, :] = 0.0
            n = 0
            for j in range(m1 - 1):
                _nibbles(above, i, j, row)
                for k in range(m2 - 1):
                    case = row[k] | row[k + 1] << 4
                    if case == 0 or case == 255:
                        continue
                    for c in range(8):
                        g[c] = (np.float64(field[i + (c & 1), j + (c >> 1 & 1), k + (c >> 2 & 1)])
                                - level)
                    cfg = _config(case, g, n_ambiguous, ambiguous_faces, config_offset,
                                  face_corners)
                    listed[i % 2, n, 0] = j
                    listed[i % 2, n, 1] = k
                    listed[i % 2, n, 2] = cfg
                    n += 1
                    for e in range(12):
                        diff[e] = g[edge_corners[e, 0]] - g[edge_corners[e, 1]]
                    for u in range(n_used[cfg]):
                        e = used_edges[cfg, u]
                        uses = edge_uses[cfg, e]
                        a = edge_corners[e, 0]
                        b = edge_corners[e, 1]
                        t = g[a] / diff[e]
                        x, y, z = (i + (a & 1)) % ring, j + (a >> 1 & 1), k + (a >> 2 & 1)
                        for d in range(3):
                            ga = diff[gradient_edges[a, d]]
                            gb = diff[gradient_edges[b, d]]
                            acc = layers[x, e >> 2, y, z, d]
                            layers[x, e >> 2, y, z, d] = acc + uses * (ga + t * (gb - ga))
            n_listed[i % 2] = n
        # layer i's edges have all their cells' gradients now: their points and unit normals
        _finish_layer(field, level, above, layers, i, ring, i < m0 - 1, vertex)
        if i == 0:
            continue
        s = i - 1  # measure slab s: its edges lie in layers s and s + 1, both complete
        edge_i = s < pad or s > pad + n0 - 2
        for r in range(n_listed[s % 2]):
            j = listed[s % 2, r, 0]
            k = listed[s % 2, r, 1]
            cfg = listed[s % 2, r, 2]
            for u in range(n_used[cfg]):  # the points and unit normals of its crossed edges
                e = used_edges[cfg, u]
                a = edge_corners[e, 0]
                at = vertex_row[s % 2, e] + j * m2 + k
                for d in range(3):
                    pos[e, d] = np.float64((a >> d) & 1)
                    nrm[e, d] = vertex[at, 1 + d]
                pos[e, e >> 2] += vertex[at, 0]
            clip = edge_i or j < pad or j > pad + n1 - 2 or k < pad or k > pad + n2 - 2
            oi, oj, ok = s - pad, j - pad, k - pad
            for t in range(n_triangles[cfg]):
                e0 = triangles[cfg, t, 0]
                e1 = triangles[cfg, t, 1]
                e2 = triangles[cfg, t, 2]
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
                    if fast_clip and _inside_box(buf_a, lower, upper):  # the clip keeps it whole
                        _add_piece(buf_a, 0, normal32, volume, solid_label, default_label, steps,
                                   out)
                        continue
                    _add_clipped(buf_a, buf_b, lower, upper, normal32, volume, solid_label,
                                 default_label, steps, out, fast_clip)
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
                for q in range(steps.shape[0]):
                    step = np.float64(steps[q])
                    p0 = min(max(np.intp(np.rint(c0 + step * nx)), 0), n0 - 1)
                    p1 = min(max(np.intp(np.rint(c1 + step * ny)), 0), n1 - 1)
                    p2 = min(max(np.intp(np.rint(c2 + step * nz)), 0), n2 - 1)
                    value = volume[p0, p1, p2]
                    if value != solid_label:
                        label = value
                        break
                out[label] += area
    return out


def fused_areas(field: np.ndarray, level: float, volume: np.ndarray, pad: int, solid_label: int,
                default_label: int, steps: np.ndarray,
                fast_clip: bool | None = None) -> np.ndarray:
    """one_scan_areas_by_outer_label with the case table (256 sums, index = label);
    fast_clip: None takes _surface_kernels.FAST_CLIP (the same sums either way)."""
    fast = _surface_kernels.FAST_CLIP if fast_clip is None else bool(fast_clip)
    return one_scan_areas_by_outer_label(np.ascontiguousarray(field, np.float32), float(level),
                                         volume, pad, solid_label, default_label,
                                         np.asarray(steps, np.float32), *_table_args(),
                                         _gradient_edges(), *_used_edges(), fast)


def gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
    """The normalised Gaussian weights at offsets 0, 1, ..., radius (radius = int(truncate sigma
    + 0.5), scipy's rule), from the same formula as scipy.ndimage.gaussian_filter's."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    phi = phi / phi.sum()
    return phi[radius:].copy()


@_jit
def _pass5(minus2, minus1, centre, plus1, plus2, w0, w1, w2, dst, length):
    """dst = centre w0 + (minus2 + plus2) w2 + (minus1 + plus1) w1 per element, in float64 in
    scipy's order (centre, then the pairs from the outermost in), rounded to float32."""
    for x in range(length):
        acc = np.float64(centre[x]) * w0
        acc += (np.float64(minus2[x]) + np.float64(plus2[x])) * w2
        acc += (np.float64(minus1[x]) + np.float64(plus1[x])) * w1
        dst[x] = np.float32(acc)


@_jit
def _smoothed_indicator5(volume, solid_label, pad, taps):
    """The indicator of `solid_label`, padded by `pad` replicated layers and smoothed along axes
    0, 1, 2 in turn, each pass rounded to float32: scipy.ndimage.gaussian_filter(np.pad(
    indicator.astype(float32), pad, "edge"), mode="nearest") to the bit (the same sums in
    float64 in scipy's order), without the indicator's float and padded copies and with each
    pass's loop over contiguous memory. Five taps (radius 2: sigma 0.55, truncate 4)."""
    n0, n1, n2 = volume.shape
    m0, m1, m2 = n0 + 2 * pad, n1 + 2 * pad, n2 + 2 * pad
    w0, w1, w2 = taps[0], taps[1], taps[2]
    plane = m1 * m2
    indicator = np.empty((n0, plane), np.float32)  # each label plane, padded in axes 1, 2
    for q0 in range(n0):  # each row's interior in one loop, its `pad` ends replicated after
        for p1 in range(m1):
            src = volume[q0, min(max(p1 - pad, 0), n1 - 1)]
            dst = indicator[q0, p1 * m2: (p1 + 1) * m2]
            for x in range(n2):
                dst[pad + x] = np.float32(src[x] == solid_label)
            for x in range(pad):
                dst[x] = dst[pad]
                dst[pad + n2 + x] = dst[pad + n2 - 1]
    first = np.empty((m0, plane), np.float32)
    for p0 in range(m0):  # axis 0: whole planes (the padded ones clamp into the volume)
        q = p0 - pad
        _pass5(indicator[min(max(q - 2, 0), n0 - 1)], indicator[min(max(q - 1, 0), n0 - 1)],
               indicator[min(max(q, 0), n0 - 1)], indicator[min(max(q + 1, 0), n0 - 1)],
               indicator[min(max(q + 2, 0), n0 - 1)], w0, w1, w2, first[p0], plane)
    first3 = first.reshape((m0, m1, m2))
    second = np.empty((m0, m1, m2), np.float32)
    for p0 in range(m0):  # axis 1: whole rows
        f = first3[p0]
        for p1 in range(m1):
            _pass5(f[max(p1 - 2, 0)], f[max(p1 - 1, 0)], f[p1], f[min(p1 + 1, m1 - 1)],
                   f[min(p1 + 2, m1 - 1)], w0, w1, w2, second[p0, p1], m2)
    out = first3  # axis 2, into the first pass's buffer
    line = np.empty(m2 + 4, np.float32)
    for p0 in range(m0):
        for p1 in range(m1):
            src = second[p0, p1]  # the row between two replicated ends, without clamps
            line[0] = src[0]
            line[1] = src[0]
            for x in range(m2):
                line[x + 2] = src[x]
            line[m2 + 2] = src[m2 - 1]
            line[m2 + 3] = src[m2 - 1]
            _pass5(line[0:], line[1:], line[2:], line[3:], line[4:], w0, w1, w2, out[p0, p1],
                   m2)
    return out


def smoothed_indicator(volume: np.ndarray, solid_label: int, pad: int, sigma_voxels: float,
                       truncate: float) -> np.ndarray:
    """The padded, smoothed indicator of `solid_label` (float32; see _smoothed_indicator5)."""
    taps = gaussian_taps(sigma_voxels, truncate)
    if len(taps) != 3:
        raise ValueError(f"the smoothing pass has 5 taps (radius 2), sigma {sigma_voxels} and "
                         f"truncate {truncate} give radius {len(taps) - 1}")
    return _smoothed_indicator5(volume, solid_label, pad, taps)
