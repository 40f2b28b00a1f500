"""Two-point correlation functions of labelled 3D volumes, by FFT, differentiable in torch.

S2_ij(d) is the probability that voxel x is phase i and voxel x + d is phase j. It carries the
phase fractions (d = 0), the interface area (the slope at d -> 0) and the particle size and
anisotropy (its decay along each axis), so it is both a quality measure for generated volumes
and the training signal of `kernels.generator.model`.

The estimator is non-periodic: fields are zero-padded before the FFT and each lag is divided by
the number of voxel pairs that really exist at that lag. Crops of a non-periodic simulator volume
and periodic generator outputs are therefore measured the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PHASE_NAMES = ("pore", "am", "cbd")
# The phase pairs used as the statistical description: three auto-correlations and the AM-CBD
# cross-correlation (with softmax fields summing to one, the other cross terms follow from these).
DEFAULT_PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (1, 2))


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n, so the FFT stays fast."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def two_point_map(fields: torch.Tensor, max_lag: int,
                  pairs: Sequence[tuple[int, int]] = DEFAULT_PAIRS) -> torch.Tensor:
    """Non-periodic S2 maps for all lags in [-max_lag, max_lag]^3.

    fields: (B, P, D, H, W) phase indicator or probability fields (float).
    Returns (B, len(pairs), 2r+1, 2r+1, 2r+1); entry [b, k, r + dz, r + dy, r + dx] is
    mean over x of f_i(x) f_j(x + d) for pair k = (i, j). Differentiable.
    """
    if fields.ndim != 5:
        raise ValueError(f"fields must be (B, P, D, H, W), got shape {tuple(fields.shape)}")
    r = int(max_lag)
    shape = fields.shape[2:]
    if r < 0 or any(r >= s for s in shape):
        raise ValueError(f"max_lag must be in [0, {min(shape) - 1}] for a box of {tuple(shape)}, got {r}")
    sizes = [_fft_size(s + r) for s in shape]
    spectra = torch.fft.rfftn(fields, s=sizes, dim=(-3, -2, -1))
    maps = []
    for i, j in pairs:
        # sum_x f_i(x) f_j(x + d)  =  irfft(conj(F_i) F_j)(d)
        corr = torch.fft.irfftn(torch.conj(spectra[:, i]) * spectra[:, j], s=sizes, dim=(-3, -2, -1))
        corr = torch.roll(corr, shifts=(r, r, r), dims=(-3, -2, -1))[..., : 2 * r + 1, : 2 * r + 1, : 2 * r + 1]
        maps.append(corr)
    out = torch.stack(maps, dim=1)
    lags = torch.arange(-r, r + 1, device=fields.device, dtype=fields.dtype).abs()
    counts = [(s - lags) for s in shape]
    norm = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    return out / norm


def one_hot(volume: np.ndarray | torch.Tensor, n_phases: int = 3) -> torch.Tensor:
    """(D, H, W) labels -> (1, P, D, H, W) float32 indicator fields."""
    labels = torch.as_tensor(np.asarray(volume, dtype=np.int64))
    if labels.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {tuple(labels.shape)}")
    return torch.nn.functional.one_hot(labels, n_phases).permute(3, 0, 1, 2)[None].float()


def volume_two_point_map(volume: np.ndarray, max_lag: int,
                         pairs: Sequence[tuple[int, int]] = DEFAULT_PAIRS) -> np.ndarray:
    """S2 maps (len(pairs), 2r+1, 2r+1, 2r+1) of one labelled volume (0 pore / 1 AM / 2 CBD)."""
    with torch.no_grad():
        return two_point_map(one_hot(volume).double(), max_lag, pairs)[0].numpy()


def directional_s2(volume: np.ndarray, phase: int, max_lag: int) -> np.ndarray:
    """Auto-correlation of one phase along each axis: (3, max_lag + 1), row a = lags along axis a.

    Axis 0 is the through-thickness (calendering) direction, so rows 0 and 1-2 differ for an
    anisotropic electrode.
    """
    m = volume_two_point_map(volume, max_lag, pairs=((phase, phase),))[0]
    r = max_lag
    return np.stack([m[r:, r, r], m[r, r:, r], m[r, r, r:]])


def s2_curve_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference of two S2 curves (or maps), in probability units."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"S2 shapes differ: {a.shape} vs {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def correlation_length_voxels(curve: np.ndarray) -> float:
    """Lag at which S2 - phi^2 first falls to 1/e of its d=0 value (linear interpolation).

    A scalar size of the phase's features along one direction; returns the last lag when the
    curve never decays that far within the measured range.
    """
    c = np.asarray(curve, dtype=float)
    phi = c[0]
    cov = c - phi * phi
    if cov[0] <= 0:
        return 0.0
    level = cov[0] / np.e
    below = np.nonzero(cov <= level)[0]
    if below.size == 0:
        return float(len(c) - 1)
    k = int(below[0])
    if k == 0:
        return 0.0
    return float(k - 1 + (cov[k - 1] - level) / (cov[k - 1] - cov[k]))
