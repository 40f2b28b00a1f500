"""Reading measured discharge curves: documented CSV columns, BioLogic files, and clear errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from jobs.calibrate import load_calibration
from jobs.discharge_data import load_curves, read_csv, read_cycler, write_csv
from kernels.cell.calibration import Calibration, DischargeCurve


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def _curve_rows(n: int = 8, t0: float = 0.0) -> list[str]:
    return [f"{t0 + 60 * i},{4.1 - 0.1 * i:.3f},5.0" for i in range(n)]


def test_csv_with_documented_columns_reads_one_curve(tmp_path):
    path = _write(tmp_path, "cell.csv", "time_s,voltage_V,current_A,note\n"
                  + "\n".join(f"{r},x" for r in _curve_rows()) + "\n")
    (curve,) = read_csv(path)
    assert curve.curve_id == "cell"
    assert curve.drive == "current"
    np.testing.assert_allclose(curve.time_s, 60.0 * np.arange(8))
    np.testing.assert_allclose(curve.current_A, 5.0)
    assert curve.power_W is None and curve.temperature_C is None


def test_csv_unit_variants_are_converted(tmp_path):
    rows = [f"{i},{4100 - 100 * i},{2000.0},{298.15}" for i in range(6)]
    path = _write(tmp_path, "u.csv", "Time_min,voltage_mV,power_mW,temperature_K\n"
                  + "\n".join(rows) + "\n")
    (curve,) = read_csv(path)
    np.testing.assert_allclose(curve.time_s, 60.0 * np.arange(6))
    np.testing.assert_allclose(curve.voltage_V[0], 4.1)
    np.testing.assert_allclose(curve.power_W, 2.0)
    np.testing.assert_allclose(curve.temperature_C, 25.0)
    assert curve.drive == "power"


def test_csv_curve_id_column_splits_curves_in_order(tmp_path):
    rows = [f"b,{r}" for r in _curve_rows()] + [f"a,{r}" for r in _curve_rows(6)]
    path = _write(tmp_path, "two.csv", "curve_id,time_s,voltage_V,current_A\n"
                  + "\n".join(rows) + "\n")
    curves = read_csv(path)
    assert [c.curve_id for c in curves] == ["b", "a"]
    assert [c.time_s.size for c in curves] == [8, 6]


def test_round_trip_through_write_csv(tmp_path):
    t = np.linspace(0, 100, 11)
    curves = [DischargeCurve("x", t, np.linspace(4.0, 3.0, 11), current_A=np.full(11, 2.5),
                             temperature_C=np.full(11, 30.0)),
              DischargeCurve("y", t, np.linspace(4.1, 3.1, 11), current_A=np.full(11, 5.0))]
    curves[1].temperature_C = np.full(11, 30.0)
    write_csv(curves, tmp_path / "rt.csv")
    back = load_curves([tmp_path / "rt.csv"])
    assert [c.curve_id for c in back] == ["x", "y"]
    np.testing.assert_allclose(back[1].voltage_V, curves[1].voltage_V)
    mixed = [curves[0], DischargeCurve("p", t, t * 0 + 3.7, power_W=np.full(11, 9.0))]
    with pytest.raises(ValueError, match="separate files"):
        write_csv(mixed, tmp_path / "mixed.csv")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("time_s,voltage_V,current_A\n", "no data rows"),
        ("time_s,current_A\n0,5\n1,5\n", "missing column voltage_V"),
        ("time_s,voltage_V\n0,4\n1,4\n", "missing column current_A or power_W"),
        ("t,v,i\n0,4,5\n", r"missing column time_s, voltage_V, current_A or power_W; found t, v, i"),
        ("time_s,voltage_V,current_A,power_W\n0,4,5,20\n", "both current_A and power_W"),
        ("time_s,time_h,voltage_V,current_A\n0,0,4,5\n", "time_s, time_h all give time_s"),
        ("time_s,voltage_V,current_A\n" + "\n".join(_curve_rows(3)) + "\n120,abc,5\n",
         r"column voltage_V is empty or not a number at line 5 \('abc'"),
        ("time_s,voltage_V,current_A\n0,4.1,5\n60,4.0,5\n30,3.9,5\n90,3.8,5\n120,3.7,5\n",
         r"time must increase strictly within curve 'bad': line 4 has time_s 30 after 60"),
        ("time_s,voltage_V,current_A\n0,4.1,5\n60,4.0,5\n60,3.9,5\n90,3.8,5\n120,3.7,5\n",
         "time must increase strictly"),
    ],
)
def test_bad_csv_files_name_the_problem(tmp_path, text, match):
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(ValueError, match=match):
        load_curves([path])


@pytest.mark.parametrize(
    ("header", "rows", "match"),
    [
        ("time_s,voltage_V,current_A", [f"{60 * i},{4100 - 100 * i},5" for i in range(6)],
         r"voltage_V spans 3600\.\.4100.*millivolts"),
        ("time_s,voltage_V,current_A", [f"{60 * i},{4.1 - 0.1 * i:.2f},-5" for i in range(6)],
         "current_A averages -5.*negate"),
        ("time_s,voltage_V,current_A,temperature_C",
         [f"{60 * i},{4.1 - 0.1 * i:.2f},5,298" for i in range(6)], "kelvin"),
        ("time_s,voltage_V,current_A", [f"{60 * i},{4.1 - 0.1 * i:.2f},5" for i in range(3)],
         "has 3 data rows, at least 5"),
    ],
)
def test_wrong_units_and_signs_are_caught(tmp_path, header, rows, match):
    path = _write(tmp_path, "units.csv", header + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=match) as info:
        load_curves([path])
    assert "units.csv" in str(info.value)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown data format .xlsx"):
        load_curves([_write(tmp_path, "a.xlsx", "x")])
    with pytest.raises(ValueError, match="no such file"):
        load_curves([tmp_path / "nope.csv"])
    with pytest.raises(ValueError, match="at least one data file"):
        load_curves([])


def test_same_stem_in_two_folders_gets_unique_ids(tmp_path):
    text = "time_s,voltage_V,current_A\n" + "\n".join(_curve_rows()) + "\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    curves = load_curves([_write(tmp_path / "a", "cell.csv", text),
                          _write(tmp_path / "b", "cell.csv", text)])
    assert [c.curve_id for c in curves] == ["cell~1", "cell~2"]


def _module(shortname: bytes, data: bytes, version: int) -> bytes:
    header = struct.pack("<10s25sII8s", shortname, b"", len(data), version, b"11/26/26")
    return b"MODULE" + header + data


def _write_mpr(path, time_s, voltage_V, current_mA) -> None:
    """A BioLogic .mpr in the layout galvani reads (settings module + version-2 data module
    with the column ids of time/s, Ewe/V and <I>/mA)."""
    from galvani.BioLogic import MPR_MAGIC

    n = len(time_s)
    col_ids = [4, 6, 11]
    head = struct.pack("<IB", n, len(col_ids)) + struct.pack("<3H", *col_ids)
    head = head.ljust(405, b"\x00")
    records = np.zeros(n, dtype=[("t", "<f8"), ("E", "<f4"), ("I", "<f8")])
    records["t"], records["E"], records["I"] = time_s, voltage_V, current_mA
    path.write_bytes(MPR_MAGIC + _module(b"VMP Set   ", b"\x00" * 16, 0)
                     + _module(b"VMP data  ", head + records.tobytes(), 2))


def test_biologic_mpr_discharge_stretches_become_curves(tmp_path):
    # rest, discharge at -2000 mA, rest, charge, discharge at -1000 mA
    segments = [(5, 0.0), (20, -2000.0), (5, 0.0), (10, 1500.0), (12, -1000.0)]
    current = np.concatenate([np.full(n, i) for n, i in segments])
    time_s = np.arange(current.size) * 30.0
    voltage = np.linspace(4.2, 3.0, current.size)
    path = tmp_path / "run.mpr"
    _write_mpr(path, time_s, voltage, current)
    curves = read_cycler(path)
    assert [c.curve_id for c in curves] == ["run#1", "run#2"]
    assert [c.time_s.size for c in curves] == [20, 12]
    np.testing.assert_allclose(curves[0].current_A, 2.0)       # mA -> A, discharge positive
    np.testing.assert_allclose(curves[1].current_A, 1.0)
    np.testing.assert_allclose(curves[1].time_s[0], 40 * 30.0)
    assert all(c.drive == "current" for c in load_curves([path]))


def test_unreadable_mpr_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.mpr"
    path.write_bytes(b"not a biologic file at all" * 3)
    with pytest.raises(ValueError, match="broken.mpr: not a readable BioLogic .mpr file"):
        load_curves([path])
    charge_only = tmp_path / "charge.mpr"
    _write_mpr(charge_only, np.arange(10.0), np.linspace(3, 4, 10), np.full(10, 500.0))
    with pytest.raises(ValueError, match="no discharge"):
        load_curves([charge_only])


def test_calibration_file_validation(tmp_path):
    good = Calibration(values={"capacity_factor": 0.9, "contact_resistance_Ohm_cm2": 10.0})
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(good.to_dict()))
    assert load_calibration(path)["values"] == {"capacity_factor": 0.9,
                                                "contact_resistance_Ohm_cm2": 10.0}
    for values, match in (({"capacity_factr": 0.9}, "unknown fit parameter 'capacity_factr'"),
                          ({"capacity_factor": 3.0}, r"outside its accepted range \[0.5, 1.5\]"),
                          ({}, "non-empty"),
                          ({"capacity_factor": "a"}, "finite number")):
        path.write_text(json.dumps({"values": values}))
        with pytest.raises(ValueError, match=match):
            load_calibration(path)
    path.write_text(json.dumps({"schema": "other/2", "values": {"capacity_factor": 1.0}}))
    with pytest.raises(ValueError, match="calibration.schema"):
        load_calibration(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_calibration(tmp_path / "missing.json")


def test_trailing_rest_is_dropped_leading_rest_kept(tmp_path):
    rows = ["0,4.10,0", "60,4.10,0"] + [f"{120 + 60 * i},{4.0 - 0.2 * i:.2f},5" for i in range(6)]
    rows += ["600,3.2,0", "660,3.3,0", "720,3.35,0"]
    (curve,) = load_curves([_write(tmp_path, "rest.csv", "time_s,voltage_V,current_A\n"
                                   + "\n".join(rows) + "\n")])
    assert curve.time_s.size == 8
    assert curve.current_A[0] == 0.0 and curve.current_A[-1] == 5.0


def test_biologic_mpt_text_export(tmp_path):
    rows = [f"{30.0 * i}\t{4.1 - 0.05 * i:.3f}\t{-1500.0 if 2 <= i < 12 else 0.0}"
            for i in range(15)]
    path = tmp_path / "export.mpt"
    path.write_bytes(("EC-Lab ASCII FILE\r\nNb header lines : 3\r\ntime/s\tEwe/V\tI/mA\r\n"
                      + "\r\n".join(rows) + "\r\n").encode())
    (curve,) = load_curves([path])
    assert curve.curve_id == "export#1"
    assert curve.time_s.size == 10
    np.testing.assert_allclose(curve.current_A, 1.5)
    (tmp_path / "empty.mpt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mpt: not a readable BioLogic .mpt file"):
        load_curves([tmp_path / "empty.mpt"])


def test_capacity_based_csv_needs_its_current_and_refuses_mixed_columns(tmp_path):
    rows = "\n".join(f"{0.5 * i},{4.1 - 0.1 * i:.2f}" for i in range(6))
    path = _write(tmp_path, "paper.csv", "discharged_capacity_mAh,voltage_V\n" + rows + "\n")
    (curve,) = read_csv(path, constant_current_A=2.0)
    # 0.5 mAh per row at 2 A: 0.9 s per row, from capacity 0
    np.testing.assert_allclose(curve.time_s, 0.9 * np.arange(6))
    assert curve.time_origin_s == 0.0
    with pytest.raises(ValueError, match="give its constant discharge current"):
        read_csv(path)
    with pytest.raises(ValueError, match="expected a positive number of amps"):
        read_csv(path, constant_current_A=-2.0)
    timed = _write(tmp_path, "timed.csv", "time_s,voltage_V,current_A\n"
                   + "\n".join(_curve_rows(6)) + "\n")
    with pytest.raises(ValueError, match="has no discharged_capacity_Ah column"):
        read_csv(timed, constant_current_A=2.0)
    both = _write(tmp_path, "both.csv", "discharged_capacity_Ah,time_s,voltage_V\n0,0,4\n")
    with pytest.raises(ValueError, match="has discharged capacity and time_s"):
        read_csv(both, constant_current_A=2.0)
    with pytest.raises(ValueError, match="constant current given for other.csv"):
        load_curves([path], {"other.csv": 2.0})
