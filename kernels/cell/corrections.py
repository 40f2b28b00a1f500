"""Calibration corrections: the named, bounded parameters a calibration may change, and the
`Calibration` that applies them to any `pybamm.ParameterValues`.

Kept apart from the fitting (kernels.cell.calibration) so that the DFN builder
(kernels.cell.pybamm_model) can apply a calibration without importing the fitter, and the fitter
can build the DFN without a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CALIBRATION_SCHEMA = "microloop.calibration/1"



@dataclass(frozen=True)
class FitParameter:
    """One correction the calibration can fit: what it multiplies (or sets) in PyBaMM, and its range."""

    name: str
    pybamm_name: str
    kind: str            # "scale": multiplies the PyBaMM value (number or function); "value": replaces it
    unit: str
    default: float
    lower: float
    upper: float
    log_scale: bool      # fitted as log(value): scales span decades and must stay positive
    description: str


FIT_PARAMETERS: dict[str, FitParameter] = {
    p.name: p
    for p in (
        FitParameter(
            "cathode_diffusivity_scale", "Positive particle diffusivity [m2.s-1]", "scale", "1",
            1.0, 0.01, 100.0, True,
            "multiplies the cathode solid diffusivity (rate capability, the knee of the curve)",
        ),
        FitParameter(
            "cathode_exchange_current_scale", "Positive electrode exchange-current density [A.m-2]",
            "scale", "1", 1.0, 0.01, 100.0, True,
            "multiplies the cathode exchange-current density (kinetic overpotential)",
        ),
        FitParameter(
            "anode_diffusivity_scale", "Negative particle diffusivity [m2.s-1]", "scale", "1",
            1.0, 0.01, 100.0, True, "multiplies the anode solid diffusivity (full cells only)",
        ),
        FitParameter(
            "anode_exchange_current_scale", "Negative electrode exchange-current density [A.m-2]",
            "scale", "1", 1.0, 0.01, 100.0, True,
            "multiplies the anode exchange-current density (full cells only)",
        ),
        FitParameter(
            "contact_resistance_Ohm_cm2", "Contact resistance [Ohm]", "areal_resistance",
            "Ohm.cm2", 0.0, 0.0, 200.0, False,
            "series resistance per electrode area (tabs, welds, coating/foil contact); PyBaMM's "
            "contact resistance of the whole cell is this divided by the electrode area, so one "
            "calibration carries over to designs with other roll lengths",
        ),
        FitParameter(
            "capacity_factor", "Electrode width [m]", "scale", "1", 1.0, 0.5, 1.5, False,
            "fraction of the modelled electrode area that is active: scales capacity and current "
            "density together (formation loss, uncoated or misaligned area)",
        ),
    )
}


def fit_parameter(name: str) -> FitParameter:
    """The spec of a fit parameter, or a ValueError listing the accepted names."""
    try:
        return FIT_PARAMETERS[name]
    except KeyError:
        raise ValueError(
            f"unknown fit parameter {name!r}; accepted: {', '.join(FIT_PARAMETERS)}"
        ) from None


class _Scaled:
    """A PyBaMM function parameter times a factor (picklable, unlike a lambda)."""

    def __init__(self, function: Callable, factor: Any) -> None:
        self.function = function
        self.factor = factor

    def __call__(self, *args: Any) -> Any:
        return self.factor * self.function(*args)


def _apply(parameter_values: Any, values: Mapping[str, Any]) -> Any:
    """Return a copy of `parameter_values` with the named corrections applied.

    Values may be floats or PyBaMM symbols (InputParameters while fitting)."""
    import pybamm

    updated = parameter_values.copy()
    changes: dict[str, Any] = {}
    # resistances first: they are per *nominal* area, before capacity_factor scales the width
    ordered = sorted(values.items(), key=lambda item: fit_parameter(item[0]).kind != "areal_resistance")
    for name, value in ordered:
        spec = fit_parameter(name)
        if spec.kind == "areal_resistance":
            area_m2 = updated["Electrode height [m]"] * updated["Electrode width [m]"]
            changes[spec.pybamm_name] = value * 1e-4 / area_m2
            continue
        if spec.pybamm_name not in updated.keys():
            raise ValueError(
                f"{name}: the parameter set has no {spec.pybamm_name!r} (is this a half cell? "
                f"fit only cathode parameters, contact_resistance_Ohm_cm2 and capacity_factor there)"
            )
        base = updated[spec.pybamm_name]
        if callable(base) and not isinstance(base, pybamm.Symbol):
            changes[spec.pybamm_name] = _Scaled(base, value)
        else:
            changes[spec.pybamm_name] = base * value
    updated.update(changes, check_already_exists=False)
    return updated


def required_model_options(names: Sequence[str]) -> dict[str, str]:
    """PyBaMM model options the corrections need (contact resistance is ignored without its option)."""
    return {"contact resistance": "true"} if "contact_resistance_Ohm_cm2" in names else {}


@dataclass
class Calibration:
    """Fitted corrections to a cell model: parameter name -> value, with uncertainty and provenance.

    `to_dict()` is the calibration file's content; `kernels.cell.model` takes that dict and calls
    `apply_to_parameter_values` on its parameter values (plus `model_options()` on its model)."""

    values: dict[str, float]
    stderr: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not isinstance(self.values, dict) or not self.values:
            raise ValueError("calibration.values: expected a non-empty table of fit parameters, "
                             f"accepted names: {', '.join(FIT_PARAMETERS)}")
        for name, value in self.values.items():
            spec = fit_parameter(name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"calibration.values.{name}: expected a finite number, got {value!r}")
            if not spec.lower <= value <= spec.upper:
                raise ValueError(f"calibration.values.{name} = {value} is outside its accepted "
                                 f"range [{spec.lower}, {spec.upper}]")

    def model_options(self) -> dict[str, str]:
        """Options the PyBaMM model must be built with for these corrections to act."""
        return required_model_options(list(self.values))

    def apply_to_parameter_values(self, parameter_values: Any) -> Any:
        """A copy of `parameter_values` (pybamm.ParameterValues) with the corrections applied."""
        self.validate()
        return _apply(parameter_values, self.values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CALIBRATION_SCHEMA,
            "values": {k: float(v) for k, v in self.values.items()},
            "stderr": {k: float(v) for k, v in self.stderr.items()},
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration: expected a table, got {type(data).__name__}")
        schema = data.get("schema", CALIBRATION_SCHEMA)
        if schema != CALIBRATION_SCHEMA:
            raise ValueError(f"calibration.schema: expected {CALIBRATION_SCHEMA!r}, got {schema!r}")
        if "values" not in data:
            raise ValueError("calibration.values: missing; a calibration file written by "
                             "`microloop calibrate` has it")
        calibration = cls(
            values={str(k): v for k, v in dict(data["values"]).items()},
            stderr={str(k): float(v) for k, v in dict(data.get("stderr") or {}).items()},
            metadata=dict(data.get("metadata") or {}),
        )
        calibration.validate()
        return calibration
