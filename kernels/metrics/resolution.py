"""The pore tortuosity factor without the voxel staircase: Richardson extrapolation in voxel size.

A voxel solve over-counts the obstruction of curved solid surfaces by a term first order in
voxel / particle radius (measured against Maxwell's closed form for dilute spheres, and on
procedural cathodes at 1, 0.5 and 0.33 um: docs/cell-model.md, "What sets tau at the Kokam
cathode's porosity"). Given the same design at voxel h, h / 2 and h / 3, the leading error
cancels in tau_0 = 3 tau(h / 3) - 2 tau(h / 2), the tortuosity factor of the continuum geometry,
and the coarsest value checks that the three are in the first-order range: for an error c h the
differences tau(h) - tau(h/2) and tau(h/2) - tau(h/3) stand in the ratio 3. Where they do not
(e.g. throats that open between 1 and 0.5 um in dense cubes), the extrapolation is refused.

This is a named option (`extrapolated_tortuosity_factor`), not the default metric: the default
pipeline characterises one volume at one voxel size and its numbers are unchanged. It needs a
design that can be rendered at several voxel sizes, e.g. the procedural simulator, which places
the same particles (in um) for a given seed and box whatever the voxel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kernels.metrics.volume import tortuosity_factor

#: (tau(h) - tau(h/2)) / (tau(h/2) - tau(h/3)) of a first-order error, and the accepted
#: relative deviation from it (15 %: observed orders ~0.75-1.25)
FIRST_ORDER_RATIO = 3.0
FIRST_ORDER_RATIO_TOLERANCE = 0.15


class ResolutionNotAsymptotic(ValueError):
    """The three voxel sizes are not in the first-order range: the extrapolation would be a
    guess, not a value."""


@dataclass(frozen=True)
class ExtrapolatedTortuosity:
    """Pore tortuosity factors at voxel h = `voxel_um`, h/2 and h/3, and extrapolated to zero.

    percolating: the pore phase spans `axis` at all three voxel sizes (the extrapolated value
    is inf when it does not at any of them). difference_ratio: (tau(h) - tau(h/2)) /
    (tau(h/2) - tau(h/3)), 3 for a first-order error.
    """

    tortuosity_factor: float          # 3 tau(h/3) - 2 tau(h/2), the continuum value
    tortuosity_coarse: float          # at h
    tortuosity_half: float            # at h / 2
    tortuosity_third: float           # at h / 3
    difference_ratio: float
    voxel_um: float
    percolating: bool


def extrapolated_tortuosity_factor(
    volume_at: Callable[[float], np.ndarray],
    voxel_um: float,
    axis: int = 0,
    backend: str = "native",
    rel_tol: float = 1e-3,
) -> ExtrapolatedTortuosity:
    """Tortuosity factor of the design `volume_at(voxel)` renders, free of the O(voxel) error.

    volume_at: the same design (same physical box and particles) as a labelled volume at a
    given voxel size in um; it is called with `voxel_um`, `voxel_um / 2` and `voxel_um / 3`,
    whose volumes must have 2 and 3 times the voxels along every axis. Raises
    ResolutionNotAsymptotic when the three are not in the first-order range: tau rising with a
    finer voxel, a difference ratio outside FIRST_ORDER_RATIO +- FIRST_ORDER_RATIO_TOLERANCE,
    or an extrapolation below 1 (tau >= 1 for any pore space: D_eff <= eps D). A geometry the
    voxels render exactly (tau equal at all three within rel_tol) is its own continuum value.
    """
    if not (isinstance(voxel_um, int | float) and math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
    volumes = [np.asarray(volume_at(voxel_um / k)) for k in (1, 2, 3)]
    for k, volume in zip((2, 3), volumes[1:], strict=True):
        if volume.shape != tuple(k * n for n in volumes[0].shape):
            raise ValueError(
                f"volume_at(voxel_um / {k}) must have {k} times the voxels of "
                f"volume_at(voxel_um) along every axis (the same physical box): got "
                f"{volume.shape} and {volumes[0].shape}")
    solved = [tortuosity_factor(volume, axis, backend, rel_tol) for volume in volumes]
    coarse, half, third = (tau for tau, _ in solved)
    if not all(ok for _, ok in solved):
        return ExtrapolatedTortuosity(math.inf, coarse, half, third, math.nan,
                                      float(voxel_um), False)
    extrapolated = 3.0 * third - 2.0 * half
    step_coarse, step_fine = coarse - half, half - third
    noise = rel_tol * coarse
    if abs(step_coarse) <= noise and abs(step_fine) <= noise:   # rendered exactly
        return ExtrapolatedTortuosity(third, coarse, half, third, math.nan, float(voxel_um),
                                      True)
    ratio = step_coarse / step_fine if step_fine > 0 else math.inf
    in_range = abs(ratio / FIRST_ORDER_RATIO - 1.0) <= FIRST_ORDER_RATIO_TOLERANCE
    if step_coarse <= 0 or step_fine <= 0 or not in_range or extrapolated < 1.0 - rel_tol:
        raise ResolutionNotAsymptotic(
            f"tau {coarse:.4g} / {half:.4g} / {third:.4g} at {voxel_um:g} / {voxel_um / 2:g} / "
            f"{voxel_um / 3:g} um (difference ratio {ratio:.3g}, first order gives "
            f"{FIRST_ORDER_RATIO:g}; extrapolated {extrapolated:.4g}): the voxels are too "
            f"coarse for the first-order extrapolation")
    return ExtrapolatedTortuosity(extrapolated, coarse, half, third, ratio, float(voxel_um),
                                  True)
