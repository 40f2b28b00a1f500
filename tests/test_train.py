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


# ---------------------------------------------------------------- what the project itself writes
def _generate(runner: CliRunner, out, porosity: float, voxel_um: float = 0.8, n: int = 2,
              model: str = "procedural") -> None:
    result = runner.invoke(app, ["generate", "-p", "am_wt_frac=0.92", "-p", f"porosity={porosity}",
                                 "-p", "binder_adhesion=0.5", "--size", "24", "--n", str(n),
                                 "--voxel-um", str(voxel_um), "--out", str(out), "--model", model])
    assert result.exit_code == 0, result.output


def test_training_takes_generate_npy_stacks_with_a_params_csv(tmp_path):
    """`generate --out x.npy` writes (n, L, L, L): every sample is a training volume."""
    runner = CliRunner()
    for k, porosity in enumerate((0.3, 0.4)):
        _generate(runner, tmp_path / f"d{k}.npy", porosity)
    (tmp_path / "params.csv").write_text("file,am_wt_frac,porosity,binder_adhesion\n"
                                         "d0.npy,0.92,0.3,0.5\nd1.npy,0.92,0.4,0.5\n")
    data = load_training_set(str(tmp_path), voxel_um=0.8)
    assert len(data.volumes) == 4 and all(v.shape == (24, 24, 24) for v in data.volumes)
    assert [p["porosity"] for p in data.params] == [0.3, 0.3, 0.4, 0.4]
    assert np.array_equal(data.volumes[3], np.load(tmp_path / "d1.npy")[1])
    # the CSV itself works as DATA too; .npy states no voxel size, so one must be given
    assert len(load_training_set(str(tmp_path / "params.csv"), voxel_um=0.8).volumes) == 4
    with pytest.raises(ValueError, match="does not state its voxel size.*--voxel-um"):
        load_training_set(str(tmp_path))


def test_training_takes_generate_zarr_and_tif_with_their_voxel_size(tmp_path):
    runner = CliRunner()
    _generate(runner, tmp_path / "x.zarr", 0.35, voxel_um=0.8)
    data = load_training_set(str(tmp_path / "x.zarr"))        # voxel size from the file
    assert data.voxel_um == 0.8 and len(data.volumes) == 2
    assert data.params[0]["porosity"] == 0.35 and data.params[0]["am_wt_frac"] == 0.92
    with pytest.raises(ValueError, match="disagrees with the 0.8 um"):
        load_training_set(str(tmp_path / "x.zarr"), voxel_um=0.4)
    tif = tmp_path / "tifs"
    tif.mkdir()
    _generate(runner, tif / "a.tif", 0.35, voxel_um=0.5)
    _generate(runner, tif / "b.tif", 0.45, voxel_um=0.5)
    (tif / "p.csv").write_text("file,am_wt_frac,porosity\na.tif,0.92,0.35\nb.tif,0.92,0.45\n")
    data = load_training_set(str(tif))
    assert data.voxel_um == 0.5 and len(data.volumes) == 4
    _generate(runner, tif / "b.tif", 0.45, voxel_um=0.4)     # now the files disagree
    with pytest.raises(ValueError, match="share one voxel size"):
        load_training_set(str(tif))


def test_training_takes_a_campaign_store_finished_samples_only(tmp_path):
    """A campaign's voxels.zarr as jobs.generate writes it: one group per trial holding `vol`
    and `done`, params and spec in the group's attributes."""
    from jobs.contract.spec import EvaluationSpec
    from jobs.generate import generate_samples
    from jobs.store import DesignStore

    spec = EvaluationSpec.from_dict({"fidelity": {"n_cubes": 2, "cube_voxels": 24,
                                                  "voxel_um": 0.8}})
    designs = [{"am_wt_frac": 0.9, "porosity": 0.3, "binder_adhesion": 0.5},
               {"am_wt_frac": 0.95, "porosity": 0.4, "binder_adhesion": 0.5}]
    for trial, params in enumerate(designs):
        generate_samples(tmp_path, trial, params, spec)
    DesignStore.open(tmp_path, 1).invalidate(0)   # an unfinished sample is not training data
    for source in (tmp_path, tmp_path / "voxels.zarr"):
        data = load_training_set(str(source))
        assert data.voxel_um == 0.8 and len(data.volumes) == 3
        assert [p["porosity"] for p in data.params] == [0.3, 0.3, 0.4]
        assert data.fixed_params == {"mean_diameter_um": spec.generator.mean_diameter_um,
                                     "diameter_spread": spec.generator.diameter_spread}
        assert data.condition_names() == ("am_wt_frac", "porosity")
    assert np.array_equal(data.volumes[2], DesignStore.open(tmp_path, 1).read_sample(1))


def test_voxel_size_goes_from_data_into_the_model_and_on_to_characterise(tmp_path):
    runner = CliRunner()
    for porosity in (0.3, 0.4):
        _generate(runner, tmp_path / f"p{porosity}.zarr", porosity, voxel_um=0.8, n=1)
    store = tmp_path / "all.zarr"
    import zarr

    group = zarr.open_group(str(store), mode="w")
    for porosity in (0.3, 0.4):     # one store holding both generate outputs as subgroups
        src = zarr.open_group(str(tmp_path / f"p{porosity}.zarr"), mode="r")
        sub = group.create_group(f"p{porosity}", attributes=src.attrs.asdict())
        arr = sub.create_array("vol", shape=src["vol"].shape, dtype="uint8",
                               attributes=src["vol"].attrs.asdict())
        arr[...] = src["vol"][...]
    out = tmp_path / "m.pt"
    result = runner.invoke(app, ["train-generator", str(store), "--out", str(out), "--steps", "1",
                                 "--crop", "16", "--batch", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert load_model(out).config.voxel_um == 0.8
    made = tmp_path / "made.zarr"
    result = runner.invoke(app, ["generate", "-p", "am_wt_frac=0.92", "-p", "porosity=0.35",
                                 "--size", "16", "--out", str(made), "--model", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["characterise", str(made), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert record["voxel_um"] == 0.8


def test_zarr_training_set_names_why_a_store_does_not_open(tmp_path, monkeypatch):
    """A missing store, a folder that is no zarr and broken metadata are clear errors with the
    reason; anything else zarr raises (a bug, not bad input) is not dressed up as bad input."""
    import zarr

    from jobs.training_data import zarr_training_set

    with pytest.raises(ValueError, match="no such file or folder"):
        zarr_training_set(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a zarr store")
    with pytest.raises(ValueError, match="holds no zarr group or array.*NotFoundError"):
        zarr_training_set(tmp_path / "plain")
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(ValueError, match="metadata is unreadable.*JSONDecodeError"):
        zarr_training_set(tmp_path / "bad.zarr")

    def broken(*args, **kwargs):
        raise TypeError("an internal zarr error")

    monkeypatch.setattr(zarr, "open", broken)
    with pytest.raises(TypeError, match="internal zarr error"):
        zarr_training_set(tmp_path / "plain")


def test_a_trained_model_records_the_calendering_it_learnt_and_campaigns_keep_to_it(tiny_set,
                                                                                    tmp_path):
    # procedural training volumes carry their calendering model into the model file; a campaign
    # with that model samples those structures and refuses to be told otherwise
    from hpc.campaign.config import ConfigError, parse_campaign
    from kernels.generator.model import trained_calendering

    assert tiny_set.describe()["calendering"] == "rearrange"   # the simulator's default
    out = tmp_path / "flat.pt"
    runner = CliRunner()
    result = runner.invoke(app, ["train-generator", "procedural", "--out", str(out), "--steps", "1",
                                 "--crop", "16", "--batch", "1", "--volume-voxels", "24",
                                 "--voxel-um", "0.8", "--threads", "1", "--widths", "16", "--widths", "12",
                                 "--widths", "8", "--widths", "8",
                                 "--max-lag", "6", "--calendering", "flatten",
                                 "--grid", "am_wt_frac=0.85,0.95", "--grid", "porosity=0.3,0.4"])
    assert result.exit_code == 0, result.output
    model = load_model(out)
    assert trained_calendering(model) == "flatten"
    assert tuple(model.config.widths) == (16, 12, 8, 8) and model.config.max_lag_voxels == 6
    base = {"name": "own", "space": {"am_wt_frac": [0.86, 0.94], "porosity": [0.32, 0.38],
                                     "mass_loading_mg_cm2": 15.0},
            "objective": {"kind": "energy_density_Wh_L", "power_W": 10.0},
            "generator": {"kind": "model", "model_path": str(out)}}
    assert parse_campaign(base).generator.calendering == "flatten"
    with pytest.raises(ConfigError, match="generator.calendering"):
        parse_campaign({**base, "generator": {**base["generator"], "calendering": "rearrange"}})
    for bad, hint in ((["--widths", "16", "--widths", "0"], "--widths"),
                      (["--calendering", "squash"], "--calendering")):
        refused = runner.invoke(app, ["train-generator", "procedural", "--out",
                                      str(tmp_path / "no.pt"), "--steps", "1", *bad])
        assert refused.exit_code == 2 and hint in refused.output
