"""The marching-cubes case table, built from the cube's geometry rather than copied from a paper.

Why built: the fused surface pass (kernels.metrics._marching_kernels) needs, for each of the 256
inside/outside patterns of a cell's 8 corners, the cell's triangles as triples of crossed edges.
Building the table from first principles keeps its rules visible and testable:

1. the crossed edges are those whose two corners differ (inside = value above the level);
2. on each of the 6 faces the crossed edges are paired into segments. A face with 2 crossings has
   one segment. A face with 4 (corners alternate inside/outside: ambiguous) is resolved at run
   time by the asymptotic decider: the bilinear interpolant's saddle is inside iff
   g_a g_c > g_b g_d (g = value - level, a, c the inside diagonal), and then the inside corners
   are joined through the face (the segments cut off the two outside corners), otherwise each
   inside corner is cut off. The test reads only the face's 4 values, with products that do not
   depend on which cell evaluates it, so the two cells sharing the face agree and the surface
   is closed. The table holds both resolutions of every ambiguous face: a case with m ambiguous
   faces has 2^m configurations (bit k: the k-th ambiguous face joins its inside corners);
3. each crossed edge lies on 2 faces, so it ends exactly 2 segments: the segments chain into
   closed loops on the cube's surface;
4. each loop (L crossings) is split into L - 2 triangles: of all splits, the one of largest area
   with the points at the edge midpoints, never one with a triangle lying flat in a cube face
   (a fan could put one there); measured closest to Lewiner's tiling (see _triangulate).
   The interior ambiguity (whether two loops should be joined by a tunnel through the cell,
   which Lewiner's table also resolves) is not resolved: loops stay separate, which keeps the
   surface closed but may differ from Lewiner's topology in those rare cells.

Corner c has offset (c & 1, c >> 1 & 1, c >> 2 & 1) along axes (0, 1, 2). Edge 4 d + r runs
along axis d from the corner with bit d clear; r numbers the other two bits in axis order.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

N_CORNERS = 8
N_EDGES = 12
N_FACES = 6
MAX_TRIANGLES = 12  # a loop through all 12 crossings gives 10; room to spare for the layout


def _other_axes(axis: int) -> tuple[int, int]:
    return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]


def edge_corners() -> np.ndarray:
    """(12, 2): the corner with the edge's axis bit clear, then the one with it set."""
    out = np.empty((N_EDGES, 2), np.int64)
    for axis in range(3):
        p, q = _other_axes(axis)
        for r in range(4):
            low = ((r & 1) << p) | ((r >> 1 & 1) << q)
            out[4 * axis + r] = (low, low | 1 << axis)
    return out


def _edge_id(c0: int, c1: int) -> int:
    """The edge between two corners that differ in one bit."""
    diff = c0 ^ c1
    axis = diff.bit_length() - 1
    low = min(c0, c1)
    p, q = _other_axes(axis)
    return 4 * axis + ((low >> p) & 1) + 2 * ((low >> q) & 1)


def face_corner_cycles() -> np.ndarray:
    """(6, 4): each face's corners in cyclic order (face 2 d + s: bit d equal to s)."""
    out = np.empty((N_FACES, 4), np.int64)
    for axis in range(3):
        p, q = _other_axes(axis)
        for side in range(2):
            base = side << axis
            out[2 * axis + side] = [base, base | 1 << p, base | 1 << p | 1 << q, base | 1 << q]
    return out


class CaseTable(NamedTuple):
    """The table in arrays a numba kernel reads (see the module docstring)."""

    edge_corners: np.ndarray  # (12, 2) int64
    face_corners: np.ndarray  # (6, 4) int64, cyclic
    n_ambiguous: np.ndarray  # (256,) int64: ambiguous faces of the case
    ambiguous_faces: np.ndarray  # (256, 6) int64: their ids, in face order
    config_offset: np.ndarray  # (256,) int64: first configuration of the case
    n_triangles: np.ndarray  # (n_configs,) int64
    triangles: np.ndarray  # (n_configs, MAX_TRIANGLES, 3) int64: crossed-edge ids
    edge_uses: np.ndarray  # (n_configs, 12) int64: triangles using each edge
    loops: tuple[tuple[tuple[int, ...], ...], ...]  # per configuration, for the tests


def _face_segments(case: int, face: int, cycle: np.ndarray, join_inside: bool
                   ) -> list[tuple[int, int]]:
    """The face's segments as pairs of crossed edges (join_inside: the ambiguous face's rule)."""
    inside = [(case >> c) & 1 for c in cycle]
    sides = [_edge_id(int(cycle[v]), int(cycle[(v + 1) % 4])) for v in range(4)]
    crossed = [v for v in range(4) if inside[v] != inside[(v + 1) % 4]]
    if len(crossed) == 2:
        return [(sides[crossed[0]], sides[crossed[1]])]
    if len(crossed) == 0:
        return []
    # ambiguous: cut off each corner of one diagonal; corner v sits between sides v - 1 and v
    cut_inside_corners = not join_inside
    out = []
    for v in range(4):
        if bool(inside[v]) == cut_inside_corners:
            out.append((sides[(v - 1) % 4], sides[v]))
    return out


def _chain_loops(segments: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Chain segments (each edge in exactly two) into closed loops of edge ids."""
    neighbours: dict[int, list[int]] = {}
    for a, b in segments:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    for edge, ends in neighbours.items():
        if len(ends) != 2:
            raise RuntimeError(f"edge {edge} ends {len(ends)} segments, not 2: table is broken")
    loops, seen = [], set()
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, previous, current = [start], None, start
        seen.add(start)
        while True:
            a, b = neighbours[current]
            nxt = b if a == previous else a
            if nxt == start:
                break
            loop.append(nxt)
            seen.add(nxt)
            previous, current = current, nxt
        loops.append(tuple(loop))
    return loops


def _edge_faces() -> list[set[int]]:
    """The two faces each edge lies on."""
    corners = edge_corners()
    cycles = face_corner_cycles()
    return [{f for f in range(N_FACES) if set(corners[e]) <= set(cycles[f].tolist())}
            for e in range(N_EDGES)]


_FLAT_PENALTY = 1e3  # a triangle lying in a cube face: the neighbour cell owns that plane


@lru_cache(maxsize=1)
def _split_weights() -> list[list[list[float]]]:
    """weight[a][b][c] of the triangle on edges a, b, c: minus its area with the points at the
    edge midpoints, plus _FLAT_PENALTY if it lies in a cube face (one table: cheap to build)."""
    corners = edge_corners()
    offsets = np.array([[(c >> d) & 1 for d in range(3)] for c in range(N_CORNERS)], float)
    mid = 0.5 * (offsets[corners[:, 0]] + offsets[corners[:, 1]])
    a, b, c = np.meshgrid(np.arange(N_EDGES), np.arange(N_EDGES), np.arange(N_EDGES),
                          indexing="ij")
    area = 0.5 * np.linalg.norm(np.cross(mid[b] - mid[a], mid[c] - mid[a]), axis=-1)
    faces = _edge_faces()
    flat = np.array([[[bool(faces[i] & faces[j] & faces[k]) for k in range(N_EDGES)]
                      for j in range(N_EDGES)] for i in range(N_EDGES)])
    return (-area + _FLAT_PENALTY * flat).tolist()


def _triangulate(loop: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """The loop's triangulation of largest area with its points at the edge midpoints, never
    with a triangle lying in a cube face where another exists (dynamic programme over the
    polygon, O(L^3) for L <= 12). Largest, because that is the split closest to Lewiner's
    tiling (today's path) on electrodes: a fan was -0.3 % on the total area, the least-area
    split -0.6 %, this one +0.07 % (64³ at 1 um; docs/solvers.md)."""
    weight = _split_weights()
    n = len(loop)
    cost = [[0.0] * n for _ in range(n)]
    split = [[-1] * n for _ in range(n)]
    for gap in range(2, n):
        for a in range(n - gap):
            b = a + gap
            best, arg = math.inf, -1
            for m in range(a + 1, b):
                value = cost[a][m] + cost[m][b] + weight[loop[a]][loop[m]][loop[b]]
                if value < best - 1e-12:
                    best, arg = value, m
            cost[a][b], split[a][b] = best, arg
    out: list[tuple[int, int, int]] = []

    def emit(a: int, b: int) -> None:
        if b - a < 2:
            return
        m = split[a][b]
        out.append((loop[a], loop[m], loop[b]))
        emit(a, m)
        emit(m, b)

    emit(0, n - 1)
    return out


@lru_cache(maxsize=1)
def build_case_table() -> CaseTable:
    """All 256 cases with every resolution of their ambiguous faces (built once per process)."""
    cycles = face_corner_cycles()
    n_ambiguous = np.zeros(256, np.int64)
    ambiguous_faces = np.full((256, N_FACES), -1, np.int64)
    config_offset = np.zeros(256, np.int64)
    tri_rows: list[np.ndarray] = []
    counts: list[int] = []
    loops_all: list[tuple[tuple[int, ...], ...]] = []
    for case in range(256):
        amb = []
        for face in range(N_FACES):
            inside = [(case >> c) & 1 for c in cycles[face]]
            if inside[0] == inside[2] and inside[1] == inside[3] and inside[0] != inside[1]:
                amb.append(face)
        n_ambiguous[case] = len(amb)
        ambiguous_faces[case, : len(amb)] = amb
        config_offset[case] = len(counts)
        for bits in range(1 << len(amb)):
            segments: list[tuple[int, int]] = []
            for face in range(N_FACES):
                join = face in amb and bool(bits >> amb.index(face) & 1)
                segments += _face_segments(case, face, cycles[face], join)
            loops = _chain_loops(segments)
            row = np.full((MAX_TRIANGLES, 3), -1, np.int64)
            n = 0
            for loop in loops:
                for tri in _triangulate(loop):
                    row[n] = tri
                    n += 1
            tri_rows.append(row)
            counts.append(n)
            loops_all.append(tuple(loops))
    triangles = np.stack(tri_rows)
    edge_uses = np.zeros((len(counts), N_EDGES), np.int64)
    for cfg, n in enumerate(counts):
        for e in triangles[cfg, :n].ravel():
            edge_uses[cfg, e] += 1
    return CaseTable(edge_corners(), cycles, n_ambiguous, ambiguous_faces, config_offset,
                     np.asarray(counts, np.int64), triangles, edge_uses, tuple(loops_all))
