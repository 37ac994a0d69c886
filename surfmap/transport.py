"""Area-preserving map of a disk onto the unit square by semi-discrete optimal transport.

Stage 2 of seed 001 (Zhao et al. 2013): the sites are the vertices of a bijective square map
(the conformal map), the target masses the normalised 3D vertex areas, the source measure uniform
on [0, 1]^2. Damped Newton (Kitagawa-Merigot-Thibert) on the power weights gives the power diagram
whose clipped cells have exactly those areas; each vertex is then placed in its cell.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.spatial import ConvexHull, QhullError

from ._kernels import transport as _k
from .exceptions import ConvergenceError, MeshError, ParameterError
from .flatmap import FlatMap
from .mesh import Mesh, boundary_loop, cotangent_laplacian, face_areas

__all__ = ["PowerDiagram", "area_preserving_map", "power_diagram", "solve_transport"]

log = logging.getLogger(__name__)

_SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# power diagrams


class PowerDiagram:
    """Power diagram of weighted sites clipped to the unit square.

    Attributes
    ----------
    sites : (n, 2) float64
    weights : (n,) float64
        Power weights ``w``: the cell of ``i`` is ``{x : |x - p_i|^2 - w_i <= |x - p_j|^2 - w_j}``.
    areas : (n,) float64
        Area of each clipped cell (0 for an empty cell); they sum to 1.
    centroids : (n, 2) float64
        Centroid of each clipped cell (the site for an empty cell).
    ptr, neighbours : CSR arrays
        Regular-triangulation neighbours of each site.
    dual_lengths : (len(neighbours),) float64
        Length of the clipped cell edge shared with each neighbour.
    side_lengths, side_midpoints : (n, 4) float64
        Intersection of each cell with the sides bottom, right, top, left of the square (length,
        and midpoint parameter: x for bottom/top, y for left/right; NaN when empty).

    Parameters
    ----------
    sites, weights
        As above (arrays, not validated: see :func:`power_diagram`).
    triangulation : (T (t, 3), N (t, 3)), optional
        A CCW triangulation of the sites and its adjacency (``_k.triangle_adjacency``), e.g. the
        regular triangulation of nearby weights: edge flips make it regular (cheaper than a
        convex hull). Default: Qhull's lifted lower hull.
    fallback : bool
        When flipping fails: a convex hull (True), or mark the diagram ``stuck`` (False; the
        Newton line search rejects such a trial step).
    neighbours : (ptr, idx), optional
        The neighbour lists of ``triangulation``, reused when no edge flips.
    """

    def __init__(self, sites, weights, triangulation=None, *, fallback=True, neighbours=None):
        self.sites = sites
        self.weights = weights
        T = N = None
        self.flips = -1
        self.stuck = False
        if triangulation is not None:
            T, N = triangulation[0].copy(), triangulation[1].copy()
            self.flips = _k.regularize(sites, weights, T, N, 20 * len(T) + 1000)
        if self.flips < 0:
            if triangulation is not None and not fallback:
                # flipping got stuck: most often a site about to lose its cell; the caller rejects
                self.stuck = True
                self.areas = np.zeros(len(sites))
                return
            tri = _regular_triangulation(sites, weights)
            T, N = tri if tri is not None else (None, None)
        # no flip: the neighbour lists of the triangulation passed in (``neighbours``) still hold
        self._compute(T, N, neighbours if self.flips == 0 else None)
        if triangulation is not None and abs(self.areas.sum() - 1.0) > 1e-9:
            # should not happen; recompute from scratch rather than trust a bad update
            self.flips = -1
            tri = _regular_triangulation(sites, weights)
            self._compute(*(tri if tri is not None else (None, None)))

    def _compute(self, T, N=None, neighbours=None):
        n = len(self.sites)
        if T is None:  # a few sites: all pairs (a superset of the regular neighbours gives the same cells)
            self.triangulation = None
            self.ptr = np.arange(n + 1, dtype=np.int64) * (n - 1)
            self.neighbours = np.array([j for i in range(n) for j in range(n) if j != i], dtype=np.int64)
        else:
            self.triangulation = (T, N)
            if neighbours is None:
                self.ptr, self.neighbours = _k.neighbour_lists(T, n)
            else:
                self.ptr, self.neighbours = neighbours
        hidden = self.ptr[1:] == self.ptr[:-1]
        (
            self.areas,
            self.centroids,
            self.dual_lengths,
            self.side_lengths,
            self.side_midpoints,
        ) = _k.power_cells(self.sites, self.weights, self.ptr, self.neighbours, hidden)

    def hessian(self) -> sp.csr_matrix:
        """``d areas / d weights`` (n, n): a symmetric graph Laplacian, PSD, rows summing to 0."""
        n = len(self.sites)
        indptr, indices, data = _k.hessian_csr(self.sites, self.ptr, self.neighbours, self.dual_lengths, -1)
        return sp.csr_matrix((data, indices, indptr), shape=(n, n))

    def _newton_matrices(self, pin: int):
        """The Hessian ``H`` and ``A``: ``H`` with its diagonal entry at ``pin`` doubled, symmetric
        positive definite when the regular triangulation is connected (see :class:`_NewtonSolver`).
        Both CSC (symmetric: the CSR arrays are the CSC ones)."""
        n = len(self.sites)
        indptr, indices, data = _k.hessian_csr(self.sites, self.ptr, self.neighbours, self.dual_lengths, -1)
        H = sp.csc_matrix((data, indices, indptr), shape=(n, n))
        data = data.copy()
        data[indptr[pin] + np.searchsorted(indices[indptr[pin] : indptr[pin + 1]], pin)] *= 2.0
        return H, sp.csc_matrix((data, indices, indptr), shape=(n, n))


def _regular_triangulation(sites, weights):
    """Regular triangulation (T (t, 3) counter-clockwise, adjacency N (t, 3)) by Qhull's lifted lower hull."""
    n = len(sites)
    lifted = np.column_stack([sites, np.einsum("ij,ij->i", sites, sites) - weights])
    try:
        hull = ConvexHull(lifted)
    except (QhullError, ValueError):
        if n <= 64:
            return None  # too few or collinear sites: every pair is a neighbour candidate
        hull = ConvexHull(lifted, qhull_options="QJ")
    lower = hull.equations[:, 2] < -1e-12
    T = np.ascontiguousarray(hull.simplices[lower], dtype=np.int64)
    a, b, c = sites[T[:, 0]], sites[T[:, 1]], sites[T[:, 2]]
    cw = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]) < 0
    T[cw] = T[cw][:, [0, 2, 1]]
    return T, _k.triangle_adjacency(T)


def power_diagram(sites, weights=None) -> PowerDiagram:
    """Power diagram of ``sites`` (n, 2) in [0, 1]^2 with power ``weights`` (n,), clipped to the square.

    ``weights=None`` gives the Voronoi diagram. See :class:`PowerDiagram`.
    """
    P = np.ascontiguousarray(sites, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != 2 or len(P) < 2:
        raise MeshError(f"sites: expected shape (n, 2) with n >= 2; found {P.shape}")
    if not np.isfinite(P).all():
        raise MeshError("sites: found NaN or infinite coordinates")
    w = np.zeros(len(P)) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    if w.shape != (len(P),) or not np.isfinite(w).all():
        raise MeshError(f"weights: expected {len(P)} finite values; found shape {w.shape}")
    return PowerDiagram(P, w)


# ---------------------------------------------------------------------------------------------
# damped Newton


class _Factor:
    """Sparse LU of a symmetric positive definite matrix whose graph is planar with vertices at
    ``sites`` (the pinned Hessian). Geometric nested dissection orders it (measured about twice as
    fast on the 29k-vertex cortex as SuperLU's minimum degree, and the order costs ~10 ms);
    SuperLU then factorises the permuted matrix without pivoting (positive definite)."""

    def __init__(self, A: sp.csc_matrix, sites: np.ndarray, leaf: int = 16):
        self.order = _k.nested_dissection(sites, A.indptr, A.indices, leaf)
        indptr, indices, data = _k.permute_symmetric(A.indptr, A.indices, A.data, self.order)
        Ap = sp.csc_matrix((data, indices, indptr), shape=A.shape)
        self.lu = spla.splu(Ap, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})

    def solve(self, b: np.ndarray) -> np.ndarray:
        x = np.empty_like(b)
        x[self.order] = self.lu.solve(b[self.order])
        return x


def _pcg(A, b, precondition, scale, max_it):
    """Preconditioned conjugate gradients for ``A x = b`` (``A`` symmetric positive semi-definite,
    ``b`` in its range) from ``x = 0``, until ``|b - A x|_i <= scale_i`` for every ``i``.
    Returns ``(x, iterations, converged)``."""
    x = np.zeros_like(b)
    r = b.copy()
    z = precondition(r)
    p = z.copy()
    rz = _k.dot(r, z)
    for it in range(1, max_it + 1):
        Ap = A @ p
        alpha = rz / _k.dot(p, Ap)
        if _k.cg_update(x, r, p, Ap, alpha, scale) <= 1.0:
            return x, it, True
        z = precondition(r)
        rz_new = _k.dot(r, z)
        _k.cg_direction(p, z, rz_new / rz)
        rz = rz_new
    return x, max_it, False


class _NewtonSolver:
    """Solves the Newton systems ``H d = rhs`` of one Newton run, exactly or inexactly.

    ``H`` is singular (constants in its kernel; ``rhs`` sums to 0). An exact solve factorises
    ``A``, ``H`` with its diagonal entry at ``pin`` doubled (symmetric positive definite): summing
    the rows of ``A d = rhs`` gives ``H[pin, pin] d[pin] = sum(rhs) = 0``, so ``d`` solves
    ``H d = rhs`` too. An inexact solve runs conjugate gradients on ``H`` itself (so that the
    tolerance bounds the true Newton residual), preconditioned by the LU of an earlier ``A`` (the
    Hessian drifts slowly between Newton iterations); ``A`` is factorised again when CG needs more
    than ``max_cg`` iterations (and ``d`` solved exactly), and at the next solve when it needed
    more than ``refactor_after``.
    """

    def __init__(self, max_cg: int = 15, refactor_after: int = 5):
        self.max_cg = max_cg
        self.refactor_after = refactor_after
        self.lu = None
        self.stale = True
        self.factorizations = 0
        self.cg_iterations = 0

    def solve(self, H, A, sites, rhs, scale=None, last=False):
        """``d`` with ``|H d - rhs|_i <= scale_i`` (``scale=None``: exact). ``last``: probably the
        last Newton step, so CG is tried even with a stale preconditioner (no later step would
        reuse a new factorisation). Returns ``(d, exact)``."""
        if scale is not None and (last or not self.stale):
            d, its, ok = _pcg(H, rhs, self.lu.solve, scale, self.max_cg)
            self.cg_iterations += its
            log.debug("cg: %d iterations%s", its, "" if ok else ", not converged")
            if ok:
                self.stale = its > self.refactor_after
                return d, False
        self.lu = None  # free the old factor first (peak memory: ~160 MB each at 146k sites)
        self.lu = _Factor(A, sites)
        self.factorizations += 1
        self.stale = False
        return self.lu.solve(rhs), True


def solve_transport(
    sites, masses, weights=None, *, tol=1e-6, max_iter=100, eps0=None, stats=None, triangulation=None
):
    """Weights ``w`` whose power cells in [0, 1]^2 have areas ``masses`` (damped Newton, KMT).

    Parameters
    ----------
    sites : (n, 2) float64
        Distinct points in [0, 1]^2.
    masses : (n,) float64
        Positive target areas summing to 1.
    weights : (n,) float64, optional
        Warm start (default: zeros, the Voronoi diagram).
    tol : float
        Stop when ``max |area_i - masses_i| / max(masses_i, 1e-3 / n) < tol`` (cells below a
        thousandth of the mean mass are matched to ``tol`` of that: the floating-point floor).
    max_iter : int
        Newton iterations at most.
    eps0 : float, optional
        No accepted step has a cell smaller than this (default: half the smallest of the masses and
        the initial areas).
    stats : dict, optional
        Updated in place with ``newton_iterations``, ``halvings``, ``factorizations`` (sparse LU
        of a Hessian) and ``cg_iterations`` (preconditioned CG on the others).
    triangulation : (t, 3) int64, optional
        A counter-clockwise triangulation of the sites covering their convex hull (e.g. the faces
        of a bijective map of a mesh whose vertices are the sites): the regular triangulation of
        the start is reached from it by edge flips. Default (or when flipping fails): a convex hull.

    Returns
    -------
    weights : (n,) float64
    diagram : PowerDiagram

    Raises
    ------
    ConvergenceError
        The tolerance was not reached in ``max_iter`` iterations, or a step could not be damped
        enough to keep every cell non-empty.
    """
    P = np.ascontiguousarray(sites, dtype=np.float64)
    nu = np.ascontiguousarray(masses, dtype=np.float64)
    n = len(P)
    w = np.zeros(n) if weights is None else np.array(weights, dtype=np.float64)
    stats = {} if stats is None else stats
    for key in ("newton_iterations", "halvings", "factorizations", "cg_iterations"):
        stats.setdefault(key, 0)
    start = None
    if triangulation is not None:
        T = np.ascontiguousarray(triangulation, dtype=np.int64)
        start = (T, _k.triangle_adjacency(T))
    return _damped_newton(P, nu, w, start, tol, max_iter, eps0, stats)


_FAR = 0.25  # largest |log(area / mass)| of a cell above which Newton works on log areas
_CROWDED = 1e-10  # a start cell below this fraction of its mass: the sites are too crowded
_MASS_FLOOR = 1e-3  # relative to the mean mass: the smallest mass cell errors are measured against
_LOG_STEP = 2.0  # largest change of a log cell area a far Newton step asks for (at first, and at least)
_LOG_STEP_MAX = 8.0  # ... and at most, widened after full steps


def _damped_newton(P, nu, w, start, tol, max_iter, eps0, stats):
    """:func:`solve_transport` after validation; ``start``: ``(T, N)``, None, or the starting
    :class:`PowerDiagram` of ``P`` and ``w``."""
    D = start if isinstance(start, PowerDiagram) else PowerDiagram(P, w, start)
    if eps0 is None:
        eps0 = 0.5 * min(float(nu.min()), float(D.areas.min()))
    if D.areas.min() <= 0:
        raise ConvergenceError(
            f"sites: {int((D.areas <= 0).sum())} sites have an empty starting cell (duplicate or hidden sites); "
            "remove duplicate sites or start from weights that give every site a cell"
        )
    pin = int(np.argmax(nu))
    # a cell's error is relative to its mass, but no finer than _MASS_FLOOR of the mean mass: the
    # weights carry ~1e-16 absolute precision, which moves a cell's area by ~1e-15, so a cell of
    # 1e-9 (found on an inflated surface of 146k vertices) cannot be matched to 1e-6 of itself
    scale = np.maximum(nu, _MASS_FLOOR / len(nu))
    solver = _NewtonSolver()
    tau = _LOG_STEP
    try:
        for it in range(max_iter + 1):
            g = D.areas - nu
            err = float(np.max(np.abs(g) / scale))
            log.debug("newton %d: max relative cell-area error %.3e", it, err)
            if err < tol:
                stats["cell_area_error"] = err
                return w, D
            if it == max_iter:
                break
            H, A = D._newton_matrices(pin)
            gnorm = np.sqrt(_k.dot(g, g))
            r = np.log(D.areas / nu)
            far = float(np.max(np.abs(r))) > _FAR
            if far:
                # far from the solution (a cell off by more than a factor e^_FAR): Newton on the log
                # cell areas, each cell asked to change by a factor at most e^_LOG_STEP. A linear
                # model of the areas themselves asks crowded sites for growth that empties their
                # neighbours, so the steps had to be damped to nothing (and every tiny step cost a
                # convex hull); the log model keeps every predicted area positive.
                phi = np.sqrt(_k.dot(r, r))
                q = np.clip(r, -tau, tau)
                q -= _k.dot(D.areas, q)  # areas sum to 1: the change of log areas averages to 0
                rhs = -D.areas * q
                d, exact = solver.solve(H, A, P, rhs, 0.3 * (np.abs(rhs) + 0.1 * D.areas))
            else:
                # inexact Newton: every cell's residual within eta of its own area error (so that no
                # cell close to the KMT bound is pushed below it) plus eta * err of its target mass
                # (so that the max relative error contracts); eta falls with err (superlinear), but
                # no lower than needed to land 10x below tol (the last step needs no exact solve)
                eta = min(0.1, max(0.1 * err, 0.1 * tol / err))
                rhs = -g
                d, exact = solver.solve(H, A, P, rhs, eta * (np.abs(g) + eta * err * scale), last=err * err < tol)
            t = 1.0
            while True:
                wt = w + t * d
                Dt = PowerDiagram(P, wt, D.triangulation, fallback=t < 1e-2, neighbours=(D.ptr, D.neighbours))
                log.debug("trial t=%g flips=%d min area %.3e", t, Dt.flips, Dt.areas.min())
                if Dt.areas.min() >= eps0:
                    if far:
                        rt = np.log(Dt.areas / nu)
                        if np.sqrt(_k.dot(rt, rt)) <= (1.0 - 0.1 * t) * phi:
                            break
                    else:
                        gt = Dt.areas - nu
                        if np.sqrt(_k.dot(gt, gt)) <= (1.0 - 0.5 * t) * gnorm:
                            break
                t *= 0.5
                stats["halvings"] += 1
                if t < 1.0 / 32 and not exact:  # the inexact direction may be the reason: solve exactly
                    d, exact = solver.solve(H, A, P, rhs)
                    t = 1.0
                if t < 1e-14:
                    raise ConvergenceError(
                        f"optimal transport: the Newton step could not be damped enough at iteration {it} "
                        f"(max relative cell-area error {err:.2e}); the sites may be too crowded or duplicated"
                    )
            if far:  # trust region on the log step: wider after a full step, narrower after halvings
                tau = min(2.0 * tau, _LOG_STEP_MAX) if t == 1.0 else max(0.5 * tau, _LOG_STEP)
            w, D = wt, Dt
            stats["newton_iterations"] += 1
    finally:
        stats["factorizations"] += solver.factorizations
        stats["cg_iterations"] += solver.cg_iterations
    stats["cell_area_error"] = err
    raise ConvergenceError(
        f"optimal transport: max relative cell-area error {err:.2e} after max_iter={max_iter} Newton iterations "
        f"is above tol={tol:g}; raise max_iter or tol"
    )


# ---------------------------------------------------------------------------------------------
# a bijective square map for development and as a fallback


def _square_boundary(mesh: Mesh, corners=None):
    """Boundary loop (CCW for positively oriented faces) starting at corner 0, the 4 corner
    positions in the loop, and the loop's points on the square by arc length per side."""
    loop = boundary_loop(mesh.faces)
    V = mesh.vertices
    seg = np.linalg.norm(V[np.roll(loop, -1)] - V[loop], axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    L = s[-1]
    if corners is None:
        pos = [int(np.argmin(np.abs(s[:-1] - q * L))) for q in (0.0, 0.25, 0.5, 0.75)]
    else:
        where = {int(v): k for k, v in enumerate(loop)}
        pos = [where[int(c)] for c in corners]
    first = pos[0]
    loop = np.roll(loop, -first)
    pos = [(p - first) % len(loop) for p in pos]
    seg = np.linalg.norm(V[np.roll(loop, -1)] - V[loop], axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    uv = np.empty((len(loop), 2))
    ends = pos + [len(loop)]
    for k in range(4):
        a, b = ends[k], ends[k + 1]
        t = (s[a : b + 1] - s[a]) / (s[b] - s[a])
        t = t[:-1]
        c0, c1 = _SQUARE[k], _SQUARE[(k + 1) % 4]
        uv[a:b] = c0 + t[:, None] * (c1 - c0)
    return loop, np.asarray(pos, dtype=np.int64), uv


def _harmonic_square_map(mesh: Mesh, corners=None) -> FlatMap:
    """Harmonic (cotangent) map onto the unit square, boundary by arc length, 4 corners at equal
    arc length (or the given boundary vertices). Bijective when the cotangent weights are positive."""
    loop, pos, buv = _square_boundary(mesh, corners)
    n = mesh.n_vertices
    L = cotangent_laplacian(mesh.vertices, mesh.faces)
    inner = np.ones(n, dtype=bool)
    inner[loop] = False
    uv = np.zeros((n, 2))
    uv[loop] = buv
    Li = L[inner][:, inner].tocsc()
    rhs = -L[inner][:, loop] @ buv
    solve = spla.factorized(Li)
    uv[inner] = np.column_stack([solve(rhs[:, 0]), solve(rhs[:, 1])])
    return FlatMap(
        uv=uv,
        faces=mesh.faces,
        vertex_map=np.arange(n),
        corners=loop[pos],
        info={"method": "harmonic"},
        vertices=mesh.vertices,
    )


# ---------------------------------------------------------------------------------------------
# placing the vertices


def _sides(F: np.ndarray, corners: np.ndarray, loop=None):
    """The boundary loop (``boundary_loop(F)`` unless given) split into the 4 sides between the
    corners, in the order (0,0) -> (1,0) -> (1,1) -> (0,1) -> (0,0); each side includes both of
    its corners."""
    loop = boundary_loop(F) if loop is None else loop
    where = {int(v): k for k, v in enumerate(loop)}
    missing = [int(c) for c in corners if int(c) not in where]
    if missing:
        raise MeshError(f"init: corners {missing} are not on the boundary of the mesh; expected 4 boundary vertices")
    loop = np.roll(loop, -where[int(corners[0])])
    pos = {int(v): k for k, v in enumerate(loop)}
    if pos[int(corners[1])] > pos[int(corners[3])]:
        loop = np.concatenate([loop[:1], loop[1:][::-1]])
        pos = {int(v): k for k, v in enumerate(loop)}
    idx = [pos[int(c)] for c in corners] + [len(loop)]
    if not (idx[0] < idx[1] < idx[2] < idx[3]):
        raise MeshError("init: the 4 corners are not in counter-clockwise order along the boundary")
    loop = np.concatenate([loop, loop[:1]])
    return [loop[idx[k] : idx[k + 1] + 1] for k in range(4)]


def _monotone(t: np.ndarray, mass: np.ndarray, gap: float) -> tuple[np.ndarray, int]:
    """Make ``t`` (with fixed ends 0 and 1) strictly increasing by at least ``gap``: every run that
    breaks the order is re-spaced in proportion to the cumulative ``mass`` of its vertices."""
    t = t.copy()
    fixes = 0
    k = 1
    while k < len(t):
        if t[k] - t[k - 1] >= gap:
            k += 1
            continue
        a, b = k - 1, k
        while True:
            a = max(a - 1, 0)
            b = min(b + 1, len(t) - 1)
            if t[b] - t[a] >= (b - a) * gap * 2 or (a == 0 and b == len(t) - 1):
                break
        m = np.cumsum(mass[a : b + 1])
        m = (m - 0.5 * mass[a : b + 1] - 0.5 * mass[a]) / (m[-1] - 0.5 * mass[b] - 0.5 * mass[a])
        t[a : b + 1] = t[a] + m * (t[b] - t[a])
        fixes += 1
        k = a + 1
    return t, fixes


def _start_sites(uv, F, adjacency, sides, nu):
    """The sites of the transport: ``uv`` (the start map) with its boundary vertices exactly on
    their sides in strictly increasing order and its folds (faces of signed area <= 0, e.g.
    duplicate vertices) repaired, so that the faces triangulate the square and edge flips from
    them reach the Delaunay triangulation, in which no site is hidden.

    Returns ``(P, info, D, crowded)``: the sites (n, 2), a dict saying what was done, their
    Delaunay :class:`PowerDiagram` (zero weights), and the number
    of sites whose Delaunay cell is below ``_CROWDED`` times their mass (empty, or crowded beyond
    what the weights can resolve in floating point; the caller then uses :func:`_floater_sites`).
    """
    P = np.clip(np.asarray(uv, dtype=np.float64), 0.0, 1.0)
    info = {"boundary_reorders": 0, "folds_repaired": 0, "fold_repair_moved": 0, "sites": "init"}
    gap = 1e-3 / max(sum(len(s) - 1 for s in sides), 1)
    for k, side in enumerate(sides):  # boundary sites exactly on their side, in order
        P[side, 1 - k % 2] = 0.0 if k in (0, 3) else 1.0
        t = P[side, k % 2] if k < 2 else 1.0 - P[side, k % 2]
        t[0], t[-1] = 0.0, 1.0
        if (np.diff(t) <= 0).any():
            t, fixes = _monotone(t, nu[side], gap)
            info["boundary_reorders"] += fixes
            P[side, k % 2] = t if k < 2 else 1.0 - t
    if (_k.signed_areas(P, F) <= 0).any():
        info["folds_repaired"], info["fold_repair_moved"] = _repair_folds(P, F, _on_sides(sides, len(P)))
        info["sites"] = "init, folds repaired"
    D = PowerDiagram(P, np.zeros(len(P)), (F, adjacency))
    return P, info, D, int((D.areas <= _CROWDED * nu).sum())


def _on_sides(sides, n):
    fixed = np.zeros(n, dtype=bool)
    for side in sides:
        fixed[side] = True
    return fixed


def _floater_sites(V, F, sides):
    """Sites from Floater's map with mean-value weights of the 3D mesh: same corners, sides by 3D
    arc length; bijective, and far less crowded than a conformal map."""
    P = np.zeros((len(V), 2))
    for k, side in enumerate(sides):  # the boundary by 3D arc length on each side
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(V[side], axis=0), axis=1))])
        P[side] = _SQUARE[k] + (arc / arc[-1])[:, None] * (_SQUARE[(k + 1) % 4] - _SQUARE[k])
    fixed = _on_sides(sides, len(V))
    W = _mean_value_weights(V, F)
    fi = np.flatnonzero(~fixed)
    Wf = W[fi]
    L = (sp.diags(np.asarray(Wf.sum(axis=1)).ravel()) - Wf[:, fi]).tocsc()
    rhs = Wf[:, fixed] @ P[fixed]
    solve = spla.factorized(L)
    P[fi] = np.column_stack([solve(rhs[:, 0]), solve(rhs[:, 1])])
    if (_k.signed_areas(P, F) <= 0).any():  # rounding only (positive weights, convex boundary)
        _repair_folds(P, F, fixed)
    return P


def _place_boundary(uv, D, sides, nu):
    """Corners exactly on the square's corners; side vertices on their side at the midpoint of
    their cell's intersection with it (the centroid's projection when the cell misses the side),
    strictly monotone. Returns the number of re-spaced runs."""
    fixes = 0
    n_b = sum(len(s) - 1 for s in sides)
    gap = 1e-3 / max(n_b, 1)
    for k, side in enumerate(sides):
        c0, c1 = _SQUARE[k], _SQUARE[(k + 1) % 4]
        mid = D.side_midpoints[side, k]
        proj = D.centroids[side, k % 2]  # x for bottom/top, y for right/left
        mid = np.where(np.isnan(mid), proj, mid)
        t = mid if k < 2 else 1.0 - mid
        t = np.clip(t, 0.0, 1.0)
        t[0], t[-1] = 0.0, 1.0
        t, f = _monotone(t, nu[side], gap)
        fixes += f
        uv[side] = c0 + t[:, None] * (c1 - c0)
    return fixes


def _side_chords(F: np.ndarray, sides) -> list[tuple[int, int, int]]:
    """Interior edges ``(a, b, side)`` joining two vertices of one side that are not neighbours
    along it: no map with that side straight can keep both faces of such an edge (a chord)
    positive, so no bijective map onto the square with these corners exists."""
    E = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1)
    n = int(F.max()) + 1
    key, counts = np.unique(E[:, 0] * n + E[:, 1], return_counts=True)
    inner = key[counts == 2]
    a, b = inner // n, inner % n
    found = []
    for k, side in enumerate(sides):
        pos = np.full(n, -1, dtype=np.int64)
        pos[side] = np.arange(len(side))
        bad = (pos[a] >= 0) & (pos[b] >= 0) & (np.abs(pos[a] - pos[b]) != 1)
        found += [(int(x), int(y), k) for x, y in zip(a[bad], b[bad])]
    return found


def _mean_value_weights(uv, F):
    """Floater's mean-value weights of the positions ``uv`` (n, 2 or 3) (a sparse (n, n) matrix, row
    ``i``: ``(tan(a/2) + tan(b/2)) / |uv_j - uv_i|`` over the two face angles at ``i`` beside edge
    ``ij``), with unsigned angles so that they are positive even where faces fold. Where the
    1-ring of ``i`` is not folded they reproduce ``uv_i`` as the weighted mean of its neighbours,
    so a solve with them leaves a fold-free map in place and moves folded vertices least."""
    n = len(uv)
    rows, cols, vals = [], [], []
    scale = float(np.ptp(uv, axis=0).max()) or 1.0
    for c in range(3):
        i, j, k = F[:, c], F[:, (c + 1) % 3], F[:, (c + 2) % 3]
        e1 = uv[j] - uv[i]
        e2 = uv[k] - uv[i]
        l1 = np.maximum(np.sqrt(np.einsum("ij,ij->i", e1, e1)), 1e-15 * scale)
        l2 = np.maximum(np.sqrt(np.einsum("ij,ij->i", e2, e2)), 1e-15 * scale)
        if uv.shape[1] == 2:
            cross = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        else:
            cross = np.linalg.norm(np.cross(e1, e2), axis=1)
        dot = np.einsum("ij,ij->i", e1, e2)
        # tan(angle / 2) = |e1 x e2| / (|e1||e2| + e1.e2), capped where the angle reaches pi
        tan_half = np.minimum(cross / np.maximum(l1 * l2 + dot, 1e-12 * l1 * l2), 1e6)
        tan_half = np.maximum(tan_half, 1e-12)  # folded flat: still a positive weight
        rows += [i, i]
        cols += [j, k]
        vals += [tan_half / l1, tan_half / l2]
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()


def _repair_folds(uv, F, fixed):
    """Untangle flipped faces (signed area <= 0) in place: the free vertices of a growing ring
    neighbourhood of the flipped faces are re-solved with mean-value weights of the current
    positions (:func:`_mean_value_weights`), everything else fixed. Positive faces, however small,
    are left alone. When the neighbourhood reaches the whole mesh this is Floater's embedding with
    positive weights of a disk whose boundary is the square (``fixed``, in order), bijective unless
    an edge joins two vertices of one side (:func:`_side_chords`, checked by the caller).

    Returns (number of flipped faces found first, number of vertices moved).
    """
    n = len(uv)
    bad = _k.signed_areas(uv, F) <= 0.0
    n_bad0 = int(bad.sum())
    if not n_bad0:
        return 0, 0
    W = _mean_value_weights(uv, F)
    A = (W > 0).astype(np.float64)
    moved = np.zeros(n, dtype=bool)
    rings = 1
    while bad.any():
        region = np.zeros(n, dtype=bool)
        region[F[bad].ravel()] = True
        for _ in range(rings):
            region |= (A @ region.astype(np.float64)) > 0
        free = region & ~fixed
        whole = free.sum() == (~fixed).sum()
        fi = np.flatnonzero(free)
        Wf = W[fi]
        Lff = (sp.diags(np.asarray(Wf.sum(axis=1)).ravel()) - Wf[:, fi]).tocsc()
        rhs = Wf[:, ~free] @ uv[~free]
        solve = spla.factorized(Lff)
        trial = uv.copy()
        trial[fi] = np.column_stack([solve(rhs[:, 0]), solve(rhs[:, 1])])
        bad_t = _k.signed_areas(trial, F) <= 0.0
        if bad_t.sum() < bad.sum() or whole:
            uv[:] = trial
            moved |= free
            bad = bad_t
            rings = 1
            if whole and bad.any():
                raise ConvergenceError(
                    f"fold repair: {int(bad.sum())} faces stay flipped even after an embedding of the whole "
                    "disk with positive weights; expected none for a disk with no edge between two vertices "
                    "of one side. Please report this mesh"
                )
        else:
            rings *= 2
    return n_bad0, int(moved.sum())


def _face_log_ratio(uv, F, target):
    a = _k.signed_areas(uv, F)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.maximum(a, 1e-300) / target), int((a <= 0).sum())


def _refine(uv, F, target, sides, *, area_tol, max_sweeps, chunk=5, delta_rel=1e-3):
    """Untangle and match face areas in place (Gauss-Seidel sweeps, see ``area_sweeps``; the first
    ``chunk`` plain, the later ones over-relaxed by 1.7, which needs 3x fewer on fsaverage5) until the
    95th percentile of |log(a_f / A_f)| is at most ``area_tol`` with no flipped face, or
    ``max_sweeps``. The sweeps keep every side vertex between its neighbours on the side; a fold
    they cannot remove is repaired by a local solve (:func:`_repair_folds`)."""
    n = len(uv)
    kind = np.zeros(n, dtype=np.int64)
    dirs = np.zeros((n, 2))
    bprev = np.zeros(n, dtype=np.int64)
    bnext = np.zeros(n, dtype=np.int64)
    for k, side in enumerate(sides):
        kind[side] = 1
        dirs[side] = _SQUARE[(k + 1) % 4] - _SQUARE[k]
        bprev[side[1:-1]] = side[:-2]
        bnext[side[1:-1]] = side[2:]
    for side in sides:
        kind[side[[0, -1]]] = 2
    vf_ptr, vf_idx = _k.vertex_faces(F, n)
    d, flips = _face_log_ratio(uv, F, target)
    out = {"folds_after_placement": flips, "face_log_ratio_p95_placement": float(np.percentile(np.abs(d), 95))}
    sweeps = 0
    repaired = moved = 0

    def repair():
        nonlocal repaired, moved
        r, m = _repair_folds(uv, F, kind > 0)
        repaired += r
        moved += m
        return _face_log_ratio(uv, F, target)

    while sweeps < max_sweeps and (flips or np.percentile(np.abs(d), 95) > area_tol):
        # plain Gauss-Seidel first; over-relaxed when more is needed (3x fewer sweeps on fsaverage5)
        omega = 1.0 if sweeps == 0 else 1.7
        _k.area_sweeps(uv, F, target, vf_ptr, vf_idx, kind, dirs, bprev, bnext, delta_rel, chunk, omega)
        sweeps += chunk
        d, flips = _face_log_ratio(uv, F, target)
        if flips and sweeps >= 4 * chunk:
            d, flips = repair()
    if flips:
        d, flips = repair()
    out.update(refine_sweeps=sweeps, folds_repaired=repaired, fold_repair_moved=moved, flipped_faces=flips,
               face_log_ratio_p95=float(np.percentile(np.abs(d), 95)))
    return out


# ---------------------------------------------------------------------------------------------
# the area-preserving map


def area_preserving_map(
    mesh: Mesh,
    init: FlatMap | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
    area_tol: float = 0.05,
    max_sweeps: int = 200,
) -> FlatMap:
    """Area-preserving map of a disk onto the unit square (semi-discrete optimal transport).

    The vertices of ``init`` (a bijective square map, by default the conformal map) are the
    sites; their target masses are the normalised barycentric 3D vertex areas; the source is the
    uniform measure on [0, 1]^2. The sites are the start map with its boundary in order on the
    sides and its folds (duplicate sites) repaired, so that no Delaunay cell is empty; if cells
    still vanish in floating point, or Newton fails from them, Floater's mean-value map is the
    start instead (``info["start"]``). Damped Newton (Kitagawa-Merigot-Thibert: no cell ever
    smaller than half the smallest start/target cell, gauge pinned) finds the power weights whose
    clipped cells have those areas; far from the solution it works on the log cell areas, each cell
    asked to change by a bounded factor. Its linear systems are solved inexactly (conjugate
    gradients preconditioned by the sparse LU of an earlier Hessian, in nested-dissection order),
    and the regular triangulations are kept up to date by edge flips, starting from the input faces.
    Interior vertices go to their cell centroids, corners to the square's
    corners, boundary vertices to their side (midpoint of the cell's contact with it) in strictly
    monotone order. Folds are then removed and face areas matched by Gauss-Seidel sweeps on
    ``sum_f A_f log(a_f / A_f)^2`` that never flip a positive face nor reorder a side (a local
    solve with mean-value weights is the fallback), until the 95th percentile of
    ``|log(a_f / A_f)|`` is at most ``area_tol``.

    Parameters
    ----------
    mesh : Mesh
        A topological disk (one boundary loop), e.g. ``surfmap.cut(mesh, keep).mesh``.
    init : FlatMap, optional
        A bijective map of ``mesh`` onto the unit square with its 4 corners; default
        ``surfmap.conformal_map(mesh)``.
    tol : float
        Stop Newton when the largest relative cell-area error ``|area_i - nu_i| / nu_i`` is below it
        (for cells below a thousandth of the mean area: relative to that thousandth).
    max_iter : int
        Newton iterations at most.
    area_tol : float
        Target of the refinement: 95th percentile of the per-face ``|log area ratio|`` (areas
        normalised by their totals). ``inf`` keeps the centroid placement (folds are still repaired).
    max_sweeps : int
        Gauss-Seidel sweeps at most.

    Returns
    -------
    FlatMap
        ``uv`` (n, 2) in [0, 1]^2, the input faces (no flipped face), ``vertex_map`` and ``corners``
        of ``init``; ``info`` holds ``start`` (how the sites were made: boundary reorders, folds
        repaired, ``sites``), the Newton iterations, halvings, sparse factorisations and
        CG iterations of the inexact Newton solves, final cell-area error,
        refinement statistics (folds repaired and vertices moved) and stage timings (s).

    Raises
    ------
    MeshError
        ``mesh`` is not a disk, or ``init`` is not a map of ``mesh`` (other size or faces, NaN,
        corners off the boundary), or an interior edge joins two vertices of one side that are not
        neighbours along it (a chord: no bijective map exists; ``surfmap.cut`` splits chords).
    ValueError
        ``tol``, ``max_iter``, ``area_tol`` or ``max_sweeps`` out of range.
    ConvergenceError
        Newton did not reach ``tol`` in ``max_iter`` iterations.

    Examples
    --------
    >>> disk = surfmap.cut(mesh, keep).mesh                       # doctest: +SKIP
    >>> fm = surfmap.area_preserving_map(disk)                    # doctest: +SKIP
    >>> fm.info["cell_area_error"] < 1e-6                         # doctest: +SKIP
    True
    """
    if not isinstance(mesh, Mesh):
        raise MeshError(f"mesh: expected a surfmap.Mesh; found {type(mesh).__name__}. Wrap arrays as Mesh(V, F)")
    _check_positive("tol", tol, upper=1.0)
    _check_positive("area_tol", area_tol)
    if not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ParameterError(f"max_iter: expected a non-negative integer; found {max_iter!r}")
    if not isinstance(max_sweeps, (int, np.integer)) or max_sweeps < 0:
        raise ParameterError(f"max_sweeps: expected a non-negative integer; found {max_sweeps!r}")
    F = mesh.faces
    n = mesh.n_vertices
    adjacency = _k.triangle_adjacency(F)
    loop = _k.single_boundary_loop(F, adjacency, n)  # fast path: the mesh is plainly a disk
    if len(loop) == 0:
        loop = boundary_loop(F)  # the loop of a less plain disk, or MeshError unless a disk
    timings = {}
    t0 = time.perf_counter()
    if init is None:
        from .conformal import conformal_map

        init = conformal_map(mesh)
    timings["init"] = time.perf_counter() - t0
    if not isinstance(init, FlatMap):
        raise MeshError(f"init: expected a FlatMap of the mesh (e.g. surfmap.conformal_map(mesh)); found {type(init).__name__}")
    if init.uv.shape != (n, 2) or init.faces.shape != F.shape or not np.array_equal(init.faces, F):
        raise MeshError(
            f"init: not a map of this mesh: expected {n} vertices and its {len(F)} faces; found {len(init.uv)} "
            f"vertices and {len(init.faces)} faces. Compute init from the same disk mesh"
        )
    if not np.isfinite(init.uv).all():
        raise MeshError(f"init: {int((~np.isfinite(init.uv)).any(axis=1).sum())} vertices have NaN or infinite uv")

    t0 = time.perf_counter()
    target = face_areas(mesh.vertices, F)
    target = target / target.sum()
    nu = np.bincount(F.ravel(), weights=np.repeat(target / 3.0, 3), minlength=n)  # = vertex_areas
    nu = nu / nu.sum()
    if nu.min() <= 0:
        raise MeshError(f"mesh: {int((nu <= 0).sum())} vertices have zero area; remove unreferenced vertices")
    sides = _sides(F, init.corners, loop)
    chords = _side_chords(F, sides)
    if chords:
        a, b, k = chords[0]
        raise MeshError(
            f"mesh: {len(chords)} interior edge(s) join two vertices of one side of the square that are not "
            f"neighbours along it (first: vertices {a} and {b} on side {k}); no bijective map onto the square "
            "has such an edge. Cut the mesh with surfmap.cut (which splits chords) or choose other corners"
        )
    P, start_info, D, crowded = _start_sites(init.uv, F, adjacency, sides, nu)
    stats = {"start": start_info}
    for key in ("newton_iterations", "halvings", "factorizations", "cg_iterations"):
        stats[key] = 0
    if crowded:
        log.warning(
            "transport: %d sites of the start map have an empty or vanishing cell (crowded below floating-point "
            "precision); starting from Floater's mean-value map instead", crowded)
        P = _floater_sites(mesh.vertices, F, sides)
        start_info["sites"] = f"Floater mean-value map ({crowded} crowded sites in the start map)"
        D = (F, adjacency)
    try:
        _w, D = _damped_newton(P, nu, np.zeros(n), D, tol, max_iter, None, stats)
    except ConvergenceError as e:
        if crowded:
            raise
        # the start map's sites may still be too crowded for Newton; Floater's map is not
        log.warning("transport: %s; starting again from Floater's mean-value map", e)
        P = _floater_sites(mesh.vertices, F, sides)
        start_info["sites"] = f"Floater mean-value map (from the start map: {e})"
        _w, D = _damped_newton(P, nu, np.zeros(n), (F, adjacency), tol, max_iter, None, stats)
    timings["transport"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    uv = D.centroids.copy()
    boundary_fixes = _place_boundary(uv, D, sides, nu)
    timings["placement"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    refine = _refine(uv, F, target, sides, area_tol=area_tol, max_sweeps=max_sweeps)
    timings["refinement"] = time.perf_counter() - t0
    info = {
        "method": "area",
        **stats,
        "boundary_reorders": boundary_fixes,
        **refine,
        "timings": timings,
    }
    return FlatMap(uv=uv, faces=F, vertex_map=init.vertex_map, corners=init.corners, info=info, vertices=mesh.vertices)


def _check_positive(name, value, upper=None):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected a positive number; found {value!r}") from None
    if not (v > 0) or (upper is not None and v >= upper):
        rng = f"in (0, {upper})" if upper is not None else "> 0"
        raise ParameterError(f"{name}: expected a number {rng}; found {value!r}")
