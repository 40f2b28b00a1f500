"""The procedural manufacturing simulator: exact fractions, periodicity, seeds, calendering, CBD."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from kernels.structure import procedural
from kernels.structure._verlet import NeighbourList, fresh_close_pairs, relax_listed
from kernels.structure.procedural import (
    AM,
    CBD,
    PORE,
    RHO_AM_G_CM3,
    RHO_CBD_G_CM3,
    ManufacturingParams,
    calendered_particles,
    calendering_factor,
    generate_structure,
    max_overlap,
    target_phase_fractions,
)


def save_slices(volumes: dict[str, np.ndarray], path: Path) -> None:
    """A PNG with a through-thickness and an in-plane slice of each labelled volume."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(["black", "#b0b0b0", "#d04020"])  # pore, AM, CBD
    fig, axes = plt.subplots(len(volumes), 2, figsize=(6.4, 3.2 * len(volumes)), squeeze=False)
    for row, (title, volume) in zip(axes, volumes.items(), strict=True):
        middle = [n // 2 for n in volume.shape]
        row[0].imshow(volume[:, :, middle[2]], cmap=colours, vmin=0, vmax=2, interpolation="nearest")
        row[0].set_title(f"{title}\nthrough-thickness (axis 0 down)", fontsize=8)
        row[1].imshow(volume[middle[0]], cmap=colours, vmin=0, vmax=2, interpolation="nearest")
        row[1].set_title("in-plane slice", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("pore black, active material grey, CBD red", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _transition_rate(mask: np.ndarray, axis: int) -> float:
    """Phase changes per voxel step along an axis (periodic): high = short chords."""
    return float(np.mean(mask != np.roll(mask, 1, axis=axis)))


def _cbd_share_of_am_faces(volume: np.ndarray) -> float:
    """Share of the AM voxel faces touching a non-AM voxel that touch CBD (face counting)."""
    touching_cbd = touching_any = 0
    for axis in range(3):
        for shift in (1, -1):
            neighbour = np.roll(volume, shift, axis=axis)
            boundary = (volume == AM) & (neighbour != AM)
            touching_any += int(boundary.sum())
            touching_cbd += int((boundary & (neighbour == CBD)).sum())
    return touching_cbd / touching_any


def test_target_fractions_follow_the_densities() -> None:
    fractions = target_phase_fractions(0.9, 0.3)
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert fractions["pore"] == pytest.approx(0.3)
    # weight ratio AM:CBD = 0.9:0.1 -> volume ratio (0.9/4.75):(0.1/1.8)
    assert fractions["am"] / fractions["cbd"] == pytest.approx(
        (0.9 / RHO_AM_G_CM3) / (0.1 / RHO_CBD_G_CM3)
    )


@pytest.mark.parametrize(
    "params",
    [
        ManufacturingParams(am_wt_frac=0.80, porosity=0.20, binder_adhesion=0.0),
        ManufacturingParams(am_wt_frac=0.90, porosity=0.35, binder_adhesion=0.5),
        ManufacturingParams(am_wt_frac=0.98, porosity=0.55, binder_adhesion=1.0,
                            mean_diameter_um=5.0, diameter_spread=0.5),
    ],
)
def test_phase_fractions_are_exact(params: ManufacturingParams) -> None:
    shape = (40, 48, 56)
    volume = generate_structure(params, shape, voxel_um=0.5, seed=4)
    assert volume.dtype == np.uint8 and volume.shape == shape
    counts = np.bincount(volume.ravel(), minlength=3)
    assert counts.size == 3
    target = target_phase_fractions(params.am_wt_frac, params.porosity)
    n = volume.size
    assert counts[PORE] == round(target["pore"] * n)
    assert counts[CBD] == round(target["cbd"] * n)
    assert abs(counts[AM] - target["am"] * n) <= 1.0


def test_same_seed_same_volume_other_seed_other_volume() -> None:
    params = ManufacturingParams(am_wt_frac=0.92, porosity=0.35)
    a = generate_structure(params, 48, voxel_um=0.5, seed=11)
    b = generate_structure(params, 48, voxel_um=0.5, seed=11)
    c = generate_structure(params, 48, voxel_um=0.5, seed=12)
    assert np.array_equal(a, b)
    assert np.mean(a != c) > 0.2


def test_volume_is_periodic_in_every_axis() -> None:
    volume = generate_structure(ManufacturingParams(0.9, 0.3), 48, voxel_um=0.5, seed=2)
    for axis in range(3):
        first = np.take(volume, 0, axis=axis)
        last = np.take(volume, -1, axis=axis)
        interior = np.mean(
            [np.mean(np.take(volume, k, axis=axis) != np.take(volume, k + 1, axis=axis))
             for k in range(volume.shape[axis] - 1)]
        )
        # Across the wrap the structure continues like between any two neighbouring slices;
        # a non-periodic cut would differ in about half the voxels.
        assert np.mean(first != last) < 1.6 * interior
        assert interior < 0.25


def test_calendering_flattens_particles_along_axis_0() -> None:
    assert calendering_factor(0.55) == pytest.approx(1.0)
    assert calendering_factor(0.20) < calendering_factor(0.35) < 1.0
    dense = generate_structure(ManufacturingParams(0.95, 0.20), 64, voxel_um=0.5, seed=3,
                               calendering="flatten") == AM
    loose = generate_structure(ManufacturingParams(0.95, 0.55), 64, voxel_um=0.5, seed=3,
                               calendering="flatten") == AM
    dense_ratio = _transition_rate(dense, 0) / _transition_rate(dense, 1)
    loose_ratio = _transition_rate(loose, 0) / _transition_rate(loose, 1)
    assert dense_ratio > 1.25  # shorter chords through the thickness: flattened particles
    assert 0.85 < loose_ratio < 1.15  # uncalendered: round


def test_rearranged_calendering_keeps_the_particles_round() -> None:
    # Hard NMC secondary particles rearrange under the calender instead of flattening
    # (docs/cell-model.md, issue 15): the same dense electrode as above, whose flattened
    # particles give 1.5x more phase changes through the thickness, must be round.
    dense = generate_structure(ManufacturingParams(0.95, 0.20), 64, voxel_um=0.5, seed=3,
                               calendering="rearrange") == AM
    for in_plane in (1, 2):
        assert 0.9 < _transition_rate(dense, 0) / _transition_rate(dense, in_plane) < 1.1
    centres, radii, box_um, squash = calendered_particles(
        ManufacturingParams(0.95, 0.20), 64, 0.5, seed=3, calendering="rearrange")
    assert squash == 1.0  # spheres in the final box, not spheroids
    assert np.allclose(box_um, 32.0)


@pytest.mark.parametrize("params", [ManufacturingParams(0.80, 0.20, 0.0),
                                    ManufacturingParams(0.98, 0.20, 1.0),
                                    ManufacturingParams(0.90, 0.35, 0.5)])
def test_rearranged_packing_overlaps_stay_within_the_limit(params) -> None:
    # The compressed centres overlap far more than a coating; the relaxation in the final box
    # must end with every pair's centre distance >= 0.9 (r_i + r_j), at the densest corners too.
    centres, radii, box_um, _ = calendered_particles(params, 64, 1.0, seed=2,
                                                     calendering="rearrange")
    assert max_overlap(centres, radii, box_um) <= 0.10 + 1e-12
    # the spheres hold the final box's AM fraction (before voxel rounding)
    sphere_volume = float(np.sum(4.0 / 3.0 * np.pi * radii**3))
    am = target_phase_fractions(params.am_wt_frac, params.porosity)["am"]
    assert am <= sphere_volume / float(np.prod(box_um)) < am + 0.02


def test_a_box_too_small_for_round_particles_is_a_named_failure_with_its_remedies() -> None:
    # 12.8 um cube, 8 um spheres at the densest recipe: too few spheres to pack without
    # overlap; the error must say why and what to change, not return a volume
    params = ManufacturingParams(0.97, 0.20, 0.5)
    with pytest.raises(ValueError, match="too few spheres") as info:
        generate_structure(params, 32, 0.4, seed=0)
    assert "at least ~4 mean diameters (32 um)" in str(info.value)
    assert "calendering='flatten'" in str(info.value)
    assert generate_structure(params, 32, 0.4, seed=0, calendering="flatten").shape == (32,) * 3


def test_rearranged_volume_has_exact_fractions_and_is_deterministic() -> None:
    params = ManufacturingParams(am_wt_frac=0.9, porosity=0.3, binder_adhesion=0.3)
    volume = generate_structure(params, (40, 48, 56), 1.0, seed=4, calendering="rearrange")
    fractions = target_phase_fractions(0.9, 0.3)
    n = volume.size
    assert int(np.sum(volume == PORE)) == round(fractions["pore"] * n)
    assert int(np.sum(volume == CBD)) == round(fractions["cbd"] * n)
    assert int(np.sum(volume == AM)) == n - round(fractions["pore"] * n) - round(fractions["cbd"] * n)
    again = generate_structure(params, (40, 48, 56), 1.0, seed=4, calendering="rearrange")
    other = generate_structure(params, (40, 48, 56), 1.0, seed=5, calendering="rearrange")
    assert np.array_equal(volume, again)
    assert not np.array_equal(volume, other)
    for axis in range(3):  # periodic: the wrap looks like any neighbouring pair of slices
        wrap = np.mean(np.take(volume, 0, axis=axis) != np.take(volume, -1, axis=axis))
        interior = np.mean(np.take(volume, 0, axis=axis) != np.take(volume, 1, axis=axis))
        assert wrap < 1.6 * interior + 0.02


# sha256 of flatten volumes made before "rearrange" moved to a Verlet list (numpy 2.3.5, scipy
# 1.17.1): "flatten" (the default until 2026-12-03, `--profile paper_flatten`) feeds every
# case-study number documented before then, so its volumes must not move.
FLATTEN_VOLUME_SHA256 = {
    ((0.80, 0.20, 0.0), 48, 1.0, 0):
        "ee22cc6fd5eba652dbe54dcd565200d584045c64a280496f671c98b021d6bacd",
    ((0.97, 0.25, 1.0), 48, 1.0, 1):
        "1a9cee85d1306b97443e4346e2039bce2ee8726b8c7bbd86df39b8d9594839a2",
    ((0.96, 0.30, 0.5), 64, 0.4, 2):
        "4354e09c9e8062bcbcc7f9e3a724396fce07220ee28eba1dcd801fbde0b56cec",
    ((0.90, 0.55, 0.3), 40, 0.5, 3):
        "0f1a9940c51a2d5a14f536986dbf1d63c6165939a3ddaeba9196b625301f0be0",
    ((0.96, 0.30, 0.5), 64, 1.0, 7):
        "c6cae3a45c4542cfe1d53978a2bc882e942a27ae5ae59ee8ae74aabfac1d80ca",
}


@pytest.mark.parametrize("case", list(FLATTEN_VOLUME_SHA256))
def test_flatten_volumes_are_bit_identical_to_the_stored_reference(case) -> None:
    recipe, size, voxel_um, seed = case
    volume = generate_structure(ManufacturingParams(*recipe), size, voxel_um, seed=seed,
                                calendering="flatten")
    assert hashlib.sha256(volume.tobytes()).hexdigest() == FLATTEN_VOLUME_SHA256[case]


# sha256 of the default ("rearrange") volumes of the same recipes, made by the code that ran the
# documented 'Under round particles' case studies (numpy 2.3.5, scipy 1.17.1): no calendering
# argument must give exactly these, so the default's documented numbers do not move either.
REARRANGE_VOLUME_SHA256 = {
    ((0.80, 0.20, 0.0), 48, 1.0, 0):
        "3815dab19ef5a0226757e3e3974c679cea0f7f933fdbac0e41e9854c2fe6d506",
    ((0.97, 0.25, 1.0), 48, 1.0, 1):
        "aa55f5f04200a7405496a4908edf10ed3841ba8f969a38df8a5044b6775c8249",
    ((0.96, 0.30, 0.5), 64, 0.4, 2):
        "07d6e481ee28f799a3c958dee657f5239020b470d9428f8abe88b9e19cdc2bbf",
    ((0.90, 0.55, 0.3), 40, 0.5, 3):
        "a73adcc7cb4e4dbdb0e9247086a0b188dde8a30ea5dcf1dd54c73ab2ffb7c5e2",
    ((0.96, 0.30, 0.5), 64, 1.0, 7):
        "d4f371fc0aba54d93ade130a433e68c60e291c7749a519cc92a91e8aa89e6f4d",
}


@pytest.mark.parametrize("case", list(REARRANGE_VOLUME_SHA256))
def test_default_volumes_are_the_rearranged_reference(case) -> None:
    recipe, size, voxel_um, seed = case
    volume = generate_structure(ManufacturingParams(*recipe), size, voxel_um, seed=seed)
    assert hashlib.sha256(volume.tobytes()).hexdigest() == REARRANGE_VOLUME_SHA256[case]


DENSE_CORNERS = [(0.80, 0.20), (0.97, 0.25), (0.96, 0.30)]


@pytest.mark.parametrize("voxel_um, size", [(1.0, 64), (0.4, 96)])
@pytest.mark.parametrize("recipe", DENSE_CORNERS)
def test_rearranged_packing_meets_the_limit_against_a_fresh_search(recipe, voxel_um, size):
    # The Verlet-list relaxation ends on its own list; a fresh full k-d tree search of the
    # returned packing must find no pair closer than 0.9 (r_i + r_j) either.
    params = ManufacturingParams(*recipe)
    centres, radii, box_um, _ = calendered_particles(params, size, voxel_um, seed=1,
                                                     calendering="rearrange")
    assert len(fresh_close_pairs(centres, radii, box_um, 0.9)) == 0
    assert max_overlap(centres, radii, box_um) <= 0.10
    again = calendered_particles(params, size, voxel_um, seed=1, calendering="rearrange")
    assert np.array_equal(centres, again[0]) and np.array_equal(radii, again[1])


@pytest.mark.parametrize("recipe, seed", [((0.97, 0.25), 0), ((0.80, 0.20), 3), ((0.90, 0.35), 5)])
def test_verlet_relaxation_reproduces_the_full_search_relaxation(recipe, seed, monkeypatch):
    # The same pushes as the per-sweep full search (`_relax`), only summed in another order:
    # the packings agree to rounding, so the rearranged numbers measured before still hold.
    params = ManufacturingParams(*recipe)
    new = calendered_particles(params, 64, 1.0, seed=seed, calendering="rearrange")
    monkeypatch.setattr(procedural, "REARRANGE_ON_VERLET_LIST", False)
    old = calendered_particles(params, 64, 1.0, seed=seed, calendering="rearrange")
    assert np.array_equal(new[1], old[1])
    delta = new[0] - old[0]
    delta -= new[2] * np.round(delta / new[2])
    assert np.abs(delta).max() < 1e-9


def _listed_close_pairs(neighbours: NeighbourList, centres: np.ndarray) -> np.ndarray:
    i, j = neighbours.pairs(centres)
    delta = centres[j] - centres[i]
    delta -= neighbours.box_um * np.round(delta / neighbours.box_um)
    close = np.linalg.norm(delta, axis=1) < neighbours.cut_factor * (
        neighbours.radii[i] + neighbours.radii[j])
    pairs = np.stack([i[close], j[close]], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def test_verlet_list_finds_the_close_pairs_a_fresh_search_finds_after_moves() -> None:
    # Random moves of up to a third of the skin per step, some particles drifting steadily:
    # after every step the list (rebuilt only by the skin rule) must give exactly the close
    # pairs of a fresh search. A rule that waits longer (one displacement instead of two,
    # or twice the skin) misses pairs here.
    rng = np.random.default_rng(0)
    box_um = np.array([60.0, 50.0, 55.0])
    radii = rng.uniform(2.0, 5.0, 400)
    centres = rng.random((400, 3)) * box_um
    drift = rng.normal(size=(400, 3)) * (rng.random(400) < 0.1)[:, None]
    neighbours = NeighbourList(radii, box_um, cut_factor=0.9, skin_um=1.5)
    for _ in range(120):
        assert np.array_equal(_listed_close_pairs(neighbours, centres),
                              fresh_close_pairs(centres, radii, box_um, 0.9))
        moves = 0.5 * drift / np.sqrt(3.0) + rng.uniform(-0.25, 0.25, (400, 3))
        centres = np.mod(centres + moves, box_um)
        neighbours.moved(moves)
    assert 10 < neighbours.builds < 120  # rebuilt, but not every step


def test_verlet_list_rebuilds_when_two_particles_close_the_skin_together() -> None:
    # Two spheres (r 2 and 3) start 0.01 um outside the list (0.9 * 5 + skin 1, across the
    # periodic boundary), far from a third, and approach each other 0.26 um each per step:
    # after two steps they are 0.03 um inside the cut-off. Only a rule that counts both
    # displacements (1.04 >= skin) rebuilds in time; any looser one misses the pair.
    box_um = np.array([40.0, 40.0, 40.0])
    radii = np.array([2.0, 3.0, 2.5])
    gap_um = 0.9 * 5.0 + 1.0 + 0.01
    centres = np.array([[1.0, 20.0, 20.0], [1.0 - gap_um + 40.0, 20.0, 20.0], [20.0, 5.0, 5.0]])
    neighbours = NeighbourList(radii, box_um, cut_factor=0.9, skin_um=1.0)
    assert len(_listed_close_pairs(neighbours, centres)) == 0
    step = np.array([[-0.26, 0.0, 0.0], [0.26, 0.0, 0.0], [0.0, 0.0, 0.0]])
    for expected_builds in (1, 2):
        centres = np.mod(centres + step, box_um)
        neighbours.moved(step)
        listed = _listed_close_pairs(neighbours, centres)
        assert np.array_equal(listed, fresh_close_pairs(centres, radii, box_um, 0.9))
        assert neighbours.builds == expected_builds
    assert listed.tolist() == [[0, 1]]


def test_a_verlet_list_that_is_never_rebuilt_is_caught_by_the_fresh_search(monkeypatch):
    # The relaxation's last word is a fresh search, not its list: with the rebuilds switched
    # off it must fail by name rather than return a packing that breaks the limit.
    params = ManufacturingParams(0.97, 0.25)
    monkeypatch.setattr(NeighbourList, "needs_rebuild", lambda self: self.builds == 0)
    with pytest.raises(RuntimeError, match="the Verlet list missed"):
        calendered_particles(params, 64, 1.0, seed=0, calendering="rearrange")


def test_relaxation_that_does_not_converge_is_a_named_failure() -> None:
    rng = np.random.default_rng(1)
    box_um = np.array([20.0, 20.0, 20.0])
    radii = np.full(60, 4.0)  # 2.7x the box volume in spheres: cannot relax
    centres, relaxed, builds = relax_listed(rng.random((60, 3)) * box_um, radii, box_um, 30,
                                            0.08, 0.10, 1.0)
    assert not relaxed and builds >= 1
    assert len(fresh_close_pairs(centres, radii, box_um, 0.9)) > 0


def test_unknown_calendering_model_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"calendering must be one of \['flatten', 'rearrange'\]"):
        generate_structure(ManufacturingParams(0.9, 0.3), 16, 1.0, seed=0, calendering="squash")


def test_binder_adhesion_moves_cbd_from_necks_to_films() -> None:
    shares = {}
    for adhesion in (0.0, 0.5, 1.0):
        params = ManufacturingParams(am_wt_frac=0.95, porosity=0.4, binder_adhesion=adhesion)
        shares[adhesion] = _cbd_share_of_am_faces(generate_structure(params, 64, 0.5, seed=5))
    # Same CBD volume; spread as films it touches far more of the AM surface than in bridges.
    assert shares[0.0] < shares[0.5] < shares[1.0]
    assert shares[1.0] > 1.3 * shares[0.0]


@pytest.mark.parametrize(
    ("field", "value"),
    [("am_wt_frac", 0.5), ("porosity", 0.7), ("binder_adhesion", 1.5), ("mean_diameter_um", -1.0),
     ("diameter_spread", float("nan"))],
)
def test_bad_recipe_names_the_field(field: str, value: float) -> None:
    values = {"am_wt_frac": 0.9, "porosity": 0.3, field: value}
    with pytest.raises(ValueError, match=field):
        generate_structure(ManufacturingParams(**values), 32, voxel_um=0.5, seed=0)


def test_bad_size_and_voxel_are_rejected() -> None:
    params = ManufacturingParams(0.9, 0.3)
    with pytest.raises(ValueError, match="size_voxels"):
        generate_structure(params, (32, 32), voxel_um=0.5, seed=0)
    with pytest.raises(ValueError, match="voxel_um"):
        generate_structure(params, 32, voxel_um=0.0, seed=0)


def test_slices_image_is_written(tmp_path: Path) -> None:
    volumes = {
        f"porosity {p}, adhesion {a}": generate_structure(
            ManufacturingParams(am_wt_frac=0.92, porosity=p, binder_adhesion=a), 96, 0.5, seed=1
        )
        for p, a in [(0.25, 0.0), (0.25, 1.0), (0.45, 0.0)]
    }
    path = tmp_path / "structure_slices.png"
    save_slices(volumes, path)
    assert path.stat().st_size > 10_000


def test_numpy_scalars_are_accepted_and_bools_are_not() -> None:
    params = ManufacturingParams(am_wt_frac=np.float32(0.9), porosity=np.float64(0.3),
                                 binder_adhesion=np.float32(0.5))
    volume = generate_structure(params, 16, voxel_um=np.float32(1.0), seed=np.int64(1))
    assert volume.shape == (16, 16, 16)
    with pytest.raises(ValueError, match="binder_adhesion"):
        ManufacturingParams(0.9, 0.3, binder_adhesion=True).validate()
