"""Every physical range microloop accepts, defined once, next to the physics that sets it.

The campaign file (`hpc.campaign.config`), the evaluation spec (`jobs.contract.spec`), the
procedural simulator (`kernels.structure.procedural`) and the cell model (`kernels.cell.design`)
all import these objects instead of writing their own numbers, so what the campaign file accepts
is what every later stage accepts: a value refused downstream is refused before submission.

Each range is closed, `[low, high]`, and says why its bounds are where they are. A value outside
one is an error naming the field, both bounds and the unit; nothing is clamped.

This module imports nothing of kernels at load time (the simulator imports it);
`kernels.cell.design.thickness_range_um` gives the cathode thicknesses a recipe box implies.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PhysicalRange:
    """A closed range `[low, high]` of one quantity, with its unit and the reason for the bounds."""

    name: str
    low: float
    high: float
    unit: str
    why: str
    integer: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"range {self.name}: need finite low < high, got [{self.low}, {self.high}]")

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)

    def interval_text(self) -> str:
        """`[low, high] unit`, the form every error message uses."""
        low, high = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
        unit = "" if self.unit == "-" else f" {self.unit}"
        return f"[{low}, {high}]{unit}"

    def describe(self) -> str:
        """What is accepted, e.g. `a finite number in [0.2, 0.55]`."""
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} in {self.interval_text()}"

    def contains(self, value: Any) -> bool:
        return _is_number(value, self.integer) and self.low <= value <= self.high

    def check(self, value: Any, field: str | None = None) -> float:
        """`value` (as float, or int for an integer range) if it lies inside; else ValueError
        naming `field` (default: the range's name), both bounds and the unit."""
        field = field or self.name
        if not _is_number(value, self.integer, finite=False):
            raise ValueError(f"{field} must be {self.describe()}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{field} must be {self.describe()}, got {value!r} (not finite)")
        if not self.low <= value <= self.high:
            raise ValueError(f"{field} = {value!r} is outside the accepted range "
                             f"{self.interval_text()}")
        return int(value) if self.integer else float(value)


def _is_number(value: Any, integer: bool = False, finite: bool = True) -> bool:
    """A real number (numpy scalars included), never a bool; an integral type for `integer`."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    if not isinstance(value, numbers.Integral if integer else numbers.Real):
        return False
    return not finite or math.isfinite(value)


# ---- design parameters: the recipe the optimiser varies ------------------------------------

AM_WT_FRAC = PhysicalRange(
    "am_wt_frac", 0.80, 0.98, "-",
    "weight fraction of active material in the solids, the rest carbon-binder: commercial NMC "
    "cathodes are 90-97 wt%; the simulator's CBD placement is defined from 80 (CBD-rich) to 98")
POROSITY = PhysicalRange(
    "porosity", 0.20, 0.55, "-",
    "pore volume fraction after calendering: 0.55 is the uncalendered coating, 0.20 the densest "
    "calendering the simulator models (kernels.structure.procedural.MIN_CALENDERING_FACTOR)")
BINDER_ADHESION = PhysicalRange(
    "binder_adhesion", 0.0, 1.0, "-",
    "a blend: 0 puts the CBD in bridges at particle necks, 1 in films of uniform thickness")
MASS_LOADING_MG_CM2 = PhysicalRange(
    "mass_loading_mg_cm2", 5.0, 50.0, "mg/cm2",
    "active-material mass per electrode area, 5 (thin power electrodes) to 50 (very thick); it "
    "sets the cathode thickness m / (phi_AM rho_AM), which must also lie in THICKNESS_UM")
MEAN_DIAMETER_UM = PhysicalRange(
    "mean_diameter_um", 0.5, 50.0, "um",
    "mean particle diameter before calendering (NMC secondary particles are 3-20 um); the "
    "simulator packs lognormal spheres of this mean")
#: How the procedural simulator calenders (kernels.structure.procedural): "rearrange" (the
#: default) keeps hard NMC secondary particles spheres and compresses their packing; "flatten"
#: (the default until 2026-12-03) compresses the particles with the box into oblate spheroids,
#: which shrinks their 3V/S with calendering (docs/cell-model.md, issue 15).
CALENDERING_MODELS = ("flatten", "rearrange")
DEFAULT_CALENDERING = "rearrange"

DIAMETER_SPREAD = PhysicalRange(
    "diameter_spread", 0.0, 1.0, "-",
    "sigma of the lognormal diameter distribution: 0 monodisperse, 1 a factor e per sigma")

CBD_DENSITY_G_CM3 = PhysicalRange(
    "cbd_density_g_cm3", 0.3, 2.2, "g/cm3",
    "CBD mass per volume of the CBD phase a generator places: 1.8-2.0 for a dense carbon + PVDF "
    "solid, ~0.9 for the nanoporous domain of kernels.cell.cbd_model (half pores), down to a "
    "very open 0.3")

#: what the campaign file's [space] may vary, in the optimiser's fixed order
DESIGN_PARAMETERS: dict[str, PhysicalRange] = {
    r.name: r for r in (AM_WT_FRAC, POROSITY, BINDER_ADHESION, MASS_LOADING_MG_CM2)
}
#: the simulator's particle-size inputs ([generator] in the campaign file)
PARTICLE_PARAMETERS: dict[str, PhysicalRange] = {
    r.name: r for r in (MEAN_DIAMETER_UM, DIAMETER_SPREAD)
}

# ---- the cell and the objective ------------------------------------------------------------

THICKNESS_UM = PhysicalRange(
    "thickness_um", 20.0, 300.0, "um",
    "cathode thickness the cell model accepts: commercial cathodes are 40-120 um; the DFN on "
    "PyBaMM's default mesh is solved in this project's tests from 20 to 300 um")
POWER_W = PhysicalRange(
    "power_W", 0.1, 20000.0, "W",
    "constant power per 4680 cell: 0.1 W is a discharge of hundreds of hours, 20 kW lies far "
    "beyond the collapse power of any design in range")
C_RATE = PhysicalRange(
    "c_rate", 0.01, 20.0, "1/h",
    "constant current in multiples of the nominal capacity: 0.01C (100 h) to 20C (3 min), the "
    "rates the cell model's discharges are set up and tested for")
MIN_PERCOLATING_FRACTION = PhysicalRange(
    "min_percolating_fraction", 0.0, 1.0, "-",
    "the fraction of a design's cubes whose pore and solid phases must both percolate for the "
    "design to be scored; a fraction, so 0 (any) to 1 (all)")

# ---- what the cell model accepts from the metrics ------------------------------------------
# The design space above produces porosities [0.20, 0.55] and AM volume fractions
# [0.271, 0.759] (the corners of am_wt_frac x porosity through the densities of AM and CBD);
# the cell model accepts those with 0.01 to spare, for voxel rounding of the phase counts
# (a 16^3 cube at porosity 0.20 holds 0.19995) and for volumes that are measured, not generated.
# tests/test_ranges.py checks that the corners lie inside.

MEASURED_POROSITY = PhysicalRange(
    "porosity", 0.19, 0.70, "-",
    "the design space's porosity [0.20, 0.55] with 0.01 to spare for voxel rounding; with the "
    "CBD as a nanoporous domain (CellModelOptions.cbd_volume) the electrolyte fraction adds the "
    "domain's nanopores, up to 0.68 at 80 wt% and porosity 0.55")
MEASURED_AM_VOLUME_FRACTION = PhysicalRange(
    "am_volume_fraction", 0.19, 0.77, "-",
    "AM volume fractions the design space produces ([0.271, 0.759], down to 0.197 when the CBD "
    "is placed as a nanoporous domain of 0.93 g/cm3) with 0.01 to spare")
TORTUOSITY_FACTOR = PhysicalRange(
    "tortuosity_factor", 1.0, 100.0, "-",
    "pore tortuosity factor; up to 100 because low-fidelity cubes of dense, CBD-rich electrodes "
    "measure 20-40 and a design must not score 0 for a narrow input range")
SPECIFIC_SURFACE_AREA_PER_UM = PhysicalRange(
    "specific_surface_area_per_um", 0.05, 3.0, "1/um",
    "AM surface per electrode volume: 3 phi/a gives particle radii from ~0.3 to ~45 um")
EFFECTIVE_CONDUCTIVITY_S_M = PhysicalRange(
    "effective_conductivity_S_m", 1e-5, 1000.0, "S/m",
    "effective electronic conductivity of the solid; measured NMC cathodes are 0.1-10 S/m, and a "
    "97-98 wt% AM cube whose CBD barely connects measures ~0.005 S/m with the intrinsic defaults: "
    "down to 1e-5 the DFN still scores it (low energy, checked at 10 and 200 W), not a failure")
CBD_COVERAGE = PhysicalRange(
    "cbd_coverage", 0.0, 1.0, "-", "fraction of the AM surface touching carbon-binder")
PARTICLE_RADIUS_UM = PhysicalRange(
    "particle_radius_um", 0.1, 50.0, "um",
    "measured 3V/S radius of the AM particles: sub-micron primaries to large secondaries")

#: every range the cell model checks (kernels.cell.design and kernels.cell.model), by field name
CELL_MODEL_RANGES: dict[str, PhysicalRange] = {
    r.name: r for r in (
        MEASURED_POROSITY, MEASURED_AM_VOLUME_FRACTION, THICKNESS_UM, TORTUOSITY_FACTOR,
        SPECIFIC_SURFACE_AREA_PER_UM, EFFECTIVE_CONDUCTIVITY_S_M, CBD_COVERAGE,
        PARTICLE_RADIUS_UM, POWER_W, C_RATE,
    )
}

# ---- fidelity: how finely a design is characterised ----------------------------------------

CUBE_VOXELS = PhysicalRange(
    "cube_voxels", 16, 1024, "voxels", integer=True,
    why="edge of one characterised cube: below 16 voxels a cube holds less than one or two "
        "particles; at 1024 one cube is 1 GiB of labels and its solves need ~110 GiB")
VOXEL_UM = PhysicalRange(
    "voxel_um", 0.01, 10.0, "um",
    "edge of one voxel: 0.01 um (FIB-SEM) to 10 um (coarser than the particles it must resolve); "
    "a trained generator fixes its own, stored with its weights")


def check_range(name: str, value: Any) -> float:
    """ValueError naming `name` and both bounds unless `value` lies in the cell model's range."""
    return CELL_MODEL_RANGES[name].check(value)
