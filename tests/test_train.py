"""Generator training: data sources, a real short run, checkpoint + resume, and the CLI commands."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hpc.cli.app import app
from jobs.train import TrainOptions, load_model, loss_plot_path, train_generator
from jobs.training_data import load_training_set, procedural_training_set
from kernels.generator.model import sample
from kernels.structure.procedural import ManufacturingParams, generate_structure

GRID = {"am_wt_frac": [0.85, 0.95], "porosity": [0.3, 0.45], "binder_adhesion": [0.2, 0.8]}
TINY = dict(batch=2, crop_voxels=16, max_lag_voxels=6, widths=(16, 12, 8, 8), latent_channels=4,
            learning_rate=3e-3, threads=1)


@pytest.fixture(scope="module")
def tiny_set():
    return procedural_training_set(GRID, size_voxels=24, voxel_um=0.8)


def test_short_training_run_lowers_the_loss_and_writes_model_and_plot(tiny_set, tmp_path):
    out = tmp_path / "m.pt"
    summary = train_generator(tiny_set, out, TrainOptions(steps=12, checkpoint_every=6, **TINY))
    assert summary["steps"] == 12 and not summary["stopped_early"]
    state = torch.load(str(out) + ".ckpt", weights_only=True)
    losses = [h["loss"] for h in state["history"]]
    assert np.mean(losses[-3:]) < losses[0]
    assert loss_plot_path(out).stat().st_size > 1000
    model = load_model(out)
    info = model.training_info
    assert info["steps"] == 12 and len(info["training_points"]) == 8
    assert info["fixed_params"] == {"mean_diameter_um": 8.0, "diameter_spread": 0.25}
    assert model.config.condition_names == ("am_wt_frac", "porosity", "binder_adhesion")
    assert model.config.condition_low == (0.85, 0.3, 0.2)
    vol = sample({"am_wt_frac": 0.9, "porosity": 0.4}, n=1, size=16, seed=0, model=model)
    assert vol.shape == (1, 16, 16, 16)


def test_checkpoint_and_resume_equal_an_uninterrupted_run(tiny_set, tmp_path):
    straight = tmp_path / "a.pt"
    train_generator(tiny_set, straight, TrainOptions(steps=6, checkpoint_every=3, **TINY))
    split = tmp_path / "b.pt"
    first = train_generator(tiny_set, split, TrainOptions(steps=3, checkpoint_every=3, **TINY))
    assert first["steps"] == 3
    second = train_generator(tiny_set, split, TrainOptions(steps=6, checkpoint_every=3, **TINY),
                             resume=True)
    assert second["steps"] == 6
    a, b = load_model(straight).state_dict(), load_model(split).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = torch.load(str(straight) + ".ckpt", weights_only=True)["history"]
    hb = torch.load(str(split) + ".ckpt", weights_only=True)["history"]
    assert ha == hb
    with pytest.raises(ValueError, match="another model configuration"):
        train_generator(tiny_set, split, TrainOptions(steps=8, **{**TINY, "widths": (8, 8, 8, 8)}),
                        resume=True)


def _user_volumes() -> list[tuple[dict, np.ndarray]]:
    out = []
    for k, (w, p) in enumerate([(0.9, 0.3), (0.95, 0.4)]):
        params = {"am_wt_frac": w, "porosity": p, "binder_adhesion": 0.5}
        out.append((params, generate_structure(ManufacturingParams(**params), 20, 0.8, seed=k)))
    return out


def test_user_folder_and_zarr_training_sets(tmp_path):
    import tifffile
    import zarr

    folder = tmp_path / "vols"
    folder.mkdir()
    rows = []
    for k, (params, vol) in enumerate(_user_volumes()):
        name = f"v{k}.npy" if k == 0 else f"v{k}.tif"
        np.save(folder / name, vol) if k == 0 else tifffile.imwrite(folder / name, vol)
        rows.append({"file": name, **params, "mass_loading_mg_cm2": 15 + 5 * k})
    with open(folder / "params.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data = load_training_set(str(folder), voxel_um=0.8)
    assert len(data.volumes) == 2 and data.params[1]["porosity"] == 0.4
    assert np.array_equal(data.volumes[1], _user_volumes()[1][1])
    assert data.condition_names() == ("am_wt_frac", "porosity", "mass_loading_mg_cm2")

    group = zarr.open_group(str(tmp_path / "vols.zarr"), mode="w")
    for k, (params, vol) in enumerate(_user_volumes()):
        array = group.create_array(f"s{k}", shape=vol.shape, dtype="uint8")
        array[...] = vol
        array.attrs["params"] = params
    data = load_training_set(str(tmp_path / "vols.zarr"), voxel_um=0.8)
    assert [p["am_wt_frac"] for p in data.params] == [0.9, 0.95]

    with open(folder / "params.csv", "w") as handle:
        handle.write("name,am_wt_frac,porosity\nv0.npy,0.9,0.3\n")
    with pytest.raises(ValueError, match="'file' column"):
        load_training_set(str(folder))
    with open(folder / "params.csv", "w") as handle:
        handle.write("file,am_wt_frac,porosity\nv0.npy,0.9,0.7\n")
    with pytest.raises(ValueError, match="line 2.*porosity"):
        load_training_set(str(folder))
    with pytest.raises(ValueError, match="not 'procedural'"):
        load_training_set(str(tmp_path / "nothing"))


def test_cli_train_generator_then_generate_from_it(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.pt"
    result = runner.invoke(app, ["train-generator", "procedural", "--out", str(out), "--steps", "2",
                                 "--crop", "16", "--batch", "1", "--volume-voxels", "24",
                                 "--voxel-um", "0.8", "--threads", "1",
                                 "--grid", "am_wt_frac=0.85,0.95", "--grid", "porosity=0.3,0.4"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and out.is_file()
    target = tmp_path / "v.npy"
    result = runner.invoke(app, ["generate", "--param", "am_wt_frac=0.9", "--param", "porosity=0.35",
                                 "--size", "16", "--n", "2", "--seed", "1", "--out", str(target),
                                 "--model", str(out)])
    assert result.exit_code == 0, result.output
    vols = np.load(target)
    assert vols.shape == (2, 16, 16, 16) and vols.dtype == np.uint8 and vols.max() <= 2


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".zarr"])
def test_cli_generate_writes_each_format(tmp_path, suffix):
    import tifffile
    import zarr

    target = tmp_path / f"v{suffix}"
    result = CliRunner().invoke(app, ["generate", "-p", "am_wt_frac=0.94", "-p", "porosity=0.35",
                                      "-p", "binder_adhesion=0.5", "-p", "mass_loading_mg_cm2=20",
                                      "--size", "24", "--n", "2", "--out", str(target),
                                      "--model", "procedural"])
    assert result.exit_code == 0, result.output
    if suffix == ".npy":
        vols = np.load(target)
    elif suffix == ".tif":
        vols = tifffile.imread(target)
    else:
        array = zarr.open_group(str(target), mode="r")["vol"]
        vols = array[...]
        assert array.attrs["params"]["porosity"] == 0.35
    assert vols.shape == (2, 24, 24, 24) and vols.dtype == np.uint8
    assert abs(np.mean(vols == 0) - 0.35) < 1e-3
    assert not np.array_equal(vols[0], vols[1])


def _flat(output: str) -> str:
    """CLI output with rich's error box and line wrapping removed."""
    return " ".join(output.replace("│", " ").split())


def test_cli_generate_rejects_bad_params_with_exit_2(tmp_path):
    runner = CliRunner(env={"COLUMNS": "250"})
    bad_name = runner.invoke(app, ["generate", "-p", "am_wt_frac=0.9", "-p", "porosty=0.3",
                                   "--out", str(tmp_path / "x.npy")])
    assert bad_name.exit_code == 2
    assert "porosty" in _flat(bad_name.output)
    assert "porosity in [0.2, 0.55]" in _flat(bad_name.output)
    bad_value = runner.invoke(app, ["generate", "-p", "am_wt_frac=0.9", "-p", "porosity=abc",
                                    "--out", str(tmp_path / "x.npy")])
    assert bad_value.exit_code == 2 and "porosity='abc'" in _flat(bad_value.output)
    out_of_range = runner.invoke(app, ["generate", "-p", "am_wt_frac=1.5", "-p", "porosity=0.3",
                                       "--out", str(tmp_path / "x.npy")])
    assert out_of_range.exit_code == 2 and "[0.8, 0.98]" in _flat(out_of_range.output)


def test_cli_generate_from_the_shipped_model_warns_outside_its_envelope(tmp_path):
    target = tmp_path / "v.npy"
    result = CliRunner().invoke(app, ["generate", "-p", "am_wt_frac=0.97", "-p", "porosity=0.5",
                                      "--size", "16", "--out", str(target), "--model", "default"])
    assert result.exit_code == 0, result.output
    assert "outside the training envelope" in result.output and "am_wt_frac=0.97" in result.output
    vols = np.load(target)
    assert vols.shape == (1, 16, 16, 16) and abs(np.mean(vols == 0) - 0.5) < 1e-3
