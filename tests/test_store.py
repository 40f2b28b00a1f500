"""The zarr campaign store: round trip, lost/damaged chunks detected and regenerated, orphans."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.contract.spec import EvaluationSpec
from jobs.generate import generate_samples, sample_seed
from jobs.store import FILL_VALUE, DesignStore, read_json, write_json_atomic

PARAMS = {"am_wt_frac": 0.9, "porosity": 0.35, "binder_adhesion": 0.5}


def _spec(n_cubes: int = 2, cube_voxels: int = 24) -> EvaluationSpec:
    return EvaluationSpec.from_dict(
        {"fidelity": {"n_cubes": n_cubes, "cube_voxels": cube_voxels, "voxel_um": 0.5}, "seed": 7})


def _labels(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, (size,) * 3, dtype=np.uint8)


def test_round_trip_layout_and_attributes(tmp_path):
    store = DesignStore.create(tmp_path, 4, n_samples=3, size_voxels=16,
                               attributes={"params": PARAMS, "provenance": {"seed": 1}},
                               chunk_voxels=8)
    assert store.vol.fill_value == FILL_VALUE
    assert store.vol.chunks == (1, 8, 8, 8)
    assert store.done_samples() == []
    volumes = [_labels(i) for i in range(3)]
    for i in (2, 0):
        store.write_sample(i, volumes[i])
    reopened = DesignStore.open(tmp_path, 4)
    assert reopened.done_samples() == [0, 2]
    assert [c.status for c in reopened.verify()] == ["ok", "not_done", "ok"]
    np.testing.assert_array_equal(reopened.read_sample(2), volumes[2])
    assert reopened.attributes["params"] == PARAMS
    # an unwritten sample reads as the fill value: never mistaken for data
    assert np.all(np.asarray(reopened.vol[1]) == FILL_VALUE)
    with pytest.raises(ValueError, match="not_done"):
        reopened.read_sample(1)
    # re-creating with the same params opens it; other params or shape are refused by name
    assert DesignStore.create(tmp_path, 4, 3, 16, {"params": PARAMS}, 8).done_samples() == [0, 2]
    with pytest.raises(ValueError, match="already stored with params"):
        DesignStore.create(tmp_path, 4, 3, 16, {"params": {**PARAMS, "porosity": 0.3}}, 8)
    with pytest.raises(ValueError, match="fidelity changed"):
        DesignStore.create(tmp_path, 4, 4, 16, {"params": PARAMS}, 8)
    with pytest.raises(ValueError, match="dtype must be uint8"):
        store.write_sample(1, volumes[1].astype(np.int16))
    with pytest.raises(IndexError):
        store.write_sample(3, volumes[0])
    with pytest.raises(KeyError, match="trial_5"):
        DesignStore.open(tmp_path, 5)


def test_missing_and_corrupted_chunks_are_detected_and_regenerated(tmp_path):
    spec = _spec()
    assert generate_samples(tmp_path, 1, PARAMS, spec) == [0, 1]
    store = DesignStore.open(tmp_path, 1)
    original = [store.read_sample(i) for i in range(2)]
    assert [c.status for c in store.verify()] == ["ok", "ok"]

    # lose sample 0's chunk, overwrite sample 1's with garbage, and leave a killed writer's orphan
    (missing,) = store.chunk_paths(0)
    (damaged,) = store.chunk_paths(1)
    missing.unlink()
    damaged.write_bytes(b"not a zstd frame" * 8)
    orphan = damaged.with_name("0.3f2a.partial")
    orphan.write_bytes(b"half")

    checks = DesignStore.open(tmp_path, 1).verify()
    assert [c.status for c in checks] == ["missing_chunk", "corrupted"]
    assert "fill value" in checks[0].detail
    with pytest.raises(ValueError, match="corrupted"):
        store.read_sample(1)

    # generate finds both, clears their markers, rewrites them from the same seeds
    assert generate_samples(tmp_path, 1, PARAMS, spec) == [0, 1]
    assert not orphan.exists()
    repaired = DesignStore.open(tmp_path, 1)
    assert [c.status for c in repaired.verify()] == ["ok", "ok"]
    for i in range(2):
        np.testing.assert_array_equal(repaired.read_sample(i), original[i])


def test_generate_is_idempotent_and_seeded_per_sample(tmp_path):
    spec = _spec(n_cubes=3)
    assert generate_samples(tmp_path, 2, PARAMS, spec) == [0, 1, 2]
    first = DesignStore.open(tmp_path, 2)
    volumes = [first.read_sample(i) for i in range(3)]
    first.invalidate(1)   # as a run killed while rewriting sample 1 leaves it
    assert generate_samples(tmp_path, 2, PARAMS, spec) == [1]
    assert generate_samples(tmp_path, 2, PARAMS, spec) == []
    np.testing.assert_array_equal(DesignStore.open(tmp_path, 2).read_sample(1), volumes[1])
    # different samples, different seeds, different voxels; exact phase fractions each
    assert not np.array_equal(volumes[0], volumes[1])
    assert len({sample_seed(7, 2, i) for i in range(3)} | {sample_seed(7, 3, 0)}) == 4
    for volume in volumes:
        assert set(np.unique(volume)) <= {0, 1, 2}
        assert abs(np.mean(volume == 0) - PARAMS["porosity"]) < 1e-3


def test_json_files_are_replaced_atomically(tmp_path):
    path = tmp_path / "trials" / "3" / "result.json"
    assert read_json(path) is None
    write_json_atomic(path, {"objective": 1.5})
    write_json_atomic(path, {"objective": 2.5})
    assert read_json(path) == {"objective": 2.5}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
    with pytest.raises(ValueError):
        write_json_atomic(path, {"objective": float("nan")})
    assert read_json(path) == {"objective": 2.5}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_a_trained_generator_file_is_used_and_its_voxel_size_enforced(tmp_path):
    torch = pytest.importorskip("torch")
    generator = pytest.importorskip("kernels.generator.model")
    from kernels.generator.network import ConditionalGenerator, GeneratorConfig

    torch.manual_seed(0)
    model_file = tmp_path / "model.pt"
    net = ConditionalGenerator(GeneratorConfig(widths=(16, 8), voxel_um=0.5))
    torch.save(generator.model_state(net), model_file)
    spec = EvaluationSpec.from_dict({
        "fidelity": {"n_cubes": 2, "cube_voxels": 16, "voxel_um": 0.5},
        "generator": {"kind": str(model_file)}, "seed": 1})
    assert generate_samples(tmp_path, 9, PARAMS, spec, device="cpu") == [0, 1]
    store = DesignStore.open(tmp_path, 9)
    volumes = [store.read_sample(i) for i in range(2)]
    expected = generator.sample(PARAMS, n=1, size=16, seed=sample_seed(1, 9, 1),
                                model=generator.load_state_bytes(model_file.read_bytes()))[0]
    np.testing.assert_array_equal(volumes[1], expected)
    assert abs(np.mean(volumes[0] == 0) - PARAMS["porosity"]) < 1e-2      # exact-fraction decode
    assert store.attributes["provenance"]["generator"] == str(model_file)

    wrong = EvaluationSpec.from_dict({**spec.to_dict(),
                                      "fidelity": {**spec.to_dict()["fidelity"], "voxel_um": 0.4}})
    with pytest.raises(ValueError, match="fidelity.voxel_um must be the generator's voxel size"):
        generate_samples(tmp_path, 10, PARAMS, wrong)
    missing = EvaluationSpec.from_dict({"generator": {"kind": str(tmp_path / "nope.pt")}})
    with pytest.raises(ValueError, match="generator.kind"):
        generate_samples(tmp_path, 11, PARAMS, missing)


def test_campaign_store_opens_in_xarray_with_dimensions_and_micrometres(tmp_path):
    """The design group is readable by xarray (dimension names) and states its voxel size in
    standard places: `voxel_size_um` on `vol` and OME-Zarr 0.5 multiscales on the group."""
    xr = pytest.importorskip("xarray")
    from jobs.generate import open_design_store
    from jobs.volume_io import file_voxel_um

    spec = _spec(n_cubes=2, cube_voxels=16)
    store = open_design_store(tmp_path, 3, PARAMS, spec)
    store.write_sample(0, _labels(0))
    dataset = xr.open_zarr(tmp_path / "voxels.zarr", group="trial_3", consolidated=False,
                           mask_and_scale=False)
    assert dataset["vol"].dims == ("sample", "z", "y", "x")
    assert dataset["done"].dims == ("sample",)
    np.testing.assert_array_equal(dataset["vol"][0].values, _labels(0))
    assert dataset["vol"].attrs["voxel_size_um"] == [0.5, 0.5, 0.5]
    [multiscale] = store.attributes["ome"]["multiscales"]
    assert store.attributes["ome"]["version"] == "0.5"
    assert [a["name"] for a in multiscale["axes"]] == ["sample", "z", "y", "x"]
    assert all(a["unit"] == "micrometer" for a in multiscale["axes"][1:])
    [dataset_meta] = multiscale["datasets"]
    assert dataset_meta["path"] == "vol"
    assert dataset_meta["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 0.5, 0.5, 0.5]}]
    assert file_voxel_um(tmp_path / "voxels.zarr" / "trial_3" / "vol")[0] == 0.5


class _CountingReads:
    """The real zarr array, counting the reads (each one decodes the sample's chunks)."""

    def __init__(self, array):
        self.array, self.reads = array, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.array[key]

    def __getattr__(self, name):
        return getattr(self.array, name)


def test_read_sample_decodes_the_chunks_once_and_still_refuses_damage(tmp_path):
    """Reading a sample for characterisation checks it and returns it from one decode (it was
    decoded twice: once to verify, once to return), and the check still catches a lost chunk
    and a foreign label."""
    store = DesignStore.create(tmp_path, 1, n_samples=3, size_voxels=16, attributes={},
                               chunk_voxels=8)
    volumes = [_labels(i) for i in range(3)]
    for i in range(3):
        store.write_sample(i, volumes[i])
    store.vol[2, :1, :1, :1] = 7
    store.chunk_paths(1)[0].unlink()
    reopened = DesignStore.open(tmp_path, 1)
    counting = _CountingReads(reopened.vol)
    reopened.vol = counting
    np.testing.assert_array_equal(reopened.read_sample(0), volumes[0])
    assert counting.reads == 1
    with pytest.raises(ValueError, match="missing_chunk"):
        reopened.read_sample(1)
    with pytest.raises(ValueError, match="bad_labels"):
        reopened.read_sample(2)
    assert [c.status for c in reopened.verify()] == ["ok", "missing_chunk", "bad_labels"]
