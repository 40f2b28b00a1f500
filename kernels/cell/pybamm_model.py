"""The PyBaMM side of the cell model: parameter values, the DFN with the design as inputs, and
the once-per-process cache of built simulations.

Thickness and particle radius are inputs too: all five 1D domains use
`pybamm.SymbolicUniform1DSubMesh`, so a new design is a re-solve (~0.08 s) and not a rebuild
(~0.9 s with its solve); the energies agree with a rebuilt fixed mesh to 0.01 %
(docs/cell-model.md). The electrode has 1 m^2; kernels.cell.model scales to the 4680 roll.
"""

from __future__ import annotations

import os
import threading

F_C_MOL = 96485.33212
HALF_CELL_UPPER_CUTOFF_V = 4.4  # the charged cathode alone sits above 4.2 V vs Li
LI_METAL_CONDUCTIVITY_S_M = 1.08e7
LI_FOIL_THICKNESS_M = 50e-6
END_OF_DISCHARGE_STOICHIOMETRY_MARGIN = 1e-3  # stop 0.1 % short of a full / empty particle surface
END_OF_DISCHARGE_ELECTROLYTE_MOL_M3 = 1.0  # stop when the electrolyte is locally depleted
#: the names of those events: a solve that ends on one stopped before the voltage cut-off
END_OF_DISCHARGE_EVENTS = ("Maximum positive particle surface stoichiometry",
                           "Minimum negative particle surface stoichiometry",
                           "Minimum electrolyte concentration")
#: IDAKLU (rtol, atol) of the retry after a mid-discharge failure at the defaults (1e-4, 1e-6):
#: measured on caught campaign designs, it reaches the voltage cut-off where the default fails
#: and agrees with a finer mesh (docs/cell-model.md, "How a discharge ends")
RETRY_TOLERANCES = (1e-8, 1e-10)
OUTPUT_VARIABLES = ("Discharge energy [W.h]", "Discharge capacity [A.h]", "Voltage [V]")

#: SUNDIALS 7 prints every IDA error to stderr (three lines per infeasible load in a Ragone
#: sweep, thousands in a campaign); PyBaMM keeps the last one as the solve's message, which the
#: result's infeasible reason carries. Set this variable to a file to keep the lines there.
SUNDIALS_ERROR_LOG_VARIABLE = "SUNLOGGER_ERROR_FILENAME"


def quiet_sundials_errors() -> None:
    """Send SUNDIALS' error lines to the null device unless the user named a file for them.

    SUNDIALS reads the variable whenever a solver context is created, so this must run
    before a solver is built; it never overrides a value already set."""
    os.environ.setdefault(SUNDIALS_ERROR_LOG_VARIABLE, os.devnull)


_BUILD_LOCK = threading.Lock()
# One built Simulation is not safe to solve from two threads at once: each has its own lock, so
# threads of one process take turns (run cell sweeps in parallel with processes, not threads).
SIMULATIONS: dict[tuple, tuple[object, threading.Lock]] = {}

INPUT_NAMES_CATHODE = (
    "Positive electrode porosity",
    "Positive electrode active material volume fraction",
    "Positive electrode Bruggeman coefficient (electrolyte)",
    "Positive electrode conductivity [S.m-1]",
    "Positive electrode thickness [m]",
    "Positive particle radius [m]",
)
INPUT_NAMES_ANODE = (
    "Negative electrode thickness [m]",
    "Initial concentration in negative electrode [mol.m-3]",
    "Negative electrode porosity",
    "Negative electrode active material volume fraction",
    "Negative electrode Bruggeman coefficient (electrolyte)",
)
INPUT_NAMES_SEPARATOR = (
    "Separator porosity",
    "Separator Bruggeman coefficient (electrolyte)",
)
# The share of the cathode particle surface that reacts (carbon-binder coverage costs area):
# multiplies the exchange-current density, so the particle radius stays the particle's own.
ACTIVE_SURFACE_FRACTION_INPUT = "Positive electrode active surface fraction"
# Lumped thermal model: the 4680 can's volume and cooling surface per m^2 of model electrode.
INPUT_NAMES_THERMAL = ("Cell volume [m3]", "Cell cooling surface area [m2]")


def _li_metal_exchange_current_density(c_e, c_Li, T):  # noqa: N803 (PyBaMM's argument names)
    """Lithium-metal exchange current density (Xu et al. 2019): 3.5e-8 F c_Li^0.7 c_e^0.3."""
    return 3.5e-8 * F_C_MOL * c_Li**0.7 * c_e**0.3


def _scaled_exchange_current(j0, c_max_ratio: float, values):
    """j0 at the same stoichiometry when c_max changes, times the active surface fraction.

    Chen2020's j0 = k sqrt(c_e c_s (c_max - c_s)) grows with c_max at a fixed stoichiometry; a
    c_max corrected to the AM density must not change the kinetics per area, so the function is
    evaluated at the parameter set's own concentrations (c_s and c_max times c_max_ratio).
    Inside a model the fraction is the parameter ACTIVE_SURFACE_FRACTION_INPUT (a number or an
    input of whichever ParameterValues processes it); called with plain numbers it is the
    number `values` holds, so the function can also be evaluated on its own.
    """
    import pybamm

    def exchange_current_density(c_e, c_s_surf, c_s_max, T):  # noqa: N803 (PyBaMM's names)
        base = j0(c_e, c_s_surf * c_max_ratio, c_s_max * c_max_ratio, T)
        if any(isinstance(arg, pybamm.Symbol) for arg in (c_e, c_s_surf, c_s_max, T)):
            return base * pybamm.Parameter(ACTIVE_SURFACE_FRACTION_INPUT)
        return base * float(values[ACTIVE_SURFACE_FRACTION_INPUT])

    return exchange_current_density


def parameter_values(parameter_set: str, half_cell: bool, separator_m: float,
                      calibration: tuple[tuple[str, float], ...] = (),
                      c_p_max_mol_m3: float | None = None):
    """The parameter set on a 1 m^2 electrode, with the half-cell additions and a calibration.

    c_p_max_mol_m3: the cathode's maximum concentration (None: the parameter set's); the
    initial stoichiometry and the kinetics per area are kept.
    """
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
    key_max = "Maximum concentration in positive electrode [mol.m-3]"
    key_init = "Initial concentration in positive electrode [mol.m-3]"
    key_j0 = "Positive electrode exchange-current density [A.m-2]"
    c_max_own = float(values[key_max])
    c_max = c_max_own if c_p_max_mol_m3 is None else float(c_p_max_mol_m3)
    values.update({
        key_max: c_max,
        key_init: float(values[key_init]) * c_max / c_max_own,
        key_j0: _scaled_exchange_current(values[key_j0], c_max_own / c_max, values),
    })
    values.update({ACTIVE_SURFACE_FRACTION_INPUT: 1.0}, check_already_exists=False)
    if calibration:
        from kernels.cell.corrections import Calibration

        # after the 1 m^2 area is set: areal resistances and the capacity factor refer to it
        values = Calibration(values=dict(calibration)).apply_to_parameter_values(values)
    return values


def add_end_of_discharge_events(model, half_cell: bool) -> None:
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


def idaklu_solver(tolerances: tuple[float, float] | None = None):
    """The project's IDAKLU solver; tolerances (rtol, atol), None: PyBaMM's defaults."""
    import pybamm

    kwargs = {} if tolerances is None else {"rtol": tolerances[0], "atol": tolerances[1]}
    return pybamm.IDAKLUSolver(on_failure="ignore", output_variables=list(OUTPUT_VARIABLES),
                               **kwargs)


def build_simulation(parameter_set: str, half_cell: bool, mode: str, separator_m: float,
                      calibration: tuple[tuple[str, float], ...] = (),
                      end_events: bool = False, c_p_max_mol_m3: float | None = None,
                      thermal: str = "isothermal", var_pts: dict | None = None,
                      solver=None):
    """A DFN with the design quantities as inputs, discretised on a symbolic mesh.

    var_pts: points per domain (PyBaMM's names "x_n", "x_s", "x_p", "r_n", "r_p"; None: the
    model's defaults); solver: a PyBaMM solver (None: IDAKLU at its default tolerances). Both
    exist to check a discharge by independent means (a finer mesh, other tolerances)."""
    import pybamm

    os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")
    if thermal not in ("isothermal", "lumped"):
        raise ValueError(f"thermal must be 'isothermal' or 'lumped', got {thermal!r}")
    options = {"calculate discharge energy": "true"}
    if thermal == "lumped":
        options["thermal"] = "lumped"
    if mode == "power":
        options["operating mode"] = "power"
    if half_cell:
        options["working electrode"] = "positive"
    if calibration:
        from kernels.cell.corrections import required_model_options

        options.update(required_model_options([name for name, _ in calibration]))
    model = pybamm.lithium_ion.DFN(options)
    if end_events:
        add_end_of_discharge_events(model, half_cell)
    values = parameter_values(parameter_set, half_cell, separator_m, calibration, c_p_max_mol_m3)
    inputs = {name: "[input]" for name in
              (*INPUT_NAMES_CATHODE, ACTIVE_SURFACE_FRACTION_INPUT, *INPUT_NAMES_SEPARATOR)}
    if not half_cell:
        inputs.update({name: "[input]" for name in INPUT_NAMES_ANODE})
    if thermal == "lumped":
        inputs.update({name: "[input]" for name in INPUT_NAMES_THERMAL})
    inputs["Power function [W]" if mode == "power" else "Current function [A]"] = "[input]"
    values.update(inputs, check_already_exists=False)
    submeshes = dict(model.default_submesh_types)
    for domain in submeshes:
        if domain in ("negative electrode", "separator", "positive electrode",
                      "negative particle", "positive particle"):
            submeshes[domain] = pybamm.SymbolicUniform1DSubMesh
    quiet_sundials_errors()
    if solver is None:
        solver = idaklu_solver()
    simulation = pybamm.Simulation(
        model, parameter_values=values, solver=solver, submesh_types=submeshes,
        var_pts=var_pts,
    )
    simulation.build()
    return simulation


def simulation(parameter_set: str, half_cell: bool, mode: str, separator_m: float,
                calibration: tuple[tuple[str, float], ...] = (), end_events: bool = False,
                c_p_max_mol_m3: float | None = None, thermal: str = "isothermal",
                tolerances: tuple[float, float] | None = None):
    """The cached built simulation (and its lock); tolerances: IDAKLU (rtol, atol), None the
    defaults (the retry after a failure uses RETRY_TOLERANCES)."""
    key = (parameter_set, half_cell, mode, round(separator_m, 12), calibration, end_events,
           c_p_max_mol_m3, thermal, tolerances)
    with _BUILD_LOCK:
        if key not in SIMULATIONS:
            simulation = build_simulation(parameter_set, half_cell, mode, separator_m,
                                           calibration, end_events, c_p_max_mol_m3, thermal,
                                           solver=idaklu_solver(tolerances))
            SIMULATIONS[key] = (simulation, threading.Lock())
        return SIMULATIONS[key]

