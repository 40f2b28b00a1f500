"""The conditional 3D microstructure generator: sampling, exact-fraction decoding, training step,
weights as a state dict, and the training envelope.

The network itself is in `kernels.generator.network`. A model is trained by matching, for every
training volume, its phase fractions and its two-point correlation maps (`kernels.structure.two_point`)
from random latents conditioned on that volume's manufacturing parameters; see docs/generator.md
for why this rather than a GAN fits a CPU budget. Kernels touch no files: `model_state` /
`model_from_state` convert to and from a plain dict that `jobs.train` saves with `torch.save`;
`load_default_model()` reads the weights shipped inside this package.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch

from kernels.generator.network import (
    LATENT_MARGIN,
    N_PHASES,
    ConditionalGenerator,
    GeneratorConfig,
    upsample_logits,
    wrap_latent,
)
from kernels.structure.two_point import DEFAULT_PAIRS, one_hot, two_point_map

FORMAT_VERSION = 1
DEFAULT_WEIGHTS = "generator_default.pt"
#: the shipped weights by the calendering of the procedural volumes they learnt: the default
#: file learnt the simulator's default (round particles); the flattened particles' model, the
#: shipped one until 2026-12-03, stays so campaigns that sampled it resume on the same cubes
SHIPPED_WEIGHTS: dict[str, str] = {"rearrange": DEFAULT_WEIGHTS,
                                   "flatten": "generator_default_flatten.pt"}
PHASE_ORDER = ("pore", "am", "cbd")
# Parameters a design may carry. Those the model is not conditioned on are accepted and ignored
# by sampling (mass loading sets the electrode thickness, not the microstructure).
EXTRA_PARAM_RANGES: dict[str, tuple[float, float]] = {"mass_loading_mg_cm2": (1.0, 100.0)}


# ----------------------------------------------------------------------------- parameters
def accepted_param_ranges() -> dict[str, tuple[float, float]]:
    """Every parameter name `sample` accepts, with its accepted closed range."""
    from kernels.structure import procedural as structure

    return {
        "am_wt_frac": structure.AM_WT_FRAC_RANGE,
        "porosity": structure.POROSITY_RANGE,
        "binder_adhesion": structure.ADHESION_RANGE,
        "mean_diameter_um": structure.MEAN_DIAMETER_UM_RANGE,
        "diameter_spread": structure.DIAMETER_SPREAD_RANGE,
        **EXTRA_PARAM_RANGES,
    }


def params_to_dict(params: Mapping[str, float] | Any) -> dict[str, float]:
    """A dict or a `ManufacturingParams` -> validated {name: float}, unset fields at their defaults.

    Raises ValueError naming the bad field and listing the accepted names and ranges.
    """
    from kernels.structure.procedural import ManufacturingParams

    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        values = dataclasses.asdict(params)
    elif isinstance(params, Mapping):
        values = dict(params)
    else:
        raise TypeError(f"params must be a dict or ManufacturingParams, got {type(params).__name__}")
    ranges = accepted_param_ranges()
    known = {f.name for f in dataclasses.fields(ManufacturingParams)} | set(EXTRA_PARAM_RANGES)
    listing = ", ".join(
        f"{k} in [{ranges[k][0]:g}, {ranges[k][1]:g}]" if k in ranges else k for k in sorted(known)
    )
    out: dict[str, float] = {}
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"unknown parameter {name!r}; accepted: {listing}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {name}={value!r} is not a number; accepted: {listing}") from None
        if not math.isfinite(v):
            raise ValueError(f"parameter {name}={value!r} is not finite; accepted: {listing}")
        if name in EXTRA_PARAM_RANGES:
            lo, hi = EXTRA_PARAM_RANGES[name]
            if not lo <= v <= hi:
                raise ValueError(f"parameter {name}={v:g} is outside [{lo:g}, {hi:g}]")
        out[name] = v
    for required in ("am_wt_frac", "porosity"):
        if required not in out:
            raise ValueError(f"missing parameter {required!r}; accepted: {listing}")
    manufacturing = ManufacturingParams(**{k: v for k, v in out.items() if k not in EXTRA_PARAM_RANGES})
    manufacturing.validate()
    # Unset manufacturing fields take ManufacturingParams' defaults (binder_adhesion 0.5, ...).
    return {**{k: float(v) for k, v in dataclasses.asdict(manufacturing).items()},
            **{k: v for k, v in out.items() if k in EXTRA_PARAM_RANGES}}


def target_fractions(params: Mapping[str, float]) -> np.ndarray:
    """(pore, am, cbd) volume fractions the decoded volume must have exactly."""
    from kernels.structure.procedural import target_phase_fractions

    f = target_phase_fractions(float(params["am_wt_frac"]), float(params["porosity"]))
    return np.array([f[name] for name in PHASE_ORDER], dtype=np.float64)


def condition_vector(params: Mapping[str, float], config: GeneratorConfig) -> np.ndarray:
    """Parameters -> the net's condition input: conditions scaled to [-1, 1] over the training
    envelope, then (optionally) the target fractions, centred."""
    values = []
    for name, lo, hi in zip(config.condition_names, config.condition_low, config.condition_high,
                            strict=True):
        if name not in params:
            raise ValueError(f"the model is conditioned on {name!r}, which params lack "
                             f"(model conditions: {', '.join(config.condition_names)})")
        span = hi - lo if hi > lo else 1.0
        values.append(2.0 * (float(params[name]) - lo) / span - 1.0)
    if config.fraction_inputs:
        values.extend(3.0 * (target_fractions(params) - 1.0 / 3.0))
    return np.asarray(values, dtype=np.float32)


# ----------------------------------------------------------------------------- decoding
def decode_exact(logits: np.ndarray | torch.Tensor, fractions: np.ndarray) -> np.ndarray:
    """Per-voxel phase scores (3, D, H, W) -> labels uint8 with exactly the target fractions.

    Phases are placed rarest first: the rarest phase takes the voxels where its logit most
    exceeds the best other logit, then the next phase ranks the remaining voxels the same way
    against the phases still unplaced; the most common phase takes the rest. Counts are
    round(fraction * voxels), with the last phase absorbing the rounding.
    """
    scores = torch.as_tensor(logits).detach().float().cpu().numpy()
    if scores.ndim != 4 or scores.shape[0] != N_PHASES:
        raise ValueError(f"logits must be ({N_PHASES}, D, H, W), got {scores.shape}")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (N_PHASES,) or np.any(fr < 0) or abs(fr.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be {N_PHASES} non-negative numbers summing to 1, got {fr}")
    shape = scores.shape[1:]
    flat = scores.reshape(N_PHASES, -1)
    n = flat.shape[1]
    order = list(np.argsort(fr, kind="stable"))
    labels = np.full(n, order[-1], dtype=np.uint8)
    placed = np.zeros(n, dtype=bool)
    remaining = list(order)
    for phase in order[:-1]:
        count = int(round(fr[phase] * n))
        remaining.remove(phase)
        count = min(count, n - int(placed.sum()))
        if count <= 0:
            continue
        best_other = flat[remaining[0]] if len(remaining) == 1 else \
            np.maximum(flat[remaining[0]], flat[remaining[1]])
        s = flat[phase] - best_other
        s[placed] = -np.inf            # voxels of phases placed before are not free
        pick = np.argpartition(-s, count - 1)[:count] if count < n else np.arange(n)
        labels[pick] = phase
        placed[pick] = True
    return labels.reshape(shape)


# ----------------------------------------------------------------------------- sampling
def _latent(config: GeneratorConfig, latent_size: int, seed: int, index: int) -> torch.Tensor:
    """The latent field of sample `index` for `seed`: independent of how many samples are drawn."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randn((1, config.latent_channels) + (latent_size,) * 3, generator=g)


def generate_logits(model: ConditionalGenerator, params: Mapping[str, float], latent: torch.Tensor,
                    device: str = "cpu") -> torch.Tensor:
    """One periodic latent field (1, C, l, l, l) -> phase logits (3, f l, f l, f l) on the CPU,
    f = `config.upsample_factor`; the volume is periodic with period f l along every axis.
    By the net's fast inference form (`ConditionalGenerator.forward_fast`), then the logit
    interpolation of `config.output_upsample`."""
    cond = torch.from_numpy(condition_vector(params, model.config))[None]
    model = model.to(device)
    with torch.inference_mode():
        logits = model.forward_fast(wrap_latent(latent.to(device)), cond.to(device))
        logits = upsample_logits(logits, model.config.output_upsample, periodic=True)
        return logits[0].float().cpu().contiguous()


def extrapolation_excess(params: Mapping[str, float], config: GeneratorConfig) -> np.ndarray:
    """Per conditioning parameter, how far the design lies outside the training box, in box
    widths (0 inside): 0.2 means 20 % of the training range beyond its edge."""
    out = []
    for name, lo, hi in zip(config.condition_names, config.condition_low, config.condition_high,
                            strict=True):
        span = hi - lo if hi > lo else 1.0
        v = float(params[name])
        out.append(max(lo - v, v - hi, 0.0) / span)
    return np.asarray(out)


def jittered_params(params: Mapping[str, float], config: GeneratorConfig, seed: int,
                    index: int) -> dict[str, float]:
    """The parameters the net is conditioned on for sample `index` of a design outside the
    training box: each parameter beyond the box is drawn from a normal centred on the design
    with a standard deviation equal to its excess (a design 0.02 beyond the box edge is known
    to the net to within ~0.02), kept in the parameter's accepted range. Inside the box the
    design itself. Why: the net has no data out there, so how far it extrapolates is how
    uncertain it is about which recipe it renders; drawing the cubes over that range turns
    extrapolation into cube-to-cube spread, which the evaluation contract passes to the
    optimiser as noise (`objective.noise_from_samples`)."""
    values = dict(params)
    excess = extrapolation_excess(values, config)
    if not np.any(excess > 0):
        return values
    state = np.random.SeedSequence([int(seed), int(index), 0x6A17]).generate_state(2)
    rng = np.random.default_rng(state)
    ranges = accepted_param_ranges()
    for name, lo, hi, e in zip(config.condition_names, config.condition_low,
                               config.condition_high, excess, strict=True):
        if e > 0:
            span = hi - lo if hi > lo else 1.0
            low, high = ranges.get(name, (-math.inf, math.inf))
            values[name] = float(np.clip(values[name] + rng.normal(0.0, e * span), low, high))
    return values


def sample(params: Mapping[str, float] | Any, n: int, size: int, seed: int, device: str = "cpu",
           model: ConditionalGenerator | GeneratorEnsemble | None = None,
           member: int | None = None, extrapolation_jitter: bool = False) -> np.ndarray:
    """n volumes of size^3 voxels (uint8, 0 pore / 1 AM / 2 CBD) at the model's voxel size.

    Sample i depends only on (params, size, seed, i). The latent is ceil(size / f) cells per
    side; a size that is not a multiple of f is cropped from the next multiple. The phase
    fractions equal `kernels.structure.procedural.target_phase_fractions` exactly (to one voxel).
    From an ensemble, sample i comes from member i mod K, or every sample from `member`.
    With `extrapolation_jitter`, a design outside the training box conditions each sample on
    `jittered_params` (the fractions stay the design's, exactly).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 voxels, got {size!r}")
    values = params_to_dict(params)
    model = load_default_model() if model is None else model
    model.eval()
    f = model.config.upsample_factor
    latent_size = -(-size // f)
    fractions = target_fractions(values)
    out = np.empty((n, size, size, size), dtype=np.uint8)
    members = list(model.members) if isinstance(model, GeneratorEnsemble) else [model]
    if member is not None and not 0 <= int(member) < len(members):
        raise ValueError(f"member must be in [0, {len(members)}), got {member!r}")
    for i in range(n):
        net = members[int(member) if member is not None else i % len(members)]
        cond_params = jittered_params(values, model.config, seed, i) if extrapolation_jitter \
            else values
        logits = generate_logits(net, cond_params, _latent(model.config, latent_size, seed, i),
                                 device)
        out[i] = decode_exact(logits[:, :size, :size, :size], fractions)
    return out


# ----------------------------------------------------------------------------- ensembles
ENSEMBLE_KIND = "microloop.GeneratorEnsemble"


class GeneratorEnsemble(torch.nn.Module):
    """K generators of one architecture and training envelope, each trained on a bootstrap
    resample of the training points (a deep ensemble, Lakshminarayanan et al. 2017).

    Why: seed-to-seed spread of one net measures the stochasticity of the microstructure, not
    how much the net knows about a recipe; members that saw different points agree where the
    data pin the answer and disagree where they extrapolate, so the spread between members
    grows away from the training points. Used wherever a single generator is: `sample` draws
    sample i from member i mod K, so a design's cubes carry the members' disagreement into the
    per-cube objective spread that the evaluation contract turns into noise.
    """

    def __init__(self, members: list[ConditionalGenerator]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0].config.to_dict()
        for k, m in enumerate(members[1:], start=1):
            if m.config.to_dict() != first:
                raise ValueError(f"ensemble member {k} has another configuration than member 0 "
                                 "(widths, conditions, envelope and voxel size must be equal)")
        self.members = torch.nn.ModuleList(members)
        self.config = members[0].config
        self.training_info: dict = {}


def ensemble_state(ensemble: GeneratorEnsemble, training: Mapping[str, Any] | None = None) -> dict:
    """An ensemble as one plain dict (tensors, numbers, strings): loads with weights_only."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": ENSEMBLE_KIND,
        "config": ensemble.config.to_dict(),
        "members": [{k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
                    for m in ensemble.members],
        "training": dict(training or {}),
    }


# ----------------------------------------------------------------------------- weights
def model_state(model: ConditionalGenerator, training: Mapping[str, Any] | None = None) -> dict:
    """Weights + config + training metadata as one plain dict (what `jobs.train` saves)."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": "microloop.ConditionalGenerator",
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "training": dict(training or {}),
    }


def model_from_state(state: Mapping[str, Any]) -> ConditionalGenerator | GeneratorEnsemble:
    """The inverse of `model_state` (or `ensemble_state`); the training metadata is kept on
    `model.training_info`."""
    if state.get("kind") == ENSEMBLE_KIND and state.get("format_version") == FORMAT_VERSION:
        config = GeneratorConfig.from_dict(state["config"])
        members = []
        for weights in state["members"]:
            member = ConditionalGenerator(config)
            member.load_state_dict(weights)
            members.append(member)
        ensemble = GeneratorEnsemble(members)
        ensemble.training_info = dict(state.get("training", {}))
        ensemble.eval()
        return ensemble
    if state.get("kind") != "microloop.ConditionalGenerator":
        raise ValueError("not a microloop generator file (missing kind 'microloop.ConditionalGenerator')")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"generator format_version {state.get('format_version')} is not "
                         f"{FORMAT_VERSION}; retrain or use a matching microloop version")
    model = ConditionalGenerator(GeneratorConfig.from_dict(state["config"]))
    model.load_state_dict(state["state_dict"])
    model.training_info = dict(state.get("training", {}))
    model.eval()
    return model


def load_state_bytes(data: bytes) -> ConditionalGenerator | GeneratorEnsemble:
    """A model from the bytes of a saved file (torch.save of `model_state`)."""
    import pickle

    try:   # weights only: a planted file cannot run code, it is refused
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError("not a microloop generator file that loads safely (weights only): "
                         f"{str(error).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"not a microloop generator file (holds a {type(state).__name__})")
    return model_from_state(state)


def default_weights_available() -> bool:
    return resources.files("kernels.generator").joinpath("weights", DEFAULT_WEIGHTS).is_file()


def load_default_model(calendering: str | None = None) -> ConditionalGenerator:
    """The generator shipped with microloop (trained on the procedural simulator): the one
    that learnt `calendering`'s volumes (a key of SHIPPED_WEIGHTS), by default the default
    file's (round particles, the simulator's default calendering)."""
    if calendering is not None and calendering not in SHIPPED_WEIGHTS:
        raise ValueError(f"generator.calendering must be one of {sorted(SHIPPED_WEIGHTS)} for the "
                         f"shipped generator (kind = 'default'), got {calendering!r}")
    name = DEFAULT_WEIGHTS if calendering is None else SHIPPED_WEIGHTS[calendering]
    ref = resources.files("kernels.generator").joinpath("weights", name)
    if not ref.is_file():
        raise FileNotFoundError(
            f"the shipped generator weights kernels/generator/weights/{name} are missing from "
            "this installation; train one with `microloop train-generator procedural --out "
            "model.pt`")
    return load_state_bytes(ref.read_bytes())


def trained_calendering(model: Any) -> str | None:
    """The calendering model of the procedural volumes `model` was trained on, as recorded in
    its training metadata; "flatten" for a procedural training set recorded before the field
    existed (the simulator's only model then); None when it learnt other data (files, zarr)."""
    data = dict(getattr(model, "training_info", {}) or {}).get("data") or {}
    if data.get("calendering") is not None:
        return str(data["calendering"])
    return "flatten" if str(data.get("source", "")).startswith("procedural") else None


# ----------------------------------------------------------------------------- training
@dataclass
class TrainingTargets:
    """What the generator must reproduce for a set of training volumes (row i = volume i)."""

    conditions: torch.Tensor   # (N, K) float32 condition vectors
    fractions: torch.Tensor    # (N, 3) measured phase fractions
    s2: torch.Tensor           # (N, len(pairs), 2r+1, 2r+1, 2r+1) two-point maps


def volume_statistics(volume: np.ndarray, max_lag_voxels: int,
                      max_box_voxels: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Phase fractions (3,) and S2 maps of one labelled training volume.

    Volumes larger than `max_box_voxels` per side are measured on the corner sub-boxes and
    averaged, which bounds the FFT cost for large segmented tomograms.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"a training volume must be 3D, got shape {vol.shape}")
    if vol.dtype.kind not in "iu" or vol.min() < 0 or vol.max() > 2:
        raise ValueError("a training volume must hold integer labels 0 pore / 1 AM / 2 CBD")
    fractions = np.bincount(vol.ravel().astype(np.int64), minlength=3)[:3] / vol.size
    m = max_box_voxels
    starts = [[0] if s <= m else [0, s - m] for s in vol.shape]
    maps = []
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                box = vol[a:a + m, b:b + m, c:c + m]
                with torch.no_grad():
                    maps.append(two_point_map(one_hot(box).double(), max_lag_voxels)[0].numpy())
    return fractions, np.mean(maps, axis=0)


def make_targets(params_list: list[Mapping[str, float]], volumes: list[np.ndarray],
                 config: GeneratorConfig) -> TrainingTargets:
    """Training targets for labelled volumes and their parameters."""
    if len(params_list) != len(volumes) or not volumes:
        raise ValueError("need one params dict per volume, and at least one volume")
    conds, fracs, maps = [], [], []
    for p, v in zip(params_list, volumes, strict=True):
        fr, s2 = volume_statistics(v, config.max_lag_voxels)
        conds.append(condition_vector(p, config))
        fracs.append(fr)
        maps.append(s2)
    return TrainingTargets(torch.tensor(np.stack(conds), dtype=torch.float32),
                           torch.tensor(np.stack(fracs), dtype=torch.float32),
                           torch.tensor(np.stack(maps), dtype=torch.float32))


# Short lags carry the interface (surface area, CBD coverage) but are few among the (2r+1)^3
# entries of an S2 map; weighting them up keeps them from being drowned by the long-lag plateau.
SHORT_LAG_BOOST = 20.0
SHORT_LAG_SCALE_VOXELS = 2.0


def short_lag_weight(max_lag: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Weight 1 + SHORT_LAG_BOOST exp(-|d|^2 / (2 s^2)) over the lag cube [-r, r]^3."""
    lags = torch.arange(-max_lag, max_lag + 1, dtype=torch.float32, device=device)
    d2 = lags[:, None, None] ** 2 + lags[None, :, None] ** 2 + lags[None, None, :] ** 2
    return 1.0 + SHORT_LAG_BOOST * torch.exp(-d2 / (2 * SHORT_LAG_SCALE_VOXELS ** 2))


def training_loss(model: ConditionalGenerator, targets: TrainingTargets, index: torch.Tensor,
                  crop_voxels: int, generator: torch.Generator,
                  fraction_weight: float = 10.0,
                  crisp_weight: float = 0.3) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss on a batch of training volumes `index`: fraction error + relative S2 map error.

    The S2 error of pair (i, j) is divided by sqrt(phi_i phi_j) so rare phases (CBD) count as
    much as common ones, and weighted up at short lags (`short_lag_weight`); a crispness term
    makes the softmax fields one-hot, so their S2 is that of the decoded labels.
    """
    cfg = model.config
    f = cfg.upsample_factor
    if crop_voxels % f or crop_voxels // f < 1:
        raise ValueError(f"crop_voxels must be a positive multiple of {f}, got {crop_voxels}")
    if crop_voxels <= cfg.max_lag_voxels:
        raise ValueError(f"crop_voxels ({crop_voxels}) must exceed max_lag_voxels ({cfg.max_lag_voxels})")
    device = next(model.parameters()).device
    b = int(index.numel())
    # Fresh noise in the margin (not wrapped): no periodic copies inside a small training crop.
    z = torch.randn((b, cfg.latent_channels) + (crop_voxels // f + 2 * LATENT_MARGIN,) * 3,
                    generator=generator)
    cond = targets.conditions[index].to(device)
    probs = torch.softmax(upsample_logits(model(z.to(device), cond), cfg.output_upsample,
                                          periodic=False), dim=1)
    want_fr = targets.fractions[index].to(device)
    fraction_loss = ((probs.mean(dim=(2, 3, 4)) - want_fr) ** 2).sum(dim=1).mean()
    scale = torch.stack([torch.sqrt(want_fr[:, i] * want_fr[:, j]).clamp_min(1e-3)
                         for i, j in DEFAULT_PAIRS], dim=1)[:, :, None, None, None]
    weight = short_lag_weight(cfg.max_lag_voxels, device)
    s2 = two_point_map(probs, cfg.max_lag_voxels, DEFAULT_PAIRS)
    s2_loss = ((((s2 - targets.s2[index].to(device)) / scale) ** 2) * weight).mean() / weight.mean()
    # Without it the net can match S2 with fuzzy fields (max probability ~0.6) that only the
    # ranking decoder turns into labels, with ragged boundaries. The Gini impurity 1 - sum p^2
    # is 0 only for one-hot fields, for which soft S2 equals the S2 of the decoded labels.
    crisp_loss = (1.0 - (probs ** 2).sum(dim=1)).mean()
    loss = fraction_weight * fraction_loss + s2_loss + crisp_weight * crisp_loss
    return loss, {"loss": loss.item(), "fraction": fraction_loss.item(), "s2": s2_loss.item(),
                  "crisp": crisp_loss.item()}


def train_step(model: ConditionalGenerator, optimizer: torch.optim.Optimizer,
               targets: TrainingTargets, index: torch.Tensor, crop_voxels: int,
               generator: torch.Generator, crisp_weight: float = 0.3) -> dict[str, float]:
    """One optimiser step on the batch `index`; returns the loss parts."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, parts = training_loss(model, targets, index, crop_voxels, generator,
                                crisp_weight=crisp_weight)
    loss.backward()
    optimizer.step()
    return parts


# ----------------------------------------------------------------------------- envelope
def in_training_envelope(params: Mapping[str, float] | Any,
                         model: ConditionalGenerator | None = None) -> tuple[bool, str]:
    """Whether a design lies where the model saw training data, and why not.

    Outside when a conditioning parameter leaves the [min, max] box of the training points,
    when it is farther (in box-normalised units) from every training point than 1.5 x the
    largest nearest-neighbour spacing among the training points, or when a parameter the model
    was not conditioned on differs from the value its training data used.
    """
    values = params_to_dict(params)
    model = load_default_model() if model is None else model
    info = getattr(model, "training_info", {}) or {}
    cfg = model.config
    reasons = []
    for name, lo, hi in zip(cfg.condition_names, cfg.condition_low, cfg.condition_high, strict=True):
        v = values.get(name)
        if v is not None and not (lo - 1e-9 <= v <= hi + 1e-9):
            reasons.append(f"{name}={v:g} outside the training range [{lo:g}, {hi:g}]")
    for name, fixed in (info.get("fixed_params") or {}).items():
        if name in values and abs(values[name] - float(fixed)) > 1e-9:
            reasons.append(f"{name}={values[name]:g} but the model was trained at {name}={fixed:g}")
    points = np.asarray(info.get("training_points") or [], dtype=float)
    if not reasons and points.ndim == 2 and len(points) > 1:
        lo = np.asarray(cfg.condition_low)
        span = np.where(np.asarray(cfg.condition_high) > lo, np.asarray(cfg.condition_high) - lo, 1.0)
        norm = (points - lo) / span
        x = (np.array([values[k] for k in cfg.condition_names]) - lo) / span
        d = np.sqrt(((norm[:, None, :] - norm[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        spacing = float(np.max(np.min(d, axis=1)))
        nearest = float(np.min(np.sqrt(((norm - x) ** 2).sum(-1))))
        if nearest > 1.5 * spacing:
            reasons.append(f"farther from every training point ({nearest:.2f}) than 1.5x the "
                           f"training spacing ({spacing:.2f}, box-normalised)")
    if reasons:
        return False, "; ".join(reasons)
    return True, "inside the training envelope"
