"""Measured discharge curves from files: CSV with documented columns, or BioLogic cycler files.

Why a reader of its own: a calibration is only as good as its data, and cycler exports differ in
units, sign conventions and layout. Everything is turned into `kernels.cell.calibration.DischargeCurve`
(seconds, volts, amps or watts, discharge positive) and checked, so a bad file fails here with
the file, the column and the row named, before any simulation runs.

CSV (one header row; column names case-insensitive, other columns ignored):
    time_s          time, strictly increasing within a curve (or time_min / time_h)
    voltage_V       terminal voltage (or voltage_mV)
    current_A       discharge current, positive (or current_mA)      } exactly one of
    power_W         discharge power, positive (or power_mW)          } the two
    temperature_C   optional cell temperature (or temperature_K): the curve is simulated
                    isothermally at its mean
    curve_id        optional: several curves in one file, one per distinct value
Constant-current curves digitised from a paper often give the discharged capacity instead of the
time: a column discharged_capacity_Ah (or _mAh) replaces time_s, and the constant current is
given to `read_csv(path, constant_current_A=...)` (`microloop calibrate --constant-current`);
time is then capacity / current, and the discharge starts at capacity 0 (or at the first row if
that is below 0, as a digitised point can be): DischargeCurve.time_origin_s.
Cycler files (galvani, a dependency): BioLogic `.mpr` (binary) and `.mpt` (text export).
Each contiguous stretch of discharge current (I < 0 in EC-Lab's convention) longer than
MIN_POINTS_PER_CURVE rows becomes one curve; rests and charges are dropped.
Rows after a curve's last discharging row (the relaxation after the cut-off) are dropped: the
simulation stops at the cut-off and cannot follow them. A leading rest is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from kernels.cell.calibration import MIN_POINTS_PER_CURVE, DischargeCurve

# canonical column -> {accepted name: conversion to the canonical unit}
_COLUMNS: dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "time_s": {"time_s": lambda x: x, "time_min": lambda x: x * 60.0,
               "time_h": lambda x: x * 3600.0},
    "voltage_V": {"voltage_v": lambda x: x, "voltage_mv": lambda x: x * 1e-3},
    "current_A": {"current_a": lambda x: x, "current_ma": lambda x: x * 1e-3},
    "power_W": {"power_w": lambda x: x, "power_mw": lambda x: x * 1e-3},
    "temperature_C": {"temperature_c": lambda x: x, "temperature_k": lambda x: x - 273.15},
    "discharged_capacity_Ah": {"discharged_capacity_ah": lambda x: x,
                               "discharged_capacity_mah": lambda x: x * 1e-3},
}
ACCEPTED_CSV_COLUMNS = ("time_s", "voltage_V", "current_A", "power_W", "temperature_C",
                        "curve_id")
CYCLER_SUFFIXES = (".mpr", ".mpt")
# a discharge stretch: current below this share of the file's largest discharge current
_DISCHARGE_THRESHOLD = 0.01


def _find(columns: dict[str, str], canonical: str, path: Path) -> tuple[str, Callable] | None:
    """The file's column for a canonical quantity and its unit conversion, or None."""
    found = [(columns[name.lower()], convert) for name, convert in _COLUMNS[canonical].items()
             if name.lower() in columns]
    if len(found) > 1:
        raise ValueError(f"{path}: columns {', '.join(f[0] for f in found)} all give "
                         f"{canonical}; keep one")
    return found[0] if found else None


def _numeric(frame, column: str, path: Path) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        line = int(bad[0]) + 2   # 1-based, after the header row
        raise ValueError(f"{path}: column {column} is empty or not a number at line {line} "
                         f"({frame[column].iloc[bad[0]]!r}; {bad.size} such rows)")
    return values


def read_csv(path: str | Path, constant_current_A: float | None = None) -> list[DischargeCurve]:
    """The curves of one CSV file (see the module docstring for its columns).

    `constant_current_A`: the discharge current of a file that gives discharged capacity instead
    of time and has no current column; refused for any other file so it cannot shadow data."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty; expected a header row with "
                         f"{', '.join(ACCEPTED_CSV_COLUMNS)} and data rows") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as CSV: {error}") from None
    columns = {str(c).strip().lower(): c for c in frame.columns}
    found = {name: _find(columns, name, path) for name in _COLUMNS}
    by_capacity = found["discharged_capacity_Ah"] is not None
    if by_capacity:
        _check_capacity_file(found, path, constant_current_A)
    elif constant_current_A is not None:
        raise ValueError(f"{path}: a constant current is given for it, but it has no "
                         "discharged_capacity_Ah column; the current is only taken for files "
                         "that give capacity instead of time (and no current column)")
    missing = [n for n in ("time_s", "voltage_V") if found[n] is None
               and not (by_capacity and n == "time_s")]
    if found["current_A"] is None and found["power_W"] is None and not by_capacity:
        missing.append("current_A or power_W")
    if missing:
        raise ValueError(f"{path}: missing column {', '.join(missing)}; found "
                         f"{', '.join(map(str, frame.columns)) or 'none'}; accepted: "
                         f"{', '.join(ACCEPTED_CSV_COLUMNS)} (or the unit variants time_min, "
                         "time_h, voltage_mV, current_mA, power_mW, temperature_K)")
    if found["current_A"] is not None and found["power_W"] is not None:
        raise ValueError(f"{path}: has both {found['current_A'][0]} and {found['power_W'][0]}; "
                         "give one drive: current_A for constant-current or measured-current "
                         "curves, power_W for constant-power ones")
    if frame.empty:
        raise ValueError(f"{path}: has a header but no data rows")
    data = {name: convert(_numeric(frame, column, path))
            for name, hit in found.items() if hit is not None
            for column, convert in [hit]}
    if by_capacity:
        capacity_Ah = data.pop("discharged_capacity_Ah")
        current_A = float(constant_current_A)  # checked by _check_capacity_file
        data["time_s"] = capacity_Ah * 3600.0 / current_A
        data["current_A"] = np.full(capacity_Ah.size, current_A)
    if "curve_id" in columns:
        ids = frame[columns["curve_id"]].astype(str).to_numpy()
        order = list(dict.fromkeys(ids))
    else:
        ids = np.full(len(frame), path.stem)
        order = [path.stem]
    curves = []
    for curve_id in order:
        rows = np.flatnonzero(ids == curve_id)
        steps = np.diff(data["time_s"][rows])
        if np.any(steps <= 0):
            k = int(np.flatnonzero(steps <= 0)[0])
            raise ValueError(
                f"{path}: time must increase strictly within curve {curve_id!r}: line "
                f"{rows[k + 1] + 2} has time_s {data['time_s'][rows[k + 1]]:g} after "
                f"{data['time_s'][rows[k]]:g} on line {rows[k] + 2} (sort the rows, or give each "
                "discharge its own curve_id)")
        curve = DischargeCurve(
            curve_id=str(curve_id),
            **{name: values[rows] for name, values in data.items()},
            # the discharge started at capacity 0, or at a first point digitised just below it
            time_origin_s=min(0.0, float(data["time_s"][rows[0]])) if by_capacity else None,
        )
        curves.append(curve)
    return curves


def _check_capacity_file(found: dict, path: Path, constant_current_A: float | None) -> None:
    """A capacity-based file has no time or drive column besides, and a positive current given;
    read_csv then computes time and current from them."""
    clash = [found[n][0] for n in ("time_s", "current_A", "power_W") if found[n] is not None]
    if clash:
        raise ValueError(f"{path}: has discharged capacity and {', '.join(clash)}; give either "
                         "time with a drive column, or capacity with a constant current")
    if constant_current_A is None:
        raise ValueError(f"{path}: gives discharged_capacity_Ah instead of time; give its "
                         "constant discharge current (--constant-current "
                         f"{path.name}=AMPS, or read_csv(path, constant_current_A=...))")
    if not (np.isfinite(constant_current_A) and constant_current_A > 0):
        raise ValueError(f"{path}: constant current {constant_current_A!r} A: expected a "
                         "positive number of amps (discharge positive)")


def _cycler_columns(data: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = data.dtype.names or ()
    time_name = next((n for n in ("time/s",) if n in names), None)
    volt_name = next((n for n in ("Ewe/V", "Ecell/V", "<Ewe>/V", "<Ewe/V>") if n in names), None)
    curr_name = next((n for n in ("I/mA", "<I>/mA") if n in names), None)
    missing = [label for label, name in (("time/s", time_name), ("Ewe/V", volt_name),
                                         ("I/mA", curr_name)) if name is None]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} column; the file has "
                         f"{', '.join(names) or 'none'} (export time, voltage and current)")
    return (np.asarray(data[time_name], dtype=float), np.asarray(data[volt_name], dtype=float),
            np.asarray(data[curr_name], dtype=float) * 1e-3)


def read_cycler(path: str | Path) -> list[DischargeCurve]:
    """The discharge stretches of a BioLogic .mpr / .mpt file, read with galvani."""
    path = Path(path)
    try:
        from galvani import BioLogic
    except ImportError:
        raise ValueError(f"{path}: reading cycler files needs galvani, a dependency of "
                         "microloop-electrodes that is missing here: pip install galvani") from None
    try:
        if path.suffix.lower() == ".mpr":
            data = BioLogic.MPRfile(str(path)).data
        else:
            data, _ = BioLogic.MPTfile(str(path))
    except (OSError, ValueError, NotImplementedError, AssertionError, UnicodeDecodeError,
            KeyError, StopIteration, AttributeError) as error:  # galvani's ways of failing
        raise ValueError(f"{path}: not a readable BioLogic {path.suffix} file: "
                         f"{error or type(error).__name__}") from None
    if len(data) == 0:
        raise ValueError(f"{path}: the file holds no data points")
    time_s, voltage_V, current_A = _cycler_columns(data, path)
    discharge = -current_A      # EC-Lab: discharge current is negative
    if discharge.max() <= 0:
        raise ValueError(f"{path}: no discharge (negative current) in the file")
    on = discharge > _DISCHARGE_THRESHOLD * discharge.max()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(int), [0]])))
    curves = []
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start < MIN_POINTS_PER_CURVE:
            continue
        curves.append(DischargeCurve(
            curve_id=f"{path.stem}#{len(curves) + 1}", time_s=time_s[start:stop],
            voltage_V=voltage_V[start:stop], current_A=discharge[start:stop]))
    if not curves:
        raise ValueError(f"{path}: no discharge stretch with at least {MIN_POINTS_PER_CURVE} "
                         "points")
    return curves


def _without_trailing_rest(curve: DischargeCurve) -> DischargeCurve:
    """The curve up to its last discharging row. The relaxation after the cut-off cannot be
    followed by a simulation that stops at the cut-off; a leading rest is harmless and kept."""
    drive = curve.current_A if curve.current_A is not None else curve.power_W
    on = np.flatnonzero(drive > _DISCHARGE_THRESHOLD * np.max(drive))
    stop = int(on[-1]) + 1
    if stop == drive.size or stop < MIN_POINTS_PER_CURVE:
        return curve
    def cut(a):
        return None if a is None else a[:stop]
    return DischargeCurve(curve.curve_id, cut(curve.time_s), cut(curve.voltage_V),
                          cut(curve.current_A), cut(curve.power_W), cut(curve.temperature_C),
                          curve.time_origin_s)


def load_curves(paths: Sequence[str | Path],
                constant_current_A: Mapping[str, float] | None = None) -> list[DischargeCurve]:
    """All curves of all files, validated, with ids unique across files.

    `constant_current_A`: file name (as given, or its base name) -> amps, for CSV files that give
    discharged capacity instead of time; a name matching none of the files is an error."""
    if not paths:
        raise ValueError("measured: give at least one data file (.csv, .mpr or .mpt)")
    currents = dict(constant_current_A or {})
    names = {str(p) for p in paths} | {Path(p).name for p in paths}
    unknown = sorted(set(currents) - names)
    if unknown:
        raise ValueError(f"constant current given for {', '.join(unknown)}, which is not one of "
                         f"the data files ({', '.join(Path(p).name for p in paths)})")
    curves: list[DischargeCurve] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        suffix = path.suffix.lower()
        current = currents.get(str(raw), currents.get(path.name))
        if current is not None and suffix != ".csv":
            raise ValueError(f"{path}: a constant current is only taken for CSV files")
        if suffix == ".csv":
            found = read_csv(path, constant_current_A=current)
        elif suffix in CYCLER_SUFFIXES:
            found = read_cycler(path)
        else:
            raise ValueError(f"{path}: unknown data format {suffix or '(no suffix)'}; accepted: "
                             f".csv, {', '.join(CYCLER_SUFFIXES)}")
        for curve in found:
            try:
                curve.validate()
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
        curves.extend(_without_trailing_rest(curve) for curve in found)
    ids = [c.curve_id for c in curves]
    seen: dict[str, int] = {}
    for curve in curves:        # the same stem in two folders: number the repeats
        if ids.count(curve.curve_id) > 1:
            seen[curve.curve_id] = seen.get(curve.curve_id, 0) + 1
            curve.curve_id = f"{curve.curve_id}~{seen[curve.curve_id]}"
    return curves


def write_csv(curves: Sequence[DischargeCurve], path: str | Path) -> None:
    """Curves as one CSV in the documented columns (synthetic data, exports)."""
    import pandas as pd

    if len({curve.drive for curve in curves}) > 1:
        raise ValueError("write_csv: current- and power-driven curves need separate files "
                         "(a file has either current_A or power_W)")
    frames = []
    for curve in curves:
        columns = {"curve_id": curve.curve_id, "time_s": curve.time_s,
                   "voltage_V": curve.voltage_V}
        if curve.current_A is not None:
            columns["current_A"] = curve.current_A
        if curve.power_W is not None:
            columns["power_W"] = curve.power_W
        if curve.temperature_C is not None:
            columns["temperature_C"] = curve.temperature_C
        frames.append(pd.DataFrame(columns))
    pd.concat(frames, ignore_index=True).to_csv(path, index=False, float_format="%.6g")
