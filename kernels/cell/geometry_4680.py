"""Geometry and mass of a 4680 jelly roll: how a cathode design becomes Ah, Wh, Wh/L and Wh/kg.

The electrochemistry (kernels.cell.model) works per square metre of electrode; this module says how
many square metres fit in a 46 x 80 mm can and what the whole cell weighs. Every packaging
assumption is a named field of `Packaging4680` with a documented default so that a user can
calibrate them (for example against a teardown) from a dict or a TOML table:
`Packaging4680.from_dict(table)`.

Model (SI inside, units in every name):
- repeat unit of the roll  t = 2 (L_cathode + L_anode + L_separator) + t_Al + t_Cu
- roll outer radius        r_out = D/2 - can wall - clearance
- roll length              l = pi (r_out^2 - r_core^2) / t,   turns = (r_out - r_core) / t
- electrode area           A = 2 l h_coated   (both sides of the cathode foil)
- masses                   coatings, foils, two separators, electrolyte filling every pore
                           (plus an excess fraction), and the can + hardware as one number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

# Densities of the materials that are not part of the PyBaMM parameter set (g/cm^3).
RHO_AM_G_CM3 = 4.75  # NMC cathode active material (same value as kernels.structure.procedural)
RHO_CBD_G_CM3 = 1.8  # carbon-binder domain (same value as kernels.structure.procedural)
RHO_ANODE_AM_G_CM3 = 2.24  # graphite
RHO_AL_G_CM3 = 2.70
RHO_CU_G_CM3 = 8.96
RHO_SEPARATOR_SOLID_G_CM3 = 0.95  # polyethylene / polypropylene skeleton
RHO_ELECTROLYTE_G_CM3 = 1.20  # 1 M LiPF6 in carbonate solvents


@dataclass(frozen=True)
class Packaging4680:
    """Named packaging assumptions of a 4680 cell; every field has a documented default.

    The defaults are a generic tabless 46 x 80 mm cell, not a calibrated copy of one product:
    see docs/cell-model.md for how they compare with the Ank et al. (2023) teardown and for a
    calibrated set.
    """

    diameter_mm: float = 46.0  # can outer diameter (the envelope for Wh/L)
    height_mm: float = 80.0  # can outer height (the envelope for Wh/L)
    can_wall_mm: float = 0.5  # steel can wall thickness
    clearance_mm: float = 0.2  # radial gap between the wound roll and the can wall
    core_radius_mm: float = 2.5  # radius of the hollow mandrel hole in the roll centre
    coated_height_mm: float = 70.0  # coated electrode height (the rest is tabs, lids, gaps)
    hardware_mass_g: float = 70.0  # can, lids, current-collector plates, insulators, vent
    electrolyte_excess: float = 0.10  # electrolyte beyond the pore volume, fraction of it
    separator_thickness_um: float = 12.0  # each of the two separator layers per repeat
    separator_porosity: float = 0.47
    al_foil_um: float = 15.0  # cathode current collector
    cu_foil_um: float = 8.0  # anode current collector
    np_ratio: float | None = 1.1  # anode/cathode capacity; None keeps the parameter set's anode
    first_cycle_loss: float = 0.10  # cyclable lithium lost to SEI formation, fraction (N/P only)
    anode_porosity: float | None = None  # None: the parameter set's value
    anode_am_volume_fraction: float | None = None  # None: the parameter set's value
    rho_anode_am_g_cm3: float = RHO_ANODE_AM_G_CM3
    rho_anode_cbd_g_cm3: float = RHO_CBD_G_CM3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError naming the field and the accepted range for nonsense packaging."""
        positive = (
            "diameter_mm", "height_mm", "coated_height_mm", "separator_thickness_um",
            "al_foil_um", "cu_foil_um", "rho_anode_am_g_cm3", "rho_anode_cbd_g_cm3",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Packaging4680.{name} must be a number > 0, got {value!r}")
        for name in ("can_wall_mm", "clearance_mm", "core_radius_mm", "hardware_mass_g",
                     "electrolyte_excess"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Packaging4680.{name} must be a number >= 0, got {value!r}")
        if not 0.0 < self.separator_porosity < 1.0:
            raise ValueError(
                f"Packaging4680.separator_porosity must be in (0, 1), got {self.separator_porosity}"
            )
        if self.np_ratio is not None and not 1.0 <= self.np_ratio <= 2.0:
            raise ValueError(f"Packaging4680.np_ratio must be in [1, 2] or None, got {self.np_ratio}")
        if not 0.0 <= self.first_cycle_loss < 0.5:
            raise ValueError(
                f"Packaging4680.first_cycle_loss must be in [0, 0.5), got {self.first_cycle_loss}"
            )
        for name in ("anode_porosity", "anode_am_volume_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"Packaging4680.{name} must be in (0, 1) or None, got {value}")
        if self.coated_height_mm >= self.height_mm:
            raise ValueError(
                f"Packaging4680.coated_height_mm ({self.coated_height_mm}) must be below "
                f"height_mm ({self.height_mm})"
            )
        if self.roll_outer_radius_mm <= self.core_radius_mm:
            raise ValueError(
                "Packaging4680: diameter_mm / 2 - can_wall_mm - clearance_mm must exceed "
                f"core_radius_mm; got outer radius {self.roll_outer_radius_mm} mm"
            )

    @property
    def roll_outer_radius_mm(self) -> float:
        return self.diameter_mm / 2.0 - self.can_wall_mm - self.clearance_mm

    @property
    def envelope_volume_L(self) -> float:
        """Volume of the cylinder the cell occupies (46 x 80 mm: 0.1330 L)."""
        return math.pi * (self.diameter_mm / 2.0) ** 2 * self.height_mm * 1e-6

    @classmethod
    def from_dict(cls, values: dict) -> Packaging4680:
        """Build from a dict / TOML table; unknown keys are an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown Packaging4680 key(s) {unknown}; accepted keys: {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


# Packaging calibrated so that the Chen2020 cathode at 25 W (about C/3) reproduces the Ank et al.
# (J. Electrochem. Soc. 170, 120536, 2023) gen-1 4680 teardown: 622.4 Wh/L and 232.5 Wh/kg.
# Two knobs were fitted (coated height to the Wh/L, hardware mass to the Wh/kg) after setting the
# can wall to the 0.6 mm reported for the torn-down can; see docs/cell-model.md. Fitted with the
# default CellModelOptions (c_max from the AM density); ANK2023_PACKAGING_LEGACY is the fit for
# CellModelOptions.legacy() (Chen2020's c_max, 30 % more capacity per gram).
ANK2023_PACKAGING: dict[str, float] = {
    "can_wall_mm": 0.6,
    "coated_height_mm": 64.9,
    "hardware_mass_g": 77.1,
}
ANK2023_PACKAGING_LEGACY: dict[str, float] = {
    "can_wall_mm": 0.6,
    "coated_height_mm": 56.9,
    "hardware_mass_g": 119.5,
}
ANK2023_ENERGY_DENSITY_WH_L = 622.4
ANK2023_SPECIFIC_ENERGY_WH_KG = 232.5


@dataclass(frozen=True)
class LayerStack:
    """What one square metre of electrode holds: thicknesses (m), fractions, densities (kg/m^3)."""

    cathode_thickness_m: float
    cathode_porosity: float
    cathode_am_fraction: float
    anode_thickness_m: float
    anode_porosity: float
    anode_am_fraction: float
    rho_cathode_am_kg_m3: float = RHO_AM_G_CM3 * 1e3
    # the cathode's CBD volume: solid (1.8 g/cm^3, no pores) or a nanoporous domain whose pores
    # hold electrolyte (kernels.cell.cbd_model.NanoporousCBD: 0.93 g/cm^3 of solid, half pores)
    rho_cathode_cbd_kg_m3: float = RHO_CBD_G_CM3 * 1e3
    cathode_cbd_nanoporosity: float = 0.0


@dataclass(frozen=True)
class JellyRoll:
    """The wound roll and the cell mass budget for one design."""

    repeat_thickness_um: float
    roll_length_m: float
    turns: float
    electrode_area_m2: float
    mass_g: dict[str, float]  # itemised: cathode, anode, al_foil, cu_foil, separator, electrolyte, hardware
    total_mass_g: float
    envelope_volume_L: float
    cathode_am_mass_g: float


def jelly_roll(stack: LayerStack, packaging: Packaging4680) -> JellyRoll:
    """Wind the layer stack into the 4680 can: roll length, turns, area and the mass budget."""
    p = packaging
    t_al = p.al_foil_um * 1e-6
    t_cu = p.cu_foil_um * 1e-6
    t_sep = p.separator_thickness_um * 1e-6
    repeat_m = 2.0 * (stack.cathode_thickness_m + stack.anode_thickness_m + t_sep) + t_al + t_cu
    r_out = p.roll_outer_radius_mm * 1e-3
    r_core = p.core_radius_mm * 1e-3
    length_m = math.pi * (r_out**2 - r_core**2) / repeat_m
    turns = (r_out - r_core) / repeat_m
    area = 2.0 * length_m * p.coated_height_mm * 1e-3

    cbd_c = max(0.0, 1.0 - stack.cathode_porosity - stack.cathode_am_fraction)
    cbd_a = max(0.0, 1.0 - stack.anode_porosity - stack.anode_am_fraction)
    kg_per_g = 1e3
    cathode_am_kg = area * stack.cathode_thickness_m * stack.cathode_am_fraction * stack.rho_cathode_am_kg_m3
    masses_kg = {
        "cathode": cathode_am_kg
        + area * stack.cathode_thickness_m * cbd_c * stack.rho_cathode_cbd_kg_m3,
        "anode": area * stack.anode_thickness_m
        * (stack.anode_am_fraction * p.rho_anode_am_g_cm3 + cbd_a * p.rho_anode_cbd_g_cm3) * 1e3,
        "al_foil": area / 2.0 * t_al * RHO_AL_G_CM3 * 1e3,
        "cu_foil": area / 2.0 * t_cu * RHO_CU_G_CM3 * 1e3,
        "separator": area * t_sep * (1.0 - p.separator_porosity) * RHO_SEPARATOR_SOLID_G_CM3 * 1e3,
    }
    pore_volume_m3 = area * (
        (stack.cathode_porosity + cbd_c * stack.cathode_cbd_nanoporosity)
        * stack.cathode_thickness_m
        + stack.anode_porosity * stack.anode_thickness_m
        + p.separator_porosity * t_sep
    )
    masses_kg["electrolyte"] = pore_volume_m3 * (1.0 + p.electrolyte_excess) * RHO_ELECTROLYTE_G_CM3 * 1e3
    mass_g = {name: value * kg_per_g for name, value in masses_kg.items()}
    mass_g["hardware"] = p.hardware_mass_g
    return JellyRoll(
        repeat_thickness_um=repeat_m * 1e6,
        roll_length_m=length_m,
        turns=turns,
        electrode_area_m2=area,
        mass_g=mass_g,
        total_mass_g=sum(mass_g.values()),
        envelope_volume_L=p.envelope_volume_L,
        cathode_am_mass_g=cathode_am_kg * kg_per_g,
    )
