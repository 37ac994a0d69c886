"""Sparse-pattern helpers shared by the conformal and transport kernels."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def sorted_unique_rows(ptr, raw):
    """Sort each row ``raw[ptr[i]:ptr[i+1]]`` in place and drop repeats.

    Returns the CSR ``(indptr, indices)`` of the sorted, de-duplicated rows. Insertion sort: the
    rows of a mesh adjacency hold about a dozen entries.
    """
    n = ptr.shape[0] - 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    out = np.empty(ptr[n], dtype=np.int64)
    top = 0
    for i in range(n):
        lo, hi = ptr[i], ptr[i + 1]
        for q in range(lo + 1, hi):
            x = raw[q]
            r = q - 1
            while r >= lo and raw[r] > x:
                raw[r + 1] = raw[r]
                r -= 1
            raw[r + 1] = x
        last = -1
        for q in range(lo, hi):
            x = raw[q]
            if x != last:
                out[top] = x
                top += 1
                last = x
        indptr[i + 1] = top
    return indptr, out[:top].copy()
