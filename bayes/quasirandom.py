"""Space-filling and random unit-cube points that respect constraints and keep away from others.

Shared by the ``sobol`` and ``random`` back-ends, BoTorch's initial design and its Thompson
candidate sets. Streams are positioned by a counter so that a restarted optimiser (whose state
holds the counter) draws exactly the points it would have drawn without the restart.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import qmc

from bayes.space import Space

#: Give up after drawing this many times the requested number of points (tiny feasible regions).
MAX_DRAW_FACTOR = 20_000


def derived_seed(*parts: int) -> int:
    """A 32-bit seed that depends on every part (seed, counters, a tag), stable across runs."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def min_distance(unit: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of ``unit`` (n, d) to the nearest row of ``others``."""
    unit = np.atleast_2d(unit)
    if others is None or len(others) == 0:
        return np.full(len(unit), np.inf)
    others = np.atleast_2d(others)
    squared = (
        np.sum(unit**2, axis=1)[:, None] + np.sum(others**2, axis=1)[None, :] - 2.0 * unit @ others.T
    )
    return np.sqrt(np.maximum(squared.min(axis=1), 0.0))


def allowed(
    space: Space,
    unit: np.ndarray,
    avoid: list[tuple[np.ndarray, float]] = (),
) -> np.ndarray:
    """Mask of rows that are feasible and farther than each radius from its set of points."""
    mask = space.feasible_unit(unit)
    for others, radius in avoid:
        if others is not None and len(others) and radius > 0.0:
            mask &= min_distance(unit, others) > radius
    return mask


def _raw_stream(kind: str, dim: int, seed: int, start: int, count: int) -> np.ndarray:
    if kind == "sobol":
        engine = qmc.Sobol(d=dim, scramble=True, seed=seed)
        if start:
            engine.fast_forward(start)
        return engine.random(count)
    if kind == "random":
        # One generator per block of 1024 positions keeps positions addressable.
        out = np.empty((count, dim))
        for i in range(count):
            position = start + i
            block, offset = divmod(position, 1024)
            if i == 0 or offset == 0:
                values = np.random.default_rng([seed, block]).random((1024, dim))
            out[i] = values[offset]
        return out
    raise ValueError(f"unknown stream kind {kind!r}; accepted: ['sobol', 'random']")


def draw_stream(
    space: Space,
    kind: str,
    seed: int,
    start: int,
    n: int,
    avoid: list[tuple[np.ndarray, float]] = (),
    separation: float = 0.0,
) -> tuple[np.ndarray, int]:
    """The next ``n`` allowed points of a stream from position ``start``; returns (points, new start).

    Points in the batch also stay more than ``separation`` apart (no duplicates).
    """
    chosen: list[np.ndarray] = []
    position = start
    chunk = max(64, 2 * n)
    radius = separation
    while len(chosen) < n:
        if position - start > MAX_DRAW_FACTOR * max(n, 16):
            raise RuntimeError(
                f"found only {len(chosen)} of {n} allowed points after {position - start} draws: "
                "the feasible region left by the constraints and excluded points is too small"
            )
        raw = _raw_stream(kind, space.dim, seed, position, chunk)
        mask = allowed(space, raw, avoid)
        for i in range(chunk):
            if not mask[i]:
                continue
            if chosen and radius > 0.0 and min_distance(raw[i], np.stack(chosen))[0] <= radius:
                continue
            chosen.append(raw[i])
            if len(chosen) == n:
                return np.stack(chosen), position + i + 1
        position += chunk
    return np.stack(chosen), position


def candidate_set(
    space: Space,
    n: int,
    seed: int,
    avoid: list[tuple[np.ndarray, float]] = (),
) -> np.ndarray:
    """Up to ``n`` scrambled-Sobol candidates that are feasible and away from ``avoid``."""
    raw = _raw_stream("sobol", space.dim, seed, 0, n)
    cands = raw[allowed(space, raw, avoid)]
    rounds = 0
    while len(cands) < max(1, n // 4) and rounds < 64:
        rounds += 1
        more = _raw_stream("sobol", space.dim, seed, rounds * n, n)
        cands = np.concatenate([cands, more[allowed(space, more, avoid)]])
    if not len(cands):
        raise RuntimeError(
            "no feasible candidate found: the constraints and excluded points leave no room"
        )
    return cands[:n]


def local_box(
    space: Space,
    centre: np.ndarray,
    half_width: float,
    n: int,
    seed: int,
    avoid: list[tuple[np.ndarray, float]] = (),
) -> np.ndarray:
    """Up to ``n`` allowed scrambled-Sobol points in the box ``centre ± half_width`` (clipped to
    the unit cube); may be empty when the box holds no allowed point."""
    raw = _raw_stream("sobol", space.dim, seed, 0, n)
    box = np.clip(np.asarray(centre, dtype=float) + (2.0 * raw - 1.0) * half_width, 0.0, 1.0)
    return box[allowed(space, box, avoid)]
