"""The numba watershed seeds (kernels.metrics._seed_kernels) against skimage's own
peak_local_max: the same peaks in the same order (np.array_equal), on electrodes, spheres,
tied plateaus and degenerate volumes, and skimage's answer wherever the replica says it is not
exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from kernels.metrics import _seed_kernels as S
from kernels.metrics import particle_size
from kernels.metrics.particle_size import distance_to_background
from kernels.structure.procedural import ManufacturingParams, generate_structure


def _skimage(image: np.ndarray, mask: np.ndarray, spacing: int) -> np.ndarray:
    from skimage.feature import peak_local_max

    return peak_local_max(image, min_distance=spacing, labels=mask.astype(np.int32),
                          exclude_border=False)


def _spacing(am: np.ndarray, distance: np.ndarray) -> int:
    """The seed spacing particle_size uses at stride 1."""
    return max(2, int(round(particle_size.SEED_SPACING_FRACTION
                            * np.percentile(distance[am], 99))))


def _assert_skimages(image: np.ndarray, mask: np.ndarray, spacing: int) -> np.ndarray:
    status, peaks = S.seed_peaks(image, mask, spacing)
    reference = _skimage(image, mask, spacing)
    assert status == S.EXACT
    assert peaks.dtype == reference.dtype
    assert np.array_equal(peaks, reference)
    return peaks


def _spheres(n: int, centres, radii) -> np.ndarray:
    z, y, x = np.ogrid[:n, :n, :n]
    am = np.zeros((n, n, n), bool)
    for c, r in zip(centres, radii, strict=True):
        am |= (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2
    return am


@pytest.mark.parametrize(("params", "size", "voxel_um", "calendering"), [
    ((0.9, 0.35, 0.5), 128, 0.4, "flatten"),
    ((0.9, 0.35, 0.5), 128, 1.0, "flatten"),
    ((0.8, 0.55, 0.0), 64, 0.4, "flatten"),
    ((0.98, 0.2, 1.0), 96, 1.0, "flatten"),
    ((0.8, 0.2, 1.0), 96, 0.4, "rearrange"),
    ((0.98, 0.55, 0.0), 64, 1.0, "rearrange"),
    ((0.9, 0.35, 0.5), 80, 0.7, "rearrange"),
])
def test_the_seeds_are_skimages_on_electrodes(params, size, voxel_um, calendering) -> None:
    """The peaks of the distance transform, at the voxel split's spacing and at the block
    split's (spacing / 2 on the block maxima), are skimage's rows in skimage's order."""
    volume = generate_structure(ManufacturingParams(*params), size, voxel_um, seed=size + 1,
                                calendering=calendering)
    am = volume == 1
    distance = distance_to_background(am)
    spacing = _spacing(am, distance)
    peaks = _assert_skimages(distance, am, spacing)
    assert len(np.unique(distance[tuple(peaks.T)])) < len(peaks)  # seeds tie on electrodes
    padded = np.pad(distance, [(0, (-n) % 2) for n in am.shape])
    nx, ny, nz = (n // 2 for n in padded.shape)
    blocks = padded.reshape(nx, 2, ny, 2, nz, 2).max(axis=(1, 3, 5))
    _assert_skimages(blocks, blocks > 0, max(1, int(round(spacing / 2))))


def _lattice(n: int, radius: float, pitch: int, offset: int) -> np.ndarray:
    """Equal spheres at integer centres `pitch` apart: every centre ties with every other."""
    centres = list(itertools.product(range(offset, n, pitch), repeat=3))
    return _spheres(n, centres, [radius] * len(centres))


@pytest.mark.parametrize(("radius", "pitch", "offset"), [
    (6.0, 10, 8), (7.5, 12, 6), (5.0, 9, 0), (8.0, 13, 3), (4.5, 8, 63)])
def test_the_seeds_are_skimages_on_tied_spheres_cut_by_the_box(radius, pitch, offset) -> None:
    """Fused equal spheres on a lattice (tied maxima, necks that are mirror planes), some cut
    by the box faces (offset 0 and 63: centres on the faces)."""
    am = _lattice(64, radius, pitch, offset)
    distance = distance_to_background(am)
    for spacing in (1, 2, _spacing(am, distance), 9):
        _assert_skimages(distance, am, spacing)


def test_the_seeds_are_skimages_on_separate_spheres_and_cubes_in_the_corners() -> None:
    """Separate spheres at random sub-voxel centres, and AM cubes flush with the box's
    corners and faces (their maxima are plateaus that the box cuts)."""
    rng = np.random.default_rng(11)
    am = _spheres(64, rng.uniform(8, 56, size=(6, 3)), rng.uniform(4, 9, size=6))
    am[:9, :9, :9] = True
    am[-12:, -7:, 20:31] = True
    am[30:40, -5:, :6] = True
    distance = distance_to_background(am)
    for spacing in (1, 2, 3, 5):
        _assert_skimages(distance, am, spacing)


@pytest.mark.parametrize("spacing", [1, 2, 3, 6])
def test_the_seeds_are_skimages_on_quantised_noise(spacing) -> None:
    """Random values in few levels (plateaus and ties everywhere), all of them negative, in a
    random mask with holes; at spacing 2 more than 2050 candidates, so skimage's spacing pass
    runs in several KD-tree batches, which are one greedy pass. Off the mask the image is
    below the mask (the threshold is the image's minimum, not 0: negative peaks count) or
    above it (the threshold is the mask's minimum, and the larger values off the mask are not
    in any window)."""
    rng = np.random.default_rng(spacing)
    shape = (70, 61, 66)
    levels = rng.integers(0, 6, size=shape).astype(np.float64) / 4.0 - 2.0
    mask = ndimage.binary_opening(rng.random(shape) < 0.8)
    for off_mask in (-3.0, 9.0):
        image = np.where(mask, levels, off_mask)
        status, index, value = S._candidates(image, mask, spacing)
        assert status == S.EXACT and (spacing != 2 or len(index) > 2050)
        assert value.min() < 0
        _assert_skimages(image, mask, spacing)
        _assert_skimages(image.astype(np.float32), mask, spacing)


def test_the_tie_order_is_what_picks_the_seeds_on_plateaus() -> None:
    """Why the stable sort: on a rod, whose axis is a plateau of equal distances, the
    candidates tie and the greedy spacing keeps the first in raveled order; taking the ties
    in the opposite order keeps other voxels, and skimage's are the raveled-order ones."""
    am = np.zeros((40, 20, 20), bool)
    am[:, 5:12, 6:13] = True
    distance = distance_to_background(am)
    peaks = _assert_skimages(distance, am, 4)
    status, index, value = S._candidates(distance, am, 4)
    assert status == S.EXACT and len(np.unique(value)) < len(value)
    reversed_ties = index[::-1][np.argsort(-value[::-1], kind="stable")]
    other = S._space(reversed_ties, am.shape, 4)
    assert len(other) == len(peaks) and not np.array_equal(other, peaks)


def test_degenerate_volumes_are_skimages_or_go_to_skimage() -> None:
    """No AM (skimage's (0, 2) array); all AM (scipy's transform of it is a distance to one
    corner); one AM voxel and a constant image on the mask (every voxel a maximum: skimage's
    opening rule, not replicated); NaN (not replicated). The split's seeds are skimage's in
    every case."""
    shape = (64, 64, 64)
    none = np.zeros(shape, bool)
    _assert_skimages(np.zeros(shape), none, 3)
    full = np.ones(shape, bool)
    _assert_skimages(ndimage.distance_transform_edt(full), full, 3)
    one = none.copy()
    one[5, 63, 0] = True
    flat = np.zeros(shape, bool)
    flat[10:20, 10:30, 0:64:3] = True
    nan = ndimage.distance_transform_edt(_lattice(64, 6.0, 10, 8))
    nan[0, 0, 0] = np.nan
    cases = [(distance_to_background(one), one, S.ALL_MAXIMA),
             (flat.astype(np.float64), flat, S.ALL_MAXIMA),
             (nan, nan > 0, S.NOT_FINITE)]
    for image, mask, status in cases:
        assert S.seed_peaks(image, mask, 3)[0] == status
        assert np.array_equal(particle_size._seeds(mask, image, 3), _skimage(image, mask, 3))


def test_bad_arguments_are_refused() -> None:
    am = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="min_distance"):
        S.seed_peaks(np.ones((4, 4, 4)), am, 0)
    with pytest.raises(ValueError, match="float32 or float64"):
        S.seed_peaks(np.ones((4, 4, 4), np.int64), am, 2)
    with pytest.raises(ValueError, match="one shape"):
        S.seed_peaks(np.ones((4, 4, 5)), am, 2)


def test_the_split_takes_the_fast_seeds_and_they_are_skimages(monkeypatch) -> None:
    """particle_size._seeds on a 64³ electrode: the numba peaks (the flag on) are skimage's
    (the flag off), and the labels of the split are the same."""
    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 64, 1.0, seed=3)
    am = volume == 1
    distance = distance_to_background(am)
    spacing = _spacing(am, distance)
    calls = []
    real = S.seed_peaks
    monkeypatch.setattr(S, "seed_peaks", lambda *a: calls.append(a) or real(*a))
    fast = particle_size._seeds(am, distance, spacing)
    labels = particle_size._split_particles(am, distance, spacing, 1)
    assert len(calls) == 2
    monkeypatch.setattr(particle_size, "USE_FUSED_SEEDS", False)
    assert np.array_equal(fast, particle_size._seeds(am, distance, spacing))
    assert np.array_equal(labels, particle_size._split_particles(am, distance, spacing, 1))
    assert len(calls) == 2
