"""The simulator's numba distance fields (boxes of FUSED_MIN_VOXELS and more) against its numpy
loop: the same fields and the same structures, bit for bit (campaigns rely on a seed giving the
same electrode)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.structure import procedural
from kernels.structure.procedural import ManufacturingParams, generate_structure


def _both(fn):
    """fn() with the numba loop, then with the numpy loop."""
    from kernels.structure import _procedural_kernels  # noqa: F401  (the numba loop exists)

    fused = fn()
    try:
        procedural.USE_FUSED = False
        plain = fn()
    finally:
        procedural.USE_FUSED = True
    return fused, plain


@pytest.mark.parametrize("shape", [(64, 64, 64), (70, 66, 64)])
def test_the_distance_fields_are_the_numpy_loops(shape) -> None:
    rng = np.random.default_rng(shape[0])
    voxel_um, squash = 0.7, 0.8
    box_um = np.array([shape[0] * voxel_um / squash, shape[1] * voxel_um, shape[2] * voxel_um])
    centres = rng.random((40, 3)) * box_um          # particles across the periodic faces too
    radii = rng.uniform(2.0, 7.0, 40)
    (d1, d2), (e1, e2) = _both(lambda: procedural._nearest_surface_distances(
        shape, voxel_um, squash, centres, radii, reach_um=1.5))
    np.testing.assert_array_equal(d1, e1)
    np.testing.assert_array_equal(d2, e2)
    assert (d1 <= d2).all() and (d1 < 0).any()


@pytest.mark.parametrize("params,size,voxel_um", [((0.9, 0.35, 0.5), 64, 1.0),
                                                  ((0.95, 0.3, 0.1), 80, 0.5)])
def test_structures_are_the_same_voxel_for_voxel(params, size, voxel_um) -> None:
    fused, plain = _both(lambda: generate_structure(ManufacturingParams(*params), size,
                                                    voxel_um, seed=4))
    np.testing.assert_array_equal(fused, plain)
