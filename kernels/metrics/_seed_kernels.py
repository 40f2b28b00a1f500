"""skimage's watershed seeds, `peak_local_max(image, min_distance=s, labels=mask,
exclude_border=False)` with one label, in numba, with the same peaks in the same order, for
kernels.metrics.particle_size (the order numbers the markers, so it moves the labels).

What skimage 0.26 does there (`feature/peak.py`, `_shared/coord.py`, read for their semantics):

1. threshold = image.min() over the whole image (no threshold_abs / threshold_rel given);
2. the label loop: one label, so one box, the mask's bounding box (`ndi.find_objects`); in
   that box's copy the voxels off the mask are set to float64's lowest finite value;
3. the peak mask: `image == maximum_filter(image, footprint=ones((2s+1,)*3), mode="nearest")`.
   A box footprint is separable and a max is exact, so this is the max of the mask's values in
   the (2s+1)³ window clipped to the array: 'nearest' repeats an edge voxel that the window
   holds already, the voxels of the box off the mask are below every finite value of the mask
   (a voxel's window holds itself), and outside the box there is no mask voxel;
4. if *every* mask voxel is its window's max, the mask is "trivial": skimage drops them all and
   keeps the voxels a binary opening removes instead (and a one-voxel box takes the threshold
   alone) -- not replicated: ALL_MAXIMA, the caller asks skimage;
5. peak &= image > threshold; the peaks in raveled order (np.nonzero, the box's C order is the
   array's), then `argsort(-value, kind="stable")`: larger first, ties in raveled order (here
   the same numpy call on the same values, in the same order);
6. `ensure_spacing` (when s > 1): batches of 50, 100, ... 2000 candidates, each run through a
   KD-tree greedy that keeps a candidate unless a kept one is at Chebyshev distance (p_norm
   inf) < s, carrying the kept ones to the front of the next batch. Kept ones are >= s apart,
   so they all survive the next batch: the batches are one greedy pass over the sorted list,
   which is what `_space` does (kept ones indexed by cells of s voxels: a candidate can only
   be too close to kept ones in its own and the 26 neighbouring cells).

Non-finite values (NaN, +-inf) change the comparisons and the threshold: NOT_FINITE, and the
caller asks skimage. No mask voxel: skimage's `np.empty((0, 2))` (sic, 2 columns).
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False)

EXACT = 0  #: the peaks are skimage's
NOT_FINITE = 1  #: NaN or inf in the image: skimage's comparisons, not replicated
ALL_MAXIMA = 2  #: every mask voxel is its window's max: skimage's opening rule, not replicated


@_jit
def _axis_max(work, s):
    """work (A, n, B) <- the max over [i - s, i + s] clipped to [0, n) along its middle axis,
    in place (van Herk / Gil-Werman: block prefix and suffix maxima of the line padded by s
    of -inf each side, blocks of 2s+1), on chunks of up to 64 lines that are contiguous in B."""
    n_outer, n, n_inner = work.shape
    w = 2 * s + 1
    m = n + 2 * s
    chunk = min(n_inner, 64)
    g = np.empty((m, chunk), np.float64)
    h = np.empty((m, chunk), np.float64)
    for a in range(n_outer):
        for b0 in range(0, n_inner, chunk):
            cb = min(chunk, n_inner - b0)
            for t0 in range(0, m, w):
                for t in range(t0, min(t0 + w, m)):
                    inside = s <= t < n + s
                    for c in range(cb):
                        v = work[a, t - s, b0 + c] if inside else -np.inf
                        g[t, c] = v if t == t0 else max(g[t - 1, c], v)
            for t0 in range(0, m, w):
                t1 = min(t0 + w, m)
                for t in range(t1 - 1, t0 - 1, -1):
                    inside = s <= t < n + s
                    for c in range(cb):
                        v = work[a, t - s, b0 + c] if inside else -np.inf
                        h[t, c] = v if t == t1 - 1 else max(h[t + 1, c], v)
            for i in range(n):
                for c in range(cb):
                    work[a, i, b0 + c] = max(h[i, c], g[i + 2 * s, c])


@_jit
def _last_axis_max(work, s):
    """_axis_max along the last (contiguous) axis of work (A, n): one padded line at a time."""
    n_outer, n = work.shape
    w = 2 * s + 1
    m = n + 2 * s
    padded = np.full(m, -np.inf)
    g = np.empty(m, np.float64)
    h = np.empty(m, np.float64)
    for a in range(n_outer):
        padded[s:s + n] = work[a]
        for t0 in range(0, m, w):
            t1 = min(t0 + w, m)
            g[t0] = padded[t0]
            for t in range(t0 + 1, t1):
                g[t] = max(g[t - 1], padded[t])
            h[t1 - 1] = padded[t1 - 1]
            for t in range(t1 - 2, t0 - 1, -1):
                h[t] = max(h[t + 1], padded[t])
        for i in range(n):
            work[a, i] = max(h[i], g[i + 2 * s])


@_jit
def _window_max(image, mask, s):
    """The max of the mask's values in the (2s+1)³ window clipped to the array (-inf where the
    window holds no mask voxel): three separable passes of _axis_max."""
    nx, ny, nz = image.shape
    work = np.empty((nx, ny, nz), np.float64)
    for i in range(nx):
        for j in range(ny):
            for k in range(nz):
                work[i, j, k] = image[i, j, k] if mask[i, j, k] else -np.inf
    _last_axis_max(work.reshape((nx * ny, nz)), s)
    _axis_max(work, s)
    _axis_max(work.reshape((1, nx, ny * nz)), s)
    return work


@_jit
def _candidates(image, mask, s):
    """(status, raveled indices of the mask's window maxima above image.min(), in raveled
    order, their values)."""
    flat = image.ravel()
    mask_flat = mask.ravel()
    threshold = np.inf
    for p in range(flat.shape[0]):
        v = flat[p]
        if not np.isfinite(v):
            return NOT_FINITE, np.zeros(0, np.int64), np.zeros(0, np.float64)
        threshold = min(threshold, v)
    window = _window_max(image, mask, s).ravel()
    n_mask = 0
    n_max = 0
    n_cand = 0
    for p in range(flat.shape[0]):
        if mask_flat[p]:
            n_mask += 1
            if flat[p] == window[p]:
                n_max += 1
                if flat[p] > threshold:
                    n_cand += 1
    if n_max == n_mask:
        return ALL_MAXIMA, np.zeros(0, np.int64), np.zeros(0, np.float64)
    index = np.empty(n_cand, np.int64)
    value = np.empty(n_cand, np.float64)
    c = 0
    for p in range(flat.shape[0]):
        if mask_flat[p] and flat[p] == window[p] and flat[p] > threshold:
            index[c] = p
            value[c] = flat[p]
            c += 1
    return EXACT, index, value


@_jit
def _space(order, shape, s):
    """The greedy pass of ensure_spacing: keep a candidate (in the given order) unless a kept
    one is at Chebyshev distance < s; the kept ones' coordinates (n, 3), in that order."""
    nx, ny, nz = shape
    cx, cy, cz = (nx + s - 1) // s, (ny + s - 1) // s, (nz + s - 1) // s
    head = np.full(cx * cy * cz, -1, np.int64)
    nxt = np.empty(order.shape[0], np.int64)
    kept = np.empty((order.shape[0], 3), np.int64)
    n_kept = 0
    for c in range(order.shape[0]):
        p = order[c]
        i = p // (ny * nz)
        j = (p // nz) % ny
        k = p % nz
        ci, cj, ck = i // s, j // s, k // s
        close = False
        for a in range(max(ci - 1, 0), min(ci + 2, cx)):
            for b in range(max(cj - 1, 0), min(cj + 2, cy)):
                for d in range(max(ck - 1, 0), min(ck + 2, cz)):
                    q = head[(a * cy + b) * cz + d]
                    while q >= 0:
                        if max(abs(kept[q, 0] - i), abs(kept[q, 1] - j),
                               abs(kept[q, 2] - k)) < s:
                            close = True
                            break
                        q = nxt[q]
                    if close:
                        break
                if close:
                    break
            if close:
                break
        if close:
            continue
        kept[n_kept, 0], kept[n_kept, 1], kept[n_kept, 2] = i, j, k
        cell = (ci * cy + cj) * cz + ck
        nxt[n_kept] = head[cell]
        head[cell] = n_kept
        n_kept += 1
    return kept[:n_kept].copy()


def seed_peaks(image: np.ndarray, mask: np.ndarray, min_distance: int) -> tuple[int, np.ndarray]:
    """(status, peaks): EXACT with skimage's `peak_local_max(image, min_distance=min_distance,
    labels=mask.astype(np.int32), exclude_border=False)`, the same rows in the same order
    (int64), or NOT_FINITE / ALL_MAXIMA (empty peaks), when the caller must use skimage."""
    if not (image.ndim == 3 and image.shape == mask.shape):
        raise ValueError("image and mask must be 3D arrays of one shape")
    if image.dtype not in (np.float32, np.float64):  # exact in float64, and skimage's bg rule
        raise ValueError(f"image must be float32 or float64, got {image.dtype}")
    if isinstance(min_distance, bool) or not isinstance(min_distance, int | np.integer) \
            or min_distance < 1:
        raise ValueError(f"min_distance must be an integer >= 1, got {min_distance!r}")
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    if not mask.any():
        return EXACT, np.empty((0, 2), dtype=int)
    status, index, value = _candidates(np.ascontiguousarray(image, dtype=np.float64), mask,
                                       int(min_distance))
    if status != EXACT:
        return status, np.empty((0, 3), dtype=int)
    order = index[np.argsort(-value, kind="stable")]
    return EXACT, _space(order, mask.shape, int(min_distance))
