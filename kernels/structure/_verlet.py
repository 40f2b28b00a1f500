"""The relaxation of calendering="rearrange" (kernels.structure.procedural) on a Verlet list.

`procedural._relax` searches every pair within 2 r_max (a periodic k-d tree) in every sweep. At
1 µm / 128³ that is ~90 000 pairs of 4000-4500 spheres, of which a few thousand are close, and
"rearrange" needs up to ~100 sweeps there (2.1x the cost of the default "flatten"). Here the
pairs that could come within their cut-off c (r_i + r_j) are listed once, with a skin: every
pair closer than c (r_i + r_j) + skin when the list is built. Until the two largest
displacements since then sum to the skin, no pair outside the list can have come closer than
c (r_i + r_j) (each of its particles moved less than that, and the periodic minimum-image
distance obeys the triangle inequality), so the close pairs found in the list are exactly those
a fresh search would find. Then the list is rebuilt. The list build (a cell list) and the sweep
are numba loops (_verlet_kernels); the rebuild rule and the final check stay here, in numpy.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

# A displacement sum this close to the skin already triggers a rebuild: rounding in the summed
# moves (~1e-15 um) must not let a pair slip in unlisted.
_SKIN_SAFETY = 1.0 - 1e-9


def fresh_close_pairs(centres: np.ndarray, radii: np.ndarray, box_um: np.ndarray,
                      factor: float) -> np.ndarray:
    """Pairs (m, 2), i < j, sorted, closer than factor (r_i + r_j): a full k-d tree search."""
    if len(radii) < 2:
        return np.empty((0, 2), dtype=np.intp)
    tree = cKDTree(centres, boxsize=box_um)
    pairs = tree.query_pairs(factor * 2.0 * float(radii.max()), output_type="ndarray")
    if len(pairs) == 0:
        return np.empty((0, 2), dtype=np.intp)
    pairs = np.sort(pairs, axis=1)
    delta = centres[pairs[:, 1]] - centres[pairs[:, 0]]
    delta -= box_um * np.round(delta / box_um)  # minimum image
    dist = np.linalg.norm(delta, axis=1)
    close = pairs[dist < factor * (radii[pairs[:, 0]] + radii[pairs[:, 1]])]
    return close[np.lexsort((close[:, 1], close[:, 0]))]


class NeighbourList:
    """Pairs (i < j) that may come closer than cut_factor (r_i + r_j) before the next rebuild.

    Call `pairs(centres)` each sweep and `moved(moves)` with every displacement applied after.
    """

    def __init__(self, radii: np.ndarray, box_um: np.ndarray, cut_factor: float,
                 skin_um: float) -> None:
        if not skin_um > 0.0:
            raise ValueError(f"skin_um must be positive, got {skin_um!r}")
        self.radii = np.ascontiguousarray(radii, dtype=np.float64)
        self.box_um = np.ascontiguousarray(box_um, dtype=np.float64)
        self.cut_factor = float(cut_factor)
        self.skin_um = float(skin_um)
        self.builds = 0
        self._i = np.empty(0, dtype=np.int64)
        self._j = np.empty(0, dtype=np.int64)
        self._since_build = np.zeros((len(radii), 3))
        self._stale = True

    def moved(self, moves: np.ndarray) -> None:
        """Record displacements (n, 3), unwrapped, applied to the centres since the last call."""
        self._since_build += moves

    def needs_rebuild(self) -> bool:
        """True once two particles together may have closed the skin since the last build."""
        if self._stale:
            return True
        if len(self.radii) < 2:
            return False
        step = np.sqrt(np.einsum("ij,ij->i", self._since_build, self._since_build))
        top_two = np.partition(step, len(step) - 2)[-2:]
        return float(top_two.sum()) >= _SKIN_SAFETY * self.skin_um

    def pairs(self, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The listed pairs (i, j), rebuilt first where the skin may have been used up."""
        if self.needs_rebuild():
            from kernels.structure._verlet_kernels import listed_pairs

            self._i, self._j = listed_pairs(np.ascontiguousarray(centres, np.float64),
                                            self.radii, self.box_um, self.cut_factor,
                                            self.skin_um)
            self._since_build[:] = 0.0
            self._stale = False
            self.builds += 1
        return self._i, self._j


def relax_listed(centres: np.ndarray, radii: np.ndarray, box_um: np.ndarray, sweeps: int,
                 push_overlap: float, allowed_overlap: float,
                 skin_um: float) -> tuple[np.ndarray, bool, int]:
    """procedural._relax's sweeps on a Verlet list: (centres, relaxed, list builds).

    Each sweep pushes every pair closer than (1 - push_overlap) (r_i + r_j) apart to that
    distance; it stops, relaxed, when no pair is closer than (1 - allowed_overlap) (r_i + r_j),
    which a fresh full search then confirms (a miss is a RuntimeError naming the list, never a
    packing that breaks the limit).
    """
    from kernels.structure._verlet_kernels import sweep

    centres = np.ascontiguousarray(centres, dtype=np.float64)
    cut_factor = 1.0 - min(push_overlap, allowed_overlap)
    neighbours = NeighbourList(radii, box_um, cut_factor, skin_um)
    moves = np.empty_like(centres)
    for _ in range(sweeps):
        i, j = neighbours.pairs(centres)
        if not sweep(centres, neighbours.radii, neighbours.box_um, i, j, 1.0 - push_overlap,
                     1.0 - allowed_overlap, moves):
            missed = fresh_close_pairs(centres, neighbours.radii, neighbours.box_um,
                                       1.0 - allowed_overlap)
            if len(missed):
                raise RuntimeError(
                    f"the Verlet list missed {len(missed)} pairs closer than "
                    f"{1.0 - allowed_overlap:.2f} (r_i + r_j) that a fresh search finds "
                    f"(first {missed[0].tolist()}): its skin rule is broken")
            return centres, True, neighbours.builds
        centres = np.mod(centres + moves, box_um)
        neighbours.moved(moves)
    return centres, False, neighbours.builds
