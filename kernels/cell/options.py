"""The modelling choices of the cell model, named, with defensible defaults (docs/cell-model.md).

Each field is one assumption a battery modeller would question; the old behaviour of every one
stays reachable by a named value so that its effect can be measured
(tests/benchmarks/bench_cell_sensitivity.py):

- radius_rule: "particle_size" (default) R = the design's measured particle radius
  (`particle_radius_um`, kernels.metrics.particle_size), or 3 phi_AM / a_AM-total when the design
  carries none; "legacy_3phi_over_a_eff" R = 3 phi_AM / (a (1 - blocking * coverage)), the old
  rule in which carbon-binder coverage made the particles bigger.
- cbd_blocking: share of the CBD-covered AM surface lost to the reaction. With "particle_size"
  it scales the exchange-current density (coverage costs active area, not size).
- capacity_basis: "am_density" (default) c_max = rho_AM / M_AM, so the AM mass and its
  theoretical capacity agree (NMC811: 48 800 mol/m^3, 275.5 mAh/g); "parameter_set" keeps the
  parameter set's c_max (Chen2020 63 104 mol/m^3: 356 mAh/g at 4.75 g/cm^3).
- anode_bruggeman, separator_bruggeman: electrolyte transport outside the cathode,
  D_eff = eps^b D (Chen2020: 1.5 both). A measured tortuosity tau gives b = 1 - ln tau / ln eps.
- thermal: "isothermal" (default) or "lumped" (PyBaMM's lumped model, 4680 can cooling).
- cbd_volume: what the CBD phase of the microstructure is, end to end: "solid" (default: the
  generator places 1.8 g/cm^3 of carbon + binder, which blocks ions; the design's porosity is the
  pore fraction) or "nanoporous_domain" (the domain of kernels.cell.cbd_model.NanoporousCBD: the
  procedural generator places its volume at 0.93 g/cm^3, the ionic solve lets ions through its
  electrolyte-filled nanopores, the design's porosity is pores + nanopores and the cell mass
  counts 1 - porosity - phi_AM as its carbon + binder skeleton). `cbd_domain()` is the domain.
- caught_discharge: what a discharge that ends on an end-of-discharge event (a particle surface
  saturating, the electrolyte running dry; kernels.cell.pybamm_model.add_end_of_discharge_events)
  before the voltage cut-off is: "named_failure" (default: infeasible-looking result with
  `lower_bound` set, which the evaluation turns into a named failure, never a value) or
  "lower_bound_value" (the old behaviour: the energy delivered up to the event is told as the
  design's value; it is only a lower bound of the discharge to the cut-off).

N/P and the anode composition are packaging (Packaging4680.np_ratio, anode_porosity,
anode_am_volume_fraction); the conductivities act in the transport solve, not here
(kernels.cell.cbd_model).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from kernels.cell.cbd_model import NanoporousCBD

RADIUS_RULES = ("particle_size", "legacy_3phi_over_a_eff")
CAPACITY_BASES = ("am_density", "parameter_set")
THERMAL_MODELS = ("isothermal", "lumped")
CBD_VOLUMES = ("solid", "nanoporous_domain")
CAUGHT_DISCHARGES = ("named_failure", "lower_bound_value")
# LiNi0.8Mn0.1Co0.1O2: 6.94 + 0.8 * 58.693 + 0.1 * 54.938 + 0.1 * 58.933 + 2 * 15.999
NMC811_MOLAR_MASS_G_MOL = 97.28
DEFAULT_CBD_BLOCKING = 0.5
CHEN2020_BRUGGEMAN = 1.5


@dataclass(frozen=True)
class CellModelOptions:
    """Named modelling choices; `CellModelOptions.legacy()` is the model before issue 15."""

    radius_rule: str = "particle_size"
    cbd_blocking: float = DEFAULT_CBD_BLOCKING
    capacity_basis: str = "am_density"
    am_molar_mass_g_mol: float = NMC811_MOLAR_MASS_G_MOL
    anode_bruggeman: float = CHEN2020_BRUGGEMAN
    separator_bruggeman: float = CHEN2020_BRUGGEMAN
    thermal: str = "isothermal"
    cbd_volume: str = "solid"
    caught_discharge: str = "named_failure"

    def __post_init__(self) -> None:
        for name, accepted in (("radius_rule", RADIUS_RULES), ("capacity_basis", CAPACITY_BASES),
                               ("thermal", THERMAL_MODELS), ("cbd_volume", CBD_VOLUMES),
                               ("caught_discharge", CAUGHT_DISCHARGES)):
            if getattr(self, name) not in accepted:
                raise ValueError(f"CellModelOptions.{name} must be one of {list(accepted)}, "
                                 f"got {getattr(self, name)!r}")
        if not (isinstance(self.cbd_blocking, int | float) and 0.0 <= self.cbd_blocking <= 1.0):
            raise ValueError(f"CellModelOptions.cbd_blocking must be in [0, 1], "
                             f"got {self.cbd_blocking!r}")
        for name in ("anode_bruggeman", "separator_bruggeman"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 1.0 <= value <= 10.0):
                raise ValueError(f"CellModelOptions.{name} must be in [1, 10], got {value!r}")
        if not (math.isfinite(self.am_molar_mass_g_mol) and self.am_molar_mass_g_mol > 0):
            raise ValueError("CellModelOptions.am_molar_mass_g_mol must be > 0, "
                             f"got {self.am_molar_mass_g_mol!r}")

    def cbd_domain(self) -> NanoporousCBD | None:
        """The nanoporous CBD domain the microstructure's CBD label stands for, or None (solid)."""
        return NanoporousCBD() if self.cbd_volume == "nanoporous_domain" else None

    @classmethod
    def legacy(cls, **changes) -> CellModelOptions:
        """The choices of the model before issue 15 (radius with blocking, Chen2020's c_max)."""
        return cls(**{"radius_rule": "legacy_3phi_over_a_eff",
                      "capacity_basis": "parameter_set", **changes})

    @classmethod
    def from_dict(cls, values: dict) -> CellModelOptions:
        """From a dict / TOML table; unknown keys are an error listing the accepted ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CellModelOptions key(s) {unknown}; accepted: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def cell_model_options(table: dict) -> CellModelOptions:
    """CellModelOptions from a campaign's `[cell] model_options` table: its fields, plus an
    optional `preset` ("default" or "legacy") the other keys change."""
    if not isinstance(table, dict):
        raise ValueError(f"cell.model_options must be a table, got {type(table).__name__}")
    values = dict(table)
    preset = values.pop("preset", "default")
    if preset not in ("default", "legacy"):
        raise ValueError(f"cell.model_options.preset must be 'default' or 'legacy', got {preset!r}")
    known = {f.name for f in fields(CellModelOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"cell.model_options: unknown key(s) {unknown}; accepted: "
                         f"{sorted(known | {'preset'})}")
    try:
        if preset == "legacy":
            return CellModelOptions.legacy(**values)
        return CellModelOptions(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cell.model_options: {error}") from None


def tortuosity_to_bruggeman(tortuosity_factor: float, porosity: float) -> float:
    """b with eps^b = eps / tau: a measured tortuosity as the Bruggeman exponent PyBaMM takes."""
    if not (math.isfinite(tortuosity_factor) and tortuosity_factor >= 1.0):
        raise ValueError(f"tortuosity_factor must be >= 1, got {tortuosity_factor!r}")
    if not 0.0 < porosity < 1.0:
        raise ValueError(f"porosity must be in (0, 1), got {porosity!r}")
    return 1.0 - math.log(tortuosity_factor) / math.log(porosity)
