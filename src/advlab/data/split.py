"""Deterministic, stratified index selection.

Every function takes its randomness from a local ``numpy.random.Generator`` built
from ``seed``; the global RNGs are never touched, so loading data cannot change
the outcome of anything seeded elsewhere.
"""

from __future__ import annotations

import numpy as np


def allocate(n: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Split ``n`` units over classes in proportion to ``weights``, never exceeding ``caps``.

    Largest-remainder (Hamilton) apportionment; ties and leftovers go to the lower
    class index first, so the result is a pure function of the inputs. With equal
    weights and ``n`` divisible by the number of classes every class gets ``n / k``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    caps = np.asarray(caps, dtype=np.int64)
    if n < 0:
        raise ValueError(f"cannot allocate a negative count ({n})")
    if n > caps.sum():
        raise ValueError(f"cannot allocate {n} items: only {int(caps.sum())} available")
    if n == 0:
        return np.zeros_like(caps)
    quota = n * weights / weights.sum()
    alloc = np.minimum(np.floor(quota).astype(np.int64), caps)
    left = n - int(alloc.sum())
    # Stable sort: equal remainders are served in class order.
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    while left > 0:
        for c in order:
            if left == 0:
                break
            if alloc[c] < caps[c]:
                alloc[c] += 1
                left -= 1
    return alloc


def stratified_split(
    y: np.ndarray, sizes: list[int] | tuple[int, ...], seed: int = 0
) -> list[np.ndarray]:
    """Disjoint, class-stratified index sets of the given sizes, each in shuffled order.

    Class proportions in every part follow those of ``y``. Indices not needed by any
    part are left out. The same ``(y, sizes, seed)`` always gives the same indices.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if sum(sizes) > len(y):
        raise ValueError(f"requested {sum(sizes)} items ({' + '.join(map(str, sizes))}) but only {len(y)} exist")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in classes]

    remaining = counts.copy()
    taken = np.zeros_like(counts)
    parts = []
    for size in sizes:
        alloc = allocate(int(size), counts, remaining)
        idx = np.concatenate(
            [members[t : t + a] for members, t, a in zip(by_class, taken, alloc)]
        ).astype(np.int64)
        # Shuffle so that the first k points of a part are a mix of classes.
        parts.append(rng.permutation(idx))
        taken += alloc
        remaining -= alloc
    return parts


def stratified_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a stratified random subset of size ``n``."""
    return stratified_split(y, [n], seed)[0]
