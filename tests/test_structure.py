"""The procedural manufacturing simulator: exact fractions, periodicity, seeds, calendering, CBD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
    dense = generate_structure(ManufacturingParams(0.95, 0.20), 64, voxel_um=0.5, seed=3) == AM
    loose = generate_structure(ManufacturingParams(0.95, 0.55), 64, voxel_um=0.5, seed=3) == AM
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
