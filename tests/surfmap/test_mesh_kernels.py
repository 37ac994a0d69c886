"""The edge-grouping kernels of surfmap.mesh against plain-numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from surfmap._kernels import mesh as km


@pytest.mark.parametrize("n, m, big", [(50, 400, False), (7, 300, True), (1, 5, False)])
def test_group_pairs_matches_stable_argsort(n, m, big):
    rng = np.random.default_rng(n + m)
    x = rng.integers(0, n, m)
    y = rng.integers(0, n, m)
    if big:  # one bucket longer than the insertion-sort limit
        x[: m // 2] = 0
    order, inv, g = km.group_pairs(x, y, n)
    key = x * n + y
    np.testing.assert_array_equal(order, np.argsort(key, kind="stable"))
    uniq, ref_inv = np.unique(key, return_inverse=True)
    np.testing.assert_array_equal(inv, ref_inv)
    assert g == len(uniq)


def test_reverse_missing_matches_set_lookup():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 20, 200)
    b = rng.integers(0, 20, 200)
    pairs = set(zip(a.tolist(), b.tolist()))
    ref = np.array([(j, i) not in pairs for i, j in zip(a.tolist(), b.tolist())])
    np.testing.assert_array_equal(km.reverse_missing(a, b, 20), ref)
