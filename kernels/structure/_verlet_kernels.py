"""Numba loops of the Verlet-list relaxation (kernels.structure._verlet): the list build over a
periodic cell list and one sweep of pushes. Compiled on first use, cached on disk."""

from __future__ import annotations

import math

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False)


@_jit
def _within(centres, radii, box, inv_box, a, b, cut_factor, skin):
    """Whether the minimum-image distance of a and b is below cut (r_a + r_b) + skin."""
    dist2 = 0.0
    for ax in range(3):
        d = centres[b, ax] - centres[a, ax]
        d -= box[ax] * np.rint(d * inv_box[ax])
        dist2 += d * d
    limit = cut_factor * (radii[a] + radii[b]) + skin
    return dist2 < limit * limit


@_jit
def _visit(centres, radii, box, cut_factor, skin, out_i, out_j):
    """Write the listed pairs i < j into out_i, out_j; their number, or -1 if they do not fit."""
    n = centres.shape[0]
    r_max = 0.0
    for p in range(n):
        r_max = max(r_max, radii[p])
    reach = cut_factor * 2.0 * r_max + skin
    cells = np.empty(3, np.int64)
    for ax in range(3):
        cells[ax] = max(1, int(math.floor(box[ax] / reach)))
    inv_box = 1.0 / box
    capacity = out_i.shape[0]
    count = 0
    if cells[0] < 3 or cells[1] < 3 or cells[2] < 3:  # small box: every pair
        for a in range(n):
            for b in range(a + 1, n):
                if _within(centres, radii, box, inv_box, a, b, cut_factor, skin):
                    if count == capacity:
                        return -1
                    out_i[count] = a
                    out_j[count] = b
                    count += 1
        return count
    n_cells = cells[0] * cells[1] * cells[2]
    home = np.empty((n, 3), np.int64)
    key = np.empty(n, np.int64)
    for p in range(n):
        for ax in range(3):
            home[p, ax] = min(int(centres[p, ax] / box[ax] * cells[ax]), cells[ax] - 1)
        key[p] = (home[p, 0] * cells[1] + home[p, 1]) * cells[2] + home[p, 2]
    start = np.zeros(n_cells + 1, np.int64)
    for p in range(n):
        start[key[p] + 1] += 1
    for c in range(n_cells):
        start[c + 1] += start[c]
    slot = start[:-1].copy()
    members = np.empty(n, np.int64)
    for p in range(n):  # particles in index order inside each cell
        members[slot[key[p]]] = p
        slot[key[p]] += 1
    for a in range(n):
        for d0 in range(-1, 2):
            c0 = (home[a, 0] + d0) % cells[0]
            for d1 in range(-1, 2):
                c1 = (home[a, 1] + d1) % cells[1]
                for d2 in range(-1, 2):
                    c = (c0 * cells[1] + c1) * cells[2] + (home[a, 2] + d2) % cells[2]
                    for m in range(start[c], start[c + 1]):
                        b = members[m]
                        if b > a and _within(centres, radii, box, inv_box, a, b, cut_factor, skin):
                            if count == capacity:
                                return -1
                            out_i[count] = a
                            out_j[count] = b
                            count += 1
    return count


@_jit
def listed_pairs(centres, radii, box, cut_factor, skin):
    """Pairs i < j whose centres are closer than cut_factor (r_i + r_j) + skin (periodic)."""
    capacity = 16 * centres.shape[0] + 16
    while True:
        out_i = np.empty(capacity, np.int64)
        out_j = np.empty(capacity, np.int64)
        count = _visit(centres, radii, box, cut_factor, skin, out_i, out_j)
        if count >= 0:
            return out_i[:count].copy(), out_j[:count].copy()
        capacity *= 2


@_jit
def sweep(centres, radii, box, pair_i, pair_j, push_factor, allowed_factor, moves):
    """One sweep over the listed pairs: moves (n, 3) pushes every pair closer than
    push_factor (r_i + r_j) half the shortfall each way; True if any pair is closer than
    allowed_factor (r_i + r_j) (else the moves are not to be applied)."""
    moves[:] = 0.0
    violated = False
    delta = np.empty(3)
    for m in range(pair_i.shape[0]):
        a = pair_i[m]
        b = pair_j[m]
        dist2 = 0.0
        for ax in range(3):
            d = centres[b, ax] - centres[a, ax]
            d -= box[ax] * np.rint(d / box[ax])
            delta[ax] = d
            dist2 += d * d
        dist = math.sqrt(dist2)
        sum_r = radii[a] + radii[b]
        if dist < allowed_factor * sum_r:
            violated = True
        target = push_factor * sum_r
        if dist < target:
            scale = 0.5 * (target - dist) / max(dist, 1e-9)
            for ax in range(3):
                moves[a, ax] -= scale * delta[ax]
                moves[b, ax] += scale * delta[ax]
    return violated
