"""The fused marching-cubes pass: its built case table, the closed meshes it makes, and its areas
against today's skimage path on procedural electrodes (kernels.metrics._mc_table,
kernels.metrics._marching_kernels)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from kernels.metrics._marching_kernels import fused_areas, mesh, smoothed_indicator, two_scan_areas
from kernels.metrics._mc_table import build_case_table, edge_corners, face_corner_cycles
from kernels.metrics.surface_area import (
    _OUTWARD_STEPS_VOXELS,
    _PAD_VOXELS,
    _TRUNCATE,
    SMOOTHING_SIGMA_VOXELS,
    interface_areas_voxels,
)
from kernels.structure.procedural import AM, CBD, PORE, ManufacturingParams, generate_structure


def _crossed(case: int) -> set[int]:
    corners = edge_corners()
    return {e for e in range(12) if (case >> corners[e, 0] & 1) != (case >> corners[e, 1] & 1)}


def _faces_of(edge: int) -> set[int]:
    ends = set(edge_corners()[edge].tolist())
    return {f for f, cycle in enumerate(face_corner_cycles()) if ends <= set(cycle.tolist())}


def test_every_configuration_has_closed_loops_through_each_crossed_edge_once() -> None:
    table = build_case_table()
    for case in range(256):
        crossed = _crossed(case)
        for bits in range(1 << table.n_ambiguous[case]):
            cfg = table.config_offset[case] + bits
            loops = table.loops[cfg]
            used = Counter(e for loop in loops for e in loop)
            assert set(used) == crossed and set(used.values()) <= {1}, (case, bits)
            for loop in loops:
                assert len(loop) >= 3
                for a, b in zip(loop, loop[1:] + loop[:1], strict=True):
                    assert _faces_of(a) & _faces_of(b), (case, bits, loop)  # a segment on a face
            n = table.n_triangles[cfg]
            assert n == sum(len(loop) - 2 for loop in loops)
            tri_edges = Counter(table.triangles[cfg, :n].ravel().tolist())
            assert set(tri_edges) == crossed
            assert (table.triangles[cfg, n:] == -1).all()


def test_complementary_cases_have_the_same_segments_on_unambiguous_faces() -> None:
    """Inside and outside swapped, the crossings are the same: so is an unambiguous cell's
    surface (loops equal as sets of edges)."""
    table = build_case_table()
    for case in range(256):
        if table.n_ambiguous[case]:
            continue
        a = {frozenset(loop) for loop in table.loops[table.config_offset[case]]}
        b = {frozenset(loop) for loop in table.loops[table.config_offset[255 - case]]}
        assert a == b, case


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.0])
def test_the_mesh_of_a_closed_surface_is_watertight(seed: int, sigma: float) -> None:
    """A random smooth field, zero on the border, has closed level sets: every mesh edge must be
    shared by exactly two triangles. Rough fields (sigma 0.6) have many ambiguous faces; a cell
    pair resolving a shared face differently would leave edges used once."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((20, 22, 21)), sigma)
    field = (field - field.min()) / (field.max() - field.min())
    field[[0, -1]] = 0.0
    field[:, [0, -1]] = 0.0
    field[:, :, [0, -1]] = 0.0
    keys, corners = mesh(field.astype(np.float32), 0.5)
    assert len(keys) > 100
    edges = Counter()
    for tri in keys:
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            edges[(min(a, b), max(a, b))] += 1
    assert set(edges.values()) == {2}
    # one point per vertex: the same edge key always comes with the same position
    position = {}
    for tri_keys, tri_corners in zip(keys, corners, strict=True):
        for key, point in zip(tri_keys, tri_corners, strict=True):
            assert np.array_equal(position.setdefault(key, point), point)


@pytest.mark.parametrize("recipe,voxel_um,calendering", [
    ((0.9, 0.35, 0.5), 0.4, "flatten"), ((0.9, 0.35, 0.5), 1.0, "rearrange"),
    ((0.80, 0.20, 0.0), 1.0, "flatten"), ((0.98, 0.55, 1.0), 0.4, "rearrange"),
])
def test_the_fused_pass_gives_todays_areas_on_electrodes(recipe, voxel_um, calendering) -> None:
    """Against skimage's marching cubes (Lewiner's table, its own triangulation) on procedural
    64³ electrodes: total AM area within 0.2 %, AM-pore and AM-CBD within 0.5 % (measured:
    totals <= 0.12 %, these labels <= 0.5 %, tests/benchmarks/bench_surface_area.py)."""
    volume = generate_structure(ManufacturingParams(*recipe), 64, voxel_um, seed=3,
                                calendering=calendering)
    today = interface_areas_voxels(volume, AM, (PORE, CBD), method="skimage")
    fused = interface_areas_voxels(volume, AM, (PORE, CBD), method="fused")
    assert fused[PORE] + fused[CBD] == pytest.approx(today[PORE] + today[CBD], rel=2e-3)
    for label in (PORE, CBD):
        assert fused[label] == pytest.approx(today[label], rel=5e-3)


def test_the_default_is_the_fused_pass_and_other_dtypes_take_skimages() -> None:
    """The fused pass is the default for uint8 volumes (it differs from skimage's triangulation,
    so equality to the bit tells the two apart); an int64 volume, which the fused pass's
    256-label table does not take, falls back to "skimage" rather than failing."""
    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 48, 1.0, seed=4)
    fused = interface_areas_voxels(volume, AM, (PORE, CBD), method="fused")
    today = interface_areas_voxels(volume, AM, (PORE, CBD), method="skimage")
    assert fused != today
    assert interface_areas_voxels(volume, AM, (PORE, CBD)) == fused
    assert interface_areas_voxels(volume.astype(np.int64), AM, (PORE, CBD)) == today


def test_the_fused_pass_needs_byte_labels() -> None:
    volume = np.zeros((8, 8, 8), np.int64)
    volume[2:5] = AM
    with pytest.raises(ValueError, match="uint8"):
        interface_areas_voxels(volume, AM, (PORE, CBD), method="fused")
    with pytest.raises(ValueError, match="method"):
        interface_areas_voxels(volume.astype(np.uint8), AM, (PORE, CBD), method="lewiner")


def _scipy_field(volume: np.ndarray, solid_label: int, pad: int = _PAD_VOXELS) -> np.ndarray:
    """The skimage path's smoothed field: pad a float copy by replication, then scipy."""
    padded = np.pad((volume == solid_label).astype(np.float32), pad, mode="edge")
    return ndimage.gaussian_filter(padded, SMOOTHING_SIGMA_VOXELS, mode="nearest",
                                   truncate=_TRUNCATE)


@pytest.mark.parametrize("shape", [(1, 5, 4), (2, 2, 2), (7, 3, 9), (13, 11, 12)])
def test_the_fused_smoothing_is_scipys_to_the_bit(shape: tuple[int, int, int]) -> None:
    """Random labels (every voxel its own feature, the padded faces included) and a volume
    thinner than the filter: the fused stage's field must be scipy's, bit for bit, so that
    both methods mesh the same field."""
    volume = np.random.default_rng(sum(shape)).integers(0, 3, shape).astype(np.uint8)
    field = smoothed_indicator(volume, AM, _PAD_VOXELS, SMOOTHING_SIGMA_VOXELS, _TRUNCATE)
    assert field.dtype == np.float32
    assert np.array_equal(field, _scipy_field(volume, AM))


@pytest.mark.parametrize("pad", [0, 2, 3])
def test_the_fused_smoothing_is_scipys_with_other_paddings(pad: int) -> None:
    """The replicated row ends (each row's interior is filled first, its ends copied after)
    for paddings other than the stage's one layer."""
    volume = np.random.default_rng(pad).integers(0, 3, (6, 9, 7)).astype(np.uint8)
    assert np.array_equal(
        smoothed_indicator(volume, AM, pad, SMOOTHING_SIGMA_VOXELS, _TRUNCATE),
        _scipy_field(volume, AM, pad))


def test_the_fused_smoothing_is_scipys_on_an_electrode() -> None:
    volume = generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 48, 1.0, seed=2)
    assert np.array_equal(
        smoothed_indicator(volume, AM, _PAD_VOXELS, SMOOTHING_SIGMA_VOXELS, _TRUNCATE),
        _scipy_field(volume, AM))


def test_the_fused_smoothing_refuses_other_widths() -> None:
    with pytest.raises(ValueError, match="5 taps"):
        smoothed_indicator(np.zeros((4, 4, 4), np.uint8), AM, 1, 1.0, 4.0)


@pytest.mark.parametrize("recipe,voxel_um,calendering", [
    ((0.9, 0.35, 0.5), 0.4, "flatten"), ((0.80, 0.20, 0.0), 1.0, "rearrange"),
    ((0.98, 0.55, 1.0), 1.0, "flatten"),
])
def test_the_one_scan_pass_equals_the_two_scan_pass(recipe, voxel_um, calendering) -> None:
    """The one-scan pass (each cell's case once; points and unit normals once per edge) does the
    two-scan pass's arithmetic in the same order: the same 256 sums to the bit, on electrodes
    (box clipping, all three labels) and on a cut of one."""
    volume = generate_structure(ManufacturingParams(*recipe), 40, voxel_um, seed=5,
                                calendering=calendering)
    steps = np.asarray(_OUTWARD_STEPS_VOXELS, np.float32)
    for sub in (volume, volume[3:31, 5:, :17]):
        sub = np.ascontiguousarray(sub)
        field = _scipy_field(sub, AM)
        one = fused_areas(field, 0.5, sub, _PAD_VOXELS, AM, PORE, steps)
        two = two_scan_areas(field, 0.5, sub, _PAD_VOXELS, AM, PORE, steps)
        assert one[PORE] > 0 and one[CBD] > 0
        assert np.array_equal(one, two)


def test_the_one_scan_pass_equals_the_two_scan_pass_on_rough_fields() -> None:
    """A rough random field (many ambiguous faces, thin features) with labels 0-2."""
    rng = np.random.default_rng(11)
    volume = rng.integers(0, 3, (18, 21, 19)).astype(np.uint8)
    field = ndimage.gaussian_filter(rng.random((20, 23, 21)), 0.7).astype(np.float32)
    level = float(np.median(field))
    steps = np.asarray(_OUTWARD_STEPS_VOXELS, np.float32)
    one = fused_areas(field, level, volume, 1, AM, PORE, steps)
    assert one.sum() > 100
    assert np.array_equal(one, two_scan_areas(field, level, volume, 1, AM, PORE, steps))
