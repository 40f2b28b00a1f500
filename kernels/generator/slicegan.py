"""Adversarial training of the conditional 3D generator with 2D critics on orthogonal slices
(the SliceGAN family that Kench et al. used): conditional, Wasserstein loss with gradient penalty.

Why slices: a 2D critic sees every slice of a generated cube, so one 3D sample gives it dozens of
examples, and real 2D data (or slices of 3D data) is enough to train it. Two critics, not three:
axis 0 is the through-thickness (calendering) direction, so slices normal to axis 0 (in-plane)
and slices that contain axis 0 (cross-sections, normal to axis 1 or 2, which are statistically
alike by the in-plane symmetry) have different statistics and get a critic each.

Conditioning: the critics take the condition vector as constant extra input channels, so they
judge "is this a slice of an electrode made with these parameters", and the generator is the
FiLM-conditioned net of `kernels.generator.network`, which makes periodic volumes of any size.

Kernels touch no files: `jobs.train` owns checkpoints, resume and the data; this module holds the
critics, the slicing, the gradient penalty and one training step, all device-agnostic (CPU or CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from kernels.generator.network import (
    LATENT_MARGIN,
    N_PHASES,
    ConditionalGenerator,
    upsample_logits,
)

#: slice orientations, each judged by its own critic: normal to axis 0, and normal to axis 1 or 2
ORIENTATIONS = ("inplane", "cross")


@dataclass(frozen=True)
class CriticConfig:
    """The 2D slice critics: conv widths (each stride 2) and the conditioning inputs."""

    n_conditions: int
    widths: tuple[int, ...] = (32, 64, 128)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CriticConfig:
        return cls(n_conditions=int(d["n_conditions"]), widths=tuple(d["widths"]))


class SliceCritic(nn.Module):
    """(B, 3 + K, H, W) slices with their condition channels -> one Wasserstein score each.

    Stride-2 4x4 convolutions, LeakyReLU, no normalisation (batch statistics would break the
    per-sample gradient penalty), and a mean over the remaining positions so any slice size works.
    """

    def __init__(self, config: CriticConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_ch = N_PHASES + config.n_conditions
        for width in config.widths:
            layers += [nn.Conv2d(in_ch, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            in_ch = width
        layers.append(nn.Conv2d(in_ch, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, slices: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = cond[:, :, None, None].expand(-1, -1, slices.shape[2], slices.shape[3])
        return self.net(torch.cat([slices, c], dim=1)).mean(dim=(1, 2, 3))


def take_slices(volumes: torch.Tensor, cond: torch.Tensor, orientation: str,
                index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices (B * n, 3, H, W) of (B, 3, D, H, W) fields at positions `index` (n,) along the
    orientation's normal axis, with each slice's condition row repeated to match."""
    b = volumes.shape[0]
    if orientation == "inplane":        # normal to axis 0
        s = volumes[:, :, index].permute(0, 2, 1, 3, 4)
    elif orientation == "cross":        # normal to axis 2 (axis 1 is the same by symmetry)
        s = volumes[:, :, :, :, index].permute(0, 4, 1, 2, 3)
    else:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    n = int(index.numel())
    return s.reshape(b * n, *s.shape[2:]), cond.repeat_interleave(n, dim=0)


def gradient_penalty(critic: SliceCritic, real: torch.Tensor, fake: torch.Tensor,
                     cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """WGAN-GP: (|grad critic(x_hat)| - 1)^2 on random interpolates of real and fake slices."""
    alpha = torch.rand((real.shape[0], 1, 1, 1), generator=generator).to(real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    score = critic(x_hat, cond)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def random_crops(volumes: Sequence[np.ndarray], which: np.ndarray, crop: int,
                 rng: np.random.Generator, flips: bool = True) -> torch.Tensor:
    """One-hot (B, 3, c, c, c) crops of labelled volumes `which`, at random corners; in-plane
    flips and the swap of axes 1 and 2 (symmetries of a calendered electrode) augment the data."""
    out = np.empty((len(which), N_PHASES, crop, crop, crop), dtype=np.float32)
    for k, i in enumerate(which):
        v = volumes[int(i)]
        corner = [int(rng.integers(0, s - crop + 1)) for s in v.shape]
        box = v[corner[0]:corner[0] + crop, corner[1]:corner[1] + crop, corner[2]:corner[2] + crop]
        if flips:
            if rng.random() < 0.5:
                box = box[:, ::-1]
            if rng.random() < 0.5:
                box = box[:, :, ::-1]
            if rng.random() < 0.5:
                box = box.transpose(0, 2, 1)
        out[k] = np.eye(N_PHASES, dtype=np.float32)[box].transpose(3, 0, 1, 2)
    return torch.from_numpy(out)


def generated_fields(model: ConditionalGenerator, cond: torch.Tensor, crop: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Softmax phase fields (B, 3, crop, crop, crop) from fresh latents (fresh noise in the
    margin, as in statistics training: no wrapped copies inside a small crop)."""
    cfg = model.config
    f = cfg.upsample_factor
    z = torch.randn((cond.shape[0], cfg.latent_channels) + (crop // f + 2 * LATENT_MARGIN,) * 3,
                    generator=generator)
    logits = upsample_logits(model(z.to(cond.device), cond), cfg.output_upsample, periodic=False)
    return torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class AdversarialOptions:
    """Knobs of one adversarial step (stored with the model's training metadata)."""

    n_critic: int = 5                # critic updates per generator update (WGAN-GP's usual 5)
    gp_weight: float = 10.0          # gradient-penalty weight (Gulrajani et al.)
    slices_per_axis: int = 8         # random slices per crop and orientation (all: set >= crop)
    fraction_weight: float = 10.0    # soft fields' phase fractions vs the measured ones


def adversarial_step(model: ConditionalGenerator, critics: dict[str, SliceCritic],
                     g_optimizer: torch.optim.Optimizer,
                     c_optimizers: dict[str, torch.optim.Optimizer],
                     volumes: Sequence[np.ndarray], conditions: torch.Tensor,
                     fractions: torch.Tensor, batch_index: np.ndarray, crop: int,
                     rng: np.random.Generator, noise: torch.Generator,
                     options: AdversarialOptions) -> dict[str, float]:
    """`n_critic` critic updates then one generator update on the training volumes
    `batch_index`; returns the loss parts (Wasserstein estimate, penalty, generator loss)."""
    device = next(model.parameters()).device
    cond = conditions[torch.as_tensor(batch_index)].to(device)
    n_slices = min(options.slices_per_axis, crop)
    model.train()
    w_dist, penalty = 0.0, 0.0
    for _ in range(options.n_critic):
        real = random_crops(volumes, batch_index, crop, rng).to(device)
        with torch.no_grad():
            fake = generated_fields(model, cond, crop, noise)
        for name in ORIENTATIONS:
            critic, opt = critics[name], c_optimizers[name]
            idx = torch.as_tensor(rng.choice(crop, size=n_slices, replace=False))
            rs, c = take_slices(real, cond, name, idx)
            fs, _ = take_slices(fake, cond, name, idx)
            opt.zero_grad(set_to_none=True)
            wd = critic(rs, c).mean() - critic(fs, c).mean()
            gp = gradient_penalty(critic, rs, fs, c, noise)
            (-wd + options.gp_weight * gp).backward()
            opt.step()
            w_dist += wd.item() / (options.n_critic * len(ORIENTATIONS))
            penalty += gp.item() / (options.n_critic * len(ORIENTATIONS))
    g_optimizer.zero_grad(set_to_none=True)
    fake = generated_fields(model, cond, crop, noise)
    g_adv = 0.0
    for name in ORIENTATIONS:
        critics[name].requires_grad_(False)
        # every slice of the generated crop (SliceGAN): the generator is judged on the whole cube
        idx = torch.arange(crop)
        fs, c = take_slices(fake, cond, name, idx)
        g_adv = g_adv - critics[name](fs, c).mean()
        critics[name].requires_grad_(True)
    want = fractions[torch.as_tensor(batch_index)].to(device)
    frac = ((fake.mean(dim=(2, 3, 4)) - want) ** 2).sum(dim=1).mean()
    loss = g_adv + options.fraction_weight * frac
    loss.backward()
    g_optimizer.step()
    return {"loss": float(loss.item()), "wasserstein": w_dist, "gp": penalty,
            "fraction": float(frac.item())}
