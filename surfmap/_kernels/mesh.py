"""Edge grouping for the topology of :mod:`surfmap.mesh`: linear-time replacements of argsort / searchsorted.

A mesh's half-edges, keyed by vertex pairs, are grouped by a counting sort on the first vertex and
an insertion sort of each (small) bucket on the second: O(m) for bounded valence, where the general
sort of the int64 keys is O(m log m) and cache-unfriendly (the cut of a 150k-vertex cortex spent
most of its time there).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# buckets longer than this are sorted by mergesort instead of insertion sort
_INSERTION_MAX = 48


@njit(cache=True)
def _buckets(x, n):
    """Stable counting sort of ``x`` (values in [0, n)): (order, start) with bucket v at order[start[v]:start[v+1]]."""
    m = x.shape[0]
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(m):
        start[x[i] + 1] += 1
    for v in range(n):
        start[v + 1] += start[v]
    pos = start[:n].copy()
    order = np.empty(m, dtype=np.int64)
    for i in range(m):
        order[pos[x[i]]] = i
        pos[x[i]] += 1
    return order, start


@njit(cache=True)
def group_pairs(x, y, n):
    """Group the pairs ``(x[i], y[i])`` (values in [0, n)) in lexicographic order.

    Returns ``(order, inv, n_groups)``: ``order`` is the stable sorting permutation (the same as
    ``np.argsort(x * n + y, kind="stable")``), ``inv[i]`` the group of pair ``i``, groups numbered in
    sorted order.
    """
    m = x.shape[0]
    order, start = _buckets(x, n)
    for v in range(n):
        s, e = start[v], start[v + 1]
        if e - s > _INSERTION_MAX:
            seg = order[s:e].copy()
            idx = np.argsort(y[seg], kind="mergesort")
            for q in range(e - s):
                order[s + q] = seg[idx[q]]
            continue
        for p in range(s + 1, e):
            cur = order[p]
            yc = y[cur]
            q = p - 1
            while q >= s and y[order[q]] > yc:
                order[q + 1] = order[q]
                q -= 1
            order[q + 1] = cur
    inv = np.empty(m, dtype=np.int64)
    g = -1
    for p in range(m):
        i = order[p]
        if p == 0 or x[i] != x[order[p - 1]] or y[i] != y[order[p - 1]]:
            g += 1
        inv[i] = g
    return order, inv, g + 1


@njit(cache=True)
def reverse_missing(a, b, n):
    """``out[h]`` True when no pair ``(b[h], a[h])`` exists among the pairs ``(a, b)`` (a boundary half-edge)."""
    m = a.shape[0]
    order, start = _buckets(a, n)
    out = np.ones(m, dtype=np.bool_)
    for h in range(m):
        v = b[h]
        for p in range(start[v], start[v + 1]):
            if b[order[p]] == a[h]:
                out[h] = False
                break
    return out
