"""Numba kernels of :mod:`surfmap.raster`: point location of pixel centres, sparse application.

Private: arrays and scalars in, arrays out; the public functions validate and convert.

Pixel convention (shared with :mod:`surfmap.raster`): pixel ``p = i * size + j`` has its centre at
``u = (j + 0.5) / size``, ``v = 1 - (i + 0.5) / size`` (row 0 at the top, ``v`` near 1).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True)
def locate_pixel_centres(uv, faces, size, eps, face_of, weights):
    """Find the face that holds each pixel centre and its barycentric coordinates.

    Each face tests the pixel centres of its bounding box: O(m + pixels) for a map without folds.
    A pixel on an edge shared by two faces goes to the first face (deterministic).

    Parameters
    ----------
    uv : (k, 2) float64
    faces : (m, 3) int64
    size : int
    eps : float
        A centre is inside when every barycentric coordinate is >= -eps.
    face_of : (size * size,) int64, out
        Filled with the face index; must hold -1 on entry; -1 is left where no face holds the centre.
    weights : (size * size, 3) float64, out
        Barycentric coordinates of the centre with respect to the face's three vertices.
    """
    m = faces.shape[0]
    for f in range(m):
        a = faces[f, 0]
        b = faces[f, 1]
        c = faces[f, 2]
        ax = uv[a, 0]
        ay = uv[a, 1]
        bx = uv[b, 0]
        by = uv[b, 1]
        cx = uv[c, 0]
        cy = uv[c, 1]
        det = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if det == 0.0:
            continue
        umin = min(ax, min(bx, cx))
        umax = max(ax, max(bx, cx))
        vmin = min(ay, min(by, cy))
        vmax = max(ay, max(by, cy))
        j0 = max(0, math.ceil(umin * size - 0.5))
        j1 = min(size - 1, math.floor(umax * size - 0.5))
        i0 = max(0, math.ceil((1.0 - vmax) * size - 0.5))
        i1 = min(size - 1, math.floor((1.0 - vmin) * size - 0.5))
        for i in range(i0, i1 + 1):
            py = 1.0 - (i + 0.5) / size
            for j in range(j0, j1 + 1):
                p = i * size + j
                if face_of[p] >= 0:
                    continue
                px = (j + 0.5) / size
                la = ((bx - px) * (cy - py) - (by - py) * (cx - px)) / det
                lb = ((cx - px) * (ay - py) - (cy - py) * (ax - px)) / det
                lc = 1.0 - la - lb
                if la >= -eps and lb >= -eps and lc >= -eps:
                    face_of[p] = f
                    weights[p, 0] = la
                    weights[p, 1] = lb
                    weights[p, 2] = lc


@nb.njit(cache=True)
def nearest_on_edges(points, size, uv, edge_a, edge_b, best_edge, best_s, distance):
    """Closest point, on a set of edges, to each of some pixel centres (brute force over edges).

    Used for the few pixel centres outside every face (round-off at the square's edge), with the
    boundary edges of the map: for a map without folds the closest point of the triangulation to
    an outside point lies on its boundary.

    Parameters
    ----------
    points : (q,) int64
        Pixel indices; centres follow the module's pixel convention.
    size : int
    uv : (k, 2) float64
    edge_a, edge_b : (e,) int64
        End points of each edge.
    best_edge : (q,) int64, out
        Index of the closest edge.
    best_s : (q,) float64, out
        Position of the closest point on it: ``(1 - s) * uv[a] + s * uv[b]``.
    distance : (q,) float64, out
        Distance from the centre to that point.
    """
    for t in range(points.shape[0]):
        p = points[t]
        i = p // size
        j = p - i * size
        px = (j + 0.5) / size
        py = 1.0 - (i + 0.5) / size
        best = np.inf
        for e in range(edge_a.shape[0]):
            ax = uv[edge_a[e], 0]
            ay = uv[edge_a[e], 1]
            dx = uv[edge_b[e], 0] - ax
            dy = uv[edge_b[e], 1] - ay
            ll = dx * dx + dy * dy
            s = 0.0
            if ll > 0.0:
                s = ((px - ax) * dx + (py - ay) * dy) / ll
                s = min(1.0, max(0.0, s))
            qx = ax + s * dx - px
            qy = ay + s * dy - py
            d2 = qx * qx + qy * qy
            if d2 < best:
                best = d2
                best_edge[t] = e
                best_s[t] = s
        distance[t] = math.sqrt(best)


@nb.njit(cache=True, parallel=True)
def csr_apply(indptr, indices, data, X, out, renormalise, fill_value, block):
    """``out[s, c, p] = sum_t data[t] * X[s, indices[t], c]`` over the entries of row ``p``.

    Parallel over (subject, block of ``block`` pixels) pairs, which write disjoint parts of
    ``out``; each gather reads the ``C`` channels of a vertex together (one cache line).

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the (P, k) operator (data float64); ``indices`` may
        index a longer array (the original mesh) than the operator's ``k`` columns.
    X : (S, n, C) float32 or float64
    out : (S, C, P) float32, out
    renormalise : bool
        False: non-finite values are used as they are (and counted). Zero weights are skipped.
        True: the row's weights are renormalised over its finite values; a row with none gets
        ``fill_value``.
    fill_value : float
    block : int
        Pixels per parallel task.

    Returns
    -------
    bad : (S, C) int64
        Number of non-finite values met with a nonzero weight, per subject and channel.
    """
    S = X.shape[0]
    C = X.shape[2]
    P = indptr.shape[0] - 1
    nblocks = (P + block - 1) // block
    bad_q = np.zeros((S * nblocks, C), dtype=np.int64)
    for q in nb.prange(S * nblocks):
        s = q // nblocks
        b = q - s * nblocks
        acc = np.empty(C, dtype=np.float64)
        wsum = np.empty(C, dtype=np.float64)
        for p in range(b * block, min(P, (b + 1) * block)):
            for c in range(C):
                acc[c] = 0.0
                wsum[c] = 0.0
            for t in range(indptr[p], indptr[p + 1]):
                w = data[t]
                if w == 0.0:
                    continue
                v = indices[t]
                for c in range(C):
                    x = X[s, v, c]
                    if not np.isfinite(x):
                        bad_q[q, c] += 1
                        if renormalise:
                            continue
                    acc[c] += w * x
                    wsum[c] += w
            for c in range(C):
                if renormalise:
                    if wsum[c] > 0.0:
                        out[s, c, p] = acc[c] / wsum[c]
                    else:
                        out[s, c, p] = fill_value
                else:
                    out[s, c, p] = acc[c]
    bad = np.zeros((S, C), dtype=np.int64)
    for q in range(S * nblocks):
        for c in range(C):
            bad[q // nblocks, c] += bad_q[q, c]
    return bad
