"""Conformal map of a disk mesh onto the unit square by discrete Ricci (Yamabe) flow.

Discrete conformal maps by vertex scaling (Luo 2004; Springborn-Schroeder-Pinkall 2008):
lengths ``l~_ij = exp((u_i + u_j) / 2) l_ij``. Newton's method minimises the convex energy whose
gradient is the curvature error ``K - K_target`` and whose Hessian is the cotangent Laplacian of
the current metric. The triangulation is kept intrinsically Delaunay by Ptolemy edge flips, which
keep the discrete conformal class and guarantee a solution for any admissible target
(Gillespie, Springborn & Crane 2021, "Discrete conformal equivalence of polyhedral surfaces").
Targets: interior curvature 0, boundary geodesic curvature 0 except pi/2 at four corners, so the
flat metric is a rectangle; corners are chosen by default so that its modulus is 1 (a square).

The flat metric is laid out on the flipped triangulation; all vertices get positions (flips keep
the vertex set), and the input faces drawn on them are checked for orientation and repaired
locally where needed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.optimize import brentq
from scipy.sparse.csgraph import connected_components
from scipy.special import ellipj, ellipk, ellipkm1

from ._kernels import conformal as _k
from ._kernels import transport as _kt
from .exceptions import ConvergenceError, MeshError, ParameterError
from .flatmap import FlatMap
from .mesh import Mesh, edge_lengths

__all__ = ["conformal_map", "dirichlet_modulus"]

log = logging.getLogger(__name__)

try:  # optional: limits BLAS threads inside SuperLU
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    _threadpool_limits = None


def _one_blas_thread(fn):
    """Run ``fn`` with one BLAS thread. SuperLU's supernodes on these 2-D mesh Laplacians are
    small, and threaded BLAS there only burns CPU: fs_LR 32k left, 2 cores shared, 5 runs each:
    CPU 0.75-0.77 s with one thread vs 0.96-1.04 s with the default, wall 0.79-0.96 s vs
    1.05-1.69 s. The results are the same."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = contextlib.nullcontext() if _threadpool_limits is None else _threadpool_limits(1, "blas")
        with ctx:
            return fn(*args, **kwargs)

    return wrapper


_DELAUNAY_TOL = 1e-10  # an edge flips when 2 cos(a) + 2 cos(b) < -tol (cocircular edges stay)
# square side / smallest flat edge: beyond this float64 layouts collapse (positions in one unit square carry
# ~1e-16 absolute precision; at 1e12 the sweep refused a bijective fsaverage5 patch with thin necks, at 1e14 it maps)
_MAX_SCALE_RATIO = 1e14
_ELONGATED_HINT = (
    "the mesh is too elongated, or has too long and thin protrusions, for a conformal map onto a square "
    "with these corners (a strip of length L and width w shrinks by exp(-pi L / w) along it). Pass "
    "corners at the ends of an elongated shape (the map is then a rectangle rescaled to the square, its "
    "dilatation reported in info), or trim thin protrusions from the mask"
)
_SWITCH_TOL = 0.1  # curvature error at which provisional corners are replaced
_MODULUS_TOL = 0.01  # re-choose default corners when |log modulus| exceeds this on the flat metric
# (fsaverage5 left: 0.9856 -> 0.9996 for 3 more Newton iterations)
_FORCING_MAX = 1e-2  # PCG relative tolerance min(_FORCING_MAX, _FORCING * residual): inexact Newton,
# still quadratic (looser forcing measured no fewer PCG iterations in total)
_FORCING = 1e-3
_ND_MIN_VERTICES = 200_000  # larger meshes: nested-dissection order (MMD was faster at 117k: 1.2 vs 1.7 s)
_FLOOR_TOL = 1e-8  # a stalled Newton (round-off floor) is accepted below this curvature error
_PCG_MAXITER = 25  # more PCG iterations than this: refactorise now
_PCG_REFACTOR = 8  # more than this: refactorise at the next Newton step (fs_LR 32k left: 1 Newton
# factorisation and 32 PCG iterations; 10 gave 34, 6 gave 2 factorisations)
_PCG_SCALE_VERTICES = 30_000  # both limits grow as sqrt(n / this) above it: a factorisation costs
# more PCG iterations on larger meshes (about 30 at 29k vertices, 55 at 146k: S1 lh white, 1.0-1.3 s
# against 20 ms; there the fixed 25 / 8 gave 3 factorisations and 53 PCG iterations, the scaled
# limits 1 and 58)


def _pcg_limits(n):
    """PCG iterations after which to refactorise at once, and at the next Newton step."""
    s = max(1.0, np.sqrt(n / _PCG_SCALE_VERTICES))
    return int(_PCG_MAXITER * s), int(_PCG_REFACTOR * s)


# ---------------------------------------------------------------------------------------------
# validation


def _check_disk(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Validate a disk mesh; return ``(boundary_loop, twin)``."""
    if not isinstance(mesh, Mesh):
        if hasattr(mesh, "mesh") and isinstance(mesh.mesh, Mesh):
            raise MeshError(
                "mesh: expected a surfmap.Mesh; found a CutMesh. Pass its disk: conformal_map(cut_result.mesh)"
            )
        raise MeshError(f"mesh: expected a surfmap.Mesh (a disk); found {type(mesh).__name__}")
    V, F = mesh.vertices, mesh.faces
    n = len(V)
    used = np.zeros(n, dtype=bool)
    used[F.ravel()] = True
    if not used.all():
        raise MeshError(
            f"{mesh.name}: {int((~used).sum())} vertices belong to no face (first: {int(np.flatnonzero(~used)[0])}); "
            "remove unreferenced vertices (surfmap.cut does this)"
        )
    twin, ok = _k.build_twins(F, n)
    if not ok:
        raise MeshError(
            f"{mesh.name}: an edge is shared by more than two faces or the faces are not consistently "
            "oriented; expected a manifold, oriented disk (repair the mesh or use surfmap.cut)"
        )
    k, n_loops, pinched, loop = _k.disk_topology(F, twin, n)
    if pinched:
        raise MeshError(
            f"{mesh.name}: the boundary touches itself at a vertex; expected a simple boundary loop "
            "(surfmap.cut removes such pinches)"
        )
    n_edges = (3 * len(F) + int((twin < 0).sum())) // 2
    chi = n - n_edges + len(F)
    if k != 1 or n_loops != 1 or chi != 1:
        raise MeshError(
            f"{mesh.name}: expected a topological disk (1 component, 1 boundary loop, Euler characteristic 1); "
            f"found {k} component(s), {n_loops} boundary loop(s), Euler characteristic {chi}. "
            "Cut a hemisphere to a disk with surfmap.cut(mesh, cortex_mask) first"
        )
    valence = np.bincount(F.ravel(), minlength=n)
    ears = loop[valence[loop] < 2]
    if len(ears):
        raise MeshError(
            f"{mesh.name}: {len(ears)} boundary vertices belong to a single face (ears; first: vertex {int(ears[0])}); "
            "their angle cannot become straight. Remove ears first (surfmap.cut does this)"
        )
    A = mesh.face_areas
    if (A <= 1e-14 * max(float(A.max()), 1e-300)).any():
        bad = np.flatnonzero(A <= 1e-14 * float(A.max()))
        raise MeshError(
            f"{mesh.name}: {len(bad)} faces have zero area (first: face {int(bad[0])}); remove or repair them"
        )
    return loop, twin


def _check_corners(corners, loop, faces_per_vertex, name) -> np.ndarray:
    try:
        c = np.asarray(corners)
    except (TypeError, ValueError):  # pragma: no cover - ragged input
        raise MeshError(f"corners: expected 4 vertex indices; found {corners!r}") from None
    if c.shape != (4,) or not np.issubdtype(c.dtype, np.integer):
        raise MeshError(
            f"corners: expected 4 integer vertex indices; found {c.dtype} array of shape {c.shape}"
        )
    c = c.astype(np.int64)
    if len(np.unique(c)) != 4:
        raise MeshError(f"corners: expected 4 distinct vertices; found {c.tolist()}")
    pos = np.full(int(max(loop.max(), c.max())) + 1, -1, dtype=np.int64)
    pos[loop] = np.arange(len(loop))
    if (c < 0).any() or (pos[np.clip(c, 0, len(pos) - 1)] < 0).any():
        off = [int(x) for x in c if x < 0 or x >= len(pos) or pos[x] < 0]
        raise MeshError(
            f"corners: vertices {off} are not on the boundary of {name}; "
            "expected 4 boundary vertices (see surfmap.mesh.boundary_loop)"
        )
    p = pos[c]
    nb = len(loop)
    # rotate so that the sequence starts at corners[0] and check it follows the loop order
    rel = (p - p[0]) % nb
    if not (np.diff(rel) > 0).all():
        raise MeshError(
            f"corners: {c.tolist()} are not in boundary order; expected them counter-clockwise along the "
            f"boundary (the order of surfmap.mesh.boundary_loop), at boundary positions {p.tolist()}"
        )
    gaps = np.diff(np.append(rel, nb))
    if gaps.min() < 2:
        i = int(np.argmin(gaps))
        raise MeshError(
            f"corners: corners {int(c[i])} and {int(c[(i + 1) % 4])} are adjacent on the boundary; "
            "expected at least 2 boundary edges between consecutive corners"
        )
    few = c[faces_per_vertex[c] < 2]
    if len(few):
        raise MeshError(
            f"corners: vertices {few.tolist()} belong to a single face; pick corners with >= 2 faces"
        )
    return c


# ---------------------------------------------------------------------------------------------
# linear algebra


def _plane_coordinates(V: np.ndarray) -> np.ndarray:
    """(n, 2) coordinates of the vertices in their best-fitting plane: only to order the sparse
    factorisation by geometric nested dissection (any order is exact; a good one limits fill)."""
    X = V - V.mean(axis=0)
    _, _, vt = np.linalg.svd(X[:: max(1, len(X) // 20000)], full_matrices=False)
    return np.ascontiguousarray(X @ vt[:2].T)


class _SPDSolver:
    """Factorisation of a symmetric positive definite sparse matrix (CSC).

    SuperLU in symmetric mode (minimum degree on A + A^T, no pivoting). Measured on the fs_LR 32k
    left Hessian (29k vertices, nnz(L + U) 2.5e6) in one process: SuperLU 0.19-0.29 s unloaded,
    0.5 s under load; cholespy 2.2 (CHOLMOD, simplicial, nested dissection) the same within noise
    (its solves are faster, 2.5 ms vs 5 ms), and it aborts the process ("realloc(): invalid
    pointer") when handed a numba-allocated array; a precomputed ordering reused across steps
    (the ordering is a small part of the time) and a geometric nested dissection (more fill) gave
    nothing. The factor is reused as a PCG preconditioner across Newton steps, which replaces
    re-using a symbolic analysis. With ``single=True`` the factorisation is in float32 (SuperLU
    sgstrf: 130-150 ms instead of 200-208 ms CPU time on that Hessian, solves 4.1-4.5 ms instead
    of 4.6-5.8 ms) and serves only as a preconditioner: PCG residuals stay in float64 and reach
    1e-13 in 3 iterations from it. Falls back to float64 if a pivot vanishes.
    """

    def __init__(
        self, A: sp.csc_matrix, single: bool = False, points: np.ndarray | None = None, order: np.ndarray | None = None
    ):
        opts = {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.0, "options": {"SymmetricMode": True}}
        self.n = A.shape[0]
        self.order = None
        if order is not None:
            # an earlier factorisation's fill-reducing order for the same pattern (vertices added
            # since go last): skips SuperLU's minimum-degree ordering, a quarter of a factorisation
            # at 146k vertices (S1 lh white, float32: 1.00 s instead of 1.34 s CPU, same fill)
            self.order = np.concatenate([order, np.arange(len(order), self.n)]) if len(order) < self.n else order
        elif points is not None and A.shape[0] > _ND_MIN_VERTICES:
            # SuperLU's minimum degree stalls on large meshes (467k vertices: > 120 s for one
            # ordering); geometric nested dissection (the transport stage's) orders them in
            # seconds: 10.5 s for the whole float64 factorisation at 467k, against 30 s with COLAMD.
            self.order = _kt.nested_dissection(points, A.indptr, A.indices, 64)
        if self.order is not None:
            indptr, indices, data = _kt.permute_symmetric(A.indptr, A.indices, A.data, self.order)
            A = sp.csc_matrix((data, indices, indptr), shape=A.shape)
            opts["permc_spec"] = "NATURAL"
        self.single = False
        if single:
            try:
                self.lu = spla.splu(A.astype(np.float32), **opts)
                self.single = True
            except RuntimeError:  # a pivot vanished in single precision
                pass
        if not self.single:
            self.lu = spla.splu(A, **opts)
        if self.order is None:  # the symmetric order SuperLU chose, for reuse
            self.reuse_order = np.empty_like(self.lu.perm_c)
            self.reuse_order[self.lu.perm_c] = np.arange(self.n)
        else:
            self.reuse_order = self.order

    def solve(self, b):
        if self.order is not None:
            x = np.empty_like(b)
            x[self.order] = self._solve(b[self.order])
            return x
        return self._solve(b)

    def _solve(self, b):
        if self.single:
            return self.lu.solve(b.astype(np.float32)).astype(np.float64)
        return self.lu.solve(b)


def _pcg(A, b, M, rtol, maxiter):
    """Preconditioned conjugate gradients for SPD ``A`` (CSR/CSC of a symmetric matrix);
    ``M`` applies the preconditioner. Vector work in numba (no threaded BLAS in the loop).

    Returns ``(x, iterations, converged)``.
    """
    indptr, indices, data = A.indptr, A.indices, A.data
    x = np.zeros_like(b)
    r = b.copy()
    bnorm = float(np.sqrt(_k.pcg_direction(np.zeros_like(b), b, b, 1.0)))
    if bnorm == 0.0:
        return x, 0, True
    z = M(r)
    p = z.copy()
    rz = _k.pcg_direction(np.zeros_like(b), z, r, 1.0)
    for k in range(1, maxiter + 1):
        Ap = _k.csr_matvec(indptr, indices, data, p)
        _, rnorm = _k.pcg_update(x, r, p, Ap, rz)
        if rnorm <= rtol * bnorm:
            return x, k, True
        z = M(r)
        rz = _k.pcg_direction(p, z, r, rz)
    return x, maxiter, False


def _laplacian_csc(indptr, indices, data, n) -> sp.csc_matrix:
    return sp.csc_matrix((data, indices, indptr), shape=(n, n))


# ---------------------------------------------------------------------------------------------
# corners


@_one_blas_thread
def dirichlet_modulus(L, loop, corners) -> float:
    """Conformal modulus ``H / W`` of the quadrilateral with 4 boundary corners.

    Solves the harmonic ``f`` with ``f = 0`` on the side ``c3 -> c0``, ``f = 1`` on the side
    ``c1 -> c2`` and natural (Neumann) conditions on the other two; ``H / W = f^T L f``.

    Parameters
    ----------
    L : (n, n) sparse float64
        Cotangent Laplacian (positive semi-definite).
    loop : (b,) int64
        Boundary loop in order.
    corners : (4,) int64
        Corner vertices in loop order.

    Returns
    -------
    float
    """
    L = sp.csr_matrix(L)
    n = L.shape[0]
    pos = np.full(n, -1, dtype=np.int64)
    pos[loop] = np.arange(len(loop))
    p = pos[np.asarray(corners)]
    nb = len(loop)

    def arc(a, b):
        return loop[np.arange(a, a + ((b - a) % nb) + 1) % nb]

    side0 = arc(p[3], p[0])
    side1 = arc(p[1], p[2])
    f = np.zeros(n)
    fixed = np.zeros(n, dtype=bool)
    fixed[side0] = True
    fixed[side1] = True
    f[side1] = 1.0
    free = np.flatnonzero(~fixed)
    A = L[free][:, free].tocsc()
    rhs = -(L[free][:, np.flatnonzero(fixed)] @ f[fixed])
    f[free] = _SPDSolver(A).solve(rhs)
    return float(f @ (L @ f))


def _principal_extremes(V, loop):
    """Boundary vertices extreme along the principal axis of the boundary curve.

    Geometric and relabelling-invariant: points weighted by their dual arc length; the axis sign
    is fixed by the third moment; ties broken by coordinates.
    """
    P = V[loop]
    seg = np.linalg.norm(np.roll(P, -1, axis=0) - P, axis=1)
    w = 0.5 * (seg + np.roll(seg, 1))
    mu = (w[:, None] * P).sum(0) / w.sum()
    X = P - mu
    C = (w[:, None] * X).T @ X
    _, evecs = np.linalg.eigh(C)
    e = evecs[:, -1]
    proj = X @ e
    if (w * proj**3).sum() < 0:
        e, proj = -e, -proj
    lo = np.lexsort((P[:, 2], P[:, 1], P[:, 0], proj))[0]
    hi = np.lexsort((-P[:, 2], -P[:, 1], -P[:, 0], -proj))[0]
    return int(lo), int(hi), seg


def _arc_fractions(seg, a, b):
    """Loop positions from ``a`` forward to ``b`` and their 3D arc-length fractions."""
    nb = len(seg)
    ks = (a + np.arange(((b - a) % nb) + 1)) % nb
    acc = np.concatenate([[0.0], np.cumsum(seg[ks[:-1]])])
    return ks, acc / acc[-1]


def _rectangle_to_circle(blen, p):
    """Boundary points of a flat W x H rectangle on the unit circle (angles) after the conformal
    map of the rectangle onto the upper half-plane (Jacobi sn) and the Cayley map.

    ``blen`` (b,) holds the flat length of the boundary edge leaving each loop position, ``p``
    the loop positions of the 4 corners. Returns ``(alpha, H / W)``.
    """
    nb = len(blen)
    sides, lens = [], []
    for s_ in range(4):
        a, b = p[s_], p[(s_ + 1) % 4]
        ks = (a + np.arange(((b - a) % nb) + 1)) % nb
        acc = np.concatenate([[0.0], np.cumsum(blen[ks[:-1]])])
        sides.append(ks)
        lens.append(acc)
    W = 0.5 * (lens[0][-1] + lens[2][-1])
    H = 0.5 * (lens[1][-1] + lens[3][-1])
    target = np.log(2.0 * H / W)
    mpar = brentq(
        lambda x: np.log(ellipkm1(x) / ellipk(x)) - target, 1e-300, 1.0 - 1e-16, xtol=1e-300, rtol=1e-15
    )
    K, Kp, k = ellipk(mpar), ellipkm1(mpar), np.sqrt(mpar)
    alpha = np.zeros(nb)
    # bottom: x in [-K, K], w = sn(x)
    f = lens[0] / lens[0][-1]
    alpha[sides[0]] = 2.0 * np.arctan(ellipj(-K + 2.0 * K * f, mpar)[0])
    # right: y in [0, K'], w = 1 / dn(y, 1 - m)
    f = lens[1] / lens[1][-1]
    alpha[sides[1]] = 2.0 * np.arctan2(1.0, ellipj(Kp * f, 1.0 - mpar)[2])
    # top: x from K to -K, w = 1 / (k sn(x))
    f = lens[2] / lens[2][-1]
    alpha[sides[2]] = 2.0 * np.arctan2(1.0, k * ellipj(K - 2.0 * K * f, mpar)[0])
    # left: y from K' to 0, w = -1 / dn(y, 1 - m)
    f = lens[3] / lens[3][-1]
    alpha[sides[3][1:-1]] = -2.0 * np.arctan2(1.0, ellipj(Kp - Kp * f, 1.0 - mpar)[2])[1:-1]
    return alpha, H / W


def _circle_modulus(a0, a1, a2, a3):
    """Modulus H/W of the quadrilateral with 4 ordered points at angles ``a*`` on the circle's
    conformal image (side a0-a1 is the width)."""

    def s(x, y):
        return np.abs(np.sin(0.5 * (x - y)))

    lam = s(a2, a0) * s(a1, a3) / (s(a2, a3) * s(a1, a0))
    q = 1.0 - 1.0 / lam
    return ellipk(q) / ellipkm1(q)


def _diag_slot(indptr, indices, i):
    return int(indptr[i] + np.searchsorted(indices[indptr[i] : indptr[i + 1]], i))


def _pick_pair(M, t1, t3):
    """Among pairs with |log M| within 2e-3 of the best, the one with the closest arc fractions."""
    with np.errstate(divide="ignore"):  # moduli that underflow (very elongated meshes) are never picked
        err = np.abs(np.log(M))
    ok = err <= err.min() + 2e-3
    cost = np.where(ok, np.abs(t1[:, None] - t3[None, :]), np.inf)
    return np.unravel_index(int(np.argmin(cost)), cost.shape)


def _equipotential_corners(f, seg, i0, i2, loop):
    """c1, c3 (loop positions) from the potential ``f`` of a unit source at c0 and sink at c2.

    ``-f`` is the real part of the conformal map onto a strip of width 1 with c0 at -inf and
    c2 at +inf; ``exp(pi w)`` maps the strip to the half-plane (c0 -> 0, c1 -> e^{pi a} > 0,
    c2 -> inf, c3 -> -e^{pi b} < 0), where the cross-ratio is ``1 + e^{pi (b - a)}``.
    """
    k1, t1 = _arc_fractions(seg, i0, i2)
    k3, t3 = _arc_fractions(seg, i2, i0)
    k1, t1, k3, t3 = k1[2:-2], t1[2:-2], k3[2:-2], t3[2:-2]
    a = -f[loop[k1]]
    b = -f[loop[k3]]
    lam = 1.0 + np.exp(np.clip(np.pi * (b[None, :] - a[:, None]), -700, 700))
    q = 1.0 - 1.0 / lam
    M = ellipk(q) / ellipkm1(q)
    x, y = _pick_pair(M, t1, t3)
    return int(k1[x]), int(k3[y]), float(M[x, y]), float(t1[x]), float(t3[y])


def _modulus_one_corners(alpha, seg, i0, i2, loop):
    """Corners c1, c3 (loop positions) so that (i0, c1, i2, c3) has modulus closest to 1, with
    c1 and c3 at nearly equal 3D arc-length fractions of their arcs."""
    k1, t1 = _arc_fractions(seg, i0, i2)
    k3, t3 = _arc_fractions(seg, i2, i0)
    k1, t1 = k1[2:-2], t1[2:-2]
    k3, t3 = k3[2:-2], t3[2:-2]
    M = _circle_modulus(alpha[i0], alpha[k1][:, None], alpha[i2], alpha[k3][None, :])
    a, b = _pick_pair(M, t1, t3)
    return int(k1[a]), int(k3[b]), float(M[a, b]), float(t1[a]), float(t3[b])


# ---------------------------------------------------------------------------------------------
# intrinsic triangulation


_SPLIT_ANGLE = np.radians(150.0)  # a boundary edge whose opposite angle exceeds this is split


class _Triangulation:
    """Intrinsic triangulation being flowed (mutable; the arrays grow when boundary edges split).

    ``F`` (m, 3) faces, ``twin`` (3m,) twin half-edges (-1 on the boundary), ``lam`` (3m,) log
    base lengths (half-edge ``3f + k`` runs ``F[f, k] -> F[f, k + 1]``; the current length is
    ``exp(lam + (u_a + u_b) / 2)``), ``deg`` (n,) edges at each vertex, ``loop`` the input boundary loop, ``bkey`` (n,) the
    boundary-loop position of each boundary vertex (an inserted vertex takes that of the input
    boundary edge it lies on; -1 inside), ``n_input`` the number of input vertices (the first
    ones) and ``splits`` the number of inserted vertices.
    """

    def __init__(self, F, twin, lam, deg, loop):
        self.F, self.twin, self.lam, self.deg, self.loop = F, twin, lam, deg, loop
        self.bkey = np.full(len(deg), -1, dtype=np.int64)
        self.bkey[loop] = np.arange(len(loop))
        self.n_input = len(deg)
        self.splits = 0

    @property
    def n(self):
        return len(self.deg)


def _obtuse_boundary_halfedges(tri, u, max_angle):
    """Boundary half-edges whose opposite angle exceeds ``max_angle`` (radians)."""
    F, lam = tri.F, tri.lam
    h = np.flatnonzero(tri.twin < 0)
    f, k = h // 3, h % 3
    i, j, o = F[f, k], F[f, (k + 1) % 3], F[f, (k + 2) % 3]
    lij = np.exp(lam[h] + 0.5 * (u[i] + u[j]))
    ljo = np.exp(lam[3 * f + (k + 1) % 3] + 0.5 * (u[j] + u[o]))
    loi = np.exp(lam[3 * f + (k + 2) % 3] + 0.5 * (u[o] + u[i]))
    cos_o = (ljo * ljo + loi * loi - lij * lij) / (2.0 * ljo * loi)
    return h[cos_o < np.cos(max_angle)]


def _split_boundary_edges(tri, u, halfedges):
    """Split each boundary half-edge at the foot of the altitude from its opposite vertex.

    The face (i, j, o) with an obtuse angle at o becomes (i, w, o) and (w, j, o), right-angled at
    the new boundary vertex w; the current metric is unchanged (an intrinsic refinement), so the
    flow continues from the same flat-or-not state. A degenerate boundary triangle (angle near
    pi opposite a boundary edge, which no flip can remove) otherwise pins Newton's line search.
    Returns ``u`` extended by the new vertices' conformal factors.
    """
    s = len(halfedges)
    F, twin, lam = tri.F, tri.twin, tri.lam
    m, n = len(F), tri.n
    F = np.vstack([F, np.zeros((s, 3), dtype=F.dtype)])
    twin = np.concatenate([twin, np.full(3 * s, -1, dtype=twin.dtype)])
    lam = np.concatenate([lam, np.zeros(3 * s)])
    u = np.concatenate([u, np.zeros(s)])
    deg = np.concatenate([tri.deg, np.full(s, 3, dtype=tri.deg.dtype)])
    bkey = np.concatenate([tri.bkey, np.zeros(s, dtype=tri.bkey.dtype)])
    for r, h in enumerate(halfedges):
        f, k = int(h) // 3, int(h) % 3
        i, j, o = F[f, k], F[f, (k + 1) % 3], F[f, (k + 2) % 3]
        h_jo, h_oi = 3 * f + (k + 1) % 3, 3 * f + (k + 2) % 3
        lam_jo, lam_oi, t_jo, t_oi = lam[h_jo], lam[h_oi], twin[h_jo], twin[h_oi]
        c = np.exp(lam[h] + 0.5 * (u[i] + u[j]))
        a = np.exp(lam_jo + 0.5 * (u[j] + u[o]))
        b = np.exp(lam_oi + 0.5 * (u[o] + u[i]))
        x = (c * c + b * b - a * a) / (2.0 * c)  # from i to the foot, in (0, c): i and j are acute
        # altitude 2 A / c, with Kahan's stable area formula
        p, q, t = sorted((a, b, c), reverse=True)
        area = 0.25 * np.sqrt((p + (q + t)) * (t - (p - q)) * (t + (p - q)) * (p + (q - t)))
        hgt = 2.0 * area / c
        w, g = n + r, m + r
        u[w] = u[i] + (u[j] - u[i]) * x / c  # any value keeps the metric; this keeps lam tame
        F[f] = (i, w, o)
        F[g] = (w, j, o)
        lam[3 * f] = np.log(x) - 0.5 * (u[i] + u[w])
        lam[3 * f + 1] = np.log(hgt) - 0.5 * (u[w] + u[o])
        lam[3 * f + 2] = lam_oi
        lam[3 * g] = np.log(c - x) - 0.5 * (u[w] + u[j])
        lam[3 * g + 1] = lam_jo
        lam[3 * g + 2] = lam[3 * f + 1]
        twin[3 * f], twin[3 * f + 1], twin[3 * f + 2] = -1, 3 * g + 2, t_oi
        twin[3 * g], twin[3 * g + 1], twin[3 * g + 2] = -1, t_jo, 3 * f + 1
        if t_oi >= 0:
            twin[t_oi] = 3 * f + 2
        if t_jo >= 0:
            twin[t_jo] = 3 * g + 1
        deg[o] += 1
        bkey[w] = bkey[i]
    tri.F, tri.twin, tri.lam, tri.deg, tri.bkey = F, twin, lam, deg, bkey
    tri.splits += s
    return u


# ---------------------------------------------------------------------------------------------
# Newton


class _Stale:
    """A factorisation not to be used again, kept for its fill-reducing order."""

    def __init__(self, solver):
        self.reuse_order = solver.reuse_order


def _preconditioner(solver, H):
    """``solver.solve`` as a PCG preconditioner for ``H`` (None without a usable solver).
    Vertices added since the factorisation (boundary splits: a few) get the Jacobi
    preconditioner, so that a split does not force a new factorisation."""
    if solver is None or isinstance(solver, _Stale):
        return None
    if solver.n == H.shape[0]:
        return solver.solve
    n0 = solver.n
    inv_diag = 1.0 / H.diagonal()[n0:]
    return lambda r: np.concatenate([solver.solve(r[:n0]), r[n0:] * inv_diag])


def _split_degenerate_boundary(tri, u, Theta, max_flips):
    """Split boundary edges opposite angles above ``_SPLIT_ANGLE`` (repeatedly: a split can
    expose another), restore the Delaunay property by Ptolemy flips, and extend ``u`` and the
    targets (pi: straight boundary) to the new vertices. Returns ``(u, Theta, flips)``."""
    flips = 0
    for _ in range(64):
        h = _obtuse_boundary_halfedges(tri, u, _SPLIT_ANGLE)
        if len(h) == 0:
            break
        n0 = tri.n
        u = _split_boundary_edges(tri, u, h)
        Theta = np.concatenate([Theta, np.full(tri.n - n0, np.pi)])
        nf, _ = _k.make_delaunay(tri.F, tri.twin, tri.lam, u, tri.deg, False, _DELAUNAY_TOL, max_flips)
        flips += max(nf, 0)
    return u, Theta, flips


@dataclass(frozen=True, eq=False)
class NewtonResult:
    """What the Newton stage of the Ricci flow leaves for the layout.

    ``u`` (n,) the log conformal factors; ``g`` (n,) the curvature residual ``Theta - angle_sum``; ``Theta`` (n,)
    the target angle sums (the corner switch may have changed them, boundary splits lengthen them);
    ``iterations``; ``start_flips`` (Delaunay flips before the first step) and ``flow_flips`` (during the flow);
    ``switched_at`` the iteration where the corners were re-chosen (None if never); ``history`` per-iteration
    records.
    """

    u: np.ndarray
    g: np.ndarray
    Theta: np.ndarray
    iterations: int
    start_flips: int
    flow_flips: int
    switched_at: int | None
    history: list


def _newton(
    tri, Theta, tol, max_iter, timings, switch=None, switch_tol=None, solver=None, pattern=None, points=None,
):
    switch_tol = _SWITCH_TOL if switch_tol is None else switch_tol
    u = np.zeros(tri.n)
    max_flips = 100 * len(tri.F) + 1000
    flips, blocked = _k.make_delaunay(tri.F, tri.twin, tri.lam, u, tri.deg, False, _DELAUNAY_TOL, max_flips)
    n_start = tri.n
    u, Theta, split_flips = _split_degenerate_boundary(tri, u, Theta, max_flips)
    if tri.n != n_start:
        pattern = None
    flips += split_flips
    angle_sum = np.empty(tri.n)
    cotw = np.empty(3 * len(tri.F))
    E, bad = _k.evaluate(tri.F, tri.lam, u, Theta, angle_sum, cotw, True)
    g = Theta - angle_sum
    # a given pattern describes F before the flips just made
    pattern_flips = 0 if (pattern is not None and flips == 0) else -1
    history = []
    total_flips = flips
    pin = 0
    t_solve = 0.0
    it = 0
    switched_at = None
    t_pattern = t_flip = t_eval = 0.0
    n_factor = 0
    n_pcg = 0
    solver_flips = 0 if solver is not None and flips == 0 else -1  # total flips when solver was made
    for it in range(max_iter + 1):
        res = float(np.abs(g).max())
        if switch is not None and res < switch_tol:
            new_theta = switch(u)
            switch = None
            if new_theta is not None:
                new_theta = np.concatenate([new_theta, np.full(tri.n - len(new_theta), np.pi)])
                E += float((new_theta - Theta) @ u)
                Theta = new_theta
                g = Theta - angle_sum
                res = float(np.abs(g).max())
                switched_at = it
        if res < tol:
            break
        if res < _FLOOR_TOL and len(history) >= 3 and res > 0.5 * history[-3]["residual"]:
            # round-off floor: on very large meshes (467k vertices) the angle sums stop improving a
            # little above tol; three Newton steps without halving the error below the acceptance bar
            log.warning(
                "conformal_map: curvature error stalled at %.3g above tol=%g (floating-point floor "
                "for %d vertices); accepting it", res, tol, tri.n,
            )
            break
        if it == max_iter:
            raise ConvergenceError(
                f"conformal_map: Newton did not reach tol={tol:g} in max_iter={max_iter} iterations "
                f"(max curvature error {res:.3g}); raise max_iter or loosen tol"
            )
        if pattern is None or pattern_flips != total_flips:
            t_p = time.perf_counter()
            pattern = _k.csr_pattern(tri.F, tri.n)
            t_pattern += time.perf_counter() - t_p
            pattern_flips = total_flips
        indptr, indices, slots = pattern
        data = _k.csr_values(slots, cotw, len(indices))
        diag_pin = indptr[pin] + int(np.searchsorted(indices[indptr[pin] : indptr[pin + 1]], pin))
        data[diag_pin] += max(float(np.abs(data).max()), 1.0)
        t0 = time.perf_counter()
        H = _laplacian_csc(indptr, indices, data, tri.n)
        # inexact Newton: PCG preconditioned by the factorisation of an earlier Hessian (the
        # cotangent Laplacian changes little along a conformal flow); refactorise when PCG slows
        rtol = min(_FORCING_MAX, max(1e-13, _FORCING * res))
        pcg_max, pcg_refactor = _pcg_limits(tri.n)
        M = _preconditioner(solver, H)
        d, k, ok = (None, 0, False) if M is None else _pcg(H, -g, M, rtol, pcg_max)
        refactored = not ok
        if not ok:
            # an earlier order only while the pattern is the same (no flip since): after flips it
            # leaves much more fill (S1 lh white: 16.9M against 9.9M entries; pial: 3-4x)
            order = solver.reuse_order if solver is not None and solver_flips == total_flips else None
            solver = _SPDSolver(H, single=True, points=_points(points, tri), order=order)
            solver_flips = total_flips
            n_factor += 1
            d, k2, ok = _pcg(H, -g, solver.solve, rtol, pcg_max)
            k += k2
            if not ok and solver.single:  # single precision too coarse for this Hessian
                solver = _SPDSolver(H, points=_points(points, tri), order=solver.reuse_order)
                n_factor += 1
                d, k2, ok = _pcg(H, -g, solver.solve, rtol, pcg_max)
                k += k2
        elif k > pcg_refactor:
            solver = _Stale(solver)  # refactorise at the next iteration (keeping the ordering)
        n_pcg += k
        it_pcg = k
        t_solve += time.perf_counter() - t0
        slope = float(g @ d)
        step = 1.0
        it_flips = 0
        while True:
            ut = u + step * d
            t_f = time.perf_counter()
            nf, blocked = _k.make_delaunay(tri.F, tri.twin, tri.lam, ut, tri.deg, False, _DELAUNAY_TOL, max_flips)
            t_flip += time.perf_counter() - t_f
            if nf < 0:
                raise ConvergenceError(
                    f"conformal_map: edge flipping did not terminate at Newton iteration {it} (more than "
                    f"{max_flips} flips) with the conformal factor spanning e^{float(np.ptp(ut)):.0f}; "
                    + _ELONGATED_HINT
                )
            it_flips += nf
            t_e = time.perf_counter()
            Et, bad = _k.evaluate(tri.F, tri.lam, ut, Theta, angle_sum, cotw, True)
            t_eval += time.perf_counter() - t_e
            if bad == 0 and Et <= E + 1e-4 * step * slope + 1e-12 * abs(E):
                break
            step *= 0.5
            if step < 1e-12:
                raise ConvergenceError(
                    f"conformal_map: line search failed at iteration {it} (max curvature error {res:.3g})"
                )
        total_flips += it_flips
        u, E = ut, Et
        n_before = tri.n
        u, Theta, split_flips = _split_degenerate_boundary(tri, u, Theta, max_flips)
        if tri.n != n_before:
            # new vertices: new matrix size; the energy gains their terms
            max_flips = 100 * len(tri.F) + 1000
            total_flips += split_flips
            angle_sum = np.empty(tri.n)
            cotw = np.empty(3 * len(tri.F))
            E, bad = _k.evaluate(tri.F, tri.lam, u, Theta, angle_sum, cotw, True)
            pattern_flips = -1
        g = Theta - angle_sum
        history.append(
            {
                "residual": res,
                "step": step,
                "flips": it_flips,
                "blocked_flips": int(blocked),
                "invalid_faces": int(bad),
                "vertices": int(tri.n),
                "pcg_iterations": int(it_pcg),
                "refactorised": bool(refactored),
            }
        )
        log.debug("newton %s", history[-1])
    timings["solve"] = t_solve
    timings["flips"] = t_flip
    timings["curvature_energy"] = t_eval
    timings["hessian_pattern"] = t_pattern
    timings["factorisations"] = n_factor
    timings["pcg_iterations"] = n_pcg
    return NewtonResult(u=u, g=g, Theta=Theta, iterations=it, start_flips=flips, flow_flips=total_flips - flips,
                        switched_at=switched_at, history=history)


# ---------------------------------------------------------------------------------------------
# public


class _CornerChooser:
    """Re-chooses the provisional corners once, on the nearly flat metric (called by :func:`_newton` with ``u``).

    Measures the modulus of the quadrilateral ``loop[p]`` under the current metric; when it is off 1 by more than
    ``_MODULUS_TOL`` (log), moves c1 and c3 to the modulus-1 positions. Writes the new corners into ``corners``
    (in place: the caller's array), records ``modulus_at_check`` (and the new ``predicted_modulus``,
    ``arc_fractions``) in ``info`` and the time in ``timings["corner_check"]``. Returns the new target angle sums
    of the ``n`` original vertices, or None when the corners stay.
    """

    def __init__(self, tri, n, loop, seg, i0, i2, p, corners, info, timings):
        self.tri, self.n, self.loop, self.seg, self.i0, self.i2, self.p = tri, n, loop, seg, i0, i2, p
        self.corners, self.info, self.timings = corners, info, timings

    def __call__(self, u):
        loop, i0, i2 = self.loop, self.i0, self.i2
        t_sw = time.perf_counter()
        blen = _boundary_lengths(self.tri, u, len(loop))
        alpha, mod0 = _rectangle_to_circle(blen, self.p)
        self.info["modulus_at_check"] = float(mod0)
        self.timings["corner_check"] = time.perf_counter() - t_sw
        if abs(np.log(mod0)) <= _MODULUS_TOL:
            return None
        c1, c3, M, t1, t3 = _modulus_one_corners(alpha, self.seg, i0, i2, loop)
        new = loop[[i0, c1, i2, c3]].astype(np.int64)
        if (new == self.corners).all():
            return None
        self.info.update(predicted_modulus=M, arc_fractions=[t1, t3])
        self.corners[:] = new
        return _targets(self.n, loop, self.corners)


@_one_blas_thread
def conformal_map(
    mesh: Mesh,
    corners=None,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    initial_delaunay: bool = True,
) -> FlatMap:
    """Conformal map of a disk mesh onto the unit square (discrete Ricci / Yamabe flow).

    Parameters
    ----------
    mesh : Mesh
        A topological disk (one boundary loop), e.g. ``surfmap.cut(hemisphere, cortex).mesh``.
    corners : (4,) int, optional
        Boundary vertices sent to (0, 0), (1, 0), (1, 1), (0, 1), in boundary order
        (counter-clockwise, the order of :func:`surfmap.mesh.boundary_loop`), at least 2 edges apart.
        By default they are chosen so that the conformal modulus is 1 and the map needs no
        anisotropic rescaling. With user corners the W x H rectangle is scaled by diag(1/W, 1/H),
        whose dilatation ``max(W/H, H/W)`` is reported in ``info``.
    tol : float
        Stop when the largest curvature error (radians) is below ``tol``.
    max_iter : int
        Most Newton iterations.
    initial_delaunay : bool
        First make the input triangulation intrinsically Delaunay by isometric flips (same metric).

    Returns
    -------
    FlatMap
        ``uv`` (k, 2) in [0, 1]^2, ``faces`` the input faces (positively oriented),
        ``vertex_map = arange(k)``, ``corners`` and ``info`` (iterations, residuals, flips,
        modulus, corner choice, repairs, timings).

    Raises
    ------
    MeshError
        The mesh is not a disk, has ears or zero-area faces, or the corners are invalid.
    ParameterError
        ``tol`` or ``max_iter`` out of range.
    ConvergenceError
        Newton's method did not converge.

    Notes
    -----
    Default corners: c0 and c2 are the boundary vertices extreme along the principal axis of the
    boundary curve (sign fixed by its third moment, so the choice is geometric and invariant to
    relabelling, rigid motion and scale). With a unit source at c0 and sink at c2, the harmonic
    potential ``f`` (cotangent Laplacian of the intrinsic Delaunay input) is the real part of the
    conformal map onto a strip, and (c0, c1, c2, c3) has modulus 1 exactly when ``f(c1) = f(c3)``;
    among vertex pairs closest to that, the one at the most nearly equal arc-length fractions of
    the two arcs is taken. Once the flow is nearly flat the modulus is checked on the flat
    rectangle (boundary mapped to the half-plane by Jacobi's sn); if it is off by more than 1 %
    the corners are re-chosen there and Newton continues.

    ``info`` keys: ``iterations``, ``residuals`` (max curvature error at interior, boundary and
    corner vertices), ``newton`` (per iteration: residual, step, flips, PCG iterations),
    ``flips`` (isometric flips to the initial intrinsic Delaunay triangulation, Ptolemy flips
    during the flow, input edges absent from the final triangulation), ``corners``,
    ``corner_choice``, ``width``, ``height``, ``modulus`` (H/W before the rescale),
    ``dilatation`` (of the diag(1/W, 1/H) rescale), ``straightness_error`` (largest distance of a
    boundary vertex from its side before snapping, unit-square units), ``boundary_monotone``,
    ``boundary_splits`` (boundary edges split intrinsically, at the start and during the flow),
    ``folded_input_faces``, ``folded_after_repair`` and ``repairs`` (input faces that folded on
    the layout and what was done), ``repair_region`` (when faces folded: vertices moved, faces
    touched, rounds and rings of the local repair, faces no repair can unfold, mean dilatation of
    the touched faces before and after against the rest of the map), ``timings`` (seconds per
    stage).

    Input faces can fold where the flat metric's (intrinsic Delaunay) triangulation differs from
    the input's: they are repaired locally, with the boundary and all other vertices fixed, by
    untangling a few rings around them with a conformal energy (Garanzha et al. 2021, see
    :func:`_repair_folds`); the map is never replaced by a whole-disk Tutte map. A boundary edge
    opposite an angle above 150 degrees (no flip can remove it; pial surfaces have them) is
    split intrinsically at the foot of the altitude; inserted vertices take part in the flow only.

    Examples
    --------
    >>> fm = conformal_map(surfmap.cut(mesh, cortex).mesh)   # doctest: +SKIP
    >>> fm.uv.min(), fm.uv.max()                             # doctest: +SKIP
    (0.0, 1.0)
    """
    timings = {}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    loop, twin = _check_disk(mesh)
    V, F0 = mesh.vertices, mesh.faces
    n, m = len(V), len(F0)
    valence = np.bincount(F0.ravel(), minlength=n)
    if not (np.isfinite(tol) and tol > 0):
        raise ParameterError(f"tol: expected a positive number; found {tol!r}")
    if int(max_iter) < 0:
        raise ParameterError(f"max_iter: expected a non-negative integer; found {max_iter!r}")
    user_corners = corners is not None
    if user_corners:
        corners = _check_corners(corners, loop, valence, mesh.name)
    timings["validate"] = time.perf_counter() - t0

    # triangulation state: faces, twins, log base lengths per half-edge
    t0 = time.perf_counter()
    F = F0.copy()
    twin0 = twin.copy()
    lam = np.log(edge_lengths(V, F))[:, [2, 0, 1]].ravel().copy()  # half-edge k: F[k] -> F[k+1]
    init_flips = 0
    deg = _k.edge_degrees(F, twin, n)
    if initial_delaunay:
        init_flips, _ = _k.make_delaunay(F, twin, lam, np.zeros(n), deg, True, _DELAUNAY_TOL, 100 * m + 1000)
    tri = _Triangulation(F, twin, lam, deg, loop)
    # boundary triangles that no flip can fix (nearly straight angle opposite a boundary edge)
    _, _, split_flips = _split_degenerate_boundary(tri, np.zeros(n), np.zeros(n), 100 * m + 1000)
    init_flips += split_flips
    initial_splits = tri.splits
    F, twin, lam, deg = tri.F, tri.twin, tri.lam, tri.deg
    nt = tri.n
    zero = np.zeros(nt)
    timings["initial_delaunay"] = time.perf_counter() - t0

    # corners: user's, or provisional ones replaced once the flow is nearly flat
    corner_info = {"rule": "user"}
    switch = None
    solver0 = pattern0 = None
    points = None
    if n > _ND_MIN_VERTICES:  # inserted vertices lie on boundary edges: near their start vertex
        points = _plane_coordinates(V)
    if not user_corners:
        # modulus-1 corners from the harmonic potential of a boundary source at c0 and sink at
        # c2 (the real part of the map onto a strip): (c0, c1, c2, c3) has modulus 1 exactly when
        # c1 and c3 lie on the same level. The factorisation serves the first Newton step too.
        t_c = time.perf_counter()
        i0, i2, seg = _principal_extremes(V, loop)
        indptr, indices, slots = _k.csr_pattern(F, nt)
        cotw = np.empty(3 * len(F))
        _k.evaluate(F, lam, zero, zero, np.empty(nt), cotw, False)
        data = _k.csr_values(slots, cotw, len(indices))
        data[_diag_slot(indptr, indices, 0)] += max(float(np.abs(data).max()), 1.0)
        L0 = _laplacian_csc(indptr, indices, data, nt)
        solver0 = _SPDSolver(L0, single=True, points=_points(points, tri))
        pattern0 = (indptr, indices, slots)
        j = np.zeros(nt)
        j[loop[i0]], j[loop[i2]] = 1.0, -1.0
        f, _, ok = _pcg(L0, j, solver0.solve, 1e-12, 4 * _PCG_MAXITER)
        if not ok:  # pragma: no cover - single precision too coarse
            solver0 = _SPDSolver(L0)
            f = solver0.solve(j)
        c1, c3, M, t1, t3 = _equipotential_corners(f, seg, i0, i2, loop)
        p = [i0, c1, i2, c3]
        corners = loop[p].astype(np.int64)
        corner_info = {
            "rule": "modulus 1: c0, c2 extreme along the boundary's principal axis; c1, c3 on one level "
            "of the harmonic potential with source c0 and sink c2 (modulus 1), at nearly equal "
            "arc-length fractions; re-chosen on the nearly flat metric if that modulus is off by > "
            f"{_MODULUS_TOL:g} (log)",
            "initial": [int(c) for c in corners],
            "predicted_modulus": float(M),
            "arc_fractions": [t1, t3],
        }
        timings["corners"] = time.perf_counter() - t_c

        switch = _CornerChooser(tri, n, loop, seg, i0, i2, p, corners, corner_info, timings)

    Theta = np.concatenate([_targets(n, loop, corners), np.full(nt - n, np.pi)])
    t0 = time.perf_counter()
    newton = _newton(
        tri, Theta, tol, int(max_iter), timings, switch=switch, solver=solver0, pattern=pattern0,
        points=points,
    )
    u, g, Theta, iterations = newton.u, newton.g, newton.Theta, newton.iterations
    start_flips, flow_flips, switched_at, history = (newton.start_flips, newton.flow_flips, newton.switched_at,
                                                     newton.history)
    corner_info["switched_at_iteration"] = switched_at
    timings["newton"] = time.perf_counter() - t0
    F, twin, lam, nt = tri.F, tri.twin, tri.lam, tri.n

    bnd = tri.bkey >= 0
    is_corner = np.zeros(nt, dtype=bool)
    is_corner[corners] = True
    residuals = {
        "interior": float(np.abs(g[~bnd]).max(initial=0.0)),
        "boundary": float(np.abs(g[bnd & ~is_corner]).max(initial=0.0)),
        "corners": float(np.abs(g[is_corner]).max()),
    }

    # layout on the (flipped) triangulation
    t0 = time.perf_counter()
    # the smallest flat edge against the rectangle's size: beyond 1e12, float64 positions in one
    # square cannot resolve it (the layout would make vertices coincide)
    h_all = np.arange(3 * len(F))
    a_all, b_all = F.ravel(), F[:, [1, 2, 0]].ravel()
    flat_len = np.exp(lam[h_all] + 0.5 * (u[a_all] + u[b_all]))
    side = 0.25 * float(flat_len[twin < 0].sum())
    resolution = side / max(float(flat_len.min()), 1e-300)
    if not resolution < _MAX_SCALE_RATIO:
        raise ConvergenceError(
            f"conformal_map: {mesh.name}: the flat metric's smallest edge is {1 / resolution:.3g} of the "
            f"square's side (conformal factor spanning e^{float(np.ptp(u)):.0f}), below what float64 positions "
            f"in one square resolve ({1 / _MAX_SCALE_RATIO:g}); " + _ELONGATED_HINT
        )
    P, placed = _k.layout(F, twin, lam, u, nt, 0)
    if placed != nt:  # pragma: no cover - the disk is connected
        raise MeshError(f"{mesh.name}: layout reached {placed} of {nt} vertices")
    uv, norm_info = _normalise(P[:n], loop, corners)  # inserted vertices are not part of the map
    timings["layout"] = time.perf_counter() - t0

    # input faces on the laid-out vertices
    t0 = time.perf_counter()
    area = _k.signed_areas(uv, F0)
    folded = int((area <= 0).sum())
    repair_info = {"folded_input_faces": folded, "repairs": [], "folded_after_repair": folded}
    if folded:
        uv, repair_info = _repair_folds(uv, V, F0, loop, corners, norm_info["width"], norm_info["height"])
    timings["repair"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all

    changed = _changed_edges(F0, twin0, F, twin, nt)
    info = {
        "method": "conformal",
        "algorithm": "vertex-scaling Newton with Ptolemy (intrinsic Delaunay) flips",
        "iterations": int(iterations),
        "tol": float(tol),
        "residuals": residuals,
        "reached_tol": bool(max(residuals.values()) < tol),
        "newton": history,
        "flips": {
            "initial_delaunay": int(init_flips),
            "ptolemy_at_start": int(start_flips),
            "during_flow": int(flow_flips),
            "edges_differing_from_input": int(changed),
        },
        "boundary_splits": {
            "initial": int(initial_splits),
            "during_flow": int(tri.splits - initial_splits),
            "rule": f"boundary edges opposite an angle above {np.degrees(_SPLIT_ANGLE):g} degrees split at the "
            "foot of the altitude (intrinsic; the inserted vertices are not part of the map)",
        },
        "corners": [int(c) for c in corners],
        "corner_choice": corner_info,
        **norm_info,
        **repair_info,
        "timings": timings,
    }
    log.info(
        "conformal_map %s: %d iterations, %d+%d flips, residual %.2g, modulus %.4f, %d folded input faces",
        mesh.name,
        iterations,
        init_flips,
        flow_flips,
        max(residuals.values()),
        norm_info["modulus"],
        folded,
    )
    return FlatMap(uv=uv, faces=F0, vertex_map=np.arange(n), corners=corners, info=info, vertices=V)


def _targets(n, loop, corners):
    """Target angle sums: 2 pi inside, pi on the boundary, pi/2 at the corners (Gauss-Bonnet
    holds for any disk: their sum is pi times the number of faces)."""
    Theta = np.full(n, 2.0 * np.pi)
    Theta[loop] = np.pi
    Theta[corners] = 0.5 * np.pi
    return Theta


def _boundary_lengths(tri, u, nb):
    """Flat length of the input boundary edge leaving each loop position (boundary edges never
    flip; an input edge split into pieces sums them)."""
    h = np.flatnonzero(tri.twin < 0)
    f, k = h // 3, h % 3
    a, b = tri.F[f, k], tri.F[f, (k + 1) % 3]
    return np.bincount(tri.bkey[a], weights=np.exp(tri.lam[h] + 0.5 * (u[a] + u[b])), minlength=nb)


def _points(points, tri):
    """Plane coordinates for the nested-dissection order, extended to inserted vertices (each
    placed at its input boundary edge's start vertex; only the ordering uses them)."""
    if points is None or tri.n == len(points):
        return points
    return np.vstack([points, points[tri.loop[tri.bkey[tri.n_input :]]]])


def _changed_edges(F0, twin0, F, twin, n):
    """Number of edges of the input triangulation that are not edges of ``F``."""

    def keys(F, twin):
        h = np.flatnonzero((twin < 0) | (np.arange(len(twin)) < twin))
        a, b = F.ravel()[h], F[:, [1, 2, 0]].ravel()[h]
        return np.sort(np.minimum(a, b) * n + np.maximum(a, b))

    k0, k1 = keys(F0, twin0), keys(F, twin)
    i = np.clip(np.searchsorted(k1, k0), 0, len(k1) - 1)
    return int((k1[i] != k0).sum())


def _normalise(P, loop, corners):
    """Rotate/scale the laid-out rectangle onto [0, 1]^2 and snap the boundary to the sides."""
    c = corners
    q = P - P[c[0]]
    d = q[c[1]]
    ang = np.arctan2(d[1], d[0])
    R = np.array([[np.cos(ang), np.sin(ang)], [-np.sin(ang), np.cos(ang)]])
    q = q @ R.T
    W = float(q[c[1], 0])
    H = float(q[c[3], 1])
    uv = q / np.array([W, H])
    nb = len(loop)
    pos = {int(v): i for i, v in enumerate(loop)}
    p = [pos[int(x)] for x in c]
    sides = []
    for s in range(4):
        a, b = p[s], p[(s + 1) % 4]
        sides.append(loop[np.arange(a, a + ((b - a) % nb) + 1) % nb])
    # which coordinate is fixed on each side, and its value
    fixed = [(1, 0.0), (0, 1.0), (1, 1.0), (0, 0.0)]
    straight = 0.0
    monotone = True
    for s, (axis, val) in enumerate(fixed):
        vs = sides[s]
        straight = max(straight, float(np.abs(uv[vs, axis] - val).max()))
        uv[vs, axis] = val
        other = uv[vs, 1 - axis]
        dif = np.diff(other)
        monotone &= bool((dif > 0).all() if s in (0, 1) else (dif < 0).all())
    uv[c] = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    outside = int(((uv < 0) | (uv > 1)).any(axis=1).sum())
    np.clip(uv, 0.0, 1.0, out=uv)
    # opposite sides of the rectangle (flat lengths)
    W2 = float(np.linalg.norm(q[c[2]] - q[c[3]]))
    H2 = float(np.linalg.norm(q[c[2]] - q[c[1]]))
    return uv, {
        "width": W,
        "height": H,
        "modulus": H / W,
        "dilatation": max(W / H, H / W),
        "opposite_side_error": max(abs(W2 - W) / W, abs(H2 - H) / H),
        "straightness_error": straight,
        "boundary_monotone": monotone,
        "vertices_clipped": outside,
    }


_REPAIR_RINGS = 2  # first repair region: folded faces' vertices and this many rings around them
_REPAIR_MAX_FRACTION = 0.05  # the region grows (doubling its rings) up to this share of the vertices
_REPAIR_MIN_CAP = 2000  # ... or this many vertices, whichever is larger
_UNTANGLE_THETA = 1.0 / 128.0  # weight of the area term in the untangling energy (Garanzha et al. 2021)


def _reference_frames(V, F, scale):
    """Inverse edge matrices (m, 2, 2) of the 3D triangles in local orthonormal frames, each
    triangle scaled by ``scale`` (m,), and their scaled areas (m,)."""
    e1 = V[F[:, 1]] - V[F[:, 0]]
    e2 = V[F[:, 2]] - V[F[:, 0]]
    l1 = np.linalg.norm(e1, axis=1)
    x2 = np.einsum("ij,ij->i", e1, e2) / l1
    y2 = np.linalg.norm(np.cross(e1, e2), axis=1) / l1
    a, b, d = l1 * scale, x2 * scale, y2 * scale  # X = [[a, b], [0, d]], columns are the edges
    Xinv = np.zeros((len(F), 2, 2))
    Xinv[:, 0, 0] = 1.0 / a
    Xinv[:, 0, 1] = -b / (a * d)
    Xinv[:, 1, 1] = 1.0 / d
    return Xinv, 0.5 * a * d


def _layout_scale(Q, V, F):
    """Per face, the ratio of the flat to the 3D perimeter: the local scale of the map (the
    conformal factor exp(u) varies too fast across some faces to give it)."""

    def perimeter(X):
        return sum(np.linalg.norm(X[F[:, (k + 1) % 3]] - X[F[:, k]], axis=1) for k in range(3))

    return perimeter(Q) / perimeter(V)


def _jacobians(Q, F, Xinv):
    """Jacobians (m, 2, 2) of the affine maps from the reference triangles to ``Q[F]``."""
    D = np.stack([Q[F[:, 1]] - Q[F[:, 0]], Q[F[:, 2]] - Q[F[:, 0]]], axis=2)  # columns: edges
    return D @ Xinv


def _dilatation(J):
    """sigma1 / sigma2 per Jacobian (inf where it is singular or reverses orientation)."""
    a = np.hypot(J[:, 0, 0] + J[:, 1, 1], J[:, 1, 0] - J[:, 0, 1])  # 2 |conformal part|
    b = np.hypot(J[:, 0, 0] - J[:, 1, 1], J[:, 1, 0] + J[:, 0, 1])  # 2 |anticonformal part|
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (a + b) / (a - b)
    return np.where(a > b, k, np.inf)


def _untangling_energy(x, Q, free, F, Xinv, eps, theta):
    """Energy of :func:`surfmap._kernels.conformal.untangle_energy` (the foldover-free energy of
    Garanzha, Kaporin, Kudryavtseva, Protais, Ray and Sokolov 2021, "Foldover-free maps in 50
    lines of code": per face ``(1 - theta) tr(J^T J) / chi(det J) + theta (1 + det^2 J) /
    chi(det J)``, ``chi(d) = (d + sqrt(eps^2 + d^2)) / 2``; its first term is twice a
    dilatation-like conformal energy, ``chi`` keeps it finite on folded faces while ``eps > 0``
    and makes it a barrier as ``eps -> 0``) with ``Q[free]`` replaced by ``x`` (flattened).
    Returns ``(energy, gradient with respect to x, min det J)``."""
    Q = Q.copy()
    Q[free] = x.reshape(-1, 2)
    grad = np.empty_like(Q)
    E, mindet = _k.untangle_energy(Q, F, Xinv, eps, theta, grad)
    return E, grad[free].ravel(), mindet


def _untangle_region(Q, free, F, Xinv, max_outer=100, polish=2):
    """Move ``Q[free]`` so that every face of ``F`` has positive area, keeping the others fixed.

    The continuation in ``eps`` of Garanzha et al. (2021): L-BFGS to convergence on the
    regularised energy (every face weighted alike), ``eps`` shrinking with the energy decrease
    while faces fold and set to 1e-12 once none does; at most ``polish`` more rounds once no
    face folds. Each free vertex's coordinates are scaled by its mean edge length, so that faces
    of very different sizes (conformal factors vary over orders of magnitude) are balanced for
    L-BFGS. Returns the new ``Q``.
    """
    from scipy.optimize import minimize

    theta = _UNTANGLE_THETA
    Q = Q.copy()
    # per free vertex: mean length of its edges on the layout
    lsum = np.zeros(len(Q))
    cnt = np.zeros(len(Q))
    for k in range(3):
        a, b = F[:, k], F[:, (k + 1) % 3]
        ln = np.linalg.norm(Q[a] - Q[b], axis=1)
        lsum += np.bincount(a, ln, len(Q)) + np.bincount(b, ln, len(Q))
        cnt += np.bincount(a, minlength=len(Q)) + np.bincount(b, minlength=len(Q))
    s = np.repeat(lsum[free] / cnt[free], 2)

    def fun(y, eps):
        E, g, _ = _untangling_energy(y * s, Q, free, F, Xinv, eps, theta)
        return E, g * s

    y = Q[free].ravel() / s
    mindet = _untangling_energy(y * s, Q, free, F, Xinv, 1.0, theta)[2]
    eps = float(np.sqrt(1e-12 + 0.04 * min(mindet, 0.0) ** 2))
    E_prev = fun(y, eps)[0]
    for _ in range(max_outer):
        res = minimize(fun, y, args=(eps,), jac=True, method="L-BFGS-B",
                       options={"maxiter": 2000, "maxcor": 20, "gtol": 1e-10, "ftol": 1e-7})
        y = res.x
        E, _, mindet = _untangling_energy(y * s, Q, free, F, Xinv, eps, theta)
        sigma = max(1.0 - E / E_prev, 0.1)
        mu = (1.0 - sigma) * 0.5 * (mindet + np.sqrt(eps * eps + mindet * mindet))
        settled = abs(E_prev - E) <= 1e-4 * abs(E)
        eps = 2.0 * np.sqrt(mu * (mu - mindet)) if mindet < mu else 1e-12
        log.debug("untangle: energy %.6g, min det %.3g, eps %.3g, %d L-BFGS iterations", E, mindet, eps, res.nit)
        E_prev = E
        if mindet > 0:
            if settled or polish == 0:
                break
            polish -= 1
    Q[free] = (y * s).reshape(-1, 2)
    return Q


def _one_side_chord_faces(F, loop, corners):
    """Faces with an edge between two boundary vertices that are not neighbours on the loop
    but lie on one side of the square (both its faces cannot be positive: one of them folds in
    any map with straight sides; ``surfmap.cut`` splits such chords)."""
    n = int(F.max()) + 1
    nb = len(loop)
    pos = np.full(n, -1, dtype=np.int64)
    pos[loop] = np.arange(nb)
    p = np.sort(pos[corners])
    out = np.zeros(len(F), dtype=bool)
    for k in range(3):
        a, b = pos[F[:, k]], pos[F[:, (k + 1) % 3]]
        both = (a >= 0) & (b >= 0)
        adjacent = ((a - b) % nb == 1) | ((b - a) % nb == 1)
        # side index of a loop position: sides run from one corner to the next, corners on both
        sa = (np.searchsorted(p, a, side="right") - 1) % 4
        sb = (np.searchsorted(p, b, side="right") - 1) % 4
        same = (sa == sb) | np.isin(a, p) & ((sb + 1) % 4 == sa) | np.isin(b, p) & ((sa + 1) % 4 == sb)
        out |= both & ~adjacent & same
    return out


def _repair_folds(uv, V, F, loop, corners, width, height):
    """Repair input faces that fold on the layout of the flipped triangulation, locally.

    The flat metric lives on the flipped (intrinsic Delaunay) triangulation; input faces drawn
    with straight edges on its vertex positions can fold where input edges were flipped. The
    interior vertices of the folded faces and ``_REPAIR_RINGS`` rings around them are moved, all
    other vertices fixed, by minimising a foldover-free conformal energy (:func:`_untangle_region`)
    whose reference triangles are the 3D input faces (the conformal target shapes) at the map's
    local scale, in the isotropic W x H frame of the flat rectangle. If faces still fold, the
    region's rings double, up to ``_REPAIR_MAX_FRACTION`` of the vertices (or
    ``_REPAIR_MIN_CAP``); the map is never replaced by a whole-disk (Tutte) map. Faces that no
    move of interior vertices can unfold (all three vertices on the boundary, or beside a chord
    whose ends share a side) are left out and reported.

    Returns ``(uv, info)``: counts before and after, vertices moved, and the mean dilatation of
    the faces touching moved vertices before and after against the rest of the map.
    """
    n = len(uv)
    WH = np.array([width, height])
    Q0 = uv * WH
    area0 = _k.signed_areas(uv, F)
    folded = area0 <= 0
    folded0 = int(folded.sum())
    interior = np.ones(n, dtype=bool)
    interior[loop] = False
    rows = np.concatenate([F[:, 0], F[:, 1], F[:, 2]])
    cols = np.concatenate([F[:, 1], F[:, 2], F[:, 0]])
    A = sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    A = (A + A.T).tocsr()
    # faces that cannot unfold: all three vertices on the boundary, or beside a chord whose ends
    # share a side; left out of the energy and reported
    stuck = folded & (~interior[F].any(axis=1) | _one_side_chord_faces(F, loop, corners))
    cap = max(_REPAIR_MIN_CAP, int(_REPAIR_MAX_FRACTION * n))
    rings = _REPAIR_RINGS
    Q = Q0.copy()
    pending = folded & ~stuck
    free_all = np.zeros(n, dtype=bool)
    rounds = 0
    while pending.any():
        rounds += 1
        region = np.zeros(n, dtype=bool)
        region[F[pending].ravel()] = True
        for _ in range(rings):
            region = region | ((A @ region.astype(np.int8)) > 0)
        free_mask = region & interior
        free = np.flatnonzero(free_mask)
        # independent problems: connected groups of free vertices
        n_comp, label = connected_components(A[free][:, free], directed=False)
        comp = np.full(n, -1, dtype=np.int64)
        comp[free] = label
        face_comp = comp[F].max(axis=1)  # a face's free vertices are adjacent: one group
        face_comp[stuck] = -1
        order = np.argsort(face_comp, kind="stable")
        bounds = np.searchsorted(face_comp[order], np.arange(n_comp + 1))
        for c in range(n_comp):
            Fr = F[order[bounds[c] : bounds[c + 1]]]
            Xinv, _ = _reference_frames(V, Fr, _layout_scale(Q0, V, Fr))
            verts, Fl = np.unique(Fr, return_inverse=True)
            local_free = np.flatnonzero(comp[verts] == c)
            Q[verts] = _untangle_region(Q[verts], local_free, Fl.reshape(-1, 3), Xinv)
        free_all |= free_mask
        pending = (_k.signed_areas(Q / WH, F) <= 0) & ~stuck
        if not pending.any() or free_all.sum() >= cap or free_all.sum() == interior.sum():
            break
        rings *= 2
    faces = np.flatnonzero(free_all[F].any(axis=1))
    uv0 = uv
    uv = uv0.copy()  # every vertex outside the regions keeps its position exactly
    uv[free_all] = Q[free_all] / WH
    area = _k.signed_areas(uv, F)
    n_folded = int((area <= 0).sum())
    moved = int((uv != uv0).any(axis=1).sum())
    # dilatation of the region's faces before and after, against the rest (3D shapes as reference)
    Xall, _ = _reference_frames(V, F, np.ones(len(F)))
    in_region = np.zeros(len(F), dtype=bool)
    in_region[faces] = True
    K0 = _dilatation(_jacobians(uv0, F, Xall))  # of the map as returned (as surfmap.distortion)
    K1 = _dilatation(_jacobians(uv, F, Xall))
    rest = ~in_region

    def mean(x):
        x = x[np.isfinite(x)]
        return float(x.mean()) if len(x) else float("nan")

    info = {
        "folded_input_faces": folded0,
        "folded_after_repair": n_folded,
        "repair_region": {
            "vertices_free": int(free_all.sum()),
            "vertices_moved": moved,
            "faces": int(len(faces)),
            "rounds": rounds,
            "rings": int(rings),
            "unrepairable_faces": int(stuck.sum()),
            "dilatation_region_before": mean(K0[in_region]),  # folded faces count as inf: left out
            "dilatation_region_after": mean(K1[in_region]),
            "dilatation_rest": mean(K1[rest]),
            "dilatation_all_before": mean(K0),
            "dilatation_all_after": mean(K1),
        },
        "repairs": [
            (
                f"{folded0} input faces folded on the flat layout of the flipped triangulation; untangled "
                f"locally: {moved} interior vertices moved ({len(faces)} faces, mean dilatation "
                f"{mean(K1[in_region]):.3f} there against {mean(K1[rest]):.3f} elsewhere); "
                f"{n_folded} still folded"
                + (
                    f" ({int(stuck.sum())} beside chords with both ends on one side or with all three "
                    "vertices on the boundary: split chords with surfmap.cut)"
                    if stuck.any() else ""
                )
            )
        ],
    }
    (log.warning if n_folded else log.info)("conformal_map: %s", info["repairs"][0])
    return uv, info
