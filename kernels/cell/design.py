"""A cathode design as the cell model sees it: validated quantities and how metrics map to them.

Kept apart from the PyBaMM code so that validation, the mass-loading conversion and the
metrics mapping can be used (and tested) without importing PyBaMM.

- Bruggeman exponent b = 1 - ln(tau) / ln(eps), so that eps^b = eps / tau, clamped to
  [BRUGGEMAN_MIN, BRUGGEMAN_MAX] (no design inside the documented ranges reaches the clamp).
- The AM surface a = a_AM-pore + a_AM-CBD and cbd_coverage = a_AM-CBD / a. The particle radius
  is the metrics' measured particle size "am_particle_radius_um" (kernels.metrics.particle_size)
  when present; the cell model's radius rule decides what it uses (kernels.cell.options).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from kernels.cell.geometry_4680 import RHO_AM_G_CM3
from kernels.cell.ranges import CELL_MODEL_RANGES, check_range
from kernels.structure.procedural import target_phase_fractions

# Documented input ranges, defined once in kernels.cell.ranges: inside them nothing raises;
# outside them ValueError names the field and both bounds.
RANGES: dict[str, tuple[float, float]] = {n: r.bounds for n, r in CELL_MODEL_RANGES.items()}
BRUGGEMAN_MIN, BRUGGEMAN_MAX = 1.0, 10.0
# The measured particle radius (3V/S, um): from sub-micron primary particles to large secondaries.
PARTICLE_RADIUS_UM_RANGE = (0.1, 50.0)
# Tortuosity just below 1 happens from voxel noise; it is read as 1.
TORTUOSITY_NOISE_FLOOR = 0.95


@dataclass(frozen=True)
class ElectrodeDesign:
    """The cathode as the cell model sees it; validated on construction.

    `tortuosity_factor = math.inf` and `effective_conductivity_S_m = 0.0` are accepted as the
    "not percolating" markers the metrics produce; such a design scores infeasible.
    """

    porosity: float
    am_volume_fraction: float
    thickness_um: float
    tortuosity_factor: float
    specific_surface_area_per_um: float  # AM surface per total volume, 1/um (see cbd_coverage)
    effective_conductivity_S_m: float
    cbd_coverage: float = 0.0  # fraction of that AM surface touching carbon-binder
    particle_radius_um: float | None = None  # measured particle 3V/S radius; None: not measured

    def __post_init__(self) -> None:
        check_range("porosity", self.porosity)
        check_range("am_volume_fraction", self.am_volume_fraction)
        check_range("thickness_um", self.thickness_um)
        if self.tortuosity_factor != math.inf:
            check_range("tortuosity_factor", self.tortuosity_factor)
        check_range("specific_surface_area_per_um", self.specific_surface_area_per_um)
        if self.effective_conductivity_S_m != 0.0:
            check_range("effective_conductivity_S_m", self.effective_conductivity_S_m)
        check_range("cbd_coverage", self.cbd_coverage)
        if self.particle_radius_um is not None:
            low, high = PARTICLE_RADIUS_UM_RANGE
            value = self.particle_radius_um
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and low <= value <= high):
                raise ValueError(f"particle_radius_um = {value!r} is outside the accepted range "
                                 f"[{low}, {high}] (or None: not measured)")

    @property
    def cbd_volume_fraction(self) -> float:
        return 1.0 - self.porosity - self.am_volume_fraction

    def infeasible_reason(self) -> str | None:
        """Why this design cannot be a working electrode, or None."""
        if self.cbd_volume_fraction < -1e-9:
            return (
                f"porosity + am_volume_fraction = {self.porosity + self.am_volume_fraction:.3f} "
                "exceeds 1"
            )
        if self.tortuosity_factor == math.inf:
            return "pore phase does not percolate through the electrode (tortuosity infinite)"
        if self.effective_conductivity_S_m == 0.0:
            return "solid phase does not conduct through the electrode (conductivity 0)"
        return None


def thickness_from_mass_loading_um(
    mass_loading_mg_cm2: float, am_volume_fraction: float, rho_am_g_cm3: float = RHO_AM_G_CM3
) -> float:
    """Cathode thickness that carries a given AM mass loading: L = m / (phi_AM rho_AM)."""
    if not (math.isfinite(mass_loading_mg_cm2) and mass_loading_mg_cm2 > 0):
        raise ValueError(f"mass_loading_mg_cm2 must be > 0, got {mass_loading_mg_cm2}")
    check_range("am_volume_fraction", am_volume_fraction)
    if not (math.isfinite(rho_am_g_cm3) and rho_am_g_cm3 > 0):
        raise ValueError(f"rho_am_g_cm3 must be > 0, got {rho_am_g_cm3}")
    # mg/cm^2 / (g/cm^3) = 1e-3 cm = 10 um
    return mass_loading_mg_cm2 / (am_volume_fraction * rho_am_g_cm3) * 10.0


def design_from_metrics(metrics: dict, thickness_um: float) -> ElectrodeDesign:
    """ElectrodeDesign from `VolumeMetrics.to_dict()` and a thickness.

    The AM surface is a_AM-pore + a_AM-CBD (the particles' free surface) and cbd_coverage =
    a_AM-CBD / that sum; "am_particle_radius_um", when the metrics hold it, is the measured
    particle size; "electrolyte_volume_fraction", when they hold it (the CBD characterised as a
    nanoporous domain), is the porosity. A non-percolating volume (tortuosity None / inf, or `percolating` False)
    becomes an infeasible design.
    """
    try:
        fractions = metrics["volume_fraction"]
        areas = metrics["specific_surface_area_per_um"]
        porosity = float(fractions["pore"])
        if metrics.get("electrolyte_volume_fraction") is not None:
            # the CBD was characterised as a nanoporous domain: the DFN's porosity is all the
            # electrolyte (pores + nanopores), the fraction the tortuosity is relative to
            porosity = float(metrics["electrolyte_volume_fraction"])
        am_fraction = float(fractions["am"])
        a_pore = float(areas["am_pore"])
        a_cbd = float(areas.get("am_cbd", 0.0) or 0.0)
    except (KeyError, TypeError) as error:
        raise ValueError(
            "metrics must hold volume_fraction{pore,am,cbd} and "
            f"specific_surface_area_per_um{{am_pore,am_cbd}}; missing {error}"
        ) from None
    tau = metrics.get("tortuosity_factor")
    percolating = bool(metrics.get("percolating", True))
    tau = math.inf if (tau is None or not percolating) else float(tau)
    if TORTUOSITY_NOISE_FLOOR <= tau < 1.0:
        tau = 1.0
    sigma = metrics.get("effective_conductivity_S_m")
    sigma = 0.0 if sigma is None else float(sigma)
    area = a_pore + a_cbd
    coverage = a_cbd / area if area > 0 else 0.0
    radius = metrics.get("am_particle_radius_um")
    return ElectrodeDesign(
        porosity=porosity,
        am_volume_fraction=am_fraction,
        thickness_um=float(thickness_um),
        tortuosity_factor=tau,
        specific_surface_area_per_um=area,
        effective_conductivity_S_m=sigma,
        cbd_coverage=coverage,
        particle_radius_um=None if radius is None else float(radius),
    )



def bruggeman_exponent(tortuosity_factor: float, porosity: float) -> float:
    """b with porosity^b = porosity / tortuosity, clamped to [BRUGGEMAN_MIN, BRUGGEMAN_MAX]."""
    b = 1.0 - math.log(tortuosity_factor) / math.log(porosity)
    return min(BRUGGEMAN_MAX, max(BRUGGEMAN_MIN, b))


def thickness_range_um(am_wt_frac: tuple[float, float], porosity: tuple[float, float],
                       mass_loading_mg_cm2: tuple[float, float]) -> tuple[float, float]:
    """Thinnest and thickest cathode a box of recipes gives: L = m / (phi_AM rho_AM).

    phi_AM rises with am_wt_frac and falls with porosity, and L is linear in m, so the extremes
    lie at the box's corners; all eight are evaluated. A fixed value is a (v, v) interval.
    """
    thicknesses = [
        thickness_from_mass_loading_um(m, target_phase_fractions(w, p)["am"])
        for w, p, m in itertools.product(am_wt_frac, porosity, mass_loading_mg_cm2)
    ]
    return min(thicknesses), max(thicknesses)
