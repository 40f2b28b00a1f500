"""The conditional generator kernel: decoding, sampling, periodicity, weights, envelope, spread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kernels.cell.objective_spread import objective_spread, pooled_noise_var
from kernels.generator import model as gen
from kernels.generator.network import ConditionalGenerator, GeneratorConfig
from kernels.structure.procedural import ManufacturingParams, target_phase_fractions
from kernels.structure.two_point import (
    correlation_length_voxels,
    directional_s2,
    volume_two_point_map,
)

PARAMS = {"am_wt_frac": 0.92, "porosity": 0.35, "binder_adhesion": 0.4}


@pytest.fixture(scope="module")
def small_model() -> ConditionalGenerator:
    torch.manual_seed(3)
    model = ConditionalGenerator(GeneratorConfig(widths=(16, 12, 8, 8), latent_channels=4))
    model.training_info = {"training_points": [[0.85, 0.25, 0.0], [0.95, 0.45, 1.0],
                                               [0.85, 0.45, 0.5], [0.95, 0.25, 0.5]],
                           "fixed_params": {"mean_diameter_um": 8.0}}
    return model.eval()


def _brute_s2(vol: np.ndarray, i: int, j: int, d: tuple[int, int, int]) -> float:
    a, b = (vol == i).astype(float), (vol == j).astype(float)
    sl = []
    for n, s in zip(vol.shape, d, strict=True):
        sl.append((slice(max(0, -s), n - max(0, s)), slice(max(0, s), n - max(0, -s))))
    return float((a[sl[0][0], sl[1][0], sl[2][0]] * b[sl[0][1], sl[1][1], sl[2][1]]).mean())


def test_two_point_map_equals_brute_force_pair_counting():
    vol = np.random.default_rng(0).integers(0, 3, (14, 15, 16)).astype(np.uint8)
    r = 4
    maps = volume_two_point_map(vol, r)
    for k, (i, j) in enumerate(((0, 0), (1, 1), (2, 2), (1, 2))):
        for d in [(0, 0, 0), (1, -2, 3), (-4, 4, 0), (2, 0, -3)]:
            got = maps[k, r + d[0], r + d[1], r + d[2]]
            assert got == pytest.approx(_brute_s2(vol, i, j, d), abs=1e-12)
    curves = directional_s2(vol, 1, 3)
    assert curves.shape == (3, 4) and np.allclose(curves[:, 0], np.mean(vol == 1))
    # Random labels decorrelate in one voxel.
    assert correlation_length_voxels(curves[0]) < 1.0


def test_decode_exact_hits_target_counts_and_follows_scores():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 10, 11, 12)).astype(np.float32)
    fractions = np.array([0.3, 0.55, 0.15])
    labels = gen.decode_exact(logits, fractions)
    assert labels.dtype == np.uint8 and labels.shape == (10, 11, 12)
    counts = np.bincount(labels.ravel(), minlength=3)
    assert counts.sum() == labels.size
    assert np.all(np.abs(counts - fractions * labels.size) <= 1)
    # The rarest phase takes the voxels where it leads the other logits most.
    score = logits[2] - np.maximum(logits[0], logits[1])
    assert score[labels == 2].min() >= score[labels != 2].max()
    with pytest.raises(ValueError, match="summing to 1"):
        gen.decode_exact(logits, np.array([0.5, 0.5, 0.5]))


def test_sample_shape_dtype_labels_exact_fractions_and_seeds(small_model):
    vols = gen.sample(PARAMS, n=2, size=20, seed=7, model=small_model)   # 20: cropped from 24
    assert vols.shape == (2, 20, 20, 20) and vols.dtype == np.uint8
    assert set(np.unique(vols)) <= {0, 1, 2}
    want = target_phase_fractions(PARAMS["am_wt_frac"], PARAMS["porosity"])
    for vol in vols:
        counts = np.bincount(vol.ravel(), minlength=3)
        for k, name in enumerate(("pore", "am", "cbd")):
            assert abs(counts[k] - want[name] * vol.size) <= 1
    again = gen.sample(PARAMS, n=2, size=20, seed=7, model=small_model)
    assert np.array_equal(vols, again)
    assert not np.array_equal(vols[0], vols[1])
    # Sample i depends on (seed, i) only, not on how many are drawn.
    one = gen.sample(ManufacturingParams(**PARAMS), n=1, size=20, seed=7, model=small_model)
    assert np.array_equal(one[0], vols[0])
    other = gen.sample(PARAMS, n=1, size=20, seed=8, model=small_model)
    assert not np.array_equal(other[0], vols[0])


def test_periodic_latent_tiles_to_a_seamless_periodic_volume(small_model):
    """A latent tiled 2x per axis gives logits tiled 2x: the volume at 2L is the L volume
    repeated, so there are no seams at the period boundaries and any size comes from one net."""
    params = gen.params_to_dict(PARAMS)
    z = gen._latent(small_model.config, 3, seed=0, index=0)
    small = gen.generate_logits(small_model, params, z)
    big = gen.generate_logits(small_model, params, z.repeat(1, 1, 2, 2, 2))
    assert big.shape[1:] == (48, 48, 48)
    assert torch.allclose(big, small.repeat(1, 2, 2, 2), atol=1e-5)
    vol = gen.decode_exact(big, gen.target_fractions(params))
    # Periodic: the faces on opposite sides match as well as neighbouring interior slices do.
    seam = np.mean(vol[0] != vol[-1])
    interior = np.mean(vol[23] != vol[24])
    assert seam <= interior + 0.02


def test_bad_params_name_the_field_and_ranges(small_model):
    with pytest.raises(ValueError, match="unknown parameter 'porosty'.*porosity in \\[0.2, 0.55\\]"):
        gen.sample({"am_wt_frac": 0.9, "porosty": 0.3}, n=1, size=16, seed=0, model=small_model)
    with pytest.raises(ValueError, match="am_wt_frac"):
        gen.sample({"am_wt_frac": 0.99, "porosity": 0.3}, n=1, size=16, seed=0, model=small_model)
    with pytest.raises(ValueError, match="mass_loading_mg_cm2"):
        gen.params_to_dict({**PARAMS, "mass_loading_mg_cm2": -3})
    with pytest.raises(ValueError, match="missing parameter 'porosity'"):
        gen.params_to_dict({"am_wt_frac": 0.9})
    with pytest.raises(ValueError, match="size"):
        gen.sample(PARAMS, n=1, size=4, seed=0, model=small_model)
    # Mass loading is accepted (it sets thickness, not the microstructure) and filled defaults too.
    values = gen.params_to_dict({**PARAMS, "mass_loading_mg_cm2": 20})
    assert values["mass_loading_mg_cm2"] == 20 and values["mean_diameter_um"] == 8.0


def test_state_round_trip_gives_identical_samples(small_model):
    state = gen.model_state(small_model, {"steps": 3, "training_points": [[0.9, 0.3, 0.5]]})
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    loaded = gen.load_state_bytes(buffer.getvalue())
    assert loaded.config == small_model.config
    assert loaded.training_info["steps"] == 3
    a = gen.sample(PARAMS, n=1, size=16, seed=2, model=small_model)
    b = gen.sample(PARAMS, n=1, size=16, seed=2, model=loaded)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="not a microloop generator"):
        gen.model_from_state({"kind": "something else"})


def test_training_envelope_flags_points_outside(small_model):
    inside, reason = gen.in_training_envelope({"am_wt_frac": 0.9, "porosity": 0.35,
                                               "binder_adhesion": 0.5}, small_model)
    assert inside, reason
    inside, reason = gen.in_training_envelope({"am_wt_frac": 0.97, "porosity": 0.35}, small_model)
    assert not inside and "am_wt_frac=0.97 outside the training range [0.85, 0.95]" in reason
    inside, reason = gen.in_training_envelope({**PARAMS, "mean_diameter_um": 12.0}, small_model)
    assert not inside and "mean_diameter_um" in reason


def test_shipped_model_makes_128_cubed_with_exact_fractions_on_cpu():
    model = gen.load_default_model()
    assert model.training_info["steps"] > 0 and model.training_info["training_points"]
    vol = gen.sample({"am_wt_frac": 0.94, "porosity": 0.35, "binder_adhesion": 0.5}, n=1, size=128,
                     seed=0, model=model)[0]
    want = target_phase_fractions(0.94, 0.35)
    counts = np.bincount(vol.ravel(), minlength=3) / vol.size
    assert counts == pytest.approx([want["pore"], want["am"], want["cbd"]], abs=1e-6)
    assert gen.in_training_envelope({"am_wt_frac": 0.94, "porosity": 0.35}, model)[0]


def test_objective_spread_gives_noise_of_the_mean():
    spread = objective_spread([10.0, 12.0, 11.0, 13.0])
    assert spread.mean == pytest.approx(11.5)
    assert spread.std == pytest.approx(np.std([10, 12, 11, 13], ddof=1))
    assert spread.noise_var == pytest.approx(spread.std ** 2 / 4)
    single = objective_spread([5.0], min_noise_var=0.25)
    assert single.std == 0 and single.noise_var == 0.25
    assert objective_spread([-1.0, 1.0]).to_dict()["rel_std"] is None
    with pytest.raises(ValueError, match="finite"):
        objective_spread([1.0, math.nan])
    assert pooled_noise_var([spread, objective_spread([1.0, 3.0])]) > 0


def _film_model(upsample: int = 1) -> ConditionalGenerator:
    """A small net whose FiLM layers are not zero (they start at zero), so conditioning counts."""
    torch.manual_seed(11)
    model = ConditionalGenerator(GeneratorConfig(widths=(12, 10, 8, 6), latent_channels=4,
                                                 output_upsample=upsample))
    with torch.no_grad():
        for block in model.blocks:
            block.film.weight.normal_(0.0, 0.3)
            block.film.bias.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("batch", [1, 2])
def test_fast_inference_equals_resize_then_convolve(batch):
    """The coarse-grid form (2x2x2 kernels per output parity, FiLM folded into the kernels,
    channels-last) is the same function as nearest x2 resize + 3x3x3 convolution + FiLM."""
    model = _film_model()
    z = torch.randn(batch, 4, 7, 7, 7, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(batch, model.config.n_condition_inputs,
                       generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(z, cond)
        fast = model.forward_fast(z, cond)
    assert fast.shape == ref.shape == (batch, 3, 24, 24, 24)
    assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_decode_places_the_second_phase_by_rank_among_free_voxels():
    """After the rarest phase, the middle phase takes the free voxels where it most exceeds the
    last phase; the last phase takes what is left (the ranking rule, for all three phases)."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 9, 10, 11)).astype(np.float32)
    fractions = np.array([0.25, 0.6, 0.15])                 # order: cbd, pore, am
    labels = gen.decode_exact(logits, fractions)
    free = labels != 2
    score = logits[0] - logits[1]
    assert score[free & (labels == 0)].min() >= score[free & (labels == 1)].max()
    assert abs(int((labels == 0).sum()) - 0.25 * labels.size) <= 1


def test_output_upsample_interpolates_logits_periodically():
    """A net making logits at 2x the voxel size: the latent is half as large per output voxel,
    the interpolated volume keeps the net's period (tiled latent -> tiled logits), and the
    fractions stay exact."""
    model = _film_model(upsample=2)
    assert model.config.upsample_factor == 16 and model.config.net_upsample_factor == 8
    params = gen.params_to_dict(PARAMS)
    z = gen._latent(model.config, 2, seed=0, index=0)
    small = gen.generate_logits(model, params, z)
    big = gen.generate_logits(model, params, z.repeat(1, 1, 2, 2, 2))
    assert small.shape[1:] == (32, 32, 32) and big.shape[1:] == (64, 64, 64)
    assert torch.allclose(big, small.repeat(1, 2, 2, 2), rtol=1e-5,
                          atol=1e-5 * small.abs().max().item())
    # Trilinear: each output voxel lies between the net's values around it (no overshoot).
    with torch.inference_mode():
        from kernels.generator.network import wrap_latent
        cond = torch.from_numpy(gen.condition_vector(params, model.config))[None]
        coarse = model(wrap_latent(z), cond)[0]
    assert small.max() <= coarse.max() + 1e-4 and small.min() >= coarse.min() - 1e-4
    vol = gen.sample(PARAMS, n=1, size=40, seed=1, model=model)[0]
    want = target_phase_fractions(PARAMS["am_wt_frac"], PARAMS["porosity"])
    assert abs(int((vol == 2).sum()) - want["cbd"] * vol.size) <= 1


def _relative_spreads(vols: np.ndarray) -> float:
    """Median over AM-pore area, AM-CBD area and CBD coverage of the cubes' std / mean."""
    from kernels.metrics.volume import specific_surface_areas

    rows = []
    for v in vols:
        areas, coverage = specific_surface_areas(v, 0.4)
        rows.append([areas["am_pore"], areas["am_cbd"], coverage])
    a = np.array(rows)
    return float(np.median(a.std(axis=0, ddof=1) / np.abs(a.mean(axis=0))))


def test_shipped_model_spread_grows_outside_its_training_box():
    """On the quality benchmark's held-out points (two on the grid, two between grid points,
    two outside the box), cubes drawn with `extrapolation_jitter` spread more outside than
    anywhere inside; the seed-to-seed spread alone does not grow there (the control), and
    inside the box the jitter changes nothing."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
    from bench_generator_quality import POINTS

    model = gen.load_default_model()
    inside, outside, plain_outside = [], [], []
    for _, kind, params in POINTS:
        vols = np.stack([gen.sample(params, n=1, size=48, seed=1000 + i, model=model,
                                    extrapolation_jitter=True)[0] for i in range(6)])
        if kind == "outside":
            assert gen.extrapolation_excess(params, model.config).max() > 0
            outside.append(_relative_spreads(vols))
            plain = np.stack([gen.sample(params, n=1, size=48, seed=1000 + i, model=model)[0]
                              for i in range(6)])
            plain_outside.append(_relative_spreads(plain))
        else:
            plain = gen.sample(params, n=1, size=48, seed=1000, model=model)[0]
            assert np.array_equal(plain, vols[0])
            inside.append(_relative_spreads(vols))
    assert min(outside) > max(inside), (inside, outside)
    assert all(j > p for j, p in zip(outside, plain_outside, strict=True)), (outside, plain_outside)


def test_jittered_conditions_centre_on_the_design_with_its_excess_as_spread():
    model = gen.load_default_model()
    cfg = model.config
    design = gen.params_to_dict({"am_wt_frac": 0.90, "porosity": 0.46, "binder_adhesion": 0.5})
    excess = gen.extrapolation_excess(design, cfg)
    span = cfg.condition_high[1] - cfg.condition_low[1]
    assert excess == pytest.approx([0.0, (0.46 - cfg.condition_high[1]) / span, 0.0])
    drawn = np.array([gen.jittered_params(design, cfg, seed=s, index=0)["porosity"]
                      for s in range(400)])
    assert abs(drawn.mean() - 0.46) < 4 * 0.01 / math.sqrt(400)
    assert drawn.std() == pytest.approx(0.01, rel=0.15)
    others = {gen.jittered_params(design, cfg, seed=s, index=0)["am_wt_frac"] for s in range(5)}
    assert others == {0.90}             # inside the box along am_wt_frac: not jittered
    near_edge = gen.params_to_dict({"am_wt_frac": 0.975, "porosity": 0.35})
    top = max(gen.jittered_params(near_edge, cfg, seed=s, index=0)["am_wt_frac"]
              for s in range(50))
    assert top == gen.accepted_param_ranges()["am_wt_frac"][1]   # kept in the accepted range


def test_campaign_cubes_outside_the_box_are_jittered_only_with_noise_from_samples():
    from jobs.contract.spec import EvaluationSpec
    from jobs.generate import make_volume

    model = gen.load_default_model()
    outside = {"am_wt_frac": 0.97, "porosity": 0.5, "binder_adhesion": 0.5}
    cubes = {}
    for noise in (True, False):
        spec = EvaluationSpec.from_dict({"generator": {"kind": "default"},
                                         "fidelity": {"cube_voxels": 16, "voxel_um": 0.4},
                                         "objective": {"noise_from_samples": noise}})
        cubes[noise] = make_volume(outside, spec, seed=5, model=model, index=0)
    assert np.array_equal(cubes[True], gen.sample(outside, n=1, size=16, seed=5, model=model,
                                                  extrapolation_jitter=True)[0])
    assert np.array_equal(cubes[False], gen.sample(outside, n=1, size=16, seed=5, model=model)[0])
    assert not np.array_equal(cubes[True], cubes[False])
