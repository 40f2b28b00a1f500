"""`microloop characterise` on .npy, .tif and zarr files, its JSON, its table and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hpc.cli.app import app
from jobs.volume_io import VolumeFileError, open_volume, read_volume, write_volume
from kernels.metrics.volume import characterise_volume
from kernels.structure.procedural import ManufacturingParams, generate_structure

KEYS = {"volume_fraction", "specific_surface_area_per_um", "cbd_coverage", "tortuosity_factor",
        "effective_conductivity_S_m", "percolating", "solid_percolating", "am_particle_radius_um"}
CONTEXT = {"schema_version", "volume", "voxel_um", "voxel_um_source", "axis", "backend", "sample"}


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return generate_structure(ManufacturingParams(0.9, 0.35, 0.5), 32, voxel_um=0.5, seed=7)


def _run(*args: str):
    return CliRunner().invoke(app, ["characterise", *args])


@pytest.mark.parametrize("name", ["v.npy", "v.tif", "v.tiff", "v.zarr", "store.zarr/design/vol"])
def test_volume_files_round_trip(tmp_path: Path, volume: np.ndarray, name: str) -> None:
    write_volume(tmp_path / name, volume)
    loaded = read_volume(tmp_path / name)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, volume)


def test_json_matches_the_kernel(tmp_path: Path, volume: np.ndarray) -> None:
    path = tmp_path / "v.npy"
    np.save(path, volume)
    result = _run(str(path), "--json", "--voxel-um", "0.5", "--axis", "y")
    assert result.exit_code == 0, result.output
    [payload] = json.loads(result.stdout)
    assert set(payload) == KEYS | CONTEXT
    assert payload["voxel_um"] == 0.5 and payload["axis"] == "y" and payload["sample"] == 0
    expected = characterise_volume(volume, voxel_um=0.5, axis=1).to_dict()
    assert payload["volume_fraction"] == pytest.approx(expected["volume_fraction"])
    assert payload["specific_surface_area_per_um"] == pytest.approx(
        expected["specific_surface_area_per_um"])
    assert payload["tortuosity_factor"] == pytest.approx(expected["tortuosity_factor"], rel=1e-6)
    assert payload["percolating"] is expected["percolating"]


def test_conductivity_options_reach_the_solver(tmp_path: Path, volume: np.ndarray) -> None:
    path = tmp_path / "v.tif"
    write_volume(path, volume)
    low = json.loads(_run(str(path), "--json", "--voxel-um", "0.5",
                          "--conductivity-cbd-S-m", "1").stdout)[0]
    high = json.loads(_run(str(path), "--json", "--voxel-um", "0.5", "--conductivity-cbd-S-m",
                           "100", "--conductivity-am-S-m", "0.5").stdout)[0]
    assert high["effective_conductivity_S_m"] > 5 * low["effective_conductivity_S_m"]


def test_4d_zarr_characterises_each_sample_and_prints_a_table(tmp_path: Path,
                                                              volume: np.ndarray) -> None:
    stack = np.stack([volume, np.ascontiguousarray(volume.transpose(1, 0, 2))])
    write_volume(tmp_path / "runs.zarr" / "trial_0" / "vol", stack)
    result = _run(str(tmp_path / "runs.zarr" / "trial_0"), "--json", "--axis", "0",
                  "--voxel-um", "0.5")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [item["sample"] for item in payload] == [0, 1]
    assert all(KEYS <= set(item) for item in payload)
    table = _run(str(tmp_path / "runs.zarr" / "trial_0" / "vol"), "--voxel-um", "0.5")
    assert table.exit_code == 0
    assert "tortuosity" in table.stdout and "sample 1" in table.stdout


def test_non_percolating_volume_prints_null_tortuosity(tmp_path: Path) -> None:
    blocked = np.zeros((16, 16, 16), np.uint8)
    blocked[8] = 1
    np.save(tmp_path / "blocked.npy", blocked)
    [payload] = json.loads(_run(str(tmp_path / "blocked.npy"), "--json", "--voxel-um", "1").stdout)
    assert payload["tortuosity_factor"] is None and payload["percolating"] is False


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((16, 16), np.uint8), "3D"),
        (np.zeros((16, 16, 16), np.float64), "dtype float64"),
        (np.full((8, 8, 8), 7, np.uint8), "found [7]"),
        (np.full((8, 8, 8), 255, np.uint8), "fill value"),
    ],
)
def test_bad_arrays_exit_2_with_a_clear_error(tmp_path: Path, array: np.ndarray,
                                              message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    result = _run(str(path), "--voxel-um", "1")
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.npy"], "does not exist"),
        (["volume.raw"], ".npy, .tif"),
        (["v.npy", "--axis", "w"], "--axis must be one of"),
        (["v.npy", "--backend", "magic", "--voxel-um", "1"], "--backend must be one of"),
        (["v.npy"], "give --voxel-um"),
        (["v.npy", "--voxel-um", "0"], "--voxel-um"),
        (["nowhere.zarr"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, volume: np.ndarray, args: list[str],
                              message: str) -> None:
    np.save(tmp_path / "v.npy", volume)
    args = [str(tmp_path / args[0]), *args[1:]]
    result = _run(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_zarr_group_with_several_arrays_asks_for_one(tmp_path: Path, volume: np.ndarray) -> None:
    write_volume(tmp_path / "s.zarr" / "a", volume)
    write_volume(tmp_path / "s.zarr" / "b", volume)
    with pytest.raises(VolumeFileError, match="name the array"):
        open_volume(tmp_path / "s.zarr")


def test_command_in_a_fresh_process_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 4), np.uint8))
    run = subprocess.run([sys.executable, "-m", "hpc.cli", "characterise", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "error:" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("name", ["v.tif", "s.zarr/trial_0/vol"])
def test_the_voxel_size_the_file_carries_is_used(tmp_path: Path, volume: np.ndarray,
                                                 name: str) -> None:
    """A file written at 0.4 um gives the same surface areas as the kernel at 0.4 um (the old
    command used 1 um: every area 2.5x too small) and the same as --voxel-um 0.4."""
    write_volume(tmp_path / name, volume, voxel_um=0.4)
    [carried] = json.loads(_run(str(tmp_path / name), "--json").stdout)
    expected = characterise_volume(volume, voxel_um=0.4).to_dict()
    assert carried["voxel_um"] == pytest.approx(0.4)
    assert carried["specific_surface_area_per_um"] == pytest.approx(
        expected["specific_surface_area_per_um"])
    result = _run(str(tmp_path / name), "--json", "--voxel-um", "1.0")
    assert result.exit_code == 2 and "disagrees" in result.stderr


def test_generate_command_zarr_voxel_size_reaches_characterise(tmp_path: Path) -> None:
    """`generate --voxel-um 0.4 --out v.zarr` then `characterise v.zarr` (the user's flow)."""
    out = tmp_path / "v.zarr"
    made = CliRunner().invoke(app, ["generate", "-p", "am_wt_frac=0.94", "-p", "porosity=0.35",
                                    "--size", "16", "--voxel-um", "0.4", "--out", str(out)])
    assert made.exit_code == 0, made.output
    [record] = json.loads(_run(str(out), "--json").stdout)
    volume = read_volume(out)[0]
    expected = characterise_volume(volume, voxel_um=0.4).to_dict()
    assert record["voxel_um"] == pytest.approx(0.4)
    assert record["specific_surface_area_per_um"]["am_pore"] == pytest.approx(
        expected["specific_surface_area_per_um"]["am_pore"])


def test_json_is_a_list_with_the_same_keys_for_3d_and_4d(tmp_path: Path,
                                                         volume: np.ndarray) -> None:
    np.save(tmp_path / "one.npy", volume)
    np.save(tmp_path / "two.npy", np.stack([volume, volume]))
    [one] = json.loads(_run(str(tmp_path / "one.npy"), "--json", "--voxel-um", "0.5").stdout)
    two = json.loads(_run(str(tmp_path / "two.npy"), "--json", "--voxel-um", "0.5").stdout)
    assert [item["sample"] for item in two] == [0, 1]
    assert set(one) == set(two[0]) == set(two[1])
    assert one["schema_version"] == "microloop.characterise/1"


def test_a_large_volume_reports_each_stage_with_an_eta(tmp_path: Path, volume: np.ndarray,
                                                        monkeypatch) -> None:
    """One large 3-D volume (a 512^3 takes minutes per stage) logs a line after each stage,
    not only when it is done; the threshold is lowered so a 32^3 volume counts as large."""
    import re

    import hpc.cli.commands.characterise as command

    monkeypatch.setattr(command, "PROGRESS_MIN_VOXELS", volume.size)
    np.save(tmp_path / "v.npy", volume)
    result = _run(str(tmp_path / "v.npy"), "--voxel-um", "0.5", "--json")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "characterising" in line]
    stages = [re.search(r"sample 1 of 1: ([a-z ]+) \(", line).group(1) for line in lines]
    assert stages == ["surface areas", "tortuosity factor", "electronic conductivity"]
    assert [re.search(r"step (\d)/3", line).group(1) for line in lines] == ["1", "2", "3"]
    assert "ETA 0:00:00" in lines[-1]
    [record] = json.loads(result.stdout)  # the JSON on stdout is untouched by the progress
    assert record["tortuosity_factor"] == pytest.approx(
        characterise_volume(volume, voxel_um=0.5).tortuosity_factor)
