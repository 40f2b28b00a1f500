"""The pore tortuosity factor without the voxel staircase: Richardson extrapolation in voxel size.

A voxel solve over-counts the obstruction of curved solid surfaces by a term first order in
voxel / particle radius (measured against Maxwell's closed form for dilute spheres, and on
procedural cathodes at 1, 0.5 and 0.33 um: docs/cell-model.md, "What sets tau at the Kokam
cathode's porosity"). Given the same design at voxel h and h / 2, the leading error cancels in
tau_0 = 2 tau(h / 2) - tau(h), the tortuosity factor of the continuum geometry.

This is a named option (`extrapolated_tortuosity_factor`), not the default metric: the default
pipeline characterises one volume at one voxel size and its numbers are unchanged. It needs a
design that can be rendered at two voxel sizes, e.g. the procedural simulator, which places the
same particles (in um) for a given seed and box whatever the voxel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kernels.metrics.volume import tortuosity_factor


class ResolutionNotAsymptotic(ValueError):
    """The finer voxel did not lower tau: the pair is not in the first-order range and the
    extrapolation would be a guess, not a value."""


@dataclass(frozen=True)
class ExtrapolatedTortuosity:
    """Pore tortuosity factors at voxel `voxel_um`, at half of it, and extrapolated to zero.

    percolating: the pore phase spans `axis` at both voxel sizes (all three values are inf
    when it does not at either).
    """

    tortuosity_factor: float          # 2 tau_fine - tau_coarse, the continuum value
    tortuosity_coarse: float          # at voxel_um
    tortuosity_fine: float            # at voxel_um / 2
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
    given voxel size in um; it is called with `voxel_um` and `voxel_um / 2`, whose volumes
    must have twice the voxels along every axis. Raises ResolutionNotAsymptotic when the finer
    volume is more tortuous, or the extrapolation falls below 1 (beyond the solves' rel_tol:
    the pair is too coarse for a first-order extrapolation).
    """
    if not (isinstance(voxel_um, int | float) and math.isfinite(voxel_um) and voxel_um > 0):
        raise ValueError(f"voxel_um must be a positive number, got {voxel_um!r}")
    coarse_volume = np.asarray(volume_at(voxel_um))
    fine_volume = np.asarray(volume_at(voxel_um / 2.0))
    if fine_volume.shape != tuple(2 * n for n in coarse_volume.shape):
        raise ValueError(
            f"volume_at(voxel_um / 2) must have twice the voxels of volume_at(voxel_um) along "
            f"every axis (the same physical box): got {fine_volume.shape} and "
            f"{coarse_volume.shape}")
    coarse, coarse_ok = tortuosity_factor(coarse_volume, axis, backend, rel_tol)
    fine, fine_ok = tortuosity_factor(fine_volume, axis, backend, rel_tol)
    if not (coarse_ok and fine_ok):
        return ExtrapolatedTortuosity(math.inf, coarse, fine, float(voxel_um), False)
    extrapolated = 2.0 * fine - coarse
    # tau >= 1 for any pore space (Wiener bound D_eff <= eps D): below it, or with a rise from
    # coarse to fine, the pair is outside the first-order range (rel_tol: the solves' own noise,
    # so that geometries the voxels render exactly, tau equal at both, pass)
    if fine > coarse * (1.0 + rel_tol) or extrapolated < 1.0 - rel_tol:
        raise ResolutionNotAsymptotic(
            f"tau {fine:.4g} at {voxel_um / 2:g} um against {coarse:.4g} at {voxel_um:g} um "
            f"extrapolates to {extrapolated:.4g}: the voxels are too coarse for the "
            f"first-order extrapolation (it needs tau_fine <= tau_coarse and "
            f"2 tau_fine - tau_coarse >= 1)")
    return ExtrapolatedTortuosity(extrapolated, coarse, fine, float(voxel_um), True)
