"""Interface areas at the box boundary: closed-form areas of shapes cut by the box, and additivity.

The box of an n-voxel volume is [-0.5, n - 0.5] in voxel-centre coordinates. A surface that
crosses the box face must be counted up to that face (not up to the first voxel centre, half a
voxel short), and the areas of the parts of a cut volume must add up to the area of the whole.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.metrics import surface_area
from kernels.metrics.surface_area import interface_areas_voxels
from kernels.metrics.volume import specific_surface_areas
from kernels.structure.procedural import AM, CBD, PORE, ManufacturingParams, generate_structure

N = 32


@pytest.fixture(autouse=True, params=surface_area.METHODS)
def method(request, monkeypatch) -> str:
    """Every closed-form and additivity test runs on both paths: skimage's marching cubes and
    the fused pass with its built case table."""
    monkeypatch.setattr(surface_area, "DEFAULT_METHOD", request.param)
    return request.param


def am_pore_area(volume: np.ndarray) -> float:
    """AM surface area in voxel² (all of it faces pore or CBD)."""
    areas = interface_areas_voxels(volume, solid_label=AM, other_labels=(PORE, CBD))
    return areas[PORE] + areas[CBD]


def ball(centre, radius: float, shape=(N, N, N)) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    inside = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
    return np.where(inside, AM, PORE).astype(np.uint8)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flat_slab_through_the_whole_box_has_the_cross_section_area(axis: int) -> None:
    volume = np.full((N, N, N), PORE, np.uint8)
    np.moveaxis(volume, axis, 0)[:13] = AM  # the interface is the plane at 12.5
    assert am_pore_area(volume) == pytest.approx(N * N, rel=0.02)
    # in 1/um as the metrics report it, for 0.5 um voxels
    ssa, _ = specific_surface_areas(volume, voxel_um=0.5)
    assert ssa["am_pore"] == pytest.approx(N * N * 0.25 / (N**3 * 0.125), rel=0.02)


def test_cylinder_through_the_box_has_its_lateral_area() -> None:
    radius = 9.0
    y, x = np.ogrid[:N, :N]
    disc = (y - 15.7) ** 2 + (x - 16.2) ** 2 <= radius**2
    volume = np.broadcast_to(np.where(disc, AM, PORE)[None], (N, N, N)).astype(np.uint8)
    assert am_pore_area(volume) == pytest.approx(2 * math.pi * radius * N, rel=0.05)


def test_sphere_centred_on_a_box_face_counts_its_inner_half() -> None:
    radius = 10.0
    volume = ball((-0.5, 15.6, 16.3), radius)
    assert am_pore_area(volume) == pytest.approx(2 * math.pi * radius**2, rel=0.05)


def test_sphere_centred_on_a_box_corner_counts_its_inner_eighth() -> None:
    radius = 14.0
    volume = ball((-0.5, -0.5, -0.5), radius)
    assert am_pore_area(volume) == pytest.approx(4 * math.pi * radius**2 / 8, rel=0.05)


@pytest.mark.parametrize("seed", [0, 1])
def test_areas_of_the_eight_octants_add_up_to_the_whole(seed: int) -> None:
    """Additivity over sub-volumes, the property a boundary bias breaks (and sub-volume
    studies rely on): each phase's area, on a 64³ procedural electrode cut into 32³ octants.

    What is left (-1.0 to -1.1 % here) is the surface lying in the cut planes themselves: an
    octant cannot see the voxel beyond its face, so no method on the octant alone recovers it.
    """
    n = 2 * N
    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), n, 1.0, seed=seed)
    whole = interface_areas_voxels(volume, solid_label=AM, other_labels=(PORE, CBD))
    h = n // 2
    parts = {PORE: 0.0, CBD: 0.0}
    for i in (0, h):
        for j in (0, h):
            for k in (0, h):
                octant = np.ascontiguousarray(volume[i:i + h, j:j + h, k:k + h])
                for label, area in interface_areas_voxels(octant, AM, (PORE, CBD)).items():
                    parts[label] += area
    total_whole = whole[PORE] + whole[CBD]
    assert parts[PORE] + parts[CBD] == pytest.approx(total_whole, rel=0.02)
    assert parts[CBD] == pytest.approx(whole[CBD], rel=0.03)


def test_a_volume_filled_with_one_phase_has_no_interface() -> None:
    full = np.full((8, 8, 8), AM, np.uint8)
    assert am_pore_area(full) == 0.0  # the box faces are not surfaces
    assert am_pore_area(np.full((8, 8, 8), PORE, np.uint8)) == 0.0


# --- the fused per-triangle pass (volumes of FUSED_MIN_VOXELS and more) ---------------------


@pytest.mark.parametrize("shape,seed", [((64, 64, 64), 0), ((80, 64, 72), 1)])
def test_the_fused_pass_gives_the_numpy_paths_areas(shape, seed) -> None:
    """Same clip pieces, centroids and outward probes in the same float32 arithmetic: the
    areas of every phase agree to 1e-6 (they differ only by summation order), on a procedural
    electrode cut into a box that is not a cube (axis order and box clipping both matter)."""
    from kernels.metrics import _surface_kernels  # noqa: F401  (the fused pass exists)

    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 80, 0.5, seed=seed)
    volume = np.ascontiguousarray(volume[: shape[0], : shape[1], : shape[2]])
    assert volume.size >= surface_area.FUSED_MIN_VOXELS
    fused = interface_areas_voxels(volume, AM, (PORE, CBD), method="skimage")
    try:
        surface_area.USE_FUSED = False
        plain = interface_areas_voxels(volume, AM, (PORE, CBD), method="skimage")
    finally:
        surface_area.USE_FUSED = True
    assert plain[PORE] > 0 and plain[CBD] > 0
    for label in (PORE, CBD):
        assert fused[label] == pytest.approx(plain[label], rel=1e-6)
    # labels held in a wider integer type (and labels beyond a byte) take the numpy path
    wide = volume.astype(np.int64)
    wide[wide == CBD] = 300
    assert interface_areas_voxels(wide, AM, (PORE, 300), method="skimage")[300] == \
        pytest.approx(plain[CBD], rel=1e-6)


@pytest.mark.parametrize("radius,centre", [(4.5, (31.7, 32.2, 31.4)), (9.0, (32.3, 31.6, 32.1)),
                                           (17.0, (31.2, 32.4, 31.9)), (26.0, (31.5, 31.5, 32.3))])
def test_spheres_in_a_large_box_have_four_pi_r_squared(radius, centre) -> None:
    """The closed form 4 pi r^2 within 5 % through the fused pass (a 64³ box), at sub-voxel
    centres; and a sphere centred on a box corner counts its inner eighth (the clipped
    triangles)."""
    n = 64
    assert am_pore_area(ball(centre, radius, (n, n, n))) == pytest.approx(
        4 * math.pi * radius**2, rel=0.05)
    corner = ball((-0.5, -0.5, -0.5), 2 * radius, (n, n, n))
    assert am_pore_area(corner) == pytest.approx(4 * math.pi * (2 * radius) ** 2 / 8, rel=0.05)


def test_the_fast_clip_gives_the_first_clips_pieces_and_areas_to_the_bit() -> None:
    """_surface_kernels' clip without allocations, skipping the planes that keep a triangle
    whole (FAST_CLIP), against the first version: the same pieces per plane and the same sums
    per label, on triangles around the box faces and corners, with vertices exactly on the
    planes (random labels, so each piece's outward probe matters)."""
    from kernels.metrics import _surface_kernels as sk

    rng = np.random.default_rng(3)
    n = 12
    volume = rng.integers(0, 3, (n, n, n)).astype(np.uint8)
    upper = np.full(3, np.float32(n - 0.5))
    lower = np.float32(-0.5)
    steps = np.asarray(surface_area._OUTWARD_STEPS_VOXELS, np.float32)
    anchors = np.array([-0.5, n - 0.5, 5.0], np.float32)
    for trial in range(3000):
        tri = rng.uniform(-3.0, 3.0, (3, 3)).astype(np.float32)
        tri += anchors[rng.integers(0, 3, 3)]  # near a face, an edge, a corner or inside
        if trial % 3 == 0:  # a vertex exactly on a plane
            tri[rng.integers(0, 3), rng.integers(0, 3)] = anchors[rng.integers(0, 2)]
        normal = rng.normal(size=3).astype(np.float32)
        normal /= np.float32(np.linalg.norm(normal))
        sums = []
        for fast in (False, True):
            buf_a = np.zeros((sk._MAX_PIECES, 3, 3), np.float32)
            buf_b = np.zeros((sk._MAX_PIECES, 3, 3), np.float32)
            buf_a[0] = tri
            out = np.zeros(256, np.float64)
            sk._add_clipped(buf_a, buf_b, lower, upper, normal, volume, AM, PORE, steps, out,
                            fast)
            sums.append(out)
        assert np.array_equal(sums[0], sums[1]), trial
        for axis in range(3):
            for bound, below in ((lower, False), (upper[axis], True)):
                first = np.zeros((4, 3, 3), np.float32)
                second = np.zeros((4, 3, 3), np.float32)
                n_first = sk._clip_plane(tri[None].copy(), 1, first, axis, bound, below)
                n_second = sk._clip_plane_scalar(tri[None].copy(), 1, second, axis, bound, below)
                assert n_first == n_second
                assert np.array_equal(first[:n_first], second[:n_second])
