"""Numba kernels for semi-discrete optimal transport on the unit square (power diagrams).

Convention (power-distance, "w-convention" of ALGORITHMS 2.2): the cell of site ``i`` is

    W_i = {x in [0,1]^2 : |x - p_i|^2 - w_i <= |x - p_j|^2 - w_j  for all j},

i.e. the half-planes ``2 <x, p_j - p_i> <= |p_j|^2 - |p_i|^2 - (w_j - w_i)``. With this convention
``d|W_i|/dw_j = -|e_ij| / (2 |p_i - p_j|)`` for neighbours ``j != i`` (the factor 1/2 of the
w-convention), and the diagonal is minus the off-diagonal row sum.

Cells are built by clipping the unit square with the half-planes of the site's neighbours in the
regular triangulation (any superset of them gives the same cell). Every polygon edge carries a
label: the neighbour slot that created it (>= 0), or ``-1 - s`` for side ``s`` of the square
(0 bottom, 1 right, 2 top, 3 left). Arrays only; validation happens in ``surfmap.transport``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .sparse import sorted_unique_rows

_FLAGS = {"cache": True, "nogil": True}  # no fastmath: the clipping relies on exact sign tests


@njit(**_FLAGS)
def neighbour_lists(simplices, n):
    """CSR adjacency ``(ptr (n+1,), idx)`` of the edges of the triangles ``simplices`` (t, 3).

    Neighbours of each site are sorted and unique; sites in no triangle get an empty list.
    """
    t = simplices.shape[0]
    deg = np.zeros(n + 1, dtype=np.int64)
    for f in range(t):
        for k in range(3):
            deg[simplices[f, k] + 1] += 2
    ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        ptr[i + 1] = ptr[i] + deg[i + 1]
    raw = np.empty(ptr[n], dtype=np.int64)
    fill = ptr[:-1].copy()
    for f in range(t):
        for k in range(3):
            a = simplices[f, k]
            b = simplices[f, (k + 1) % 3]
            c = simplices[f, (k + 2) % 3]
            raw[fill[a]] = b
            raw[fill[a] + 1] = c
            fill[a] += 2
    return sorted_unique_rows(ptr, raw)


@njit(**_FLAGS)
def _clip(px, py, lab, cnt, ax, ay, b, label, qx, qy, qlab):
    """Clip the convex polygon (px, py, lab)[:cnt] by ``ax*x + ay*y <= b`` into (qx, qy, qlab)."""
    m = 0
    for k in range(cnt):
        k1 = k + 1 if k + 1 < cnt else 0
        s0 = ax * px[k] + ay * py[k] - b
        s1 = ax * px[k1] + ay * py[k1] - b
        if s0 <= 0.0:
            qx[m] = px[k]
            qy[m] = py[k]
            qlab[m] = lab[k]
            m += 1
            if s1 > 0.0:
                t = s0 / (s0 - s1)
                qx[m] = px[k] + t * (px[k1] - px[k])
                qy[m] = py[k] + t * (py[k1] - py[k])
                qlab[m] = label
                m += 1
        elif s1 <= 0.0:
            t = s0 / (s0 - s1)
            qx[m] = px[k] + t * (px[k1] - px[k])
            qy[m] = py[k] + t * (py[k1] - py[k])
            qlab[m] = lab[k]
            m += 1
    return m


@njit(**_FLAGS)
def power_cells(P, w, ptr, idx, hidden):
    """Power cells of the sites ``P`` (n, 2) with weights ``w`` (n,), clipped to [0, 1]^2.

    Parameters
    ----------
    P : (n, 2) float64
    w : (n,) float64
    ptr, idx : CSR neighbour lists (regular-triangulation edges, or a superset)
    hidden : (n,) bool
        Sites in no regular triangle: their cell is empty.

    Returns
    -------
    area : (n,) float64
    centroid : (n, 2) float64 (the site itself for an empty cell)
    dual : (len(idx),) float64
        Length of the cell edge shared with neighbour ``idx[k]`` (0 when they do not touch).
    side_len : (n, 4) float64
        Length of the cell's intersection with each side of the square.
    side_mid : (n, 4) float64
        Midpoint parameter (x for bottom/top, y for left/right) of that intersection; NaN if none.
    """
    n = P.shape[0]
    area = np.zeros(n)
    cen = np.empty((n, 2))
    dual = np.zeros(idx.shape[0])
    side_len = np.zeros((n, 4))
    side_mid = np.full((n, 4), np.nan)
    maxdeg = 0
    for i in range(n):
        maxdeg = max(maxdeg, ptr[i + 1] - ptr[i])
    cap = maxdeg + 5
    ax_ = np.empty(cap)
    ay_ = np.empty(cap)
    al = np.empty(cap, dtype=np.int64)
    bx_ = np.empty(cap)
    by_ = np.empty(cap)
    bl = np.empty(cap, dtype=np.int64)
    for i in range(n):
        cen[i, 0] = P[i, 0]
        cen[i, 1] = P[i, 1]
        if hidden[i]:
            continue
        # in coordinates centred at the site: the half-plane offsets of close neighbours keep
        # their relative precision (absolute coordinates lose it for cells of area ~1e-9)
        pix, piy = P[i, 0], P[i, 1]
        ax_[0], ay_[0], al[0] = -pix, -piy, -1
        ax_[1], ay_[1], al[1] = 1.0 - pix, -piy, -2
        ax_[2], ay_[2], al[2] = 1.0 - pix, 1.0 - piy, -3
        ax_[3], ay_[3], al[3] = -pix, 1.0 - piy, -4
        cnt = 4
        flip = False
        for k in range(ptr[i], ptr[i + 1]):
            j = idx[k]
            dx = P[j, 0] - pix
            dy = P[j, 1] - piy
            a_x = 2.0 * dx
            a_y = 2.0 * dy
            b = dx * dx + dy * dy - (w[j] - w[i])
            if flip:
                cnt = _clip(bx_, by_, bl, cnt, a_x, a_y, b, k - ptr[i], ax_, ay_, al)
            else:
                cnt = _clip(ax_, ay_, al, cnt, a_x, a_y, b, k - ptr[i], bx_, by_, bl)
            flip = not flip
            if cnt < 3:
                cnt = 0
                break
        if cnt < 3:
            continue
        if flip:
            px, py, lab = bx_, by_, bl
        else:
            px, py, lab = ax_, ay_, al
        # shoelace area and centroid, relative to the site
        A2 = 0.0
        cx = 0.0
        cy = 0.0
        for k in range(cnt):
            k1 = k + 1 if k + 1 < cnt else 0
            x0, y0 = px[k], py[k]
            x1, y1 = px[k1], py[k1]
            cr = x0 * y1 - x1 * y0
            A2 += cr
            cx += (x0 + x1) * cr
            cy += (y0 + y1) * cr
            L = lab[k]
            dx = px[k1] - px[k]
            dy = py[k1] - py[k]
            length = np.sqrt(dx * dx + dy * dy)
            if L >= 0:
                dual[ptr[i] + L] += length
            else:
                s = -1 - L
                if length > 0.0:
                    side_len[i, s] += length
                    if s == 0 or s == 2:
                        side_mid[i, s] = pix + 0.5 * (px[k] + px[k1])
                    else:
                        side_mid[i, s] = piy + 0.5 * (py[k] + py[k1])
        if A2 <= 0.0:
            continue
        area[i] = 0.5 * A2
        cen[i, 0] = pix + cx / (3.0 * A2)
        cen[i, 1] = piy + cy / (3.0 * A2)
    return area, cen, dual, side_len, side_mid


@njit(**_FLAGS)
def hessian_csr(P, ptr, idx, dual, pin):
    """The Hessian ``d areas / d weights`` as CSR arrays ``(indptr, indices, data)`` (n, n).

    Off-diagonal ``(i, j)``: ``-|e_ij| / (2 |p_i - p_j|)`` with ``|e_ij|`` the mean of the dual
    length seen from both sides (so the matrix is exactly symmetric; being symmetric, the arrays
    are also its CSC form). Diagonal: minus the off-diagonal row sum, and for ``pin >= 0`` the
    diagonal entry of ``pin`` doubled, which pins the gauge (see ``transport._newton_step``).
    Rows of ``idx`` must be sorted (as ``neighbour_lists`` returns them).
    """
    n = P.shape[0]
    indptr = np.empty(n + 1, dtype=np.int64)
    indices = np.empty(idx.shape[0] + n, dtype=np.int64)
    data = np.empty(idx.shape[0] + n)
    m = 0
    indptr[0] = 0
    for i in range(n):
        diag_at = -1
        s = 0.0
        for k in range(ptr[i], ptr[i + 1]):
            j = idx[k]
            if diag_at < 0 and j > i:
                diag_at = m
                indices[m] = i
                m += 1
            # the same edge seen from j
            lj = 0.0
            lo = ptr[j]
            hi = ptr[j + 1]
            while lo < hi:
                mid = (lo + hi) // 2
                if idx[mid] < i:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < ptr[j + 1] and idx[lo] == i:
                lj = dual[lo]
            ell = 0.5 * (dual[k] + lj)
            dx = P[j, 0] - P[i, 0]
            dy = P[j, 1] - P[i, 1]
            d = np.sqrt(dx * dx + dy * dy)
            v = -ell / (2.0 * d) if d > 0.0 else 0.0
            indices[m] = j
            data[m] = v
            s += v
            m += 1
        if diag_at < 0:
            diag_at = m
            indices[m] = i
            m += 1
        data[diag_at] = -s if i != pin else -2.0 * s
        indptr[i + 1] = m
    return indptr, indices, data


@njit(**_FLAGS)
def nested_dissection(P, ptr, idx, leaf):
    """Fill-reducing order (n,) of a planar graph on the points ``P`` (n, 2) with CSR adjacency
    ``(ptr, idx)``: geometric nested dissection. Each part is cut at the median of its longer
    side; the vertices of the lower half with a neighbour in the upper half form the separator,
    ordered after both halves (recursively ordered the same way). Parts of at most ``leaf``
    vertices keep their order.
    """
    n = P.shape[0]
    items = np.arange(n)
    order = np.empty(n, dtype=np.int64)
    seg = np.full(n, -1, dtype=np.int64)  # id of the part a vertex is in while that part is cut
    upper = np.zeros(n, dtype=np.bool_)
    sep = np.zeros(n, dtype=np.bool_)
    buf = np.empty(n, dtype=np.int64)
    coord = np.empty(n)
    # stack of parts: items[lo:hi] go to order[out:out + hi - lo]
    stack = np.empty((2 * n + 2, 3), dtype=np.int64)
    stack[0, 0], stack[0, 1], stack[0, 2] = 0, n, 0
    top = 1
    part = 0
    while top > 0:
        top -= 1
        lo, hi, out = stack[top, 0], stack[top, 1], stack[top, 2]
        m = hi - lo
        if m <= leaf:
            for k in range(m):
                order[out + k] = items[lo + k]
            continue
        x0 = x1 = P[items[lo], 0]
        y0 = y1 = P[items[lo], 1]
        for k in range(lo, hi):
            v = items[k]
            x0 = min(x0, P[v, 0])
            x1 = max(x1, P[v, 0])
            y0 = min(y0, P[v, 1])
            y1 = max(y1, P[v, 1])
        ax = 0 if x1 - x0 >= y1 - y0 else 1
        for k in range(lo, hi):
            coord[k - lo] = P[items[k], ax]
        med = np.median(coord[:m])
        part += 1
        for k in range(lo, hi):
            v = items[k]
            seg[v] = part
            upper[v] = P[v, ax] > med
        na = nb = ns = 0
        for k in range(lo, hi):
            v = items[k]
            s = False
            if not upper[v]:
                for h in range(ptr[v], ptr[v + 1]):
                    u = idx[h]
                    if seg[u] == part and upper[u]:
                        s = True
                        break
            sep[v] = s
            if s:
                ns += 1
            elif upper[v]:
                nb += 1
            else:
                na += 1
        if na == 0 or nb == 0:  # no proper cut (e.g. all on the median line): keep the order
            for k in range(m):
                order[out + k] = items[lo + k]
            continue
        ia, ib, is_ = 0, na, na + nb
        for k in range(lo, hi):
            v = items[k]
            if sep[v]:
                buf[is_] = v
                is_ += 1
            elif upper[v]:
                buf[ib] = v
                ib += 1
            else:
                buf[ia] = v
                ia += 1
        for k in range(m):
            items[lo + k] = buf[k]
        for k in range(ns):
            order[out + na + nb + k] = buf[na + nb + k]
        stack[top, 0], stack[top, 1], stack[top, 2] = lo + na, lo + na + nb, out + na
        stack[top + 1, 0], stack[top + 1, 1], stack[top + 1, 2] = lo, lo + na, out
        top += 2
    return order


@njit(**_FLAGS)
def permute_symmetric(indptr, indices, data, order):
    """CSR arrays of ``A[order][:, order]`` for a CSR matrix ``A`` with a symmetric pattern
    (column indices sorted within each row)."""
    n = order.shape[0]
    inv = np.empty(n, dtype=np.int64)
    for r in range(n):
        inv[order[r]] = r
    optr = np.empty(n + 1, dtype=np.int64)
    oind = np.empty(indices.shape[0], dtype=np.int64)
    odat = np.empty(data.shape[0])
    optr[0] = 0
    m = 0
    for r in range(n):
        i = order[r]
        start = m
        for h in range(indptr[i], indptr[i + 1]):
            c = inv[indices[h]]
            v = data[h]
            b = m - 1
            while b >= start and oind[b] > c:
                oind[b + 1] = oind[b]
                odat[b + 1] = odat[b]
                b -= 1
            oind[b + 1] = c
            odat[b + 1] = v
            m += 1
        optr[r + 1] = m
    return optr, oind, odat


@njit(**_FLAGS)
def dot(a, b):
    """``sum(a * b)`` without BLAS (BLAS threads spin badly on a loaded machine for short vectors)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@njit(**_FLAGS)
def cg_update(x, r, p, Ap, alpha, scale):
    """``x += alpha p``, ``r -= alpha Ap`` in place; returns ``max |r_i| / scale_i``."""
    s = 0.0
    for i in range(x.shape[0]):
        x[i] += alpha * p[i]
        r[i] -= alpha * Ap[i]
        s = max(s, abs(r[i]) / scale[i])
    return s


@njit(**_FLAGS)
def cg_direction(p, z, beta):
    """``p = z + beta p`` in place."""
    for i in range(p.shape[0]):
        p[i] = z[i] + beta * p[i]


@njit(**_FLAGS)
def signed_areas(UV, F):
    """Signed area (m,) of each face of the planar map ``UV`` (n, 2)."""
    m = F.shape[0]
    out = np.empty(m)
    for f in range(m):
        a, b, c = F[f, 0], F[f, 1], F[f, 2]
        e1x = UV[b, 0] - UV[a, 0]
        e1y = UV[b, 1] - UV[a, 1]
        e2x = UV[c, 0] - UV[a, 0]
        e2y = UV[c, 1] - UV[a, 1]
        out[f] = 0.5 * (e1x * e2y - e1y * e2x)
    return out


# ---------------------------------------------------------------------------------------------
# regular triangulation kept up to date by edge flips (weights change little between Newton trials)


@njit(**_FLAGS)
def triangle_adjacency(T):
    """``N`` (t, 3): the triangle across the edge opposite corner k of each triangle (-1 on the hull).

    ``T`` (t, 3) must be consistently oriented (counter-clockwise).
    """
    t = T.shape[0]
    n = 0
    for f in range(t):
        for k in range(3):
            n = max(n, T[f, k] + 1)
    keys = np.empty(3 * t, dtype=np.int64)
    for f in range(t):
        for k in range(3):
            a = T[f, (k + 1) % 3]
            b = T[f, (k + 2) % 3]
            keys[3 * f + k] = min(a, b) * n + max(a, b)
    order = np.argsort(keys, kind="mergesort")
    N = np.full((t, 3), -1, dtype=np.int64)
    h = 0
    while h < 3 * t:
        e = order[h]
        if h + 1 < 3 * t and keys[order[h + 1]] == keys[e]:
            e2 = order[h + 1]
            N[e // 3, e % 3] = e2 // 3
            N[e2 // 3, e2 % 3] = e // 3
            h += 2
        else:
            h += 1
    return N


@njit(**_FLAGS)
def single_boundary_loop(T, N, n):
    """The boundary loop of the oriented triangle mesh ``T`` (t, 3) with adjacency ``N`` (from
    :func:`triangle_adjacency`), when the mesh is simply a disk: every paired edge runs opposite
    ways in its two faces, and the unpaired half-edges form one simple cycle. The loop follows the
    half-edges from the smallest boundary vertex (as ``surfmap.mesh.boundary_loops`` orders it).

    Returns the loop (b,) int64, or an empty array when the mesh is not that simple (the caller
    then falls back to ``surfmap.mesh.boundary_loop`` for the answer or the error).
    """
    t = T.shape[0]
    nxt = np.full(n, -1, dtype=np.int64)
    count = 0
    first = n
    empty = np.empty(0, dtype=np.int64)
    for f in range(t):
        for k in range(3):
            a = T[f, (k + 1) % 3]
            b = T[f, (k + 2) % 3]
            g = N[f, k]
            if g < 0:
                if nxt[a] >= 0:
                    return empty  # two boundary half-edges leave a
                nxt[a] = b
                count += 1
                first = min(first, a)
            else:
                twin = False
                for l in range(3):
                    if T[g, (l + 1) % 3] == b and T[g, (l + 2) % 3] == a:
                        twin = True
                if not twin:
                    return empty  # inconsistent orientation
    if count < 3:
        return empty
    loop = np.empty(count, dtype=np.int64)
    v = first
    for h in range(count):
        if v < 0 or (h > 0 and v == first):
            return empty  # an open chain, or more than one loop
        loop[h] = v
        v = nxt[v]
    if v != first:
        return empty
    return loop


@njit(**_FLAGS)
def _orient(P, a, b, c):
    return (P[b, 0] - P[a, 0]) * (P[c, 1] - P[a, 1]) - (P[b, 1] - P[a, 1]) * (P[c, 0] - P[a, 0])


@njit(**_FLAGS)
def _power_incircle(P, w, a, b, c, d):
    """> 0 when the lifted ``d`` lies below the plane of the lifted CCW triangle (a, b, c)."""
    adx = P[a, 0] - P[d, 0]
    ady = P[a, 1] - P[d, 1]
    bdx = P[b, 0] - P[d, 0]
    bdy = P[b, 1] - P[d, 1]
    cdx = P[c, 0] - P[d, 0]
    cdy = P[c, 1] - P[d, 1]
    az = adx * adx + ady * ady - (w[a] - w[d])
    bz = bdx * bdx + bdy * bdy - (w[b] - w[d])
    cz = cdx * cdx + cdy * cdy - (w[c] - w[d])
    return adx * (bdy * cz - bz * cdy) - ady * (bdx * cz - bz * cdx) + az * (bdx * cdy - bdy * cdx)


@njit(**_FLAGS)
def _incircle_scale(P, w, a, b, c, d):
    """A bound on the rounding error scale of :func:`_power_incircle`."""
    s = 0.0
    z = 0.0
    for v in (a, b, c):
        dx = P[v, 0] - P[d, 0]
        dy = P[v, 1] - P[d, 1]
        s += abs(dx) + abs(dy)
        z += dx * dx + dy * dy + abs(w[v] - w[d])
    return s * s * z


@njit(**_FLAGS)
def _local_of(N, g, f):
    for l in range(3):
        if N[g, l] == f:
            return l
    return -1


@njit(**_FLAGS)
def regularize(P, w, T, N, max_flips):
    """Flip edges of the CCW triangulation (T, N) in place until it is the regular triangulation
    of the weighted sites (Lawson's algorithm on the lifted points).

    Returns the number of flips, or -1 when it gets stuck (an illegal edge that cannot be flipped:
    typically a site that should become hidden) or exceeds ``max_flips``; recompute from scratch then.
    """
    t = T.shape[0]
    stack = np.empty(6 * t + 16, dtype=np.int64)
    top = 0
    for f in range(t):
        for k in range(3):
            if N[f, k] > f:
                stack[top] = 3 * f + k
                top += 1
    flips = 0
    while top > 0:
        top -= 1
        f = stack[top] // 3
        k = stack[top] % 3
        g = N[f, k]
        if g < 0:
            continue
        r = T[f, k]
        p = T[f, (k + 1) % 3]
        q = T[f, (k + 2) % 3]
        l = _local_of(N, g, f)
        s = T[g, l]
        if _power_incircle(P, w, r, p, q, s) <= 0.0:
            continue
        if _orient(P, r, p, s) <= 0.0 or _orient(P, s, q, r) <= 0.0:
            continue  # not convex: checked again in the final pass
        nfq = N[f, (k + 2) % 3]  # across (r, p), opposite q
        nfp = N[f, (k + 1) % 3]  # across (q, r), opposite p
        ngp = N[g, (l + 2) % 3]  # opposite p in g = (s, q, p): across (s, q)
        ngq = N[g, (l + 1) % 3]  # opposite q in g: across (p, s)
        # g = (s, q, p) CCW with s at l: (l+1) -> q, (l+2) -> p
        T[f, 0], T[f, 1], T[f, 2] = r, p, s
        N[f, 0], N[f, 1], N[f, 2] = ngq, g, nfq
        T[g, 0], T[g, 1], T[g, 2] = s, q, r
        N[g, 0], N[g, 1], N[g, 2] = nfp, f, ngp
        if ngq >= 0:
            N[ngq, _local_of(N, ngq, g)] = f
        if nfp >= 0:
            N[nfp, _local_of(N, nfp, f)] = g
        flips += 1
        if flips > max_flips or top + 4 > stack.shape[0]:
            return -1
        stack[top] = 3 * f + 0
        stack[top + 1] = 3 * f + 2
        stack[top + 2] = 3 * g + 0
        stack[top + 3] = 3 * g + 2
        top += 4
    # final pass: every interior edge must be legal
    for f in range(t):
        for k in range(3):
            g = N[f, k]
            if g > f:
                s = T[g, _local_of(N, g, f)]
                a, b, c = T[f, k], T[f, (k + 1) % 3], T[f, (k + 2) % 3]
                if _power_incircle(P, w, a, b, c, s) > 1e-13 * _incircle_scale(P, w, a, b, c, s):
                    return -1
    return flips


# ---------------------------------------------------------------------------------------------
# face-area refinement: nonlinear Gauss-Seidel on sum_f A_f log(rho(a_f) / A_f)^2


@njit(**_FLAGS)
def vertex_faces(F, n):
    """CSR (ptr (n+1,), idx) of the faces around each vertex."""
    m = F.shape[0]
    ptr = np.zeros(n + 1, dtype=np.int64)
    for f in range(m):
        for c in range(3):
            ptr[F[f, c] + 1] += 1
    for i in range(n):
        ptr[i + 1] += ptr[i]
    idx = np.empty(3 * m, dtype=np.int64)
    fill = ptr[:-1].copy()
    for f in range(m):
        for c in range(3):
            v = F[f, c]
            idx[fill[v]] = f
            fill[v] += 1
    return ptr, idx


@njit(**_FLAGS)
def _rho(a, delta):
    """Smooth positive stand-in for the signed area: ~a when a >> delta, ~delta^2/|a| when a < 0."""
    s = np.sqrt(a * a + 4.0 * delta * delta)
    if a >= 0.0:
        r = 0.5 * (a + s)
    else:
        r = 2.0 * delta * delta / (s - a)
    return r, 0.5 * (1.0 + a / s)


@njit(**_FLAGS)
def area_sweeps(UV, F, target, vf_ptr, vf_idx, kind, dirs, bprev, bnext, delta_rel, n_sweeps, omega=1.0):
    """Gauss-Seidel sweeps moving one vertex at a time to lower the face-area energy
    ``sum_f A_f log(rho(a_f)/A_f)^2`` of its incident faces (damped Gauss-Newton step, halved until
    the local energy decreases). A vertex whose faces are all positively oriented never makes one
    flip, so sweeps starting from a fold-free map keep it fold-free; folded faces are pushed out by
    ``rho``. ``kind``: 0 free, 1 slides along ``dirs[i]`` strictly between its neighbours on the
    side, ``bprev[i]`` and ``bnext[i]`` (so the boundary order never changes, folds or not), 2 fixed.
    ``omega`` > 1 over-relaxes
    (the first trial step is ``omega`` times the Gauss-Newton step; halved until the local energy
    decreases, as for ``omega = 1``). Modifies ``UV`` in place.

    Returns the largest vertex move of the last sweep.
    """
    n = UV.shape[0]
    last = 0.0
    nmax = 0
    for i in range(n):
        nmax = max(nmax, vf_ptr[i + 1] - vf_ptr[i])
    an = np.empty(nmax)
    nx = np.empty(nmax)
    ny = np.empty(nmax)
    tg = np.empty(nmax)
    for sweep in range(n_sweeps):
        last = 0.0
        for i in range(n):
            if kind[i] == 2:
                continue
            cnt = 0
            gx = 0.0
            gy = 0.0
            hxx = 0.0
            hxy = 0.0
            hyy = 0.0
            E0 = 0.0
            allpos = True
            for h in range(vf_ptr[i], vf_ptr[i + 1]):
                f = vf_idx[h]
                c = 0
                while F[f, c] != i:
                    c += 1
                j = F[f, (c + 1) % 3]
                k = F[f, (c + 2) % 3]
                a = 0.5 * ((UV[j, 0] - UV[i, 0]) * (UV[k, 1] - UV[i, 1]) - (UV[j, 1] - UV[i, 1]) * (UV[k, 0] - UV[i, 0]))
                ex = 0.5 * (UV[j, 1] - UV[k, 1])
                ey = 0.5 * (UV[k, 0] - UV[j, 0])
                A = target[f]
                r, dr = _rho(a, delta_rel * A)
                L = np.log(r / A)
                E0 += A * L * L
                q = dr / r
                gx += 2.0 * A * L * q * ex
                gy += 2.0 * A * L * q * ey
                hq = 2.0 * A * q * q
                hxx += hq * ex * ex
                hxy += hq * ex * ey
                hyy += hq * ey * ey
                an[cnt] = a
                nx[cnt] = ex
                ny[cnt] = ey
                tg[cnt] = A
                cnt += 1
                if a <= 0.0:
                    allpos = False
            if kind[i] == 1:
                dx, dy = dirs[i, 0], dirs[i, 1]
                g1 = gx * dx + gy * dy
                h1 = hxx * dx * dx + 2.0 * hxy * dx * dy + hyy * dy * dy
                s = -g1 / (h1 * (1.0 + 1e-6) + 1e-300)
                sx, sy = s * dx, s * dy
            else:
                mu = 1e-6 * (hxx + hyy) + 1e-300
                a11 = hxx + mu
                a22 = hyy + mu
                det = a11 * a22 - hxy * hxy
                sx = -(a22 * gx - hxy * gy) / det
                sy = -(-hxy * gx + a11 * gy) / det
            t = omega
            for _ in range(12):
                E1 = 0.0
                ok = True
                for h in range(cnt):
                    a1 = an[h] + t * (nx[h] * sx + ny[h] * sy)
                    if allpos and a1 <= 0.0:
                        ok = False
                        break
                if kind[i] == 1:
                    px = UV[i, 0] + t * sx
                    py = UV[i, 1] + t * sy
                    if px < 0.0 or px > 1.0 or py < 0.0 or py > 1.0:
                        ok = False
                    s_new = px * dirs[i, 0] + py * dirs[i, 1]
                    s_lo = UV[bprev[i], 0] * dirs[i, 0] + UV[bprev[i], 1] * dirs[i, 1]
                    s_hi = UV[bnext[i], 0] * dirs[i, 0] + UV[bnext[i], 1] * dirs[i, 1]
                    if not (s_lo < s_new < s_hi):
                        ok = False
                if not ok:
                    t *= 0.5
                    continue
                for h in range(cnt):
                    a1 = an[h] + t * (nx[h] * sx + ny[h] * sy)
                    r, dr = _rho(a1, delta_rel * tg[h])
                    L = np.log(r / tg[h])
                    E1 += tg[h] * L * L
                if ok and E1 < E0:
                    UV[i, 0] += t * sx
                    UV[i, 1] += t * sy
                    last = max(last, t * np.sqrt(sx * sx + sy * sy))
                    break
                t *= 0.5
    return last
