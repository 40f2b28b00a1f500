"""The 4680 cell model: a PyBaMM DFN scored as a whole 46 x 80 mm cell.

Why it looks like this (numbers in docs/cell-model.md):
- One DFN per (parameter set, half cell, operating mode, separator) is built ONCE per process
  and every design quantity is a PyBaMM `[input]`: cathode porosity, AM volume fraction,
  Bruggeman exponent, effective conductivity, and also cathode thickness, particle radius and
  anode thickness, which `pybamm.SymbolicUniform1DSubMesh` allows. Measured here this costs
  little per solve and avoids a ~0.3 s rebuild per design; see the benchmark.
- The model electrode has 1 m^2; the 4680 roll (kernels.cell_geometry_4680) gives the area, so
  a power per cell P becomes P / A per m^2 and energies scale back by A (isothermal: exact).
- Every discharge returns a `DischargeResult`. A design that cannot deliver (collapse at high
  power, solver failure, cut-off at t = 0, non-percolating pores) gives energy 0, feasible False
  and a reason; only inputs outside the documented ranges raise ValueError.

Mapping of the microstructure metrics (REFERENCE / ARCHITECTURE):
- Bruggeman exponent b = 1 - ln(tau) / ln(eps), so that eps^b = eps / tau, clamped to
  [BRUGGEMAN_MIN, BRUGGEMAN_MAX] (no design inside the documented ranges reaches the clamp).
- Particle radius R = 3 phi_AM / a_eff with a_eff = a_AM * (1 - cbd_blocking * cbd_coverage):
  AM surface covered by carbon-binder counts for (1 - cbd_blocking); with the metrics' areas
  this is a_AM-pore + (1 - cbd_blocking) a_AM-CBD.
- Effective electronic conductivity -> `Positive electrode conductivity [S.m-1]` with the solid
  Bruggeman coefficient 0, so the value is used as the effective one.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import asdict, dataclass

from kernels.cell_geometry_4680 import (
    RHO_AM_G_CM3,
    JellyRoll,
    LayerStack,
    Packaging4680,
    jelly_roll,
)

__all__ = [
    "CellModel",
    "DischargeResult",
    "ElectrodeDesign",
    "JellyRoll",
    "Packaging4680",
    "RANGES",
    "design_from_metrics",
    "get_cell_model",
    "thickness_from_mass_loading_um",
]

F_C_MOL = 96485.33212

# Documented input ranges: inside them nothing raises; outside them ValueError names the field.
RANGES: dict[str, tuple[float, float]] = {
    "porosity": (0.2, 0.55),
    "am_volume_fraction": (0.3, 0.75),
    "thickness_um": (20.0, 300.0),
    "tortuosity_factor": (1.0, 20.0),
    "specific_surface_area_per_um": (0.05, 3.0),
    "effective_conductivity_S_m": (0.001, 1000.0),
    "cbd_coverage": (0.0, 1.0),
    "power_W": (0.1, 20000.0),
    "c_rate": (0.01, 20.0),
}
BRUGGEMAN_MIN, BRUGGEMAN_MAX = 1.0, 8.0
DEFAULT_CBD_BLOCKING = 0.5
HALF_CELL_UPPER_CUTOFF_V = 4.4  # the charged cathode alone sits above 4.2 V vs Li
LI_METAL_CONDUCTIVITY_S_M = 1.08e7
LI_FOIL_THICKNESS_M = 50e-6
MIN_DISCHARGE_TIME_S = 1.0
END_OF_DISCHARGE_STOICHIOMETRY_MARGIN = 1e-3  # stop 0.1 % short of a full / empty particle surface
END_OF_DISCHARGE_ELECTROLYTE_MOL_M3 = 1.0  # stop when the electrolyte is locally depleted
# Tortuosity just below 1 happens from voxel noise; it is read as 1.
TORTUOSITY_NOISE_FLOOR = 0.95


def _check_range(name: str, value: float) -> None:
    low, high = RANGES[name]
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} = {value} is outside the accepted range [{low}, {high}]")


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

    def __post_init__(self) -> None:
        _check_range("porosity", self.porosity)
        _check_range("am_volume_fraction", self.am_volume_fraction)
        _check_range("thickness_um", self.thickness_um)
        if self.tortuosity_factor != math.inf:
            _check_range("tortuosity_factor", self.tortuosity_factor)
        _check_range("specific_surface_area_per_um", self.specific_surface_area_per_um)
        if self.effective_conductivity_S_m != 0.0:
            _check_range("effective_conductivity_S_m", self.effective_conductivity_S_m)
        _check_range("cbd_coverage", self.cbd_coverage)

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
    _check_range("am_volume_fraction", am_volume_fraction)
    if not (math.isfinite(rho_am_g_cm3) and rho_am_g_cm3 > 0):
        raise ValueError(f"rho_am_g_cm3 must be > 0, got {rho_am_g_cm3}")
    # mg/cm^2 / (g/cm^3) = 1e-3 cm = 10 um
    return mass_loading_mg_cm2 / (am_volume_fraction * rho_am_g_cm3) * 10.0


def design_from_metrics(metrics: dict, thickness_um: float) -> ElectrodeDesign:
    """ElectrodeDesign from `VolumeMetrics.to_dict()` and a thickness.

    The AM surface is a_AM-pore + a_AM-CBD, and cbd_coverage = a_AM-CBD / that sum, so the cell
    model's blocking factor gives a_eff = a_AM-pore + (1 - blocking) a_AM-CBD. A non-percolating
    volume (tortuosity None / inf, or `percolating` False) becomes an infeasible design.
    """
    try:
        fractions = metrics["volume_fraction"]
        areas = metrics["specific_surface_area_per_um"]
        porosity = float(fractions["pore"])
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
    return ElectrodeDesign(
        porosity=porosity,
        am_volume_fraction=am_fraction,
        thickness_um=float(thickness_um),
        tortuosity_factor=tau,
        specific_surface_area_per_um=area,
        effective_conductivity_S_m=sigma,
        cbd_coverage=coverage,
    )


@dataclass
class DischargeResult:
    """One discharge of one design, normalised to one 4680 cell."""

    power_W: float | None
    c_rate: float | None
    energy_Wh: float
    capacity_Ah: float
    energy_density_Wh_L: float
    specific_energy_Wh_kg: float
    capacity_mAh_g: float | None
    feasible: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def bruggeman_exponent(tortuosity_factor: float, porosity: float) -> float:
    """b with porosity^b = porosity / tortuosity, clamped to [BRUGGEMAN_MIN, BRUGGEMAN_MAX]."""
    b = 1.0 - math.log(tortuosity_factor) / math.log(porosity)
    return min(BRUGGEMAN_MAX, max(BRUGGEMAN_MIN, b))


# --------------------------------------------------------------------------------------------
# PyBaMM simulations, built once per process


_BUILD_LOCK = threading.Lock()
# One built Simulation is not safe to solve from two threads at once: each has its own lock, so
# threads of one process take turns (run cell sweeps in parallel with processes, not threads).
_SIMULATIONS: dict[tuple, tuple[object, threading.Lock]] = {}
_MODELS: dict[tuple, CellModel] = {}

_INPUT_NAMES_CATHODE = (
    "Positive electrode porosity",
    "Positive electrode active material volume fraction",
    "Positive electrode Bruggeman coefficient (electrolyte)",
    "Positive electrode conductivity [S.m-1]",
    "Positive electrode thickness [m]",
    "Positive particle radius [m]",
)
_INPUT_NAMES_ANODE = (
    "Negative electrode thickness [m]",
    "Initial concentration in negative electrode [mol.m-3]",
)


def _li_metal_exchange_current_density(c_e, c_Li, T):  # noqa: N803 (PyBaMM's argument names)
    """Lithium-metal exchange current density (Xu et al. 2019): 3.5e-8 F c_Li^0.7 c_e^0.3."""
    return 3.5e-8 * F_C_MOL * c_Li**0.7 * c_e**0.3


def _parameter_values(parameter_set: str, half_cell: bool, separator_m: float,
                      calibration: tuple[tuple[str, float], ...] = ()):
    """The parameter set on a 1 m^2 electrode, with the half-cell additions and a calibration."""
    import pybamm

    try:
        values = pybamm.ParameterValues(parameter_set)
    except Exception as error:  # pybamm raises ValueError / KeyError for unknown names
        known = sorted(pybamm.parameter_sets.keys())
        raise ValueError(
            f"parameter_set {parameter_set!r} is not a PyBaMM parameter set; known: {known}"
        ) from error
    values.update(
        {
            "Electrode height [m]": 1.0,
            "Electrode width [m]": 1.0,
            "Number of electrodes connected in parallel to make a cell": 1.0,
            "Separator thickness [m]": separator_m,
            "Positive electrode Bruggeman coefficient (electrode)": 0.0,
        },
        check_already_exists=False,
    )
    if half_cell:
        values.update(
            {
                "Exchange-current density for lithium metal electrode [A.m-2]":
                    _li_metal_exchange_current_density,
                "Lithium metal partial molar volume [m3.mol-1]": 1.3e-5,
                "Negative electrode conductivity [S.m-1]": LI_METAL_CONDUCTIVITY_S_M,
                "Negative electrode thickness [m]": LI_FOIL_THICKNESS_M,
                "Upper voltage cut-off [V]": HALF_CELL_UPPER_CUTOFF_V,
            },
            check_already_exists=False,
        )
    if calibration:
        from kernels.calibration import Calibration

        # after the 1 m^2 area is set: areal resistances and the capacity factor refer to it
        values = Calibration(values=dict(calibration)).apply_to_parameter_values(values)
    return values


def _add_end_of_discharge_events(model, half_cell: bool) -> None:
    """Events that end a discharge where the DFN stops being defined (the fallback model).

    A cathode particle surface saturating (stoichiometry -> 1), an anode surface emptying
    (-> 0) or the electrolyte running dry make the exchange current or the electrolyte
    potential undefined, and the solver then fails. The main model runs without these events
    (it reaches the voltage cut-off through local depletion, which the events would cut short
    by up to ~15 % of the energy at the Ragone knee); after a mid-discharge failure the
    discharge is re-solved with them, so the energy delivered up to that point is kept instead
    of the whole result being lost.
    """
    import pybamm

    variables = model.variables
    limit = END_OF_DISCHARGE_STOICHIOMETRY_MARGIN
    model.events.append(pybamm.Event(
        "Maximum positive particle surface stoichiometry",
        1.0 - limit - variables["Maximum positive particle surface stoichiometry"]))
    if not half_cell:
        model.events.append(pybamm.Event(
            "Minimum negative particle surface stoichiometry",
            variables["Minimum negative particle surface stoichiometry"] - limit))
    model.events.append(pybamm.Event(
        "Minimum electrolyte concentration",
        pybamm.min(variables["Electrolyte concentration [mol.m-3]"])
        - END_OF_DISCHARGE_ELECTROLYTE_MOL_M3))


def _build_simulation(parameter_set: str, half_cell: bool, mode: str, separator_m: float,
                      calibration: tuple[tuple[str, float], ...] = (),
                      end_events: bool = False):
    """A DFN with the design quantities as inputs, discretised on a symbolic mesh."""
    import pybamm

    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    options = {"calculate discharge energy": "true"}
    if mode == "power":
        options["operating mode"] = "power"
    if half_cell:
        options["working electrode"] = "positive"
    if calibration:
        from kernels.calibration import required_model_options

        options.update(required_model_options([name for name, _ in calibration]))
    model = pybamm.lithium_ion.DFN(options)
    if end_events:
        _add_end_of_discharge_events(model, half_cell)
    values = _parameter_values(parameter_set, half_cell, separator_m, calibration)
    inputs = {name: "[input]" for name in _INPUT_NAMES_CATHODE}
    if not half_cell:
        inputs.update({name: "[input]" for name in _INPUT_NAMES_ANODE})
    inputs["Power function [W]" if mode == "power" else "Current function [A]"] = "[input]"
    values.update(inputs, check_already_exists=False)
    submeshes = dict(model.default_submesh_types)
    for domain in submeshes:
        if domain in ("negative electrode", "separator", "positive electrode",
                      "negative particle", "positive particle"):
            submeshes[domain] = pybamm.SymbolicUniform1DSubMesh
    solver = pybamm.IDAKLUSolver(
        on_failure="ignore",
        output_variables=["Discharge energy [W.h]", "Discharge capacity [A.h]", "Voltage [V]"],
    )
    simulation = pybamm.Simulation(
        model, parameter_values=values, solver=solver, submesh_types=submeshes
    )
    simulation.build()
    return simulation


def _simulation(parameter_set: str, half_cell: bool, mode: str, separator_m: float,
                calibration: tuple[tuple[str, float], ...] = (), end_events: bool = False):
    key = (parameter_set, half_cell, mode, round(separator_m, 12), calibration, end_events)
    with _BUILD_LOCK:
        if key not in _SIMULATIONS:
            simulation = _build_simulation(parameter_set, half_cell, mode, separator_m,
                                           calibration, end_events)
            _SIMULATIONS[key] = (simulation, threading.Lock())
        return _SIMULATIONS[key]


# --------------------------------------------------------------------------------------------


class CellModel:
    """Scores cathode designs as 4680 cells (full cell) or lithium-metal half cells.

    cbd_blocking: how much AM surface covered by carbon-binder is lost to the reaction
    (0: CBD fully permeable, 1: fully blocking; default 0.5, a modelling choice).
    rho_am_g_cm3: AM density for mass loading, mAh/g and the cell mass.
    calibration: a `kernels.calibration.Calibration.to_dict()` (the file `microloop calibrate`
    writes); its corrections are applied to the parameter set before the model is built.
    """

    def __init__(
        self,
        parameter_set: str = "Chen2020",
        half_cell: bool = False,
        packaging: Packaging4680 | None = None,
        cbd_blocking: float = DEFAULT_CBD_BLOCKING,
        rho_am_g_cm3: float = RHO_AM_G_CM3,
        calibration: dict | None = None,
    ) -> None:
        if not 0.0 <= cbd_blocking <= 1.0:
            raise ValueError(f"cbd_blocking must be in [0, 1], got {cbd_blocking}")
        if not (math.isfinite(rho_am_g_cm3) and rho_am_g_cm3 > 0):
            raise ValueError(f"rho_am_g_cm3 must be > 0, got {rho_am_g_cm3}")
        self.parameter_set = parameter_set
        self.half_cell = bool(half_cell)
        self.packaging = packaging if packaging is not None else Packaging4680()
        self.cbd_blocking = float(cbd_blocking)
        self.rho_am_g_cm3 = float(rho_am_g_cm3)
        self.calibration: tuple[tuple[str, float], ...] = ()
        if calibration is not None:
            from kernels.calibration import Calibration

            parsed = Calibration.from_dict(calibration)  # ValueError naming the bad key
            self.calibration = tuple(sorted((k, float(v)) for k, v in parsed.values.items()))
        # Plain numbers of the parameter set (also validates its name early).
        values = _parameter_values(parameter_set, self.half_cell,
                                   self.packaging.separator_thickness_um * 1e-6)
        self._c_p_max = float(values["Maximum concentration in positive electrode [mol.m-3]"])
        self._c_p_init = float(values["Initial concentration in positive electrode [mol.m-3]"])
        self._c_n_max = float(values["Maximum concentration in negative electrode [mol.m-3]"])
        self._n_own_thickness_m = float(values["Negative electrode thickness [m]"])
        self._n_own_c_init = float(values["Initial concentration in negative electrode [mol.m-3]"])
        p = self.packaging
        self._n_porosity = (p.anode_porosity if p.anode_porosity is not None
                            else float(values["Negative electrode porosity"]))
        self._n_am = (p.anode_am_volume_fraction if p.anode_am_volume_fraction is not None
                      else float(values["Negative electrode active material volume fraction"]))

    # ---- design -> numbers -----------------------------------------------------------------

    def cathode_capacity_Ah_m2(self, design: ElectrodeDesign) -> float:
        """Lithium the charged cathode can take back: phi L c_max F (1 - x_charged), per m^2."""
        x_charged = self._c_p_init / self._c_p_max
        return (design.am_volume_fraction * design.thickness_um * 1e-6 * self._c_p_max
                * F_C_MOL * (1.0 - x_charged) / 3600.0)

    def anode(self, design: ElectrodeDesign) -> tuple[float, float]:
        """Anode thickness (m) and its charged lithium concentration (mol/m^3).

        At a fixed N/P ratio the anode holds np_ratio x the cathode capacity and, charged,
        the lithium the cathode gave up less the first-cycle loss: y = (1 - loss) / (N/P).
        np_ratio None keeps the parameter set's own anode.
        """
        np_ratio = self.packaging.np_ratio
        if np_ratio is None:
            return self._n_own_thickness_m, self._n_own_c_init
        q_p = self.cathode_capacity_Ah_m2(design) * 3600.0
        thickness_m = np_ratio * q_p / (self._n_am * self._c_n_max * F_C_MOL)
        return thickness_m, self._c_n_max * (1.0 - self.packaging.first_cycle_loss) / np_ratio

    def jelly_roll(self, design: ElectrodeDesign) -> JellyRoll:
        """The 4680 roll this cathode (and its anode) winds into."""
        anode_m, _ = self.anode(design)
        stack = LayerStack(
            cathode_thickness_m=design.thickness_um * 1e-6,
            cathode_porosity=design.porosity,
            cathode_am_fraction=design.am_volume_fraction,
            anode_thickness_m=anode_m,
            anode_porosity=self._n_porosity,
            anode_am_fraction=self._n_am,
            rho_cathode_am_kg_m3=self.rho_am_g_cm3 * 1e3,
        )
        return jelly_roll(stack, self.packaging)

    def particle_radius_m(self, design: ElectrodeDesign) -> float:
        """R = 3 phi_AM / a_eff, a_eff = a (1 - cbd_blocking * cbd_coverage)."""
        a_eff_per_m = (design.specific_surface_area_per_um * 1e6
                       * (1.0 - self.cbd_blocking * design.cbd_coverage))
        return 3.0 * design.am_volume_fraction / a_eff_per_m

    def nominal_capacity_Ah_m2(self, design: ElectrodeDesign) -> float:
        """C-rate reference per m^2: the cyclable lithium (full cell) or the cathode (half cell),
        times a calibration's capacity_factor (the active share of the electrode)."""
        factor = dict(self.calibration).get("capacity_factor", 1.0)
        q = self.cathode_capacity_Ah_m2(design) * factor
        if self.half_cell or self.packaging.np_ratio is None:
            return q
        return q * (1.0 - self.packaging.first_cycle_loss)

    def nominal_capacity_Ah(self, design: ElectrodeDesign) -> float:
        """C-rate reference of one 4680 cell: nominal_capacity_Ah_m2 times the electrode area."""
        return self.nominal_capacity_Ah_m2(design) * self.jelly_roll(design).electrode_area_m2

    def inputs(self, design: ElectrodeDesign) -> dict[str, float]:
        """The PyBaMM input dict of one design (without the power / current)."""
        values = {
            "Positive electrode porosity": design.porosity,
            "Positive electrode active material volume fraction": design.am_volume_fraction,
            "Positive electrode Bruggeman coefficient (electrolyte)":
                bruggeman_exponent(design.tortuosity_factor, design.porosity),
            "Positive electrode conductivity [S.m-1]": design.effective_conductivity_S_m,
            "Positive electrode thickness [m]": design.thickness_um * 1e-6,
            "Positive particle radius [m]": self.particle_radius_m(design),
        }
        if not self.half_cell:
            anode_m, c_n_init = self.anode(design)
            values["Negative electrode thickness [m]"] = anode_m
            values["Initial concentration in negative electrode [mol.m-3]"] = c_n_init
        return values

    def warm_up(self) -> None:
        """Build the simulations and solve once each (the first solve of a fresh build costs
        several re-solves), e.g. in a Dask worker through client.run before the first task."""
        reference = ElectrodeDesign(
            porosity=0.335, am_volume_fraction=0.665, thickness_um=75.6,
            tortuosity_factor=0.335**-0.5, specific_surface_area_per_um=3 * 0.665 / 5.22,
            effective_conductivity_S_m=0.18,
        )
        if not self.half_cell:
            self.discharge_power(reference, 50.0)
        self.discharge_c_rate(reference, 1.0)

    def _sim(self, mode: str, end_events: bool = False):
        return _simulation(self.parameter_set, self.half_cell, mode,
                           self.packaging.separator_thickness_um * 1e-6, self.calibration,
                           end_events)

    def _solve(self, mode: str, inputs: dict, t_end_s: float,
               end_events: bool = False) -> tuple[str, float, float, float]:
        """(termination, last time s, energy Wh/m^2, capacity Ah/m^2) of one solve; may raise."""
        simulation, lock = self._sim(mode, end_events)
        with lock:
            solution = simulation.solve([0.0, t_end_s], inputs=inputs)
        return (str(solution.termination), float(solution.t[-1]),
                float(solution["Discharge energy [W.h]"].entries[-1]),
                float(solution["Discharge capacity [A.h]"].entries[-1]))

    # ---- discharges --------------------------------------------------------------------------

    def discharge_power(self, design: ElectrodeDesign, power_W: float) -> DischargeResult:
        """Constant power per 4680 cell (W) to the lower cut-off voltage."""
        _check_range("power_W", power_W)
        if self.half_cell:
            raise ValueError("discharge_power needs a full cell: use half_cell=False "
                             "(a lithium-metal half cell is scored with discharge_c_rate)")
        return self._discharge(design, "power", float(power_W))

    def discharge_c_rate(self, design: ElectrodeDesign, c_rate: float) -> DischargeResult:
        """Constant current at c_rate x nominal_capacity_Ah (full cell or half cell)."""
        _check_range("c_rate", c_rate)
        return self._discharge(design, "current", float(c_rate))

    def ragone(self, design: ElectrodeDesign, powers_W: list[float]) -> list[DischargeResult]:
        """Energy vs power: one constant-power discharge per power (all validated first)."""
        for power in powers_W:
            _check_range("power_W", power)
        return [self.discharge_power(design, power) for power in powers_W]

    def _discharge(self, design: ElectrodeDesign, mode: str, level: float) -> DischargeResult:
        power_W = level if mode == "power" else None
        c_rate = level if mode == "current" else None

        def infeasible(reason: str, capacity_Ah: float = 0.0) -> DischargeResult:
            return DischargeResult(power_W, c_rate, 0.0, capacity_Ah, 0.0, 0.0,
                                   0.0 if self.half_cell else None, False, reason)

        reason = design.infeasible_reason()
        if reason is not None:
            return infeasible(reason)
        roll = self.jelly_roll(design)
        area = roll.electrode_area_m2
        q_nominal_m2 = self.nominal_capacity_Ah_m2(design)
        inputs = self.inputs(design)
        if mode == "power":
            inputs["Power function [W]"] = level / area
            energy_guess_Wh_m2 = q_nominal_m2 * 3.7
            t_end_s = max(600.0, 3.0 * energy_guess_Wh_m2 / inputs["Power function [W]"] * 3600.0)
        else:
            inputs["Current function [A]"] = level * q_nominal_m2
            t_end_s = max(600.0, 2.0 * 3600.0 / level)
        try:
            termination, t_last, energy_Wh_m2, capacity_Ah_m2 = self._solve(mode, inputs, t_end_s)
            if termination.startswith("failure") and t_last > MIN_DISCHARGE_TIME_S:
                # failed mid-discharge: almost always a particle surface saturating or the
                # electrolyte running dry, where the DFN is undefined; the variant that ends
                # there (see _add_end_of_discharge_events) keeps the energy delivered so far
                termination, t_last, energy_Wh_m2, capacity_Ah_m2 = self._solve(
                    mode, inputs, t_end_s, end_events=True)
        except Exception as error:  # SolverError at >= 20 kW, casadi errors: all are infeasible
            message = str(error)
            if "non-positive at initial conditions" in message:
                return infeasible("voltage cut-off reached at t = 0 (load too high for this design)")
            return infeasible(f"solver failure: {type(error).__name__}: {message[:200]}")
        if "event" not in termination:
            if termination.startswith("failure"):
                return infeasible(f"solver failure after {t_last:.3g} s: {termination[:200]}")
            return infeasible(f"did not reach the cut-off: {termination[:200]}")
        if t_last <= MIN_DISCHARGE_TIME_S:
            return infeasible(f"voltage cut-off reached at t = {t_last:.3g} s ({termination})")
        if not (math.isfinite(energy_Wh_m2) and energy_Wh_m2 > 0):
            return infeasible(f"no energy delivered ({termination})")
        capacity_Ah = capacity_Ah_m2 * area
        if self.half_cell:
            am_mass_g_m2 = design.am_volume_fraction * design.thickness_um * 1e-6 * self.rho_am_g_cm3 * 1e6
            return DischargeResult(power_W, c_rate, 0.0, capacity_Ah, 0.0, 0.0,
                                   capacity_Ah_m2 * 1e3 / am_mass_g_m2, True, termination)
        energy_Wh = energy_Wh_m2 * area
        return DischargeResult(
            power_W=power_W,
            c_rate=c_rate,
            energy_Wh=energy_Wh,
            capacity_Ah=capacity_Ah,
            energy_density_Wh_L=energy_Wh / roll.envelope_volume_L,
            specific_energy_Wh_kg=energy_Wh / (roll.total_mass_g * 1e-3),
            capacity_mAh_g=None,
            feasible=True,
            reason=termination,
        )


def get_cell_model(
    parameter_set: str = "Chen2020",
    half_cell: bool = False,
    packaging: Packaging4680 | None = None,
    **kwargs,
) -> CellModel:
    """The process-wide CellModel for these settings (its PyBaMM models are built once)."""
    key = (parameter_set, bool(half_cell), packaging or Packaging4680(),
           json.dumps(kwargs, sort_keys=True, default=str))
    with _BUILD_LOCK:
        if key not in _MODELS:
            _MODELS[key] = CellModel(parameter_set, half_cell, packaging, **kwargs)
        return _MODELS[key]
