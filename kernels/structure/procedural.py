"""Procedural manufacturing simulator: three-phase cathode microstructures from recipe numbers.

The recipe (active-material weight fraction, porosity, binder adhesion, particle sizes) becomes a
uint8 volume, 0 = pore, 1 = active material (AM), 2 = carbon-binder domain (CBD), axis 0 being the
through-thickness (calendering) direction. The steps mimic how an electrode is made:

1. *Mixing and coating*: lognormal spherical particles are dropped at random into a periodic box
   that is taller than the final one by 1 / calendering factor, then pushed apart until they
   overlap only slightly (a few relaxation sweeps over close pairs).
2. *Calendering*: the box is compressed along axis 0 by the calendering factor; a denser
   electrode (lower porosity) is compressed more. Two models (`CALENDERING_MODELS`):
   "rearrange" (the default) keeps the particles spheres, as hard NMC secondary particles are
   (they rearrange or crack, they do not flatten): the coating holds the same spheres at the
   lower solid fraction phi_AM * factor, their centres are compressed with the box and the
   packing is relaxed again in the final box until no pair overlaps beyond the allowed limit;
   "flatten" (the default until 2026-12-03) compresses the particles with the box, so the spheres
   become oblate and their 3V/S shrinks with calendering (docs/cell-model.md, issue 15).
   Its two relaxations run on a Verlet neighbour list (kernels.structure._verlet: the same
   pushes, summed in another order) and end on a fresh full pair search; "flatten" keeps
   `_relax`, a fresh k-d tree search every sweep, so its volumes stay bit for bit those of
   every documented number.
3. *Drying of the binder*: the CBD gathers where the binder wets. For every voxel the signed
   distances to the nearest (d1) and second-nearest (d2) particle surfaces are computed; the
   CBD fills the non-AM voxels with the lowest score d1 + 2 (1 - adhesion) d2. With adhesion 0
   that is smallest in the necks between two particles (bridges); with adhesion 1 it is d1, a
   film of uniform thickness on every particle.

Exact phase fractions come from ranking rather than thresholding: the n_AM voxels with the lowest
d1 are AM, then the n_CBD lowest-score voxels of the rest are CBD. Everything is periodic in all
three axes (minimum-image distances) and deterministic for a given seed.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from kernels.cell import ranges

PORE, AM, CBD = 0, 1, 2
RHO_AM_G_CM3 = 4.75  # NMC (layered oxide) crystal density
RHO_CBD_G_CM3 = 1.8  # carbon black + PVDF binder, as a solid

# The recipe's accepted ranges are defined once, with their reasons, in kernels.cell.ranges.
AM_WT_FRAC_RANGE = ranges.AM_WT_FRAC.bounds
POROSITY_RANGE = ranges.POROSITY.bounds
ADHESION_RANGE = ranges.BINDER_ADHESION.bounds
MEAN_DIAMETER_UM_RANGE = ranges.MEAN_DIAMETER_UM.bounds
DIAMETER_SPREAD_RANGE = ranges.DIAMETER_SPREAD.bounds
CBD_DENSITY_G_CM3_RANGE = ranges.CBD_DENSITY_G_CM3.bounds

# Calendering: the porosity of an uncalendered coating (no compression) and the strongest
# compression reached at the lowest porosity in range. Linear in between.
UNCALENDERED_POROSITY = 0.55
MIN_CALENDERING_FACTOR = 0.65

_RELAX_SWEEPS = 25
# "rearrange": sweeps of the relaxation in the final box after the centres were compressed. The
# compressed centres overlap far more than a fresh coating; the sweeps stop as soon as no pair
# is closer than allowed, and a packing that still is after this many is a named failure.
_REARRANGE_SWEEPS = 400
_REARRANGE_PUSH_OVERLAP = 0.08  # pushes a little past the limit so the sweeps end
# "rearrange" relaxes on a Verlet list (kernels.structure._verlet) whose skin is this many median
# radii: 3-6x less CPU than a fresh search per sweep at 1 um / 128³ (bench_calendering_speed.py).
_REARRANGE_SKIN_RADII = 1.0
#: False: "rearrange" relaxes with `_relax` (a fresh search every sweep), as before the Verlet
#: list; kept for bench_calendering_speed.py, which measures both in one run.
REARRANGE_ON_VERLET_LIST = True
CALENDERING_MODELS = ranges.CALENDERING_MODELS
DEFAULT_CALENDERING = ranges.DEFAULT_CALENDERING
# Weight of the second-nearest distance in the CBD score at adhesion 0: > 1 favours deep necks.
NECK_WEIGHT = 2.0
_ALLOWED_OVERLAP = 0.10  # centres may approach to (1 - this) * (r_i + r_j)


def _is_real(value: object) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not (_is_real(value) and math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class ManufacturingParams:
    """The recipe of one electrode coating.

    am_wt_frac: weight fraction of active material in the solids (the rest is CBD).
    porosity: pore volume fraction after calendering.
    binder_adhesion: 0 = CBD bridges at particle necks, 1 = CBD films on particle surfaces.
    mean_diameter_um: mean particle diameter before calendering (in-plane diameter after).
    diameter_spread: sigma of the lognormal diameter distribution.
    """

    am_wt_frac: float
    porosity: float
    binder_adhesion: float = 0.5
    mean_diameter_um: float = 8.0
    diameter_spread: float = 0.25

    def validate(self) -> None:
        """Raise ValueError naming the field and its accepted range."""
        _check_range("am_wt_frac", self.am_wt_frac, AM_WT_FRAC_RANGE)
        _check_range("porosity", self.porosity, POROSITY_RANGE)
        _check_range("binder_adhesion", self.binder_adhesion, ADHESION_RANGE)
        _check_range("mean_diameter_um", self.mean_diameter_um, MEAN_DIAMETER_UM_RANGE)
        _check_range("diameter_spread", self.diameter_spread, DIAMETER_SPREAD_RANGE)


def target_phase_fractions(am_wt_frac: float, porosity: float,
                           cbd_density_g_cm3: float = RHO_CBD_G_CM3) -> dict[str, float]:
    """Volume fractions {"pore", "am", "cbd"} of a recipe, from the densities of AM and CBD.

    cbd_density_g_cm3: CBD mass per volume of the CBD phase placed: 1.8 for solid CBD (the
    default), or a nanoporous domain's density (kernels.cell.cbd_model.NanoporousCBD, 0.93),
    whose larger volume then holds the same CBD mass; "pore" stays the resolved pore space.
    """
    _check_range("am_wt_frac", am_wt_frac, (0.0, 1.0))
    _check_range("porosity", porosity, (0.0, 1.0))
    _check_range("cbd_density_g_cm3", cbd_density_g_cm3, CBD_DENSITY_G_CM3_RANGE)
    am_cm3 = am_wt_frac / RHO_AM_G_CM3
    cbd_cm3 = (1.0 - am_wt_frac) / cbd_density_g_cm3
    solid = 1.0 - porosity
    am = solid * am_cm3 / (am_cm3 + cbd_cm3)
    return {"pore": porosity, "am": am, "cbd": solid - am}


def calendering_factor(porosity: float) -> float:
    """Thickness after / before calendering: 1 at the uncalendered porosity, smaller when denser."""
    span = UNCALENDERED_POROSITY - POROSITY_RANGE[0]
    squeeze = min(max((UNCALENDERED_POROSITY - porosity) / span, 0.0), 1.0)
    return 1.0 - (1.0 - MIN_CALENDERING_FACTOR) * squeeze


def _shape3(size_voxels: int | tuple[int, int, int]) -> tuple[int, int, int]:
    shape = (size_voxels,) * 3 if isinstance(size_voxels, int | np.integer) else tuple(size_voxels)
    if len(shape) != 3 or any(int(n) != n or n < 4 for n in shape):
        raise ValueError(f"size_voxels must be an int >= 4 or three such ints, got {size_voxels!r}")
    return tuple(int(n) for n in shape)  # type: ignore[return-value]


def _draw_particles(
    box_um: np.ndarray, solid_fraction: float, params: ManufacturingParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random centres (n, 3) and lognormal radii (n,) of spheres of `solid_fraction` of a box."""
    sigma = params.diameter_spread
    median_d = params.mean_diameter_um * math.exp(-0.5 * sigma**2)  # lognormal mean = given mean
    box_volume = float(np.prod(box_um))
    target_volume = solid_fraction * box_volume
    radii: list[float] = []
    total = 0.0
    # Cap particles at the smallest box side so a particle never meets its own periodic image.
    max_radius = 0.45 * float(box_um.min())
    while total < target_volume:
        r = min(0.5 * median_d * math.exp(sigma * rng.standard_normal()), max_radius)
        radii.append(r)
        total += 4.0 / 3.0 * math.pi * r**3
    r_arr = np.sort(np.array(radii))[::-1].copy()
    centres = rng.random((len(r_arr), 3)) * box_um
    return centres, r_arr


def _relax(centres: np.ndarray, r_arr: np.ndarray, box_um: np.ndarray, sweeps: int,
           push_overlap: float = _ALLOWED_OVERLAP) -> tuple[np.ndarray, bool]:
    """Push pairs closer than (1 - push_overlap) (r_i + r_j) apart to that distance, for at most
    `sweeps` sweeps; True once no pair is closer than (1 - _ALLOWED_OVERLAP) (r_i + r_j). A
    push_overlap below the allowed one reaches the limit in a few sweeps instead of
    approaching it asymptotically."""
    for _ in range(sweeps):
        tree = cKDTree(centres, boxsize=box_um)
        pairs = tree.query_pairs(2.0 * float(r_arr.max()), output_type="ndarray")
        if len(pairs) == 0:
            return centres, True
        i, j = pairs[:, 0], pairs[:, 1]
        delta = centres[j] - centres[i]
        delta -= box_um * np.round(delta / box_um)  # minimum image
        dist = np.linalg.norm(delta, axis=1)
        if not (dist < (1.0 - _ALLOWED_OVERLAP) * (r_arr[i] + r_arr[j])).any():
            return centres, True
        allowed = (1.0 - push_overlap) * (r_arr[i] + r_arr[j])
        close = dist < allowed
        i, j, delta, dist, allowed = i[close], j[close], delta[close], dist[close], allowed[close]
        direction = delta / np.maximum(dist, 1e-9)[:, None]
        push = 0.5 * (allowed - dist)[:, None] * direction
        moves = np.zeros_like(centres)
        np.add.at(moves, i, -push)
        np.add.at(moves, j, push)
        centres = np.mod(centres + moves, box_um)
    return centres, False


def _pack_particles(
    box_um: np.ndarray, solid_fraction: float, params: ManufacturingParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n, 3) and radii (n,) of spheres filling `solid_fraction` of a periodic box."""
    centres, r_arr = _draw_particles(box_um, solid_fraction, params, rng)
    centres, _ = _relax(centres, r_arr, box_um, _RELAX_SWEEPS)
    return centres, r_arr


def _pack_rearranged(
    box_um: np.ndarray, solid_fraction: float, squash: float, params: ManufacturingParams,
    rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Spheres of `solid_fraction` of the final periodic box `box_um`, calendered by
    rearrangement: coated in the box stretched by 1 / squash along axis 0 (where they fill
    solid_fraction * squash), centres compressed by squash, relaxed in the final box."""
    tall_um = box_um * np.array([1.0 / squash, 1.0, 1.0])
    if REARRANGE_ON_VERLET_LIST:
        from kernels.structure._verlet import relax_listed

        centres, r_arr = _draw_particles(tall_um, solid_fraction * squash, params, rng)
        skin_um = _REARRANGE_SKIN_RADII * float(np.median(r_arr))
        centres, _, _ = relax_listed(centres, r_arr, tall_um, _RELAX_SWEEPS, _ALLOWED_OVERLAP,
                                     _ALLOWED_OVERLAP, skin_um)
        centres = np.mod(centres * np.array([squash, 1.0, 1.0]), box_um)
        centres, relaxed, _ = relax_listed(centres, r_arr, box_um, _REARRANGE_SWEEPS,
                                           _REARRANGE_PUSH_OVERLAP, _ALLOWED_OVERLAP, skin_um)
    else:
        centres, r_arr = _pack_particles(tall_um, solid_fraction * squash, params, rng)
        centres = np.mod(centres * np.array([squash, 1.0, 1.0]), box_um)
        centres, relaxed = _relax(centres, r_arr, box_um, _REARRANGE_SWEEPS,
                                  push_overlap=_REARRANGE_PUSH_OVERLAP)
    if not relaxed:
        # measured (8 um mean diameter, the recipe box's densest corners, 12 seeds): packs fail
        # in boxes below ~3 mean diameters (spread 0.25) or ~4 (spread 0.5), and at spread 0.75
        # up to 6, where a few large spheres fill a small periodic box
        raise ValueError(
            f"calendering='rearrange': {len(r_arr)} spheres at solid fraction {solid_fraction:.3f} "
            f"still overlap by more than {_ALLOWED_OVERLAP:.0%} of r_i + r_j after "
            f"{_REARRANGE_SWEEPS} relaxation sweeps: a box of {float(np.min(box_um)):.1f} um "
            f"holds too few spheres this size (largest diameter {2 * float(np.max(r_arr)):.1f} "
            f"um) to pack this densely; use a cube of at least ~4 mean diameters "
            f"({4 * params.mean_diameter_um:.0f} um), a narrower diameter_spread, or "
            f"calendering='flatten'")
    return centres, r_arr


def max_overlap(centres: np.ndarray, radii: np.ndarray, box_um: np.ndarray) -> float:
    """Largest 1 - d_ij / (r_i + r_j) over the pairs of a periodic packing (0: none touch)."""
    tree = cKDTree(centres, boxsize=box_um)
    pairs = tree.query_pairs(2.0 * float(radii.max()), output_type="ndarray")
    if len(pairs) == 0:
        return 0.0
    delta = centres[pairs[:, 1]] - centres[pairs[:, 0]]
    delta -= box_um * np.round(delta / box_um)
    ratio = np.linalg.norm(delta, axis=1) / (radii[pairs[:, 0]] + radii[pairs[:, 1]])
    return float(max(0.0, 1.0 - ratio.min()))


#: From this many voxels on, the distance fields are one numba loop
#: (kernels.structure._procedural_kernels: the same fields bit for bit, 0.25 -> ~0.05 CPU-s at
#: 128³); below it the numpy loop, cheaper than loading numba in a process that does not need it.
FUSED_MIN_VOXELS = 64**3
USE_FUSED = True  # False forces the numpy loop (the tests compare both)


def _nearest_surface_distances(
    shape: tuple[int, int, int],
    voxel_um: float,
    squash: float,
    centres: np.ndarray,
    radii: np.ndarray,
    reach_um: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances d1 <= d2 (um, uncalendered frame) to the two nearest sphere surfaces.

    Each voxel is mapped back to the uncalendered frame (axis 0 stretched by 1 / squash), where the
    particles are spheres. Only voxels within `reach_um` of a surface are visited; the rest keep a
    large finite value so that ranking still works.
    """
    far = np.float32(10.0 * reach_um + 1e3)
    d1 = np.full(shape, far, dtype=np.float32)
    d2 = np.full(shape, far, dtype=np.float32)
    spacing = np.array([voxel_um / squash, voxel_um, voxel_um])  # uncalendered um per voxel
    if USE_FUSED and math.prod(shape) >= FUSED_MIN_VOXELS and len(radii):
        from kernels.structure._procedural_kernels import update_distances

        update_distances(d1, d2, spacing, np.ascontiguousarray(centres, np.float64),
                         np.ascontiguousarray(radii, np.float64), float(reach_um))
        return d1, d2
    box_um = spacing * np.array(shape)
    for centre, radius in zip(centres, radii, strict=True):
        ranges = []
        offsets = []
        for ax in range(3):
            half = int(math.ceil((radius + reach_um) / spacing[ax]))
            half = min(half, (shape[ax] - 1) // 2)
            c_vox = centre[ax] / spacing[ax] - 0.5  # voxel centres sit at (k + 0.5) * spacing
            k0 = int(math.floor(c_vox)) - half + 1
            k = np.arange(k0, k0 + 2 * half)
            delta = (k + 0.5) * spacing[ax] - centre[ax]
            delta -= box_um[ax] * np.round(delta / box_um[ax])
            ranges.append(np.mod(k, shape[ax]))
            offsets.append((delta**2).astype(np.float32))
        dist = np.sqrt(
            offsets[0][:, None, None] + offsets[1][None, :, None] + offsets[2][None, None, :]
        ) - np.float32(radius)
        index = np.ix_(*ranges)
        block1 = d1[index]
        block2 = d2[index]
        np.minimum(block2, np.maximum(block1, dist), out=block2)
        np.minimum(block1, dist, out=block1)
        d1[index] = block1
        d2[index] = block2
    return d1, d2


def _lowest(score: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the `count` smallest entries of a flat array (ties broken by position)."""
    if count <= 0:
        return np.empty(0, dtype=np.intp)
    if count >= score.size:
        return np.arange(score.size)
    return np.argpartition(score, count - 1)[:count]


def calendered_particles(
    params: ManufacturingParams,
    size_voxels: int | tuple[int, int, int],
    voxel_um: float,
    seed: int,
    cbd_density_g_cm3: float = RHO_CBD_G_CM3,
    calendering: str = DEFAULT_CALENDERING,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The particles `generate_structure` voxelises: centres (n, 3) and radii (n,) in um, the
    box (3,) in um they are periodic in and the axis-0 squash from that frame to the volume's
    (1 for "rearrange": spheres in the final box; the calendering factor for "flatten":
    spheres in the uncalendered box, spheroids in the volume)."""
    params.validate()
    if calendering not in CALENDERING_MODELS:
        raise ValueError(f"calendering must be one of {list(CALENDERING_MODELS)}, "
                         f"got {calendering!r}")
    shape = _shape3(size_voxels)
    if not (_is_real(voxel_um) and math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
    rng = np.random.default_rng(seed)
    fractions = target_phase_fractions(params.am_wt_frac, params.porosity, cbd_density_g_cm3)
    factor = calendering_factor(params.porosity)
    final_um = np.array(shape, dtype=float) * voxel_um
    if calendering == "rearrange":
        centres, radii = _pack_rearranged(final_um, fractions["am"], factor, params, rng)
        return centres, radii, final_um, 1.0
    box_um = np.array([shape[0] * voxel_um / factor, shape[1] * voxel_um, shape[2] * voxel_um])
    centres, radii = _pack_particles(box_um, fractions["am"], params, rng)
    return centres, radii, box_um, factor


def generate_structure(
    params: ManufacturingParams,
    size_voxels: int | tuple[int, int, int],
    voxel_um: float,
    seed: int,
    cbd_density_g_cm3: float = RHO_CBD_G_CM3,
    calendering: str = DEFAULT_CALENDERING,
) -> np.ndarray:
    """A periodic three-phase volume (uint8: 0 pore, 1 AM, 2 CBD) with exact phase fractions.

    Axis 0 is the through-thickness direction (the one calendering compresses). The phase voxel
    counts equal the target fractions of `target_phase_fractions` rounded to whole voxels.
    cbd_density_g_cm3: the density the recipe's CBD mass is placed at (solid 1.8 by default;
    a nanoporous domain's 0.93 places the domain, see `target_phase_fractions`).
    calendering: "rearrange" (default: spheres whose packing is compressed) or "flatten"
    (particles compressed with the box, oblate; see the module docstring).
    """
    centres, radii, _, squash = calendered_particles(params, size_voxels, voxel_um, seed,
                                                     cbd_density_g_cm3, calendering)
    shape = _shape3(size_voxels)
    fractions = target_phase_fractions(params.am_wt_frac, params.porosity, cbd_density_g_cm3)
    n_total = int(np.prod(shape))
    n_pore = int(round(fractions["pore"] * n_total))
    n_cbd = int(round(fractions["cbd"] * n_total))
    n_am = n_total - n_pore - n_cbd
    # CBD reaches at most a fraction of a radius from the particles; the margin keeps the
    # neck score defined in the whole region the CBD can occupy.
    reach_um = max(0.5 * float(np.median(radii)), 3.0 * voxel_um)
    d1, d2 = _nearest_surface_distances(shape, voxel_um, squash, centres, radii, reach_um)

    d1_flat = d1.ravel()
    volume = np.zeros(n_total, dtype=np.uint8)
    am_index = _lowest(d1_flat, n_am)
    volume[am_index] = AM
    score = d1_flat + np.float32(NECK_WEIGHT * (1.0 - params.binder_adhesion)) * d2.ravel()
    score[am_index] = np.inf
    volume[_lowest(score, n_cbd)] = CBD
    return volume.reshape(shape)
