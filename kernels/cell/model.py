"""The 4680 cell model: a PyBaMM DFN scored as a whole 46 x 80 mm cell.

Three modules, one job each: kernels.cell.design (the validated design and the metrics
mapping), kernels.cell.pybamm_model (the DFN with the design as inputs, built once per process) and
kernels.cell.geometry_4680 (roll and mass budget). This module joins them: `CellModel` turns a
design and a load into a `DischargeResult` for one 4680 cell; `get_cell_model` keeps one
CellModel per settings per process (a Dask worker builds its models once).

- The model electrode has 1 m^2; the 4680 roll gives the area A, so a power per cell P becomes
  P / A per m^2 and energies scale back by A (isothermal: exact).
- The modelling choices are a `CellModelOptions` (kernels.cell.options). Default: particle
  radius = the measured particle size (or 3 phi_AM / a_AM-total), carbon-binder coverage scales
  the exchange-current density by 1 - cbd_blocking * cbd_coverage (it costs active area, not
  size), c_max from the AM density and molar mass, anode / separator transport as named inputs.
  `CellModelOptions.legacy()` is the old model (R = 3 phi_AM / (a (1 - blocking coverage)),
  the parameter set's c_max).
- Every discharge returns a `DischargeResult`. A design that cannot deliver (the minimum-voltage
  cut-off at t <= 1 s, the integration collapsing at the first steps under an extreme load,
  non-percolating pores, a non-conducting solid) gives energy 0, feasible False and a reason.
  Anything else raises: inputs outside the documented ranges ValueError, a solve that ends
  without a cut-off `CellSolveFailed`, any other PyBaMM or Python error as itself. A discharge that
  fails part-way is re-solved at tight tolerances (RETRY_TOLERANCES), which mostly reaches the
  voltage cut-off; one that still fails is re-solved on a variant that ends where a particle
  surface saturates or the electrolyte runs dry. What it delivered up to there is only a lower
  bound of the discharge: `DischargeResult.lower_bound` is True, and by default
  (CellModelOptions.caught_discharge "named_failure") the result is not feasible, so it is never
  told as a value (jobs.evaluate makes it a named failure).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass

import pybamm

from kernels.cell.cbd_model import NanoporousCBD
from kernels.cell.design import (
    BRUGGEMAN_MAX,
    BRUGGEMAN_MIN,
    RANGES,
    ElectrodeDesign,
    bruggeman_exponent,
    check_range,
    design_from_metrics,
    thickness_from_mass_loading_um,
)
from kernels.cell.geometry_4680 import (
    RHO_AM_G_CM3,
    JellyRoll,
    LayerStack,
    Packaging4680,
    jelly_roll,
)
from kernels.cell.options import DEFAULT_CBD_BLOCKING, CellModelOptions
from kernels.cell.pybamm_model import (
    ACTIVE_SURFACE_FRACTION_INPUT,
    END_OF_DISCHARGE_EVENTS,
    F_C_MOL,
    RETRY_TOLERANCES,
)
from kernels.cell.pybamm_model import parameter_values as _parameter_values
from kernels.cell.pybamm_model import simulation as _simulation

__all__ = [
    "BRUGGEMAN_MAX",
    "BRUGGEMAN_MIN",
    "CellModel",
    "CellModelOptions",
    "CellSolveFailed",
    "DEFAULT_CBD_BLOCKING",
    "DischargeResult",
    "ElectrodeDesign",
    "JellyRoll",
    "Packaging4680",
    "RANGES",
    "bruggeman_exponent",
    "design_from_metrics",
    "get_cell_model",
    "thickness_from_mass_loading_um",
]

MIN_DISCHARGE_TIME_S = 1.0
#: how the reason of a discharge that ended on an end-of-discharge event starts (a lower bound)
LOWER_BOUND_REASON = "lower bound, not a value"


class CellSolveFailed(RuntimeError):
    """A DFN solve that ended neither on a cut-off event nor by the cell collapsing at the
    start: not an answer about the design, so the evaluation fails with it."""


def cannot_deliver_reason(solver_message: str, mode: str) -> str | None:
    """Why a PyBaMM SolverError means the cell cannot deliver the load, or None when it is some
    other failure. Three messages qualify: the minimum-voltage event already crossed at t = 0;
    the maximum-voltage event crossed at t = 0 of a constant-power discharge (`mode` "power";
    at a constant current it would be a charged cathode above the cut-off, a set-up error),
    which is how PyBaMM's constant-power equation P = I V shows a power above the cell's maximum (no discharge root,
    the initial solve lands on the charging branch; seen at 8 kW on a 40 mg/cm^2 cathode); and
    an IDAKLU integration failure at the first steps (its "input set N: <SUNDIALS error>",
    raised at >= 20 kW per 4680 even with on_failure="ignore")."""
    if "non-positive at initial conditions" in solver_message:
        events = solver_message.split("are non-positive")[0]
        if "Minimum voltage" in events:
            return "voltage cut-off reached at t = 0 (load too high for this design)"
        if "Maximum voltage" in events and mode == "power":
            return ("no discharge state at t = 0: the load is above the most this cell can "
                    "deliver (the initial solve crosses the upper voltage cut-off)")
        return None
    if solver_message.startswith("input set "):
        return f"the cell collapses under this load: {solver_message[:200]}"
    return None

_MODELS_LOCK = threading.Lock()
_MODELS: dict[tuple, CellModel] = {}


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
    #: True when the discharge ended on an end-of-discharge event (end_event, at end_time_s)
    #: before the voltage cut-off: the energy and capacity are what was delivered up to then,
    #: a lower bound of the discharge to the cut-off, not its value
    lower_bound: bool = False
    end_event: str | None = None
    end_time_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class CellModel:
    """Scores cathode designs as 4680 cells (full cell) or lithium-metal half cells.

    options: the modelling choices (`CellModelOptions`; default the documented ones).
    cbd_blocking: overrides options.cbd_blocking (how much AM surface covered by carbon-binder
    is lost to the reaction: 0 CBD fully permeable, 1 fully blocking).
    rho_am_g_cm3: AM density for mass loading, mAh/g and the cell mass.
    calibration: a `kernels.cell.calibration.Calibration.to_dict()` (the file `microloop calibrate`
    writes); its corrections are applied to the parameter set before the model is built.
    """

    #: IDAKLU (rtol, atol) of the re-solve after a mid-discharge failure (None: the defaults,
    #: i.e. no second chance: what a discharge that stays caught looks like)
    retry_tolerances: tuple[float, float] | None = RETRY_TOLERANCES

    def __init__(
        self,
        parameter_set: str = "Chen2020",
        half_cell: bool = False,
        packaging: Packaging4680 | None = None,
        cbd_blocking: float | None = None,
        rho_am_g_cm3: float = RHO_AM_G_CM3,
        calibration: dict | None = None,
        options: CellModelOptions | dict | None = None,
    ) -> None:
        if isinstance(options, dict):
            options = CellModelOptions.from_dict(options)
        options = options if options is not None else CellModelOptions()
        if cbd_blocking is not None:
            if not 0.0 <= cbd_blocking <= 1.0:
                raise ValueError(f"cbd_blocking must be in [0, 1], got {cbd_blocking}")
            options = CellModelOptions(**{**options.to_dict(), "cbd_blocking": cbd_blocking})
        if not (math.isfinite(rho_am_g_cm3) and rho_am_g_cm3 > 0):
            raise ValueError(f"rho_am_g_cm3 must be > 0, got {rho_am_g_cm3}")
        self.options = options
        self._cbd_mass_model: dict[str, float] = {}
        if options.cbd_volume == "nanoporous_domain":
            # the design's porosity is the electrolyte fraction (pores + the domain's nanopores,
            # kernels.metrics.volume with cbd_domain), so 1 - porosity - phi_AM is the domain's
            # carbon + binder skeleton at its solid density, and the electrolyte fills porosity
            self._cbd_mass_model = {
                "rho_cathode_cbd_kg_m3": NanoporousCBD().solid_density_g_cm3 * 1e3}
        self.parameter_set = parameter_set
        self.half_cell = bool(half_cell)
        self.packaging = packaging if packaging is not None else Packaging4680()
        self.cbd_blocking = float(options.cbd_blocking)
        self.rho_am_g_cm3 = float(rho_am_g_cm3)
        self.calibration: tuple[tuple[str, float], ...] = ()
        if calibration is not None:
            from kernels.cell.calibration import Calibration

            parsed = Calibration.from_dict(calibration)  # ValueError naming the bad key
            self.calibration = tuple(sorted((k, float(v)) for k, v in parsed.values.items()))
        # Plain numbers of the parameter set (also validates its name early).
        values = _parameter_values(parameter_set, self.half_cell,
                                   self.packaging.separator_thickness_um * 1e-6)
        own_c_p_max = float(values["Maximum concentration in positive electrode [mol.m-3]"])
        # None: the parameter set's own c_max; else rho_AM / M_AM (g/m^3 / g/mol)
        self.c_p_max_override_mol_m3: float | None = (
            None if options.capacity_basis == "parameter_set"
            else self.rho_am_g_cm3 * 1e6 / options.am_molar_mass_g_mol)
        self._c_p_max = (own_c_p_max if self.c_p_max_override_mol_m3 is None
                         else self.c_p_max_override_mol_m3)
        # the charged state keeps its stoichiometry when c_max changes
        self._c_p_init = (float(values["Initial concentration in positive electrode [mol.m-3]"])
                          * self._c_p_max / own_c_p_max)
        self._c_n_max = float(values["Maximum concentration in negative electrode [mol.m-3]"])
        self._n_own_thickness_m = float(values["Negative electrode thickness [m]"])
        self._n_own_c_init = float(values["Initial concentration in negative electrode [mol.m-3]"])
        p = self.packaging
        self._n_porosity = (p.anode_porosity if p.anode_porosity is not None
                            else float(values["Negative electrode porosity"]))
        self._n_am = (p.anode_am_volume_fraction if p.anode_am_volume_fraction is not None
                      else float(values["Negative electrode active material volume fraction"]))
        if self._n_porosity + self._n_am > 1.0:
            raise ValueError(f"anode_porosity + anode_am_volume_fraction = "
                             f"{self._n_porosity + self._n_am:.3f} exceeds 1 (Packaging4680)")

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
            **self._cbd_mass_model,
        )
        return jelly_roll(stack, self.packaging)

    def open_surface_fraction(self, design: ElectrodeDesign) -> float:
        """Share of the AM surface that reacts: 1 - cbd_blocking * cbd_coverage."""
        return 1.0 - self.cbd_blocking * design.cbd_coverage

    def active_surface_fraction(self, design: ElectrodeDesign) -> float:
        """The factor on the exchange-current density: the open surface fraction under the
        "particle_size" rule (coverage costs area), 1 under the legacy rule (it went into R)."""
        if self.options.radius_rule == "legacy_3phi_over_a_eff":
            return 1.0
        return self.open_surface_fraction(design)

    def particle_radius_m(self, design: ElectrodeDesign) -> float:
        """The DFN particle radius under options.radius_rule.

        "particle_size": the design's measured particle radius, else 3 phi_AM / a (a the whole
        AM surface, AM-pore + AM-CBD); "legacy_3phi_over_a_eff": 3 phi_AM / (a (1 - blocking
        coverage)).
        """
        if self.options.radius_rule == "particle_size":
            if design.particle_radius_um is not None:
                return design.particle_radius_um * 1e-6
            return 3.0 * design.am_volume_fraction / (design.specific_surface_area_per_um * 1e6)
        open_fraction = self.open_surface_fraction(design)
        if open_fraction <= 0.0:
            raise ValueError("no AM surface open to the electrolyte: cbd_blocking x cbd_coverage "
                             f"= {self.cbd_blocking} x {design.cbd_coverage} = 1")
        a_eff_per_m = design.specific_surface_area_per_um * 1e6 * open_fraction
        return 3.0 * design.am_volume_fraction / a_eff_per_m

    def infeasible_reason(self, design: ElectrodeDesign) -> str | None:
        """Why this design cannot be scored by this model, or None."""
        reason = design.infeasible_reason()
        if reason is None and self.open_surface_fraction(design) <= 0.0:
            reason = (f"carbon-binder covers all AM surface (cbd_coverage {design.cbd_coverage}) "
                      f"and blocks it fully (cbd_blocking {self.cbd_blocking})")
        return reason

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
            ACTIVE_SURFACE_FRACTION_INPUT: self.active_surface_fraction(design),
            "Separator porosity": self.packaging.separator_porosity,
            "Separator Bruggeman coefficient (electrolyte)": self.options.separator_bruggeman,
        }
        if not self.half_cell:
            anode_m, c_n_init = self.anode(design)
            values["Negative electrode thickness [m]"] = anode_m
            values["Initial concentration in negative electrode [mol.m-3]"] = c_n_init
            values["Negative electrode porosity"] = self._n_porosity
            values["Negative electrode active material volume fraction"] = self._n_am
            values["Negative electrode Bruggeman coefficient (electrolyte)"] = (
                self.options.anode_bruggeman)
        if self.options.thermal == "lumped":
            roll = self.jelly_roll(design)
            can_surface_m2 = (math.pi * self.packaging.diameter_mm * self.packaging.height_mm
                              + 2 * math.pi * (self.packaging.diameter_mm / 2) ** 2) * 1e-6
            values["Cell volume [m3]"] = roll.envelope_volume_L * 1e-3 / roll.electrode_area_m2
            values["Cell cooling surface area [m2]"] = can_surface_m2 / roll.electrode_area_m2
        return values

    def warm_up(self, modes: tuple[str, ...] = ("power", "current")) -> None:
        """Build the simulations of `modes` ("power": constant power, full cell only;
        "current": constant current) and solve once each (the first solve of a fresh build costs
        several re-solves), e.g. in a Dask worker through client.run before the first task.
        A campaign warms only the modes it discharges in: building a model it never uses costs
        a build and a solve per worker for nothing."""
        unknown = sorted(set(modes) - {"power", "current"})
        if unknown:
            raise ValueError(f"warm_up modes must be 'power' or 'current', got {unknown}")
        reference = ElectrodeDesign(
            porosity=0.335, am_volume_fraction=0.665, thickness_um=75.6,
            tortuosity_factor=0.335**-0.5, specific_surface_area_per_um=3 * 0.665 / 5.22,
            effective_conductivity_S_m=0.18,
        )
        if "power" in modes and not self.half_cell:
            self.discharge_power(reference, 50.0)
        if "current" in modes:
            self.discharge_c_rate(reference, 1.0)

    def _sim(self, mode: str, end_events: bool = False,
             tolerances: tuple[float, float] | None = None):
        return _simulation(self.parameter_set, self.half_cell, mode,
                           self.packaging.separator_thickness_um * 1e-6, self.calibration,
                           end_events, self.c_p_max_override_mol_m3, self.options.thermal,
                           tolerances)

    def _solve(self, mode: str, inputs: dict, t_end_s: float, end_events: bool = False,
               tolerances: tuple[float, float] | None = None) -> tuple[str, float, float, float]:
        """(termination, last time s, energy Wh/m^2, capacity Ah/m^2) of one solve; may raise."""
        simulation, lock = self._sim(mode, end_events, tolerances)
        with lock:
            solution = simulation.solve([0.0, t_end_s], inputs=inputs)
        return (str(solution.termination), float(solution.t[-1]),
                float(solution["Discharge energy [W.h]"].entries[-1]),
                float(solution["Discharge capacity [A.h]"].entries[-1]))

    # ---- discharges --------------------------------------------------------------------------

    def discharge_power(self, design: ElectrodeDesign, power_W: float) -> DischargeResult:
        """Constant power per 4680 cell (W) to the lower cut-off voltage."""
        check_range("power_W", power_W)
        if self.half_cell:
            raise ValueError("discharge_power needs a full cell: use half_cell=False "
                             "(a lithium-metal half cell is scored with discharge_c_rate)")
        return self._discharge(design, "power", float(power_W))

    def discharge_c_rate(self, design: ElectrodeDesign, c_rate: float) -> DischargeResult:
        """Constant current at c_rate x nominal_capacity_Ah (full cell or half cell)."""
        check_range("c_rate", c_rate)
        return self._discharge(design, "current", float(c_rate))

    def ragone(self, design: ElectrodeDesign, powers_W: list[float]) -> list[DischargeResult]:
        """Energy vs power: one constant-power discharge per power (all validated first)."""
        for power in powers_W:
            check_range("power_W", power)
        return [self.discharge_power(design, power) for power in powers_W]

    def _discharge(self, design: ElectrodeDesign, mode: str, level: float) -> DischargeResult:
        power_W = level if mode == "power" else None
        c_rate = level if mode == "current" else None

        def infeasible(reason: str, capacity_Ah: float = 0.0) -> DischargeResult:
            return DischargeResult(power_W, c_rate, 0.0, capacity_Ah, 0.0, 0.0,
                                   0.0 if self.half_cell else None, False, reason)

        reason = self.infeasible_reason(design)
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
                # failed mid-discharge, near a particle surface saturating or the electrolyte
                # running dry: at tight tolerances IDAKLU mostly gets through to the cut-off
                termination, t_last, energy_Wh_m2, capacity_Ah_m2 = self._retry(
                    mode, inputs, t_end_s)
        except pybamm.SolverError as error:
            # only the two ways a cell that cannot carry the load shows up are infeasible; any
            # other error (a setup error, a TypeError after an API change) fails the evaluation
            cannot_deliver = cannot_deliver_reason(str(error), mode)
            if cannot_deliver is None:
                raise
            return infeasible(cannot_deliver)
        if "event" not in termination:
            if termination.startswith("failure") and t_last <= MIN_DISCHARGE_TIME_S:
                return infeasible(f"the cell collapses under this load: the solve fails at "
                                  f"t = {t_last:.3g} s ({termination[:200]})")
            raise CellSolveFailed(f"the DFN solve of this design at {level:g} "
                                  f"{'W' if mode == 'power' else 'C'} ended without a cut-off "
                                  f"event after {t_last:.4g} s: {termination[:300]}")
        if "Maximum voltage" in termination:
            return infeasible(f"upper voltage cut-off during a discharge ({termination})")
        if t_last <= MIN_DISCHARGE_TIME_S:
            return infeasible(f"voltage cut-off reached at t = {t_last:.3g} s ({termination})")
        if not (math.isfinite(energy_Wh_m2) and energy_Wh_m2 > 0):
            return infeasible(f"no energy delivered ({termination})")
        capacity_Ah = capacity_Ah_m2 * area
        event = termination.removeprefix("event: ")
        lower_bound = event in END_OF_DISCHARGE_EVENTS
        feasible, reason = True, termination
        if lower_bound and self.options.caught_discharge == "named_failure":
            feasible = False
            reason = (f"{LOWER_BOUND_REASON}: the DFN solve failed mid-discharge (also at "
                      f"rtol, atol = {self.retry_tolerances}) and its re-solve ended on the "
                      f"end-of-discharge event {event!r} at t = {t_last:.4g} s, before the "
                      f"voltage cut-off; the energy and capacity are what it delivered up to then")
        bound = {"lower_bound": lower_bound, "end_event": event if lower_bound else None,
                 "end_time_s": t_last if lower_bound else None}
        if self.half_cell:
            am_mass_g_m2 = design.am_volume_fraction * design.thickness_um * 1e-6 * self.rho_am_g_cm3 * 1e6
            return DischargeResult(power_W, c_rate, 0.0, capacity_Ah, 0.0, 0.0,
                                   capacity_Ah_m2 * 1e3 / am_mass_g_m2, feasible, reason, **bound)
        energy_Wh = energy_Wh_m2 * area
        return DischargeResult(
            power_W=power_W,
            c_rate=c_rate,
            energy_Wh=energy_Wh,
            capacity_Ah=capacity_Ah,
            energy_density_Wh_L=energy_Wh / roll.envelope_volume_L,
            specific_energy_Wh_kg=energy_Wh / (roll.total_mass_g * 1e-3),
            capacity_mAh_g=None,
            feasible=feasible,
            reason=reason,
            **bound,
        )

    def _retry(self, mode: str, inputs: dict, t_end_s: float) -> tuple[str, float, float, float]:
        """After a mid-discharge failure at the default tolerances: the solve at
        `retry_tolerances`, and when that fails too (or raises a SolverError), the variant with
        the end-of-discharge events (kernels.cell.pybamm_model.add_end_of_discharge_events),
        whose result is a lower bound when it ends on one of them."""
        try:
            solved = self._solve(mode, inputs, t_end_s, tolerances=self.retry_tolerances)
        except pybamm.SolverError:
            solved = None   # the tight solve failed in its own way: the event variant decides
        if solved is not None and not solved[0].startswith("failure"):
            return solved
        return self._solve(mode, inputs, t_end_s, end_events=True)


def get_cell_model(
    parameter_set: str = "Chen2020",
    half_cell: bool = False,
    packaging: Packaging4680 | None = None,
    **kwargs,
) -> CellModel:
    """The process-wide CellModel for these settings (its PyBaMM models are built once)."""
    key = (parameter_set, bool(half_cell), packaging or Packaging4680(),
           json.dumps(kwargs, sort_keys=True, default=str))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = CellModel(parameter_set, half_cell, packaging, **kwargs)
        return _MODELS[key]


def published_cathode_design(parameter_set: str) -> ElectrodeDesign:
    """The positive electrode a PyBaMM parameter set describes, as an ElectrodeDesign (its
    porosity, AM fraction, thickness, Bruggeman tortuosity, 3φ/R surface, conductivity and
    particle radius), so that a published cell runs through the design → inputs → DFN path
    the optimiser's designs take (the validations against measured cells)."""
    values = pybamm.ParameterValues(parameter_set)
    porosity = values["Positive electrode porosity"]
    am_fraction = values["Positive electrode active material volume fraction"]
    radius_um = values["Positive particle radius [m]"] * 1e6
    exponent = values["Positive electrode Bruggeman coefficient (electrolyte)"]
    return ElectrodeDesign(
        porosity=porosity, am_volume_fraction=am_fraction,
        thickness_um=values["Positive electrode thickness [m]"] * 1e6,
        tortuosity_factor=porosity ** (1.0 - exponent),
        specific_surface_area_per_um=3.0 * am_fraction / radius_um,
        effective_conductivity_S_m=values["Positive electrode conductivity [S.m-1]"],
        particle_radius_um=radius_um)
