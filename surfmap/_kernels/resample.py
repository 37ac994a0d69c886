"""Numba kernels of :mod:`surfmap.resample`: point location on a spherical triangle mesh.

Private: arrays and scalars in, arrays out; the public functions validate and convert.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _closest_on_triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz, w):
    """Closest point of triangle abc to p: writes its barycentric coordinates to ``w``, returns the
    squared distance (Ericson, Real-Time Collision Detection, 5.1.5)."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    if d1 <= 0.0 and d2 <= 0.0:
        w[0], w[1], w[2] = 1.0, 0.0, 0.0
    else:
        bpx, bpy, bpz = px - bx, py - by, pz - bz
        d3 = abx * bpx + aby * bpy + abz * bpz
        d4 = acx * bpx + acy * bpy + acz * bpz
        cpx, cpy, cpz = px - cx, py - cy, pz - cz
        d5 = abx * cpx + aby * cpy + abz * cpz
        d6 = acx * cpx + acy * cpy + acz * cpz
        vc = d1 * d4 - d3 * d2
        vb = d5 * d2 - d1 * d6
        va = d3 * d6 - d5 * d4
        if d3 >= 0.0 and d4 <= d3:
            w[0], w[1], w[2] = 0.0, 1.0, 0.0
        elif d6 >= 0.0 and d5 <= d6:
            w[0], w[1], w[2] = 0.0, 0.0, 1.0
        elif vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
            t = d1 / (d1 - d3)
            w[0], w[1], w[2] = 1.0 - t, t, 0.0
        elif vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
            t = d2 / (d2 - d6)
            w[0], w[1], w[2] = 1.0 - t, 0.0, t
        elif va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
            t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
            w[0], w[1], w[2] = 0.0, 1.0 - t, t
        else:
            den = va + vb + vc
            if den <= 0.0:  # degenerate triangle: fall back to its first vertex
                w[0], w[1], w[2] = 1.0, 0.0, 0.0
            else:
                v = vb / den
                u = vc / den
                w[0], w[1], w[2] = 1.0 - v - u, v, u
    qx = w[0] * ax + w[1] * bx + w[2] * cx - px
    qy = w[0] * ay + w[1] * by + w[2] * cy - py
    qz = w[0] * az + w[1] * bz + w[2] * cz - pz
    return qx * qx + qy * qy + qz * qz


@nb.njit(cache=True, parallel=True)
def locate_on_mesh(V, F, vf_ptr, vf_idx, Q, start, max_steps, face_out, w_out):
    """Closest point of a triangle mesh to each query point, found by a local descent.

    Starts from the faces around ``start[i]`` (the mesh vertex nearest to query ``i``), then
    repeatedly examines the faces around the three vertices of the best face so far until no
    face is closer (at most ``max_steps`` rounds). On a sphere mesh whose vertices lie on the
    sphere this finds the face that the query's radial projection hits.

    Parameters
    ----------
    V : (n, 3) float64
    F : (m, 3) int64
    vf_ptr, vf_idx : CSR of the faces around each vertex ((n + 1,), (3m,) int64)
    Q : (q, 3) float64
    start : (q,) int64
    max_steps : int
    face_out : (q,) int64, out
    w_out : (q, 3) float64, out
        Barycentric coordinates of the closest point in ``F[face_out]``.

    Returns
    -------
    steps : (q,) int64
        Descent rounds each query took (``max_steps`` means it did not settle).
    """
    nq = Q.shape[0]
    steps = np.zeros(nq, dtype=np.int64)
    for i in nb.prange(nq):
        px, py, pz = Q[i, 0], Q[i, 1], Q[i, 2]
        w = np.empty(3, dtype=np.float64)
        best_d = np.inf
        best_f = -1
        bw0, bw1, bw2 = 1.0, 0.0, 0.0
        centre = start[i]
        for t in range(vf_ptr[centre], vf_ptr[centre + 1]):
            f = vf_idx[t]
            a, b, c = F[f, 0], F[f, 1], F[f, 2]
            d = _closest_on_triangle(px, py, pz, V[a, 0], V[a, 1], V[a, 2], V[b, 0], V[b, 1], V[b, 2],
                                     V[c, 0], V[c, 1], V[c, 2], w)
            if d < best_d or (d == best_d and f < best_f):
                best_d, best_f = d, f
                bw0, bw1, bw2 = w[0], w[1], w[2]
        k = 0
        while k < max_steps:
            k += 1
            improved = False
            g = best_f
            for corner in range(3):
                vtx = F[g, corner]
                for t in range(vf_ptr[vtx], vf_ptr[vtx + 1]):
                    f = vf_idx[t]
                    a, b, c = F[f, 0], F[f, 1], F[f, 2]
                    d = _closest_on_triangle(px, py, pz, V[a, 0], V[a, 1], V[a, 2], V[b, 0], V[b, 1],
                                             V[b, 2], V[c, 0], V[c, 1], V[c, 2], w)
                    if d < best_d:
                        best_d, best_f = d, f
                        bw0, bw1, bw2 = w[0], w[1], w[2]
                        improved = True
            if not improved:
                break
        steps[i] = k
        face_out[i] = best_f
        w_out[i, 0] = bw0
        w_out[i, 1] = bw1
        w_out[i, 2] = bw2
    return steps
