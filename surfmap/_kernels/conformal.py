"""Numba kernels for the discrete conformal map (vertex scaling with intrinsic Delaunay flips).

Private: arrays and scalars only, no validation. The triangulation is a face array ``F`` (m, 3)
plus half-edge arrays indexed by ``h = 3 f + k``: half-edge ``h`` runs from ``F[f, k]`` to
``F[f, (k + 1) % 3]`` and lies opposite corner ``(k + 2) % 3``. ``twin[h]`` is the half-edge
of the neighbouring face on the same edge (-1 on the boundary). ``lam[h]`` is the logarithm of
the *base* length of the edge; the current length is ``exp(lam[h] + (u[a] + u[b]) / 2)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .sparse import sorted_unique_rows

_PI = np.pi


@njit(cache=True)
def clausen2(x):
    """Clausen function Cl2(x) for x in [0, 2 pi] (odd, 2 pi periodic)."""
    sign = 1.0
    if x > _PI:
        x = 2.0 * _PI - x
        sign = -1.0
    if x <= 0.0:
        return 0.0
    # Cl2(x) = x - x log x + sum_k |B_2k| x^(2k+1) / (2k (2k+1)!)   (|x| < 2 pi)
    x2 = x * x
    s = x - x * np.log(x)
    # coefficients |B_2k| / (2k (2k+1)!) for k = 1..; generated from Bernoulli numbers
    term = x
    acc = 0.0
    for k in range(1, 40):
        term *= x2
        c = _CL2_COEF[k - 1]
        add = c * term
        acc += add
        if abs(add) < 1e-17 * abs(s + acc):
            break
    return sign * (s + acc)


def _cl2_coefficients(nk=40):
    from fractions import Fraction
    from math import comb, factorial

    B = [Fraction(1)]
    for m in range(1, 2 * nk + 1):
        B.append(-sum(comb(m + 1, j) * B[j] for j in range(m)) / (m + 1))
    out = []
    for k in range(1, nk + 1):
        out.append(float(abs(B[2 * k]) / (2 * k * factorial(2 * k + 1))))
    return np.array(out)


_CL2_COEF = _cl2_coefficients()


@njit(cache=True)
def lobachevsky(x):
    """Lobachevsky function L(x) = 1/2 Cl2(2x) for x in [0, pi]."""
    return 0.5 * clausen2(2.0 * x)


@njit(cache=True, inline="always")
def _tri_angles(la, lb, lc):
    """Angles opposite the three lengths (any positive scale), 4 x area, and a validity flag.

    Returns (A, B, C, 4 area, ok). When the triangle inequality fails the angles of the convex
    extension are returned: pi opposite the longest edge, 0 elsewhere.
    """
    # Kahan's Heron with sorted lengths
    a, b, c = la, lb, lc
    if a < b:
        a, b = b, a
    if b < c:
        b, c = c, b
    if a < b:
        a, b = b, a
    prod = (a + (b + c)) * (c - (a - b)) * (c + (a - b)) * (a + (b - c))
    if prod <= 0.0:
        if la >= lb and la >= lc:
            return _PI, 0.0, 0.0, 0.0, False
        if lb >= lc:
            return 0.0, _PI, 0.0, 0.0, False
        return 0.0, 0.0, _PI, 0.0, False
    A4 = np.sqrt(prod)  # 4 * area
    ta = np.arctan2(A4, lb * lb + lc * lc - la * la)
    tb = np.arctan2(A4, lc * lc + la * la - lb * lb)
    tc = np.arctan2(A4, la * la + lb * lb - lc * lc)
    return ta, tb, tc, A4, True


@njit(cache=True)
def evaluate(F, lam, u, Theta, angle_sum, cotw, want_energy):
    """Angles at the metric ``u`` on the current triangulation.

    Fills ``angle_sum`` (n,) with the angle sum at each vertex and ``cotw`` (3m,) with
    1/2 cot of the angle opposite each half-edge (0 for degenerate faces). Returns
    ``(energy, n_invalid)``; the energy is the convex vertex-scaling energy
    ``sum_f [sum_k (2 theta_k - pi) log l_k + 2 L(theta_k)] + sum_i Theta_i u_i`` (0 when
    ``want_energy`` is False).
    """
    m = F.shape[0]
    angle_sum[:] = 0.0
    E = 0.0
    bad = 0
    for f in range(m):
        i0, i1, i2 = F[f, 0], F[f, 1], F[f, 2]
        # log lengths of half-edges 0 (i0->i1, opposite i2), 1 (i1->i2, opp i0), 2 (i2->i0, opp i1)
        g0 = lam[3 * f] + 0.5 * (u[i0] + u[i1])
        g1 = lam[3 * f + 1] + 0.5 * (u[i1] + u[i2])
        g2 = lam[3 * f + 2] + 0.5 * (u[i2] + u[i0])
        gm = max(g0, max(g1, g2))
        l0 = np.exp(g0 - gm)
        l1 = np.exp(g1 - gm)
        l2 = np.exp(g2 - gm)
        # angle at i0 is opposite half-edge 1, at i1 opposite 2, at i2 opposite 0
        t0, t1, t2, A4, ok = _tri_angles(l1, l2, l0)
        if not ok:
            bad += 1
        angle_sum[i0] += t0
        angle_sum[i1] += t1
        angle_sum[i2] += t2
        if ok:
            # cot = (b^2 + c^2 - a^2) / (4 area)
            s0, s1, s2 = l0 * l0, l1 * l1, l2 * l2
            cotw[3 * f] = 0.5 * (s1 + s2 - s0) / A4
            cotw[3 * f + 1] = 0.5 * (s0 + s2 - s1) / A4
            cotw[3 * f + 2] = 0.5 * (s0 + s1 - s2) / A4
        else:
            cotw[3 * f] = 0.0
            cotw[3 * f + 1] = 0.0
            cotw[3 * f + 2] = 0.0
        if want_energy:
            E += (2.0 * t2 - _PI) * g0 + (2.0 * t0 - _PI) * g1 + (2.0 * t1 - _PI) * g2
            E += 2.0 * (lobachevsky(t0) + lobachevsky(t1) + lobachevsky(t2))
    if want_energy:
        for i in range(u.shape[0]):
            E += Theta[i] * u[i]
    return E, bad


@njit(cache=True, inline="always")
def _len(F, lam, u, h):
    f = h // 3
    k = h - 3 * f
    return lam[h] + 0.5 * (u[F[f, k]] + u[F[f, (k + 1) % 3]])


@njit(cache=True)
def _delaunay_value(F, twin, lam, u, h):
    """cos(alpha)/... : (a^2 + b^2 - e^2)/(a b) + (c^2 + d^2 - e^2)/(c d) for edge ``h``.

    Negative means the edge is not Delaunay. Lengths are taken relative to the edge.
    """
    t = twin[h]
    f = h // 3
    k = h - 3 * f
    g = t // 3
    kt = t - 3 * g
    ge = _len(F, lam, u, h)
    ga1 = _len(F, lam, u, 3 * f + (k + 1) % 3) - ge
    ga2 = _len(F, lam, u, 3 * f + (k + 2) % 3) - ge
    gb1 = _len(F, lam, u, 3 * g + (kt + 1) % 3) - ge
    gb2 = _len(F, lam, u, 3 * g + (kt + 2) % 3) - ge
    # (a^2 + b^2 - 1)/(a b) = a/b + b/a - 1/(a b)
    va = np.exp(ga1 - ga2) + np.exp(ga2 - ga1) - np.exp(-ga1 - ga2)
    vb = np.exp(gb1 - gb2) + np.exp(gb2 - gb1) - np.exp(-gb1 - gb2)
    return va + vb


@njit(cache=True)
def _flip(F, twin, lam, u, h, euclidean):
    """Flip the interior edge of half-edge ``h``; Ptolemy lengths (or Euclidean when asked)."""
    t = twin[h]
    f = h // 3
    k = h - 3 * f
    g = t // 3
    kt = t - 3 * g
    i = F[f, k]
    j = F[f, (k + 1) % 3]
    a = F[f, (k + 2) % 3]
    b = F[g, (kt + 2) % 3]
    h_ja = 3 * f + (k + 1) % 3
    h_ai = 3 * f + (k + 2) % 3
    h_ib = 3 * g + (kt + 1) % 3
    h_bj = 3 * g + (kt + 2) % 3
    l_ij = lam[h]
    l_ja = lam[h_ja]
    l_ai = lam[h_ai]
    l_ib = lam[h_ib]
    l_bj = lam[h_bj]
    if euclidean:
        # current (not base) lengths; new base length = current length / exp((u_a + u_b)/2)
        e = np.exp(l_ij + 0.5 * (u[i] + u[j]))
        ja = np.exp(l_ja + 0.5 * (u[j] + u[a]))
        ai = np.exp(l_ai + 0.5 * (u[a] + u[i]))
        ib = np.exp(l_ib + 0.5 * (u[i] + u[b]))
        bj = np.exp(l_bj + 0.5 * (u[b] + u[j]))
        # angle at i in (i, j, a) and in (j, i, b)
        ca = (e * e + ai * ai - ja * ja) / (2.0 * e * ai)
        cb = (e * e + ib * ib - bj * bj) / (2.0 * e * ib)
        ca = min(1.0, max(-1.0, ca))
        cb = min(1.0, max(-1.0, cb))
        sa = np.sqrt(max(0.0, 1.0 - ca * ca))
        sb = np.sqrt(max(0.0, 1.0 - cb * cb))
        cab = ca * cb - sa * sb
        d2 = ai * ai + ib * ib - 2.0 * ai * ib * cab
        l_ab = 0.5 * np.log(max(d2, 1e-300)) - 0.5 * (u[a] + u[b])
    else:
        # Ptolemy: l_ab l_ij = l_ib l_ja + l_bj l_ai (base lengths; the scale factors cancel)
        x = l_ib + l_ja
        y = l_bj + l_ai
        mx = max(x, y)
        l_ab = mx + np.log(np.exp(x - mx) + np.exp(y - mx)) - l_ij
    tw_ja = twin[h_ja]
    tw_ai = twin[h_ai]
    tw_ib = twin[h_ib]
    tw_bj = twin[h_bj]
    # new faces f = (a, i, b): a->i, i->b, b->a ; g = (b, j, a): b->j, j->a, a->b
    F[f, 0] = a
    F[f, 1] = i
    F[f, 2] = b
    F[g, 0] = b
    F[g, 1] = j
    F[g, 2] = a
    f0, f1, f2 = 3 * f, 3 * f + 1, 3 * f + 2
    g0, g1, g2 = 3 * g, 3 * g + 1, 3 * g + 2
    lam[f0] = l_ai
    lam[f1] = l_ib
    lam[f2] = l_ab
    lam[g0] = l_bj
    lam[g1] = l_ja
    lam[g2] = l_ab
    twin[f0] = tw_ai
    twin[f1] = tw_ib
    twin[f2] = g2
    twin[g0] = tw_bj
    twin[g1] = tw_ja
    twin[g2] = f2
    if tw_ai >= 0:
        twin[tw_ai] = f0
    if tw_ib >= 0:
        twin[tw_ib] = f1
    if tw_bj >= 0:
        twin[tw_bj] = g0
    if tw_ja >= 0:
        twin[tw_ja] = g1


@njit(cache=True)
def make_delaunay(F, twin, lam, u, deg, euclidean, tol, max_flips):
    """Flip non-Delaunay interior edges until none is left; returns ``(flips, blocked)``.

    ``euclidean`` selects isometric (intrinsic) flips, otherwise Ptolemy flips, which keep
    the discrete conformal class. ``deg`` (n,) holds the number of edges at each vertex and is
    updated; a flip that would leave a vertex with fewer than 3 edges or make an edge from a
    vertex to itself is not done (counted in ``blocked``). ``flips`` is -1 if ``max_flips``
    is exceeded.
    """
    m = F.shape[0]
    nh = 3 * m
    stack = np.empty(nh, dtype=np.int64)
    queued = np.zeros(nh, dtype=np.bool_)
    top = 0
    for h in range(nh):
        t = twin[h]
        if t > h:
            stack[top] = h
            top += 1
            queued[h] = True
    flips = 0
    blocked = 0
    while top > 0:
        top -= 1
        h = stack[top]
        queued[h] = False
        t = twin[h]
        if t < 0:
            continue
        if _delaunay_value(F, twin, lam, u, h) >= -tol:
            continue
        f = h // 3
        g = t // 3
        k = h - 3 * f
        kt = t - 3 * g
        i = F[f, k]
        j = F[f, (k + 1) % 3]
        a = F[f, (k + 2) % 3]
        b = F[g, (kt + 2) % 3]
        if a == b or deg[i] < 4 or deg[j] < 4:
            blocked += 1
            continue
        _flip(F, twin, lam, u, h, euclidean)
        deg[i] -= 1
        deg[j] -= 1
        deg[a] += 1
        deg[b] += 1
        flips += 1
        if flips > max_flips:
            return -1, blocked
        # re-examine the four outer edges of the quad
        for q in (3 * f, 3 * f + 1, 3 * g, 3 * g + 1):
            tq = twin[q]
            if tq < 0:
                continue
            r = min(tq, q)
            if not queued[r]:
                queued[r] = True
                stack[top] = r
                top += 1
    return flips, blocked


@njit(cache=True)
def edge_degrees(F, twin, n):
    """Number of edges at each vertex (each interior edge counted once)."""
    deg = np.zeros(n, dtype=np.int64)
    for h in range(twin.shape[0]):
        t = twin[h]
        if t < 0 or h < t:
            f = h // 3
            k = h - 3 * f
            deg[F[f, k]] += 1
            deg[F[f, (k + 1) % 3]] += 1
    return deg


@njit(cache=True)
def build_twins(F, n):
    """Twin half-edges from a face array (boundary half-edges get -1).

    Returns ``(twin, ok)``; ``ok`` is False if an edge is shared by more than two faces or
    two faces use it in the same direction (inconsistent orientation).
    """
    m = F.shape[0]
    nh = 3 * m
    key = np.empty(nh, dtype=np.int64)
    for f in range(m):
        for k in range(3):
            a = F[f, k]
            b = F[f, (k + 1) % 3]
            lo = min(a, b)
            hi = max(a, b)
            key[3 * f + k] = lo * n + hi
    order = np.argsort(key, kind="mergesort")
    twin = np.full(nh, -1, dtype=np.int64)
    ok = True
    p = 0
    while p < nh:
        q = p + 1
        while q < nh and key[order[q]] == key[order[p]]:
            q += 1
        cnt = q - p
        if cnt == 2:
            h1 = order[p]
            h2 = order[p + 1]
            f1, k1 = h1 // 3, h1 % 3
            f2, k2 = h2 // 3, h2 % 3
            if F[f1, k1] == F[f2, k2]:
                ok = False
            twin[h1] = h2
            twin[h2] = h1
        elif cnt > 2:
            ok = False
        p = q
    return twin, ok


@njit(cache=True)
def csr_pattern(F, n):
    """CSR pattern of the cotangent Laplacian of triangulation ``F`` and, per half-edge, the
    data slots of entries (a, b), (b, a), (a, a), (b, b) for half-edge a -> b.

    Returns ``(indptr, indices, slots)`` with ``slots`` (3m, 4).
    """
    m = F.shape[0]
    nh = 3 * m
    # neighbours per vertex (both directions), plus the diagonal
    deg = np.ones(n, dtype=np.int64)
    for h in range(nh):
        f = h // 3
        k = h - 3 * f
        a = F[f, k]
        b = F[f, (k + 1) % 3]
        deg[a] += 1
        deg[b] += 1
    ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + deg[i]
    raw = np.empty(ptr[n], dtype=np.int64)
    fill = ptr[:-1].copy()
    for i in range(n):
        raw[fill[i]] = i
        fill[i] += 1
    for h in range(nh):
        f = h // 3
        k = h - 3 * f
        a = F[f, k]
        b = F[f, (k + 1) % 3]
        raw[fill[a]] = b
        fill[a] += 1
        raw[fill[b]] = a
        fill[b] += 1
    indptr, indices = sorted_unique_rows(ptr, raw)
    slots = np.empty((nh, 4), dtype=np.int64)
    for h in range(nh):
        f = h // 3
        k = h - 3 * f
        a = F[f, k]
        b = F[f, (k + 1) % 3]
        slots[h, 0] = indptr[a] + np.searchsorted(indices[indptr[a] : indptr[a + 1]], b)
        slots[h, 1] = indptr[b] + np.searchsorted(indices[indptr[b] : indptr[b + 1]], a)
        slots[h, 2] = indptr[a] + np.searchsorted(indices[indptr[a] : indptr[a + 1]], a)
        slots[h, 3] = indptr[b] + np.searchsorted(indices[indptr[b] : indptr[b + 1]], b)
    return indptr, indices, slots


@njit(cache=True)
def csr_values(slots, cotw, nnz):
    """Values of the cotangent Laplacian in the pattern of :func:`csr_pattern`."""
    data = np.zeros(nnz, dtype=np.float64)
    for h in range(slots.shape[0]):
        w = cotw[h]
        data[slots[h, 0]] -= w
        data[slots[h, 1]] -= w
        data[slots[h, 2]] += w
        data[slots[h, 3]] += w
    return data


@njit(cache=True)
def layout(F, twin, lam, u, n, seed):
    """Develop the flat metric into the plane by a breadth-first walk over the faces.

    Returns ``(P, placed_count)`` with ``P`` (n, 2); every face is laid out positively
    oriented. Vertices are placed from the first face that reaches them.
    """
    m = F.shape[0]
    P = np.zeros((n, 2), dtype=np.float64)
    placed = np.zeros(n, dtype=np.bool_)
    seen = np.zeros(m, dtype=np.bool_)
    queue = np.empty(m, dtype=np.int64)
    # seed face: lengths relative to its first edge
    f = seed
    i0, i1, i2 = F[f, 0], F[f, 1], F[f, 2]
    L01 = np.exp(_len(F, lam, u, 3 * f))
    L12 = np.exp(_len(F, lam, u, 3 * f + 1))
    L20 = np.exp(_len(F, lam, u, 3 * f + 2))
    P[i0, 0] = 0.0
    P[i0, 1] = 0.0
    P[i1, 0] = L01
    P[i1, 1] = 0.0
    c = (L01 * L01 + L20 * L20 - L12 * L12) / (2.0 * L01 * L20)
    c = min(1.0, max(-1.0, c))
    P[i2, 0] = L20 * c
    P[i2, 1] = L20 * np.sqrt(max(0.0, 1.0 - c * c))
    placed[i0] = True
    placed[i1] = True
    placed[i2] = True
    seen[f] = True
    queue[0] = f
    head = 0
    tail = 1
    count = 3
    while head < tail:
        f = queue[head]
        head += 1
        for k in range(3):
            h = 3 * f + k
            t = twin[h]
            if t < 0:
                continue
            g = t // 3
            if seen[g]:
                continue
            seen[g] = True
            queue[tail] = g
            tail += 1
            kt = t - 3 * g
            b = F[g, kt]  # t runs b -> a
            a = F[g, (kt + 1) % 3]
            c3 = F[g, (kt + 2) % 3]
            if placed[c3]:
                continue
            lab = np.exp(_len(F, lam, u, t))
            lac = np.exp(_len(F, lam, u, 3 * g + (kt + 1) % 3))
            lcb = np.exp(_len(F, lam, u, 3 * g + (kt + 2) % 3))
            dx = P[a, 0] - P[b, 0]
            dy = P[a, 1] - P[b, 1]
            d = np.sqrt(dx * dx + dy * dy)
            dx /= d
            dy /= d
            cb = (lab * lab + lcb * lcb - lac * lac) / (2.0 * lab * lcb)
            cb = min(1.0, max(-1.0, cb))
            sb = np.sqrt(max(0.0, 1.0 - cb * cb))
            # rotate b->a direction counter-clockwise by the angle at b
            P[c3, 0] = P[b, 0] + lcb * (cb * dx - sb * dy)
            P[c3, 1] = P[b, 1] + lcb * (sb * dx + cb * dy)
            placed[c3] = True
            count += 1
    return P, count


@njit(cache=True)
def signed_areas(P, F):
    m = F.shape[0]
    out = np.empty(m, dtype=np.float64)
    for f in range(m):
        a, b, c = F[f, 0], F[f, 1], F[f, 2]
        out[f] = 0.5 * ((P[b, 0] - P[a, 0]) * (P[c, 1] - P[a, 1]) - (P[b, 1] - P[a, 1]) * (P[c, 0] - P[a, 0]))
    return out


@njit(cache=True)
def csr_matvec(indptr, indices, data, x):
    n = indptr.shape[0] - 1
    y = np.empty(n)
    for i in range(n):
        s = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            s += data[p] * x[indices[p]]
        y[i] = s
    return y


@njit(cache=True)
def pcg_update(x, r, p, Ap, rz):
    """One CG update: x += a p, r -= a Ap; returns ``(a, |r|)``."""
    pAp = 0.0
    for i in range(x.shape[0]):
        pAp += p[i] * Ap[i]
    a = rz / pAp
    rr = 0.0
    for i in range(x.shape[0]):
        x[i] += a * p[i]
        r[i] -= a * Ap[i]
        rr += r[i] * r[i]
    return a, np.sqrt(rr)


@njit(cache=True)
def pcg_direction(p, z, r, rz_old):
    """p = z + (r.z / rz_old) p; returns r.z."""
    rz = 0.0
    for i in range(r.shape[0]):
        rz += r[i] * z[i]
    beta = rz / rz_old
    for i in range(r.shape[0]):
        p[i] = z[i] + beta * p[i]
    return rz


@njit(cache=True)
def disk_topology(F, twin, n):
    """Topology of a triangulation from its twins.

    Returns ``(n_components, n_boundary_loops, pinched, loop)``: edge-connected face components,
    boundary loops, whether a vertex has more than one outgoing boundary half-edge, and the
    first boundary loop in the order of the faces' orientation (interior on the left).
    """
    m = F.shape[0]
    # components by BFS over twins
    comp = np.full(m, -1, dtype=np.int64)
    queue = np.empty(m, dtype=np.int64)
    nc = 0
    for s in range(m):
        if comp[s] >= 0:
            continue
        comp[s] = nc
        queue[0] = s
        head, tail = 0, 1
        while head < tail:
            f = queue[head]
            head += 1
            for k in range(3):
                t = twin[3 * f + k]
                if t >= 0 and comp[t // 3] < 0:
                    comp[t // 3] = nc
                    queue[tail] = t // 3
                    tail += 1
        nc += 1
    nxt = np.full(n, -1, dtype=np.int64)
    pinched = False
    nbh = 0
    for h in range(3 * m):
        if twin[h] < 0:
            f = h // 3
            k = h - 3 * f
            a = F[f, k]
            if nxt[a] >= 0:
                pinched = True
            nxt[a] = F[f, (k + 1) % 3]
            nbh += 1
    seen = np.zeros(n, dtype=np.bool_)
    loops = 0
    first = np.empty(0, dtype=np.int64)
    if pinched:
        return nc, -1, True, first
    for v in range(n):
        if nxt[v] < 0 or seen[v]:
            continue
        loops += 1
        cnt = 0
        w = v
        while not seen[w]:
            seen[w] = True
            cnt += 1
            w = nxt[w]
        if loops == 1:
            first = np.empty(cnt, dtype=np.int64)
            w = v
            for i in range(cnt):
                first[i] = w
                w = nxt[w]
    return nc, loops, False, first


@njit(cache=True)
def untangle_energy(Q, F, Xinv, eps, theta, grad):
    """Regularised foldover-free energy (Garanzha et al. 2021) of the faces ``F`` laid out at
    ``Q`` (n, 2) against reference triangles with inverse edge matrices ``Xinv`` (m, 2, 2):
    per face ``((1 - theta) |J|^2 + theta (1 + det^2)) / chi(det)``, ``chi(d) = (d + sqrt(eps^2
    + d^2)) / 2`` evaluated without cancellation. Writes the gradient into ``grad`` (n, 2) and
    returns ``(energy, min det)``."""
    grad[:] = 0.0
    E = 0.0
    mindet = np.inf
    for f in range(F.shape[0]):
        a, b, c = F[f, 0], F[f, 1], F[f, 2]
        d00 = Q[b, 0] - Q[a, 0]
        d10 = Q[b, 1] - Q[a, 1]
        d01 = Q[c, 0] - Q[a, 0]
        d11 = Q[c, 1] - Q[a, 1]
        x00, x01, x10, x11 = Xinv[f, 0, 0], Xinv[f, 0, 1], Xinv[f, 1, 0], Xinv[f, 1, 1]
        j00 = d00 * x00 + d01 * x10
        j01 = d00 * x01 + d01 * x11
        j10 = d10 * x00 + d11 * x10
        j11 = d10 * x01 + d11 * x11
        det = j00 * j11 - j01 * j10
        mindet = min(mindet, det)
        tr = j00 * j00 + j01 * j01 + j10 * j10 + j11 * j11
        root = np.sqrt(eps * eps + det * det)
        if det >= 0.0:
            chi = 0.5 * (det + root)
        else:
            chi = 0.5 * eps * eps / (root - det)
        dchi = chi / root
        e = ((1.0 - theta) * tr + theta * (1.0 + det * det)) / chi
        E += e
        c1 = (1.0 - theta) * 2.0 / chi
        c2 = (theta * 2.0 * det - e * dchi) / chi
        # dE/dJ = c1 J + c2 cof(J); dE/dD = dE/dJ Xinv^T
        g00 = c1 * j00 + c2 * j11
        g01 = c1 * j01 - c2 * j10
        g10 = c1 * j10 - c2 * j01
        g11 = c1 * j11 + c2 * j00
        h00 = g00 * x00 + g01 * x01  # column 0: corner b
        h10 = g10 * x00 + g11 * x01
        h01 = g00 * x10 + g01 * x11  # column 1: corner c
        h11 = g10 * x10 + g11 * x11
        grad[b, 0] += h00
        grad[b, 1] += h10
        grad[c, 0] += h01
        grad[c, 1] += h11
        grad[a, 0] -= h00 + h01
        grad[a, 1] -= h10 + h11
    return E, mindet
