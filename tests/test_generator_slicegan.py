"""Adversarial slice training (kernels.generator.slicegan) and bootstrap ensembles: closed forms of
the gradient penalty and the slicing, a real short run whose critic learns to tell real from
generated slices, bit-for-bit resume, and ensembles that load safely and sample member by member."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jobs.train import (
    TrainOptions,
    bootstrap_members,
    load_model,
    member_path,
    train_ensemble,
    train_generator,
)
from jobs.training_data import procedural_training_set
from kernels.generator.model import GeneratorEnsemble, sample
from kernels.generator.slicegan import gradient_penalty, random_crops, take_slices

GRID = {"am_wt_frac": [0.85, 0.95], "porosity": [0.3, 0.45]}
TINY = dict(batch=2, crop_voxels=16, widths=(16, 12, 8, 8), latent_channels=4, threads=1,
            critic_widths=(8, 16), slices_per_axis=4)


@pytest.fixture(scope="module")
def tiny_set():
    return procedural_training_set(GRID, size_voxels=24, voxel_um=0.8)


class _Linear(torch.nn.Module):
    """critic(x) = <w, x>: its gradient is w everywhere, so the penalty is (|w| - 1)^2."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(dim=1)


@pytest.mark.parametrize("norm", [1.0, 2.5, 0.2])
def test_gradient_penalty_of_a_linear_critic_is_its_norm_error_squared(norm):
    g = torch.Generator().manual_seed(0)
    w = torch.randn((3, 8, 8), generator=g)
    w = w / w.norm() * norm
    real, fake = torch.rand((5, 3, 8, 8), generator=g), torch.rand((5, 3, 8, 8), generator=g)
    gp = gradient_penalty(_Linear(w), real, fake, torch.zeros((5, 2)), g)
    assert gp.item() == pytest.approx((norm - 1.0) ** 2, rel=1e-5, abs=1e-7)


def test_slices_are_planes_normal_to_axis_0_and_to_axis_2():
    d = torch.arange(4.0)
    vol = (100 * d[:, None, None] + 10 * d[None, :, None] + d[None, None, :])  # value = 100z+10y+x
    batch = torch.stack([vol, vol + 1000])[:, None].expand(2, 3, 4, 4, 4)
    cond = torch.tensor([[0.0], [1.0]])
    inplane, c = take_slices(batch, cond, "inplane", torch.tensor([1, 3]))
    assert inplane.shape == (4, 3, 4, 4) and c[:, 0].tolist() == [0, 0, 1, 1]
    assert torch.equal(inplane[1, 0], vol[3]) and torch.equal(inplane[2, 0], vol[1] + 1000)
    cross, _ = take_slices(batch, cond, "cross", torch.tensor([2]))
    assert torch.equal(cross[0, 0], vol[:, :, 2])   # contains the through-thickness axis 0


def test_random_crops_are_one_hot_pieces_of_the_volumes():
    vols = [np.random.default_rng(0).integers(0, 3, (10, 12, 14)).astype(np.uint8)]
    crops = random_crops(vols, np.array([0, 0]), 6, np.random.default_rng(1), flips=False)
    assert crops.shape == (2, 3, 6, 6, 6) and torch.all(crops.sum(dim=1) == 1)
    labels = crops[0].argmax(dim=0).numpy()
    found = any(np.array_equal(vols[0][a:a + 6, b:b + 6, c:c + 6], labels)
                for a in range(5) for b in range(7) for c in range(9))
    assert found


def test_critics_learn_to_score_real_slices_above_an_untrained_generator_s(tiny_set, tmp_path):
    """With the generator held (learning rate ~0), the Wasserstein estimate real - fake must
    grow from ~0: real slices are one-hot pieces of electrodes, an untrained net's are noise."""
    # 10 steps: on the default round particles the estimate is 0.24 after 6 and 1.1 after 10
    # (flattened ones: 0.32 and 1.6), so 6 sat on the threshold
    opts = TrainOptions(method="slicegan", steps=10, checkpoint_every=10, n_critic=3,
                        learning_rate=1e-12, critic_learning_rate=1e-3, **TINY)
    train_generator(tiny_set, tmp_path / "c.pt", opts)
    w = [h["wasserstein"] for h in torch.load(str(tmp_path / "c.pt") + ".ckpt",
                                              weights_only=True)["history"]]
    assert abs(w[0]) < 0.1 and w[-1] > 0.25 and w[-1] > w[0] + 0.2


def test_slicegan_resume_is_bit_for_bit(tiny_set, tmp_path):
    opts = TrainOptions(method="slicegan", steps=4, checkpoint_every=2, n_critic=2,
                        learning_rate=1e-3, critic_learning_rate=1e-3, **TINY)
    straight = tmp_path / "a.pt"
    train_generator(tiny_set, straight, opts)
    split = tmp_path / "b.pt"
    train_generator(tiny_set, split, TrainOptions(**{**opts.__dict__, "steps": 2}))
    train_generator(tiny_set, split, opts, resume=True)
    a, b = load_model(straight).state_dict(), load_model(split).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(str(straight) + ".ckpt", weights_only=True)
    cb = torch.load(str(split) + ".ckpt", weights_only=True)
    assert ca["history"] == cb["history"]
    for name in ca["critics"]:
        assert all(torch.equal(ca["critics"][name][k], cb["critics"][name][k])
                   for k in ca["critics"][name])
    with pytest.raises(ValueError, match="training method"):
        train_generator(tiny_set, split, TrainOptions(**{**opts.__dict__, "method": "statistics",
                                                          "steps": 5}), resume=True)
    assert load_model(split).training_info["method"] == "slicegan"


def test_slicegan_warm_starts_from_a_model_of_the_same_architecture(tiny_set, tmp_path):
    base = tmp_path / "base.pt"
    train_generator(tiny_set, base, TrainOptions(steps=1, max_lag_voxels=6, **TINY))
    out = tmp_path / "tuned.pt"
    opts = TrainOptions(method="slicegan", steps=1, init_from=str(base), n_critic=1, **TINY)
    train_generator(tiny_set, out, opts)
    assert load_model(out).config.widths == load_model(base).config.widths
    with pytest.raises(ValueError, match="init_from"):
        train_generator(tiny_set, tmp_path / "x.pt", TrainOptions(
            **{**opts.__dict__, "init_from": "default"}))   # shipped: 3 conditions, not 2


def test_ensemble_members_see_bootstrap_resamples_and_sample_member_by_member(tiny_set, tmp_path):
    sets = bootstrap_members(tiny_set, 3, seed=0)
    point_sets = [sorted({tuple(sorted(p.items())) for p in s.params}) for s in sets]
    assert len({tuple(p) for p in point_sets}) > 1          # members see different points
    out = tmp_path / "ens.pt"
    summary = train_ensemble(tiny_set, out, 2, TrainOptions(steps=2, max_lag_voxels=6, **TINY))
    assert summary["steps"] == 4
    ens = load_model(out)                                     # weights_only inside
    assert isinstance(ens, GeneratorEnsemble) and len(ens.members) == 2
    assert ens.config.condition_low == (0.85, 0.3)          # the whole set's envelope
    assert len(ens.training_info["training_points"]) == 4
    m1 = load_model(member_path(out, 1))
    params = {"am_wt_frac": 0.9, "porosity": 0.4}
    both = sample(params, n=2, size=16, seed=3, model=ens)
    assert np.array_equal(both[1], sample(params, n=2, size=16, seed=3, model=m1)[1])
    assert np.array_equal(sample(params, n=1, size=16, seed=3, model=ens, member=1)[0],
                          sample(params, n=1, size=16, seed=3, model=m1)[0])
    with pytest.raises(ValueError, match="member must be in"):
        sample(params, n=1, size=16, seed=3, model=ens, member=2)


def test_a_design_s_cubes_come_from_successive_ensemble_members(tiny_set, tmp_path):
    from jobs.contract.spec import EvaluationSpec
    from jobs.generate import make_volume

    out = tmp_path / "ens.pt"
    train_ensemble(tiny_set, out, 2, TrainOptions(steps=1, max_lag_voxels=6, **TINY))
    ens = load_model(out)
    spec = EvaluationSpec.from_dict({"generator": {"kind": str(out)},
                                     "fidelity": {"cube_voxels": 16, "voxel_um": 0.8}})
    params = {"am_wt_frac": 0.9, "porosity": 0.4, "binder_adhesion": 0.5}
    cube1 = make_volume(params, spec, seed=7, model=ens, index=1)
    member1 = sample(params, n=1, size=16, seed=7, model=ens.members[1])[0]
    member0 = sample(params, n=1, size=16, seed=7, model=ens.members[0])[0]
    assert np.array_equal(cube1, member1) and not np.array_equal(cube1, member0)


@pytest.mark.slow
def test_gpu_session_script_runs_end_to_end_in_cpu_dry_mode_and_resumes(tmp_path):
    """The prepared GPU script (tests/benchmarks/gpu_train_generator.py) at toy sizes: it
    trains from the shipped weights, checkpoints, evaluates at the six held-out points and
    writes everything back; a second session continues the first's checkpoint."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parent / "benchmarks" / "gpu_train_generator.py"
    spec = importlib.util.spec_from_file_location("gpu_train_generator", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    first = script.main(["--out-dir", str(tmp_path / "s1"), "--dry-run"])
    assert first["steps_before"] == 0 and first["steps_total"] == 2 and first["dry_run"]
    for name in ("model.pt", "model.pt.ckpt", "quality.md", "quality.json", "session.json"):
        assert (tmp_path / "s1" / name).is_file(), name
    report = json.loads((tmp_path / "s1" / "quality.json").read_text())
    assert [p["label"] for p in report["points"]] == ["A", "B", "C", "D", "E", "F"]
    assert report["training_steps"] == 2
    second = script.main(["--out-dir", str(tmp_path / "s2"), "--dry-run",
                          "--resume-dir", str(tmp_path / "s1")])
    assert second["steps_before"] == 2 and second["steps_total"] == 4
    assert load_model(tmp_path / "s2" / "model.pt").config == load_model(
        tmp_path / "s1" / "model.pt").config
