"""The AM particle size (kernels.metrics.particle_size) against spheres of known size, and its
fast distance transform against scipy's, value for value."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from kernels.metrics import particle_size
from kernels.metrics.particle_size import am_particle_radius_um, distance_to_background
from kernels.structure.procedural import ManufacturingParams, generate_structure


def _spheres(n: int, centres, radius: float) -> np.ndarray:
    z, y, x = np.ogrid[:n, :n, :n]
    volume = np.zeros((n, n, n), np.uint8)
    for c in centres:
        volume[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius**2] = 1
    return volume


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("radius", [5.0, 7.0, 10.0])
def test_separate_spheres_have_their_radius(radius: float, stride: int) -> None:
    """Eight separate spheres at random sub-voxel centres in a 64³ box: 3V/S = r within 5 %."""
    rng = np.random.default_rng(int(radius))
    centres = [(a + rng.random(), b + rng.random(), c + rng.random())
               for a, b, c in itertools.product((16, 48), repeat=3)]
    volume = _spheres(64, centres, radius)
    assert am_particle_radius_um(volume, 0.5, watershed_stride=stride) == pytest.approx(
        0.5 * radius, rel=0.05)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("radius", [6.0, 9.0])
def test_two_fused_spheres_are_two_truncated_particles(radius: float, stride: int) -> None:
    """Two spheres whose centres are 1.8 r apart: the watershed splits them at the neck and each
    is a sphere less a cap of height 0.1 r plus the contact disc, whose 3V/S has a closed form."""
    d = 1.8 * radius
    centres = [(20.3, 32.2, 32.1), (20.3 + d, 32.2, 32.1)]
    volume = _spheres(64, centres, radius)
    h = radius - d / 2
    v = 4 / 3 * math.pi * radius**3 - math.pi * h**2 * (3 * radius - h) / 3
    s = 4 * math.pi * radius**2 - 2 * math.pi * radius * h + math.pi * (radius**2 - (d / 2) ** 2)
    assert am_particle_radius_um(volume, 1.0, watershed_stride=stride) == pytest.approx(
        3 * v / s, rel=0.05)


@pytest.mark.parametrize("shape", [(64, 64, 64), (70, 64, 66), (5, 7, 9), (30, 1, 4)])
def test_the_fast_distance_transform_is_scipys_value_for_value(shape) -> None:
    """The numba transform (volumes of FUSED_MIN_VOXELS and more) and scipy's give the same
    float64 distances, on procedural AM and on random masks (lines without background)."""
    from kernels.metrics import _particle_kernels

    if shape[0] == 64:
        volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 64, 0.5, seed=3)
        am = volume == 1
    else:
        am = np.random.default_rng(sum(shape)).random(shape) < 0.85
        am.flat[0] = False
    np.testing.assert_array_equal(_particle_kernels.distance_to_background(am),
                                  ndimage.distance_transform_edt(am))
    if am.size >= particle_size.FUSED_MIN_VOXELS:
        np.testing.assert_array_equal(distance_to_background(am),
                                      ndimage.distance_transform_edt(am))


@pytest.mark.parametrize("stride", [0, 3, True, 2.0])
def test_unknown_watershed_strides_are_refused(stride) -> None:
    with pytest.raises(ValueError, match="watershed_stride"):
        am_particle_radius_um(_spheres(16, [(8, 8, 8)], 4.0), 1.0, watershed_stride=stride)


def test_the_block_split_stays_near_the_voxel_split_on_an_electrode() -> None:
    """On a procedural electrode (96³, 0.4 um voxels) the opt-in 2×2×2 split moves the radius by
    at most 2 % (measured -1.2 % to +1.1 % at 128³ across the parameter corners)."""
    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 96, 0.4, seed=1)
    fine = am_particle_radius_um(volume, 0.4)
    assert am_particle_radius_um(volume, 0.4, watershed_stride=2) == pytest.approx(fine,
                                                                                    rel=0.02)


def test_characterise_volume_takes_the_block_split_and_refuses_others_before_solving() -> None:
    from kernels.metrics.volume import characterise_volume

    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 24, 1.0, seed=2)
    blocks = characterise_volume(volume, 1.0, watershed_stride=2).am_particle_radius_um
    assert blocks == pytest.approx(am_particle_radius_um(volume, 1.0, watershed_stride=2),
                                   rel=1e-9)
    with pytest.raises(ValueError, match="watershed_stride"):
        characterise_volume(volume, 1.0, watershed_stride=4)


def _seeded(am: np.ndarray, distance: np.ndarray | None = None):
    """(distance, markers) as particle_size._split_particles makes them at stride 1."""
    from skimage.feature import peak_local_max

    if distance is None:
        distance = distance_to_background(am)
    spacing = max(2, int(round(particle_size.SEED_SPACING_FRACTION
                               * np.percentile(distance[am], 99))))
    peaks = peak_local_max(distance, min_distance=spacing, labels=am.astype(np.int32),
                           exclude_border=False)
    markers = np.zeros(am.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return distance, markers


def _skimage_labels(distance, markers, am):
    from skimage.segmentation import watershed

    return watershed(-distance, markers, mask=am)


@pytest.mark.parametrize(("params", "size", "voxel_um", "calendering"), [
    ((0.9, 0.35, 0.5), 96, 0.4, "flatten"),
    ((0.9, 0.35, 0.5), 64, 1.0, "flatten"),
    ((0.8, 0.55, 0.0), 64, 0.4, "flatten"),
    ((0.98, 0.2, 1.0), 64, 0.4, "flatten"),
    ((0.8, 0.2, 1.0), 80, 0.5, "rearrange"),
    ((0.98, 0.55, 0.0), 64, 0.7, "rearrange"),
])
def test_the_flood_gives_skimages_watershed_labels_on_electrodes(params, size, voxel_um,
                                                                 calendering) -> None:
    """The numba flood and skimage's watershed give the same labels, voxel for voxel, on
    procedural electrodes at recipe corners, voxel sizes and both calendering models. Their
    seeds share distances, so the flood is the heap replica; the plain FIFO per distance would
    differ (skimage pops equal-valued seeds in its heap's layout order)."""
    from kernels.metrics import _watershed_kernels as W

    volume = generate_structure(ManufacturingParams(*params), size, voxel_um, seed=size,
                                calendering=calendering)
    am = volume == 1
    distance, markers = _seeded(am)
    reference = _skimage_labels(distance, markers, am)
    status, method, labels = W.flood_labels(distance, am, markers)
    assert (status, method) == (W.FLOODED, W.HEAP)
    assert labels.dtype == reference.dtype
    assert np.array_equal(labels, reference)


def test_a_fifo_per_distance_alone_is_not_skimages_order_when_seeds_tie() -> None:
    """Why the heap replica: on an electrode whose seeds share distances, one FIFO per
    distance (seeds in raveled order) labels some voxels differently from skimage."""
    from kernels.metrics import _watershed_kernels as W

    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 64, 1.0, seed=64)
    am = volume == 1
    distance, markers = _seeded(am)
    status, _, fifo = W.flood_labels(distance, am, markers, method=W.BUCKETS)
    assert status == W.FLOODED
    assert not np.array_equal(fifo, _skimage_labels(distance, markers, am))


def _lattice_of_spheres(n: int, radius: float, pitch: int, offset: int) -> np.ndarray:
    """Equal spheres at integer centres `pitch` apart (fused when pitch < 2 r): distances tie
    exactly across spheres and across each neck's mirror plane."""
    centres = [(a, b, c) for a, b, c in itertools.product(range(offset, n, pitch), repeat=3)]
    return _spheres(n, centres, radius) == 1


@pytest.mark.parametrize(("radius", "pitch", "offset"), [
    (6.0, 10, 8), (7.5, 12, 6), (5.0, 9, 0), (8.0, 13, 3)])
def test_the_flood_gives_skimages_labels_on_tied_fused_spheres(radius, pitch, offset) -> None:
    """Fused equal spheres on a lattice (every seed ties with every other, necks are exact
    mirror planes), some cut by the box faces (offset 0: centres on the faces)."""
    from kernels.metrics import _watershed_kernels as W

    am = _lattice_of_spheres(64, radius, pitch, offset)
    distance, markers = _seeded(am)
    assert len(np.unique(distance[markers > 0])) < np.count_nonzero(markers)  # tied seeds
    status, method, labels = W.flood_labels(distance, am, markers)
    assert (status, method) == (W.FLOODED, W.HEAP)
    assert np.array_equal(labels, _skimage_labels(distance, markers, am))


def test_the_fifo_flood_gives_skimages_labels_when_no_seeds_tie() -> None:
    """Fused spheres of distinct radii touching the box faces: no two seeds share a distance,
    so the O(1) FIFO per distance is the path taken, and it is skimage's labels."""
    from kernels.metrics import _watershed_kernels as W

    z, y, x = np.ogrid[:64, :64, :64]
    am = np.zeros((64, 64, 64), bool)
    spheres = [((0, 10, 10), 9.0), ((12, 22, 12), 8.0), ((30, 30, 40), 12.0),
               ((50, 50, 63), 10.0), ((40, 12, 52), 7.0), ((63, 63, 0), 11.0)]
    for (cz, cy, cx), r in spheres:
        am |= (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r**2
    am[:, :, 0] |= am[:, :, 1]  # an AM face flush with the box
    distance, markers = _seeded(am)
    values = distance[markers > 0]
    assert len(np.unique(values)) == len(values) > 3
    status, method, labels = W.flood_labels(distance, am, markers)
    assert (status, method) == (W.FLOODED, W.BUCKETS)
    assert np.array_equal(labels, _skimage_labels(distance, markers, am))
    status, _, heap = W.flood_labels(distance, am, markers, method=W.HEAP)
    assert status == W.FLOODED and np.array_equal(heap, labels)


def test_the_flood_on_degenerate_volumes_is_skimages() -> None:
    """One AM voxel with its seed; a component without a seed (stays 0); a seed outside the
    mask (ignored, as skimage multiplies the markers by the mask); no seeds at all; an AM
    volume that fills all but one voxel of the box."""
    from kernels.metrics import _watershed_kernels as W

    am = np.zeros((7, 5, 6), bool)
    am[3, 2, 2] = True
    am[0:2, 0:5, 4:6] = True  # seedless component
    markers = np.zeros(am.shape, np.int32)
    markers[3, 2, 2] = 4
    markers[6, 4, 0] = 9  # outside the mask
    cases = [(am, markers), (am, np.zeros_like(markers))]
    full = np.ones((9, 8, 7), bool)
    full[0, 0, 0] = False
    full_markers = np.zeros(full.shape, np.int32)
    full_markers[4, 4, 3] = 1
    full_markers[8, 7, 6] = 2
    cases.append((full, full_markers))
    for mask, seeds in cases:
        distance = ndimage.distance_transform_edt(mask)
        status, _, labels = W.flood_labels(distance, mask, seeds)
        assert status == W.FLOODED
        assert np.array_equal(labels, _skimage_labels(distance, seeds, mask))


def test_distances_that_are_not_roots_of_integers_go_to_skimage() -> None:
    """A scaled distance is no longer sqrt of an integer: the flood says so, and the split
    falls back to skimage's watershed (the labels are still skimage's)."""
    from kernels.metrics import _watershed_kernels as W

    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 64, 1.0, seed=5)
    am = volume == 1
    distance, markers = _seeded(am)
    scaled = distance * 1.1
    assert W.flood_labels(scaled, am, markers)[0] == W.NOT_SQRT_OF_INTEGER
    spacing = max(2, int(round(particle_size.SEED_SPACING_FRACTION
                               * np.percentile(scaled[am], 99))))
    _, scaled_markers = _seeded(am, scaled)
    assert np.array_equal(particle_size._split_particles(am, scaled, spacing, 1),
                          _skimage_labels(scaled, scaled_markers, am))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("params", "voxel_um", "calendering"), [
    ((0.9, 0.35, 0.5), 0.4, "flatten"), ((0.8, 0.2, 1.0), 0.5, "rearrange")])
def test_the_radius_is_the_old_paths_exactly(params, voxel_um, calendering, stride,
                                             monkeypatch) -> None:
    """am_particle_radius_um with the numba kernels (distance, flood, contact faces) equals,
    not approximately, the old path's (scipy's distance, skimage's watershed, numpy faces)."""
    volume = generate_structure(ManufacturingParams(*params), 96, voxel_um, seed=7,
                                calendering=calendering)
    fast = am_particle_radius_um(volume, voxel_um, watershed_stride=stride)
    monkeypatch.setattr(particle_size, "USE_FUSED", False)
    assert fast == am_particle_radius_um(volume, voxel_um, watershed_stride=stride)


def test_the_contact_face_count_is_numpys() -> None:
    """The one-pass count against the three numpy passes, on random labels with zeros."""
    from kernels.metrics import _particle_kernels

    labels = np.random.default_rng(3).integers(0, 4, size=(70, 64, 66)).astype(np.int32)
    labels[:, :, 5] = 0
    expected = sum(
        int(np.count_nonzero((a > 0) & (b > 0) & (a != b)))
        for a, b in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:]),
                     (labels[:, :, :-1], labels[:, :, 1:])))
    assert _particle_kernels.contact_faces(labels) == expected
    assert particle_size._contact_faces(labels) == expected


def test_the_packed_heap_flood_is_the_two_array_floods_and_skimages(monkeypatch) -> None:
    """The heap flood on one array (state and bucket packed, PACKED_HEAP) against the first
    two-array version and skimage's watershed, forced to the heap: an electrode with tied
    seeds, a seedless AM component (stays 0), a seed outside the mask, a box all but full (int16
    packing), and 32768 seeds (labels beyond int16: int32 packing)."""
    from kernels.metrics import _watershed_kernels as W

    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 64, 0.7, seed=5)
    am = volume == 1
    distance, markers = _seeded(am)
    cases = [(am, distance, markers)]
    small = np.zeros((7, 5, 6), bool)
    small[2:5, 1:4, 1:4] = True
    small[0:2, 0:5, 4:6] = True  # seedless component
    seeds = np.zeros(small.shape, np.int32)
    seeds[3, 2, 2] = 4
    seeds[2, 1, 1] = 7
    seeds[6, 4, 0] = 9  # outside the mask
    cases.append((small, ndimage.distance_transform_edt(small), seeds))
    full = np.ones((9, 8, 7), bool)
    full[0, 0, 0] = False
    full_seeds = np.zeros(full.shape, np.int32)
    full_seeds[4, 4, 3] = 1
    full_seeds[8, 7, 6] = 2
    cases.append((full, ndimage.distance_transform_edt(full), full_seeds))
    # 32768 labels: more than int16 holds, so the packed flood stays on int32
    box = np.ones((64, 64, 64), bool)
    box[0, 0, 0] = False
    lattice = np.zeros(box.shape, np.int32)
    lattice[::2, ::2, ::2] = np.arange(1, 32769).reshape(32, 32, 32)
    lattice[0, 0, 0] = 0
    lattice[1, 1, 1] = 1
    cases.append((box, ndimage.distance_transform_edt(box), lattice))
    for mask, dist, seed in cases:
        reference = _skimage_labels(dist, seed, mask)
        results = []
        for packed in (False, True):
            monkeypatch.setattr(W, "PACKED_HEAP", packed)
            status, method, labels = W.flood_labels(dist, mask, seed, method=W.HEAP)
            assert (status, method) == (W.FLOODED, W.HEAP)
            results.append(labels)
        assert np.array_equal(results[0], reference)
        assert np.array_equal(results[1], reference)
