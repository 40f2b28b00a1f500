"""Intrinsic conductivities and the carbon-binder domain (CBD) as a nanoporous conductor.

The transport solve (kernels.metrics) needs one conductivity per solid phase. These are the
project's defaults, defined here next to the physics and read by the evaluation spec
(`spec.fidelity.conductivity_am_S_m` / `conductivity_cbd_S_m` when None):

- `DEFAULT_CONDUCTIVITY_AM_S_M` = 1e-2 S/m: the *intrinsic* electronic conductivity of lithiated
  (discharged) NMC811, order 1e-3..1e-2 S/m; it rises by orders of magnitude on delithiation
  (Amin & Chiang, J. Electrochem. Soc. 163, A1512, 2016, measured 1e-5..1e-2 S/m for NMC333/523
  over the lithium range; Ni-rich NMC sits at the upper end). Not Chen2020's 0.18 S/m, which is
  the conductivity of the whole LG M50 electrode.
- `DEFAULT_CONDUCTIVITY_CBD_S_M` = `NanoporousCBD().conductivity_S_m` (about 117 S/m): the CBD
  is carbon black + PVDF with electrolyte-filled nanopores. Bruggeman on its solid part:
  sigma_CBD = sigma_carbon * (phi_carbon)^1.5 with phi_carbon = (1 - eps_CBD) * the carbon
  share of the solid volume.

The nanoporous CBD also occupies more volume than its solid mass at 1.8 g/cm^3 implies:
domain volume = solid volume / (1 - eps_CBD). `domain_density_g_cm3` is the density a
microstructure generator must use for the CBD domain (the procedural simulator still places
solid CBD: `simulator_am_wt_frac` converts a recipe until it takes this density).

As a phase of the microstructure (`CellModelOptions.cbd_volume = "nanoporous_domain"`): the
generator places the domain's volume (`domain_density_g_cm3`), the electronic solve gives a
CBD voxel `conductivity_S_m`, the ionic solve gives it `ionic_relative_diffusivity` (the
electrolyte in its nanopores, Bruggeman ionic_bruggeman_exponent on the nanoporosity), and the
DFN's porosity is the electrolyte fraction pores + nanoporosity x CBD domain
(kernels.metrics.volume.characterise_volume with `cbd_domain`).

The "legacy_solid" model (sigma 10 S/m, solid density, the old defaults together with
sigma_AM = 0.18 S/m) stays reachable for comparison: `LEGACY_CONDUCTIVITY_AM_S_M`,
`LegacySolidCBD`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Carbon black (Super P / C65) compacted powder: of order 1e2..1e4 S/m depending on pressure
# (Spahr et al., J. Power Sources 196, 3404, 2011); 1e3 S/m is a mid value.
CARBON_CONDUCTIVITY_S_M = 1.0e3
RHO_CARBON_G_CM3 = 1.95  # carbon black skeletal density (1.8-2.1 g/cm^3)
RHO_PVDF_G_CM3 = 1.78
CARBON_MASS_FRACTION_OF_CBD = 0.5  # carbon : PVDF = 1 : 1 by mass, a common recipe
# Nanoporosity of the CBD domain from FIB-SEM of NMC cathodes: about one half
# (Vierrath et al., Electrochem. Commun. 60, 176, 2015).
CBD_NANOPOROSITY = 0.5
CBD_BRUGGEMAN_EXPONENT = 1.5
RHO_CBD_SOLID_G_CM3 = 1.8  # the simulator's solid CBD (kernels.structure.procedural)

LEGACY_CONDUCTIVITY_AM_S_M = 0.18  # Chen2020's effective electrode value, used as AM before
LEGACY_CONDUCTIVITY_CBD_S_M = 10.0


def _fraction(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class NanoporousCBD:
    """Carbon-binder domain as carbon + binder skeleton with electrolyte-filled nanopores."""

    carbon_mass_fraction: float = CARBON_MASS_FRACTION_OF_CBD
    nanoporosity: float = CBD_NANOPOROSITY
    carbon_conductivity_S_m: float = CARBON_CONDUCTIVITY_S_M
    bruggeman_exponent: float = CBD_BRUGGEMAN_EXPONENT
    ionic_bruggeman_exponent: float = CBD_BRUGGEMAN_EXPONENT
    rho_carbon_g_cm3: float = RHO_CARBON_G_CM3
    rho_binder_g_cm3: float = RHO_PVDF_G_CM3

    def __post_init__(self) -> None:
        _fraction("carbon_mass_fraction", self.carbon_mass_fraction, 0.0, 1.0)
        _fraction("nanoporosity", self.nanoporosity, 0.0, 0.9)
        for name in ("carbon_conductivity_S_m", "bruggeman_exponent", "ionic_bruggeman_exponent",
                     "rho_carbon_g_cm3",
                     "rho_binder_g_cm3"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"NanoporousCBD.{name} must be a number > 0, got {value!r}")

    @property
    def carbon_volume_fraction_of_solid(self) -> float:
        carbon = self.carbon_mass_fraction / self.rho_carbon_g_cm3
        binder = (1.0 - self.carbon_mass_fraction) / self.rho_binder_g_cm3
        return carbon / (carbon + binder)

    @property
    def solid_density_g_cm3(self) -> float:
        carbon = self.carbon_mass_fraction / self.rho_carbon_g_cm3
        binder = (1.0 - self.carbon_mass_fraction) / self.rho_binder_g_cm3
        return 1.0 / (carbon + binder)

    @property
    def domain_density_g_cm3(self) -> float:
        """Mass of CBD solid per volume of the CBD domain (nanopores included)."""
        return self.solid_density_g_cm3 * (1.0 - self.nanoporosity)

    @property
    def conductivity_S_m(self) -> float:
        """Effective conductivity of the domain: Bruggeman on its carbon volume fraction."""
        phi_carbon = (1.0 - self.nanoporosity) * self.carbon_volume_fraction_of_solid
        return self.carbon_conductivity_S_m * phi_carbon**self.bruggeman_exponent

    @property
    def ionic_relative_diffusivity(self) -> float:
        """D_eff / D of the electrolyte in the domain's nanopores: Bruggeman on the nanoporosity
        (eps_CBD^b, 0.354 at 0.5 and b 1.5): the ionic conductance a CBD voxel gets."""
        return self.nanoporosity**self.ionic_bruggeman_exponent


@dataclass(frozen=True)
class LegacySolidCBD:
    """The old CBD: a solid 10 S/m phase at the solid density (no nanopores)."""

    conductivity_S_m: float = LEGACY_CONDUCTIVITY_CBD_S_M
    domain_density_g_cm3: float = RHO_CBD_SOLID_G_CM3


CBD_MODELS = {"nanoporous_bruggeman": NanoporousCBD, "legacy_solid": LegacySolidCBD}


def cbd_model(name: str) -> NanoporousCBD | LegacySolidCBD:
    """The named CBD model with its documented defaults."""
    if name not in CBD_MODELS:
        raise ValueError(f"cbd_model must be one of {sorted(CBD_MODELS)}, got {name!r}")
    return CBD_MODELS[name]()


DEFAULT_CONDUCTIVITY_AM_S_M = 1.0e-2
DEFAULT_CONDUCTIVITY_CBD_S_M = NanoporousCBD().conductivity_S_m


def simulator_am_wt_frac(am_wt_frac: float,
                         model: NanoporousCBD | LegacySolidCBD | None = None,
                         rho_simulator_cbd_g_cm3: float = RHO_CBD_SOLID_G_CM3) -> float:
    """The AM weight fraction to give a generator that places CBD at `rho_simulator_cbd_g_cm3`
    so that it produces the phase volumes of `am_wt_frac` with the CBD as a nanoporous domain.

    Same AM : CBD volume ratio: (1 - w') / w' = (1 - w) / w * rho_sim / rho_domain.
    """
    _fraction("am_wt_frac", am_wt_frac, 0.0, 1.0)
    model = model if model is not None else NanoporousCBD()
    ratio = (1.0 - am_wt_frac) / am_wt_frac * rho_simulator_cbd_g_cm3 / model.domain_density_g_cm3
    return 1.0 / (1.0 + ratio)
