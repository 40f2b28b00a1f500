"""skimage's marker watershed of -distance (connectivity 1, no compactness, no watershed line)
in numba, with the same labels, for kernels.metrics.particle_size.

What skimage 0.26 does (`_watershed.watershed`, `_watershed_cy.watershed_raveled` and
`heap_general.pxi`, read for their semantics): the volume is padded by one masked-out voxel per
face; the markers are pushed in raveled order as items (image[m], age 0); the age counter starts
at 1 and is raised before every later push, so those ages are unique; a popped voxel visits its
neighbours in the order -axis0, -axis1, -axis2, +axis2, +axis1, +axis0 and labels every
unlabelled masked-in one *at push*, as an item (max(image[neighbour], popped value), age). The
heap is a binary heap (sift-up on push, last item to the root and sift-down on pop, strict
comparisons, the left child on a tie) ordered by value, then age.

Here the values are an exact distance transform, sqrt of an integer k (the squared voxel
distance), so they take a few hundred distinct values and an item's value is a bucket index.

* Every non-marker item has a unique (value, age), and a push never goes below the value being
  popped, so one FIFO per value, popped from the largest distance down, gives the heap's pop
  order exactly (`_bucket_flood`, O(1) per voxel). So do the markers *when no two share a
  value*: a marker's age 0 puts it first in its FIFO.
* Markers of equal value all have age 0, and the heap pops them in an order set by its internal
  layout, which a FIFO cannot know. That order moves labels: on procedural electrodes such ties
  (down to the one-voxel-deep seeds, k = 1) exist in every cube measured and moved
  60-1100 voxels of a 96³ cube in 4 of 5 (tests/test_particle_size.py shows one). So
  with tied markers the flood is a replica of skimage's binary heap (`_heap_flood`: the same
  sift rules on the same order, hence the same layout and pops), cheaper by its flat keys (one
  int64: bucket | age | position, compared without the position bits), a bottom-up sift-down
  that lands where skimage's top-down one does, and no padded float64 copies.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False)
_jit_inline = numba.njit(cache=True, nogil=True, fastmath=False, boundscheck=False, inline="always")

FLOODED = 0  #: the labels are skimage's
NOT_SQRT_OF_INTEGER = 1  #: a masked-in distance is not sqrt of an integer: no buckets
TOO_LARGE = 2  #: bucket, age and position do not fit one int64 key (far above 512³)
BUCKETS = 0  #: method: FIFO per value (markers' values all distinct)
HEAP = 1  #: method: the replica of skimage's heap (some markers share a value)
_MAX_VOXELS = 2**31 - 1  # skimage's ages are int32
#: True: the heap flood keeps state and bucket in one array (_heap_flood_packed, the same
#: labels); False: two arrays, as first built (the tests and bench_particle_size compare them)
PACKED_HEAP = True


@_jit
def _prepare(distance, mask, markers):
    """Padded raveled state (-1 outside the mask, 0 unlabelled, else the marker's label) and
    bucket (k_max - k, k the squared distance: 0 is the largest distance, popped first), the
    markers' raveled positions, the bucket count, and whether every masked-in distance is
    sqrt of an integer k (else the buckets would not be the heap's order)."""
    nx, ny, nz = distance.shape
    s0, s1 = (ny + 2) * (nz + 2), nz + 2
    n_padded = (nx + 2) * s0
    state = np.full(n_padded, -1, np.int32)
    bucket = np.zeros(n_padded, np.int32)
    k_max = 0
    n_markers = 0
    for i in range(nx):
        for j in range(ny):
            base = (i + 1) * s0 + (j + 1) * s1 + 1
            for k in range(nz):
                if not mask[i, j, k]:
                    continue
                d = distance[i, j, k]
                if not (0.0 <= d <= 3.0e4):  # also NaN; k = d² < 2^31
                    return state, bucket, np.zeros(0, np.int64), 0, False
                sq = np.int64(np.rint(d * d))
                if np.sqrt(np.float64(sq)) != d:
                    return state, bucket, np.zeros(0, np.int64), 0, False
                p = base + k
                state[p] = markers[i, j, k]
                bucket[p] = sq
                if markers[i, j, k] != 0:
                    n_markers += 1
                k_max = max(k_max, sq)
    order = np.empty(n_markers, np.int64)
    m = 0
    for p in range(n_padded):
        if state[p] >= 0:
            bucket[p] = k_max - bucket[p]
            if state[p] > 0:
                order[m] = p
                m += 1
    return state, bucket, order, k_max + 1, True


@_jit
def _markers_tied(bucket, order, n_buckets):
    """True if two markers have the same distance."""
    seen = np.zeros(n_buckets, np.bool_)
    for m in range(order.shape[0]):
        b = bucket[order[m]]
        if seen[b]:
            return True
        seen[b] = True
    return False


@_jit
def _bucket_flood(state, bucket, order, n_buckets, s0, s1):
    """Flood the labels in state in place: one FIFO (linked through `nxt`) per bucket."""
    offsets = (-s0, -s1, -1, 1, s1, s0)
    head = np.full(n_buckets, -1, np.int32)
    tail = np.full(n_buckets, -1, np.int32)
    nxt = np.empty(state.shape[0], np.int32)
    for m in range(order.shape[0]):
        p = order[m]
        b = bucket[p]
        nxt[p] = -1
        if tail[b] < 0:
            head[b] = p
        else:
            nxt[tail[b]] = p
        tail[b] = p
    for cur in range(n_buckets):
        p = head[cur]
        while p >= 0:
            label = state[p]
            for q_off in offsets:
                q = p + q_off
                if state[q] != 0:
                    continue
                state[q] = label
                b = max(bucket[q], cur)
                nxt[q] = -1
                if tail[b] < 0:
                    head[b] = q
                else:
                    nxt[tail[b]] = q
                tail[b] = q
            p = nxt[p]  # read after the pushes: a push into this bucket extends this list


@_jit
def _heap_flood(state, bucket, order, s0, s1, capacity, idx_bits, age_bits):
    """Flood the labels in state in place with skimage's binary heap; an item is one int64,
    bucket | age | position (high to low bits), compared without its position bits."""
    offsets = (-s0, -s1, -1, 1, s1, s0)
    keys = np.empty(capacity, np.int64)
    idx_mask = (np.int64(1) << idx_bits) - 1
    b_shift = idx_bits + age_bits
    n = 0
    for m in range(order.shape[0]):
        p = order[m]
        n = _push(keys, n, (np.int64(bucket[p]) << b_shift) | p, idx_bits)
    age = np.int64(1)
    while n > 0:
        top = keys[0]
        n -= 1
        if n > 0:
            _sift_down(keys, n, keys[n], idx_bits)
        p = top & idx_mask
        cur = top >> b_shift
        label = state[p]
        for q_off in offsets:
            q = p + q_off
            if state[q] != 0:
                continue
            age += 1
            state[q] = label
            b = max(np.int64(bucket[q]), cur)
            n = _push(keys, n, (b << b_shift) | (age << idx_bits) | q, idx_bits)


@_jit
def _pack(state, bucket, packed):
    """state and bucket as one array (see _heap_flood_packed); `packed` may be `state`."""
    for p in range(state.shape[0]):
        v = state[p]
        packed[p] = -2 - bucket[p] if v == 0 else v


@_jit
def _heap_flood_packed(state, bucket, order, s0, s1, capacity, idx_bits, age_bits):
    """_heap_flood on one array `state` from _pack (-1 outside the mask, -2 - bucket
    unlabelled, the label once labelled: a voxel's bucket is read only while it is unlabelled),
    so a neighbour's test and its bucket are one memory access, not two arrays' (the flood
    visits the volume in distance order, all over it); int16 where labels and buckets fit,
    half the bytes again. The same pushes, pops and labels. `bucket` is read for the markers."""
    offsets = (-s0, -s1, -1, 1, s1, s0)
    keys = np.empty(capacity, np.int64)
    idx_mask = (np.int64(1) << idx_bits) - 1
    b_shift = idx_bits + age_bits
    n = 0
    for m in range(order.shape[0]):
        p = order[m]
        n = _push(keys, n, (np.int64(bucket[p]) << b_shift) | p, idx_bits)
    age = np.int64(1)
    while n > 0:
        top = keys[0]
        n -= 1
        if n > 0:
            _sift_down(keys, n, keys[n], idx_bits)
        p = top & idx_mask
        cur = top >> b_shift
        label = state[p]
        for q_off in offsets:
            q = p + q_off
            v = state[q]
            if v >= -1:  # outside the mask, or labelled
                continue
            age += 1
            state[q] = label
            b = max(np.int64(-2 - v), cur)
            n = _push(keys, n, (b << b_shift) | (age << idx_bits) | q, idx_bits)


@_jit_inline
def _push(keys, n, key, idx_bits):
    """Append and sift up while strictly smaller than the parent; the new count."""
    rank = key >> idx_bits
    child = n
    while child > 0:
        parent = (child - 1) >> 1
        if rank < (keys[parent] >> idx_bits):
            keys[child] = keys[parent]
            child = parent
        else:
            break
    keys[child] = key
    return n + 1


@_jit_inline
def _sift_down(keys, n, key, idx_bits):
    """Put key at the root and sift it down: the smaller child (the left on a tie) moves up
    while strictly smaller than key. Done bottom-up (Floyd): the smaller-child path to the
    bottom first, one comparison a level, then key back up to where the top-down sift stops
    (the first path node not strictly smaller than key), the same layout."""
    rank = key >> idx_bits
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and (keys[child + 1] >> idx_bits) < (keys[child] >> idx_bits):
            child += 1
        keys[i] = keys[child]
        i = child
    while i > 0:
        parent = (i - 1) >> 1
        if (keys[parent] >> idx_bits) < rank:
            break
        keys[i] = keys[parent]
        i = parent
    keys[i] = key


@_jit
def _bits(n):
    """Bits to hold 0..n."""
    bits = 1
    while (np.int64(1) << bits) <= n:
        bits += 1
    return bits


@_jit
def _flood(distance, mask, markers, method, packed):
    """(status, method used, labels int32) of the marker flood of -distance inside mask;
    method -1 picks BUCKETS when no two markers tie, else HEAP; packed: HEAP on one array
    (_heap_flood_packed)."""
    nx, ny, nz = distance.shape
    s0, s1 = (ny + 2) * (nz + 2), nz + 2
    out = np.zeros((nx, ny, nz), np.int32)
    state, bucket, order, n_buckets, exact = _prepare(distance, mask, markers)
    if not exact:
        return NOT_SQRT_OF_INTEGER, method, out
    if method < 0:
        method = HEAP if _markers_tied(bucket, order, n_buckets) else BUCKETS
    if method == BUCKETS:
        _bucket_flood(state, bucket, order, n_buckets, s0, s1)
    else:
        n_inside = 0
        for p in range(state.shape[0]):
            if state[p] >= 0:
                n_inside += 1
        idx_bits = _bits(state.shape[0])
        age_bits = _bits(n_inside + 1)
        if idx_bits + age_bits + _bits(n_buckets) > 62:
            return TOO_LARGE, method, out
        if packed:
            max_label = 0
            for m in range(order.shape[0]):
                max_label = max(max_label, state[order[m]])
            if max_label <= 32767 and n_buckets <= 32766:
                small = np.empty(state.shape[0], np.int16)
                _pack(state, bucket, small)
                _heap_flood_packed(small, bucket, order, s0, s1, max(n_inside, 1), idx_bits,
                                   age_bits)
                for i in range(nx):
                    for j in range(ny):
                        base = (i + 1) * s0 + (j + 1) * s1 + 1
                        for k in range(nz):
                            out[i, j, k] = max(np.int32(small[base + k]), 0)
                return FLOODED, method, out
            _pack(state, bucket, state)
            _heap_flood_packed(state, bucket, order, s0, s1, max(n_inside, 1), idx_bits,
                               age_bits)
        else:
            _heap_flood(state, bucket, order, s0, s1, max(n_inside, 1), idx_bits, age_bits)
    for i in range(nx):
        for j in range(ny):
            base = (i + 1) * s0 + (j + 1) * s1 + 1
            for k in range(nz):
                out[i, j, k] = max(state[base + k], 0)
    return FLOODED, method, out


def flood_labels(distance: np.ndarray, mask: np.ndarray, markers: np.ndarray, *,
                 method: int | None = None) -> tuple[int, int, np.ndarray]:
    """(status, method, labels): FLOODED with skimage's `watershed(-distance, markers,
    mask=mask)` labels (int32), or NOT_SQRT_OF_INTEGER, when the caller must use skimage.
    method: None picks (BUCKETS when no two markers share a distance, else HEAP); BUCKETS is
    exact only in that case (the tests force it to show the tie is real)."""
    if not (distance.ndim == 3 and distance.shape == mask.shape == markers.shape):
        raise ValueError("distance, mask and markers must be 3D arrays of one shape")
    if distance.size > _MAX_VOXELS:
        raise ValueError(f"at most {_MAX_VOXELS} voxels (skimage's ages are int32)")
    if markers.size and markers.min() < 0:
        raise ValueError("markers must be >= 0 (0: no marker)")
    chosen = -1 if method is None else int(method)
    if chosen not in (-1, BUCKETS, HEAP):
        raise ValueError(f"method must be None, BUCKETS or HEAP, got {method!r}")
    return _flood(np.ascontiguousarray(distance, dtype=np.float64),
                  np.ascontiguousarray(mask, dtype=np.bool_),
                  np.ascontiguousarray(markers, dtype=np.int32), chosen, bool(PACKED_HEAP))
