"""Calibrate the cell model of a built cell to its measured discharges, as files in and out.

    design.json + data files --(kernels.cell.calibration)--> calibration.json (+ fit.png)

The calibration file is what a campaign names (`[cell] calibration = "calibration.json"`) so its
evaluations use the calibrated model: `load_calibration(path)` gives the dict that
`kernels.cell.model.get_cell_model(..., calibration=...)` takes.

DESIGN.json describes the cell as built, in one of three forms (plus optional cell settings):
    {"design": {ElectrodeDesign fields}, ...}      what `microloop cell --json` prints
    {"metrics": {VolumeMetrics.to_dict()}, "thickness_um": 80}   (or "mass_loading_mg_cm2")
    {ElectrodeDesign fields at the top level}
    optional: "parameter_set" ("Chen2020"), "half_cell" (false), "packaging" (Packaging4680
    fields), "cbd_blocking" (0.5) -- the same settings the campaign's [cell] table uses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.discharge_data import load_curves
from kernels.cell.calibration import Calibration, FitResult

_SETTINGS = ("parameter_set", "half_cell", "packaging", "cbd_blocking")
_DESIGN_FIELDS = ("porosity", "am_volume_fraction", "thickness_um", "tortuosity_factor",
                  "specific_surface_area_per_um", "effective_conductivity_S_m", "cbd_coverage")


@dataclass
class BuiltCell:
    """The cell as built: its cathode design and the cell-model settings it was scored with."""

    design: Any                      # kernels.cell.model.ElectrodeDesign
    parameter_set: str = "Chen2020"
    half_cell: bool = False
    packaging: dict[str, Any] = field(default_factory=dict)
    cbd_blocking: float | None = None

    def cell_model(self):
        from kernels.cell.model import Packaging4680, get_cell_model

        packaging = Packaging4680.from_dict(self.packaging) if self.packaging else None
        options = {} if self.cbd_blocking is None else {"cbd_blocking": self.cbd_blocking}
        return get_cell_model(self.parameter_set, half_cell=self.half_cell,
                              packaging=packaging, **options)

    def to_dict(self) -> dict[str, Any]:
        design = {k: getattr(self.design, k) for k in _DESIGN_FIELDS}
        if design["tortuosity_factor"] == math.inf:
            design["tortuosity_factor"] = None
        return {"design": design, "parameter_set": self.parameter_set,
                "half_cell": self.half_cell, "packaging": dict(self.packaging),
                "cbd_blocking": self.cbd_blocking}


def built_cell_from_dict(data: Mapping[str, Any], where: str = "design") -> BuiltCell:
    """A BuiltCell from DESIGN.json's content; ValueError naming the key that is wrong."""
    from kernels.cell.model import (
        ElectrodeDesign,
        design_from_metrics,
        thickness_from_mass_loading_um,
    )

    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    settings = {k: data[k] for k in _SETTINGS if k in data}
    try:
        if "metrics" in data:
            metrics = data["metrics"]
            if "thickness_um" in data:
                thickness_um = float(data["thickness_um"])
            elif "mass_loading_mg_cm2" in data:
                am = float(metrics["volume_fraction"]["am"])
                thickness_um = thickness_from_mass_loading_um(
                    float(data["mass_loading_mg_cm2"]), am)
            else:
                raise ValueError(f"{where}: with 'metrics' give 'thickness_um' or "
                                 "'mass_loading_mg_cm2'")
            design = design_from_metrics(metrics, thickness_um)
        else:
            fields = data.get("design", data)
            if not isinstance(fields, Mapping):
                raise ValueError(f"{where}.design: expected a table of ElectrodeDesign fields")
            missing = [k for k in _DESIGN_FIELDS[:-1] if k not in fields]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}; give the design "
                                 "quantities (as `microloop cell --json` prints under "
                                 "'design') or 'metrics' with 'thickness_um'")
            values = {k: fields[k] for k in _DESIGN_FIELDS if k in fields}
            if values.get("tortuosity_factor") is None:
                values["tortuosity_factor"] = math.inf
            design = ElectrodeDesign(**values)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{where}: malformed design ({error})") from None
    cell = BuiltCell(design=design, **settings)
    if not isinstance(cell.packaging, Mapping):
        raise ValueError(f"{where}.packaging: expected a table of Packaging4680 values")
    return cell


def load_built_cell(path: str | Path) -> BuiltCell:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the design JSON: {error}") from None
    return built_cell_from_dict(data, where=str(path))


def load_calibration(path: str | Path) -> dict[str, Any]:
    """The validated content of a calibration file, as `kernels.cell.model` takes it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"calibration file {path} does not exist (write it with "
                         "`microloop calibrate ... --out {path}`)") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"calibration file {path}: {error}") from None
    try:
        return Calibration.from_dict(data).to_dict()
    except ValueError as error:
        raise ValueError(f"calibration file {path}: {error}") from None


def _write_json_atomic(data: dict, path: Path) -> None:
    text = json.dumps(data, indent=2, allow_nan=False)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def plot_fit(result: FitResult, path: str | Path) -> None:
    """Measured vs simulated voltage for every curve, before and after the fit (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    # curve ids come from the user's files: draw them literally ('$' is no mathtext)
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    n = len(result.curves)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    colours = plt.get_cmap("tab10")
    for i, curve in enumerate(result.curves):
        c = colours(i % 10)
        hours = curve.time_s / 3600.0
        axes[0].plot(hours, curve.measured_V, ".", ms=3, color=c, alpha=0.4,
                     label=f"{curve.curve_id} measured")
        axes[0].plot(hours, curve.initial_V, ":", color=c, lw=1)
        axes[0].plot(hours, curve.fitted_V, "-", color=c, lw=1.5, zorder=3)
        axes[1].plot(hours, 1e3 * (curve.fitted_V - curve.measured_V), "-", color=c, lw=1)
    axes[0].plot([], [], "k:", label="before fit")
    axes[0].plot([], [], "k-", label="calibrated")
    axes[0].set_xlabel("time [h]")
    axes[0].set_ylabel("voltage [V]")
    axes[0].set_title(f"{n} curves: RMSE {1e3 * result.rmse_initial_V:.1f} -> "
                      f"{1e3 * result.rmse_fitted_V:.1f} mV")
    axes[0].legend(fontsize=7)
    axes[1].axhline(0.0, color="k", lw=0.5)
    axes[1].set_xlabel("time [h]")
    axes[1].set_ylabel("simulated - measured [mV]")
    axes[1].set_title("residuals after the fit")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check_drive_levels(curves: Sequence[Any], capacity_Ah: float) -> None:
    """Refuse currents or powers outside the cell model's accepted C-rate / power range: a fit at
    1e9 A runs every solve to nothing and ends in an infinite residual."""
    import numpy as np

    from kernels.cell.model import RANGES

    c_high = RANGES["c_rate"][1]
    p_low, p_high = RANGES["power_W"]
    for curve in curves:
        if curve.current_A is not None:
            peak = float(np.nanmax(np.abs(curve.current_A)))
            if not peak <= c_high * capacity_Ah:
                raise ValueError(
                    f"measured {curve.curve_id}: current_A reaches {peak:.4g} A = "
                    f"{peak / capacity_Ah:.4g} C for this {capacity_Ah:.3g} Ah cell; accepted "
                    f"up to {c_high:g} C ({c_high * capacity_Ah:.4g} A): check the current "
                    "column's unit (current_A or current_mA)")
        else:
            peak = float(np.nanmax(np.abs(curve.power_W)))
            if not peak <= p_high:
                raise ValueError(f"measured {curve.curve_id}: power_W reaches {peak:.4g} W; "
                                 f"accepted {p_low:g} to {p_high:g} W: check the power unit")


def calibrate(
    measured: Sequence[str | Path],
    design: str | Path | None,
    fit: Sequence[str],
    out: str | Path,
    *,
    plot: str | Path | None = None,
    initial: Mapping[str, float] | None = None,
    fixed: Mapping[str, float] | None = None,
    max_points_per_curve: int = 200,
    max_iterations: int = 30,
    parameter_set: str | None = None,
    cell_capacity_Ah: float | None = None,
    constant_current_A: Mapping[str, float] | None = None,
    predict: Sequence[str | Path] = (),
    progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Read the data and the cell, fit, write the calibration file (and the plot).

    The cell is either a built 4680 design (`design`, scored with the campaign's cell model) or
    a PyBaMM parameter set as it is, scaled to the whole cell (`parameter_set` with
    `cell_capacity_Ah`; e.g. Ecker2015 for the Kokam cell it was measured on). `predict`: curves
    the fit does not see, simulated with and without the fitted corrections; the calibration's
    metadata["validation"] holds the RMSE of every curve, fitted and predicted, before and after."""
    from kernels.cell.calibration import (
        cell_model_options,
        design_parameter_values,
        fit_discharge_curves,
        parameter_set_values,
        predict_curves,
    )

    out = Path(out)
    currents = dict(constant_current_A or {})
    names_fit = {str(p) for p in measured} | {Path(p).name for p in measured}
    names_predict = {str(p) for p in predict} | {Path(p).name for p in predict}
    unknown = sorted(set(currents) - names_fit - names_predict)
    if unknown:
        raise ValueError(f"--constant-current {', '.join(unknown)}: not one of the --measured "
                         "or --predict files")
    curves = load_curves(measured, {k: v for k, v in currents.items() if k in names_fit})
    predicted = (load_curves(predict, {k: v for k, v in currents.items() if k in names_predict})
                 if predict else [])
    metadata: dict[str, Any] = {
        "measured": [str(Path(p).name) for p in measured],
        "curves": [c.curve_id for c in curves],
    }
    if (design is None) == (parameter_set is None):
        raise ValueError("give either --design (a built 4680 cell) or --parameter-set with "
                         "--cell-capacity-Ah (a PyBaMM parameter set as the measured cell)")
    if design is not None:
        if cell_capacity_Ah is not None:
            raise ValueError("--cell-capacity-Ah goes with --parameter-set; a design has its own")
        cell = load_built_cell(design)
        model = cell.cell_model()
        _check_drive_levels(curves + predicted, model.nominal_capacity_Ah(cell.design))
        parameter_values = design_parameter_values(model, cell.design)
        options = cell_model_options(model)
        roll = model.jelly_roll(cell.design)
        area_m2 = roll.electrode_area_m2
        metadata.update({"cell": cell.to_dict(), "electrode_area_m2": area_m2})
    else:
        if cell_capacity_Ah is None:
            raise ValueError("--parameter-set needs --cell-capacity-Ah, the measured cell's "
                             "nominal capacity (7.5 for Ecker2015's Kokam cell)")
        _check_drive_levels(curves + predicted, float(cell_capacity_Ah))
        parameter_values = parameter_set_values(parameter_set, float(cell_capacity_Ah))
        options = {}
        area_m2 = float(parameter_values["Electrode height [m]"]
                        * parameter_values["Electrode width [m]"])
        metadata.update({"cell": {"parameter_set": parameter_set,
                                  "cell_capacity_Ah": float(cell_capacity_Ah)},
                         "electrode_area_m2": area_m2})
    result = fit_discharge_curves(
        parameter_values, curves, fit, model_options=options,
        initial=initial, fixed=fixed, max_points_per_curve=max_points_per_curve,
        max_iterations=max_iterations, metadata=metadata, progress=progress)
    calibration = result.calibration
    tail_V = float(calibration.metadata["tail_V"])
    checks = {"fit": predict_curves(parameter_values, curves, calibration.values,
                                    model_options=options,
                                    max_points_per_curve=max_points_per_curve, tail_V=tail_V)}
    if predicted:
        checks["predict"] = predict_curves(parameter_values, predicted, calibration.values,
                                           model_options=options,
                                           max_points_per_curve=max_points_per_curve,
                                           tail_V=tail_V)
    calibration.metadata["validation"] = [
        {"curve": c.curve_id, "role": role, "rmse_uncalibrated_V": c.rmse_initial_V,
         "rmse_calibrated_V": c.rmse_fitted_V, "n_points": int(c.time_s.size)}
        for role, fits in checks.items() for c in fits]
    if "contact_resistance_Ohm_cm2" in calibration.values:
        # the series resistance of this very cell, for comparison with a datasheet
        calibration.metadata["contact_resistance_of_this_cell_Ohm"] = (
            calibration.values["contact_resistance_Ohm_cm2"] * 1e-4 / area_m2)
    _write_json_atomic(calibration.to_dict(), out)
    if plot is not None:
        plot_fit(result, plot)
    return result
