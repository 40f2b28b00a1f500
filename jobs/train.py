"""Train the conditional generator on a training set, with checkpoints, resume and a loss plot.

Files written next to `out` (say `model.pt`): the model itself (usable at every checkpoint, so
a killed job still leaves a model), `model.pt.ckpt` (optimiser and random states: `resume`
continues bit-for-bit where the last checkpoint left off) and `model.loss.png`.

Run as a program for SLURM: `python -m jobs.train procedural --out model.pt --device cuda`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from jobs.training_data import TrainingSet, load_training_set
from kernels.generator.model import (
    ConditionalGenerator,
    GeneratorEnsemble,
    TrainingTargets,
    condition_vector,
    ensemble_state,
    load_default_model,
    load_state_bytes,
    make_targets,
    model_from_state,
    model_state,
    train_step,
)
from kernels.generator.network import GeneratorConfig
from kernels.generator.slicegan import (
    ORIENTATIONS,
    AdversarialOptions,
    CriticConfig,
    SliceCritic,
    adversarial_step,
)

ProgressFn = Callable[[int, int, dict[str, float]], None]
TRAINING_METHODS = ("statistics", "slicegan")


@dataclass
class TrainOptions:
    steps: int = 2000
    batch: int = 4
    crop_voxels: int = 32
    learning_rate: float = 1e-3
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    time_limit_s: float | None = None   # stop (after a checkpoint) before a job's wall limit
    widths: tuple[int, ...] = (48, 32, 16, 8)
    latent_channels: int = 8
    max_lag_voxels: int = 12
    crisp_weight: float = 0.3           # weight of the one-hot (Gini) term of the loss
    #: "statistics" (fractions + two-point maps) or "slicegan" (2D critics on orthogonal slices,
    #: WGAN-GP; kernels.generator.slicegan)
    method: str = "statistics"
    init_from: str | None = None        # start the generator from a model file or "default"
    n_critic: int = 5                   # slicegan: critic updates per generator update
    gp_weight: float = 10.0             # slicegan: gradient-penalty weight
    slices_per_axis: int = 8            # slicegan: slices per crop and orientation for the critics
    critic_learning_rate: float = 1e-4  # slicegan: Adam(0.5, 0.9) for critics and generator
    critic_widths: tuple[int, ...] = (32, 64, 128)

    def validate(self) -> None:
        for name in ("steps", "batch", "checkpoint_every", "crop_voxels", "latent_channels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        f = 2 ** (len(self.widths) - 1)
        if self.crop_voxels % f:
            raise ValueError(f"crop_voxels must be a multiple of {f}, got {self.crop_voxels}")
        if self.crop_voxels <= self.max_lag_voxels:
            raise ValueError(f"crop_voxels ({self.crop_voxels}) must exceed max_lag_voxels "
                             f"({self.max_lag_voxels})")
        if self.method not in TRAINING_METHODS:
            raise ValueError(f"method must be one of {TRAINING_METHODS}, got {self.method!r}")
        if self.method == "slicegan" and (not isinstance(self.n_critic, int) or self.n_critic < 1):
            raise ValueError(f"n_critic must be an integer >= 1, got {self.n_critic!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no GPU here")


def save_model(model: ConditionalGenerator, path: str | Path, training: dict | None = None) -> None:
    """Write a model file atomically (write + rename), so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    torch.save(model_state(model, training), tmp)
    os.replace(tmp, path)


def load_model(source: str | Path) -> ConditionalGenerator:
    """A model from a file written by `save_model`, or `default` for the shipped weights."""
    if str(source) == "default":
        return load_default_model()
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"generator model file {str(source)!r} not found (give a file written by "
                         "`microloop train-generator`, 'default' or 'procedural')")
    return load_state_bytes(path.read_bytes())


def checkpoint_path(out: str | Path) -> Path:
    return Path(str(out) + ".ckpt")


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint, read with `weights_only=True`: it holds only tensors, numbers,
    strings and containers (the numpy RNG state as JSON, the targets as a dict of tensors), so
    a planted file cannot run code; anything else is refused with the file's name."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{Path(path).name} is not a microloop training checkpoint that loads "
                         f"safely (weights only): {str(error).splitlines()[0]}; delete it and "
                         "train without --resume") from None
    expected = {"config", "model", "optimizer", "noise_state", "rng_state_json", "history",
                "targets", "wall_s"}
    missing = expected - set(state) if isinstance(state, dict) else expected
    if missing:
        raise ValueError(f"{Path(path).name} is not a microloop training checkpoint of this "
                         f"version (missing {sorted(missing)}); delete it and train without "
                         "--resume")
    return state


def loss_plot_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".loss.png")


def plot_losses(history: list[dict[str, float]], path: str | Path) -> None:
    """Loss parts against step, log scale, with a running mean over ~2 % of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(history) + 1)
    window = max(1, len(history) // 50)
    keys = [k for k in ("loss", "fraction", "s2", "crisp", "wasserstein", "gp") if k in history[-1]]
    negative = any(h.get(k, 1.0) <= 0 for h in history for k in keys)
    for key in keys:
        y = np.array([h.get(key, np.nan) for h in history])
        if window > 1:
            y = np.convolve(y, np.ones(window) / window, mode="valid")
        ax.plot(steps[len(steps) - len(y):], y, label=key)
    if negative:   # adversarial losses change sign
        ax.set_yscale("symlog", linthresh=1e-3)
    else:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _training_metadata(data: TrainingSet, options: TrainOptions, config: GeneratorConfig,
                       history: list[dict], wall_s: float) -> dict:
    points = sorted({tuple(p[k] for k in config.condition_names) for p in data.params})
    tail = history[-min(len(history), 50):]
    return {
        "steps": len(history),
        "wall_s": wall_s,
        "method": options.method,
        "options": {**asdict(options), "widths": list(options.widths),
                    "critic_widths": list(options.critic_widths)},
        "data": data.describe(),
        "fixed_params": data.fixed_params,
        "training_points": [list(p) for p in points],
        "final_loss": {k: float(np.mean([h[k] for h in tail])) for k in tail[0]} if tail else {},
        "torch_version": str(torch.__version__),
    }


def _initial_model(config: GeneratorConfig, options: TrainOptions) -> ConditionalGenerator:
    """A fresh net, or one warm-started from `options.init_from` (same architecture and number
    of conditions; the condition scaling is the new data's)."""
    torch.manual_seed(options.seed)
    if options.init_from is None:
        return ConditionalGenerator(config)
    start = load_model(options.init_from)
    old = start.config
    if (tuple(old.widths), old.latent_channels, len(old.condition_names), old.fraction_inputs) != (
            tuple(config.widths), config.latent_channels, len(config.condition_names),
            config.fraction_inputs):
        raise ValueError(f"init_from {options.init_from!r} has widths {list(old.widths)}, "
                         f"{old.latent_channels} latent channels and conditions "
                         f"{list(old.condition_names)}; train with the same widths, latent "
                         f"channels and number of conditions ({list(config.condition_names)})")
    model = ConditionalGenerator(config)
    model.load_state_dict(start.state_dict())
    return model


def _fraction_targets(data: TrainingSet, config: GeneratorConfig) -> TrainingTargets:
    """Conditions and measured fractions only (what adversarial training needs; no S2 maps)."""
    conds = np.stack([condition_vector(p, config) for p in data.params])
    fracs = np.stack([np.bincount(v.ravel(), minlength=3)[:3] / v.size for v in data.volumes])
    return TrainingTargets(torch.tensor(conds, dtype=torch.float32),
                           torch.tensor(fracs, dtype=torch.float32), torch.zeros(0))


def train_generator(data: TrainingSet, out: str | Path, options: TrainOptions | None = None,
                    resume: bool = False, progress: ProgressFn | None = None,
                    envelope: tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]
                    | None = None) -> dict:
    """Train (or resume training) and return a summary; the model is at `out` afterwards.
    `envelope` (names, lows, highs) fixes the conditions and their scaling instead of taking
    them from `data` (ensemble members trained on resamples share one)."""
    options = options or TrainOptions()
    options.validate()
    out = Path(out)
    ckpt = checkpoint_path(out)
    if options.threads:
        torch.set_num_threads(options.threads)
    names = data.condition_names()
    lows = tuple(min(p[k] for p in data.params) for k in names)
    highs = tuple(max(p[k] for p in data.params) for k in names)
    if envelope is not None:
        names, lows, highs = (tuple(x) for x in envelope)
    widths, latent, upsample = tuple(options.widths), options.latent_channels, 1
    if options.init_from is not None:   # the architecture is the starting model's
        start_cfg = load_model(options.init_from).config
        widths, latent = tuple(start_cfg.widths), start_cfg.latent_channels
        upsample = start_cfg.output_upsample
    config = GeneratorConfig(condition_names=names, condition_low=lows, condition_high=highs,
                             latent_channels=latent, widths=widths, output_upsample=upsample,
                             voxel_um=data.voxel_um, max_lag_voxels=options.max_lag_voxels)
    adversarial = options.method == "slicegan"
    smallest = options.crop_voxels if adversarial else options.max_lag_voxels + 1
    too_small = [v.shape for v in data.volumes if min(v.shape) < smallest]
    if too_small:
        what = f"crop_voxels={options.crop_voxels}" if adversarial else \
            f"max_lag_voxels={options.max_lag_voxels}"
        raise ValueError(f"training volumes must be larger than {what} per side; got "
                         f"{too_small[:3]}")
    model = _initial_model(config, options).to(options.device)
    if adversarial:
        optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate, betas=(0.5, 0.9))
        critic_cfg = CriticConfig(n_conditions=config.n_condition_inputs,
                                  widths=tuple(options.critic_widths))
        critics = {name: SliceCritic(critic_cfg).to(options.device) for name in ORIENTATIONS}
        c_optimizers = {name: torch.optim.Adam(c.parameters(), lr=options.critic_learning_rate,
                                               betas=(0.5, 0.9)) for name, c in critics.items()}
        adv = AdversarialOptions(n_critic=options.n_critic, gp_weight=options.gp_weight,
                                 slices_per_axis=options.slices_per_axis)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    noise = torch.Generator().manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    history: list[dict[str, float]] = []
    wall_before = 0.0
    if resume and ckpt.is_file():
        state = load_checkpoint(ckpt)
        # a checkpoint written before a config field existed holds that field's default
        if GeneratorConfig.from_dict(state["config"]).to_dict() != config.to_dict() or state.get("method", "statistics") != options.method:
            raise ValueError(f"{ckpt.name} was made with another model configuration, training "
                             "method or training data envelope; start again without --resume "
                             "or use the same options")
        model = model_from_state(state["model"]).to(options.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate,
                                     **({"betas": (0.5, 0.9)} if adversarial else {}))
        optimizer.load_state_dict(state["optimizer"])
        if adversarial:
            for name in ORIENTATIONS:
                critics[name].load_state_dict(state["critics"][name])
                c_optimizers[name] = torch.optim.Adam(critics[name].parameters(),
                                                      lr=options.critic_learning_rate,
                                                      betas=(0.5, 0.9))
                c_optimizers[name].load_state_dict(state["critic_optimizers"][name])
        noise.set_state(state["noise_state"])
        rng.bit_generator.state = json.loads(state["rng_state_json"])
        history = list(state["history"])
        targets = TrainingTargets(**state["targets"])
        wall_before = float(state["wall_s"])
    else:
        targets = _fraction_targets(data, config) if adversarial else \
            make_targets(data.params, data.volumes, config)
    start = time.perf_counter()

    def wall() -> float:
        return wall_before + time.perf_counter() - start

    def save(step: int) -> None:
        save_model(model, out, _training_metadata(data, options, config, history, wall()))
        tmp = ckpt.with_name(ckpt.name + ".partial")
        extra = {}
        if adversarial:
            extra = {"critic_config": critic_cfg.to_dict(),
                     "critics": {k: {n: t.detach().cpu() for n, t in c.state_dict().items()}
                                 for k, c in critics.items()},
                     "critic_optimizers": {k: o.state_dict() for k, o in c_optimizers.items()}}
        torch.save({"config": config.to_dict(), "method": options.method,
                    "model": model_state(model),
                    "optimizer": optimizer.state_dict(), "noise_state": noise.get_state(),
                    "rng_state_json": json.dumps(rng.bit_generator.state), "history": history,
                    "targets": asdict(targets),
                    "wall_s": wall(), "step": step, **extra}, tmp)
        os.replace(tmp, ckpt)
        if history:
            plot_losses(history, loss_plot_path(out))

    n = len(data.volumes)
    stopped_early = False
    step = len(history)
    while step < options.steps:
        choice = rng.choice(n, size=options.batch, replace=n < options.batch)
        if adversarial:
            parts = adversarial_step(model, critics, optimizer, c_optimizers, data.volumes,
                                     targets.conditions, targets.fractions, choice,
                                     options.crop_voxels, rng, noise, adv)
        else:
            parts = train_step(model, optimizer, targets, torch.as_tensor(choice),
                               options.crop_voxels, noise, crisp_weight=options.crisp_weight)
        if not all(math.isfinite(v) for v in parts.values()):
            raise FloatingPointError(f"training diverged at step {step + 1}: {parts}; lower the "
                                     "learning rate")
        history.append(parts)
        step += 1
        if progress is not None:
            progress(step, options.steps, parts)
        if step % options.checkpoint_every == 0 or step == options.steps:
            save(step)
        if options.time_limit_s is not None and time.perf_counter() - start > options.time_limit_s:
            if step % options.checkpoint_every:
                save(step)
            stopped_early = step < options.steps
            break
    if not out.exists():
        save(step)
    return {"out": str(out), "checkpoint": str(ckpt), "loss_plot": str(loss_plot_path(out)),
            "method": options.method,
            "steps": step, "target_steps": options.steps, "stopped_early": stopped_early,
            "wall_s": wall(), "final_loss": history[-1] if history else None,
            "condition_names": list(names)}


def member_path(out: str | Path, k: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.member{k}{out.suffix}")


def bootstrap_members(data: TrainingSet, members: int, seed: int) -> list[TrainingSet]:
    """One training set per member: the distinct training points resampled with replacement
    (all volumes of a drawn point, as often as it is drawn), so members see different points."""
    keys = [tuple(sorted(p.items())) for p in data.params]
    points = sorted(set(keys))
    if len(points) < 2:
        raise ValueError("an ensemble needs training data at 2 or more parameter points")
    sets = []
    for k in range(members):
        rng = np.random.default_rng([seed, k])
        drawn = rng.choice(len(points), size=len(points), replace=True)
        params, volumes = [], []
        for j in drawn:
            for p, v, key in zip(data.params, data.volumes, keys, strict=True):
                if key == points[j]:
                    params.append(p)
                    volumes.append(v)
        sets.append(TrainingSet(params, volumes, data.voxel_um,
                                source=f"{data.source}, bootstrap member {k}",
                                fixed_params=dict(data.fixed_params)))
    return sets


def train_ensemble(data: TrainingSet, out: str | Path, members: int,
                   options: TrainOptions | None = None, resume: bool = False,
                   progress: ProgressFn | None = None) -> dict:
    """Train `members` generators on bootstrap resamples of the training points (seeds
    options.seed + k), each resumable from its own checkpoint (`OUT.memberK.pt.ckpt`), and
    write them as one ensemble file at `out` (kernels.generator.model.GeneratorEnsemble)."""
    options = options or TrainOptions()
    if not isinstance(members, int) or members < 2:
        raise ValueError(f"members must be an integer >= 2, got {members!r}")
    names = data.condition_names()
    box = (names, tuple(min(p[k] for p in data.params) for k in names),
           tuple(max(p[k] for p in data.params) for k in names))
    summaries = []
    for k, member_data in enumerate(bootstrap_members(data, members, options.seed)):
        member_options = replace(options, seed=options.seed + k)
        summaries.append(train_generator(member_data, member_path(out, k), member_options,
                                         resume=resume, progress=progress, envelope=box))
    nets = [load_model(member_path(out, k)) for k in range(members)]
    ensemble = GeneratorEnsemble(nets)
    info = dict(nets[0].training_info)
    points = sorted({tuple(p[k] for k in names) for p in data.params})
    info.update({"ensemble_members": members, "training_points": [list(p) for p in points],
                 "data": data.describe(), "fixed_params": data.fixed_params,
                 "steps": sum(int(m.training_info.get("steps", 0)) for m in nets),
                 "wall_s": sum(float(m.training_info.get("wall_s", 0.0)) for m in nets),
                 "members": [{"steps": m.training_info.get("steps"),
                              "training_points": m.training_info.get("training_points")}
                             for m in nets]})
    path = Path(out)
    tmp = path.with_name(path.name + ".partial")
    torch.save(ensemble_state(ensemble, info), tmp)
    os.replace(tmp, path)
    return {"out": str(path), "members": [s["out"] for s in summaries],
            "steps": info["steps"], "stopped_early": any(s["stopped_early"] for s in summaries),
            "method": options.method, "wall_s": info["wall_s"],
            "condition_names": list(names)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--voxel-um", type=float, default=None,
                        help="default: what the files state (0.4 for procedural)")
    parser.add_argument("--time-limit-s", type=float, default=None)
    parser.add_argument("--method", default="statistics", choices=TRAINING_METHODS)
    parser.add_argument("--init-from", default=None)
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args(argv)
    data = load_training_set(args.data, voxel_um=args.voxel_um)
    options = TrainOptions(steps=args.steps, batch=args.batch, crop_voxels=args.crop,
                           device=args.device, time_limit_s=args.time_limit_s,
                           method=args.method, init_from=args.init_from,
                           learning_rate=args.lr or (1e-4 if args.method == "slicegan" else 1e-3))

    def report(step: int, total: int, parts: dict[str, float]) -> None:
        if step % 10 == 0 or step == total:
            print(f"step {step}/{total} " + " ".join(f"{k}={v:.4g}" for k, v in parts.items()),
                  flush=True)

    print(train_generator(data, args.out, options, resume=args.resume, progress=report))


if __name__ == "__main__":
    main()
