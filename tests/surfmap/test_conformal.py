import json

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial import Delaunay

from _meshes import make_grid

import surfmap
from surfmap import conformal as C
from surfmap._kernels import conformal as K
from surfmap.exceptions import MeshError
from surfmap.mesh import Mesh, boundary_loop, corner_angles, cotangent_laplacian, edge_lengths

# ---------------------------------------------------------------------------------------------
# meshes


def grid(nx, ny, a=1.0, b=1.0):
    """Flat a x b rectangle, (nx+1) x (ny+1) vertices, CCW faces with alternating diagonals (every
    corner has 2 faces when nx, ny are even); returns mesh and corner ids."""
    mesh = make_grid(nx + 1, ny + 1, a, b, alternate=True)
    corners = np.array([0, nx, (nx + 1) * (ny + 1) - 1, (nx + 1) * ny])
    return mesh, corners


def disk_points(rings=7, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    pts = [[0.0, 0.0]]
    for k in range(1, rings + 1):
        th = np.linspace(0, 2 * np.pi, 6 * k, endpoint=False) + 0.1 * k
        r = k / rings
        ring = np.column_stack([r * np.cos(th), r * np.sin(th)])
        if k < rings and jitter:
            ring += jitter / rings * rng.uniform(-1, 1, ring.shape)
        pts.append(ring)
    P = np.vstack(pts)
    F = Delaunay(P).simplices.astype(np.int64)
    e1, e2 = P[F[:, 1]] - P[F[:, 0]], P[F[:, 2]] - P[F[:, 0]]
    neg = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0
    F[neg] = F[neg][:, ::-1]
    return P, F


def planar_disk(**kw):
    P, F = disk_points(**kw)
    return Mesh(np.column_stack([P, np.zeros(len(P))]), F)


def cap(phi_max=1.2, **kw):
    P, F = disk_points(**kw)
    r = np.hypot(P[:, 0], P[:, 1])
    th = np.arctan2(P[:, 1], P[:, 0])
    phi = r * phi_max
    V = np.column_stack([np.sin(phi) * np.cos(th), np.sin(phi) * np.sin(th), np.cos(phi)])
    return Mesh(V, F)


def egg_cap(**kw):
    """A cap with an egg-shaped outline: a well-defined principal axis and direction."""
    mesh = cap(**kw)
    V = mesh.vertices.copy()
    V[:, 0] = 1.5 * V[:, 0] + 0.4 * V[:, 0] ** 2
    return Mesh(V, mesh.faces)


def angle_sums(uv, F):
    V = np.column_stack([uv, np.zeros(len(uv))])
    A = corner_angles(V, F)
    return np.bincount(F.ravel(), weights=A.ravel(), minlength=len(uv))


def check_square(fm, mesh):
    """Corners exact, boundary vertices on their sides in order, no flipped face."""
    uv = fm.uv
    np.testing.assert_array_equal(uv[fm.corners], [[0, 0], [1, 0], [1, 1], [0, 1]])
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    loop = boundary_loop(mesh.faces)
    pos = {int(v): i for i, v in enumerate(loop)}
    p = [pos[int(c)] for c in fm.corners]
    nb = len(loop)
    for s, (axis, val, sign) in enumerate([(1, 0.0, 1), (0, 1.0, 1), (1, 1.0, -1), (0, 0.0, -1)]):
        a, b = p[s], p[(s + 1) % 4]
        side = loop[np.arange(a, a + ((b - a) % nb) + 1) % nb]
        np.testing.assert_array_equal(uv[side, axis], val)
        assert (sign * np.diff(uv[side, 1 - axis]) > 0).all()
    assert (fm.signed_areas() > 0).all()


# ---------------------------------------------------------------------------------------------
# derivatives


def _state(mesh, seed=1):
    V, F = mesh.vertices, mesh.faces.copy()
    n = len(V)
    twin, ok = K.build_twins(F, n)
    assert ok
    lam = np.log(edge_lengths(V, F))[:, [2, 0, 1]].ravel().copy()
    u = 0.1 * np.random.default_rng(seed).normal(size=n)
    return F, twin, lam, u, n


def test_energy_gradient_matches_finite_differences():
    mesh = cap(rings=4, jitter=0.3)
    F, _twin, lam, u, n = _state(mesh)
    loop = boundary_loop(F)
    Theta = C._targets(n, loop, loop[[0, 5, 10, 15]])
    asum, cotw = np.empty(n), np.empty(3 * len(F))

    def energy(x):
        return K.evaluate(F, lam, x, Theta, asum, cotw, True)[0]

    energy(u)
    grad = Theta - asum
    eps = 1e-6
    fd = np.array([(energy(u + eps * e) - energy(u - eps * e)) / (2 * eps) for e in np.eye(n)])
    np.testing.assert_allclose(fd, grad, rtol=1e-6, atol=1e-7)


def test_hessian_is_cotangent_laplacian_of_current_metric():
    mesh = cap(rings=4, jitter=0.3)
    F, _twin, lam, u, n = _state(mesh, seed=2)
    asum, cotw = np.empty(n), np.empty(3 * len(F))
    zeros = np.zeros(n)

    def sums(x):
        K.evaluate(F, lam, x, zeros, asum, cotw, False)
        return asum.copy()

    sums(u)
    indptr, indices, slots = K.csr_pattern(F, n)
    H = C._laplacian_csc(indptr, indices, K.csr_values(slots, cotw, len(indices)), n).toarray()
    eps = 1e-6
    # Hessian of the energy = -d(angle sums)/du
    fd = np.column_stack([-(sums(u + eps * e) - sums(u - eps * e)) / (2 * eps) for e in np.eye(n)])
    np.testing.assert_allclose(fd, H, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(H, H.T, atol=1e-12)
    assert np.linalg.eigvalsh(H)[1] > 0  # PSD, kernel = constants


def test_spd_solver_single_precision_preconditions_pcg_to_double_accuracy():
    import scipy.sparse as sp

    mesh = planar_disk(rings=6, jitter=0.2)
    L = sp.csc_matrix(cotangent_laplacian(mesh.vertices, mesh.faces))
    L = (L + sp.csc_matrix(([1.0], ([0], [0])), shape=L.shape)).tocsc()  # pin the gauge
    b = np.random.default_rng(0).standard_normal(L.shape[0])
    s = C._SPDSolver(L, single=True)
    assert s.single
    assert np.linalg.norm(L @ s.solve(b) - b) > 1e-10 * np.linalg.norm(b)  # float32 alone is not exact
    x, k, ok = C._pcg(L, b, s.solve, 1e-13, 20)
    assert ok and k <= 5
    np.testing.assert_allclose(L @ x, b, atol=1e-11 * np.linalg.norm(b))


def test_spd_solver_falls_back_to_double_when_single_precision_is_singular():
    import scipy.sparse as sp

    A = sp.csc_matrix(np.array([[1.0, 1.0], [1.0, 1.0 + 1e-9]]))  # singular once rounded to float32
    s = C._SPDSolver(A, single=True)
    assert not s.single
    np.testing.assert_allclose(A @ s.solve(np.array([1.0, 2.0])), [1.0, 2.0], rtol=1e-6)


def test_lobachevsky_matches_scipy_spence():
    from scipy.special import spence

    x = np.linspace(1e-6, np.pi - 1e-6, 37)
    ref = 0.5 * np.imag(spence(1 - np.exp(2j * x)))
    np.testing.assert_allclose([K.lobachevsky(t) for t in x], ref, atol=1e-14)


def test_ptolemy_flip_keeps_cocircular_lengths_and_is_an_involution():
    # a quad inscribed in a circle: the Ptolemy length equals the Euclidean diagonal
    th = np.array([0.3, 1.9, 3.5, 5.0])
    P = np.column_stack([np.cos(th), np.sin(th), np.zeros(4)])
    F = np.array([[0, 1, 2], [0, 2, 3]])
    twin, _ = K.build_twins(F, 4)
    lam = np.log(edge_lengths(P, F))[:, [2, 0, 1]].ravel().copy()
    u = np.zeros(4)
    h = int(np.flatnonzero(twin >= 0)[0])
    lam0, F0 = lam.copy(), F.copy()
    K._flip(F, twin, lam, u, h, False)
    diag = np.exp(lam[np.flatnonzero(twin >= 0)[0]])
    np.testing.assert_allclose(diag, np.linalg.norm(P[1] - P[3]), rtol=1e-13)
    K._flip(F, twin, lam, u, int(np.flatnonzero(twin >= 0)[0]), False)
    key = lambda F, lam: sorted(
        (
            min(F.ravel()[i], F[:, [1, 2, 0]].ravel()[i]),
            max(F.ravel()[i], F[:, [1, 2, 0]].ravel()[i]),
            round(lam[i], 12),
        )
        for i in range(6)
    )
    assert key(F, lam) == key(F0, lam0)


# ---------------------------------------------------------------------------------------------
# analytic cases


def test_conformal_map_flat_square_is_identity():
    mesh, corners = grid(12, 12, 2.0, 2.0)
    fm = surfmap.conformal_map(mesh, corners)
    assert fm.info["iterations"] == 0
    np.testing.assert_allclose(fm.uv, mesh.vertices[:, :2] / 2.0, atol=1e-12)
    np.testing.assert_array_equal(fm.vertex_map, np.arange(mesh.n_vertices))
    np.testing.assert_array_equal(fm.faces, mesh.faces)
    check_square(fm, mesh)


@pytest.mark.parametrize("a, b", [(3.0, 1.0), (1.0, 2.5)])
def test_conformal_map_rectangle_modulus(a, b):
    mesh, corners = grid(16, 6, a, b)
    fm = surfmap.conformal_map(mesh, corners)
    np.testing.assert_allclose(fm.info["modulus"], b / a, rtol=1e-10)
    np.testing.assert_allclose(fm.info["dilatation"], max(a / b, b / a), rtol=1e-10)
    L = cotangent_laplacian(mesh.vertices, mesh.faces)
    np.testing.assert_allclose(C.dirichlet_modulus(L, boundary_loop(mesh.faces), corners), b / a, rtol=1e-10)
    d = surfmap.distortion(fm)
    np.testing.assert_allclose(d.dilatation, max(a / b, b / a), rtol=1e-9)
    check_square(fm, mesh)


@pytest.mark.parametrize("make", [planar_disk, cap], ids=["disk", "cap"])
def test_conformal_map_disk_and_cap_onto_square(make):
    mesh = make(rings=8, jitter=0.2)
    fm = surfmap.conformal_map(mesh)
    info = fm.info
    assert max(info["residuals"].values()) < 1e-9
    check_square(fm, mesh)
    s = angle_sums(fm.uv, mesh.faces)
    np.testing.assert_allclose(s[fm.corners], np.pi / 2, atol=1e-8)
    assert abs(np.log(info["modulus"])) < 0.05  # modulus-1 corners (up to the corner grid)
    d = surfmap.distortion(fm)
    assert d.n_flipped == 0
    assert d.dilatation_mean < 1.1
    assert json.loads(json.dumps(info))["iterations"] == info["iterations"]


def test_conformal_map_invariant_to_scale_and_rigid_motion():
    mesh = egg_cap(rings=6, jitter=0.3, seed=3)
    fm = surfmap.conformal_map(mesh)
    c, s = np.cos(0.7), np.sin(0.7)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, c, s], [0, -s, c]])
    moved = Mesh(3.7 * mesh.vertices @ R.T + [5.0, -2.0, 1.0], mesh.faces)
    fm2 = surfmap.conformal_map(moved)
    np.testing.assert_array_equal(fm2.corners, fm.corners)
    np.testing.assert_allclose(fm2.uv, fm.uv, atol=1e-9)


def test_conformal_map_one_blas_thread_gives_the_same_map():
    mesh = egg_cap(rings=6, jitter=0.3, seed=5)
    fm = surfmap.conformal_map(mesh)  # runs with one BLAS thread
    fm2 = C.conformal_map.__wrapped__(mesh)  # default BLAS threads
    np.testing.assert_array_equal(fm2.corners, fm.corners)
    np.testing.assert_allclose(fm2.uv, fm.uv, atol=1e-12)


def test_spd_solver_nested_dissection_order_solves_exactly(monkeypatch):
    mesh = egg_cap(rings=6, jitter=0.3, seed=2)
    L = cotangent_laplacian(mesh.vertices, mesh.faces)
    A = (L + 1e-2 * sp.eye(L.shape[0])).tocsc()
    b = np.random.default_rng(0).normal(size=L.shape[0])
    monkeypatch.setattr(C, "_ND_MIN_VERTICES", 0)
    solver = C._SPDSolver(A, points=C._plane_coordinates(mesh.vertices))
    assert solver.order is not None and sorted(solver.order) == list(range(L.shape[0]))
    np.testing.assert_allclose(A @ solver.solve(b), b, atol=1e-10)


def test_conformal_map_nested_dissection_order_gives_the_same_map(monkeypatch):
    # meshes above _ND_MIN_VERTICES order the factorisation by nested dissection; force it here
    mesh = egg_cap(rings=8, jitter=0.3, seed=7)
    fm = surfmap.conformal_map(mesh)
    monkeypatch.setattr(C, "_ND_MIN_VERTICES", 0)
    fm2 = surfmap.conformal_map(mesh)
    np.testing.assert_array_equal(fm2.corners, fm.corners)
    np.testing.assert_allclose(fm2.uv, fm.uv, atol=1e-9)
    assert max(fm2.info["residuals"].values()) < 1e-9


def test_conformal_map_invariant_to_vertex_relabelling():
    mesh = egg_cap(rings=6, jitter=0.3, seed=4)
    fm = surfmap.conformal_map(mesh)
    perm = np.random.default_rng(0).permutation(mesh.n_vertices)  # new vertex i = old perm[i]
    inv = np.argsort(perm)
    F = inv[mesh.faces]
    relabelled = Mesh(mesh.vertices[perm], np.roll(F, 1, axis=1)[::-1])
    fm2 = surfmap.conformal_map(relabelled)
    np.testing.assert_array_equal(perm[fm2.corners], fm.corners)
    np.testing.assert_allclose(fm2.uv, fm.uv[perm], atol=1e-9)


def test_conformal_map_fsaverage5_template():
    hemi = surfmap.load_template("fsaverage5", "left")
    disk = surfmap.cut(hemi.mesh, hemi.cortex).mesh
    fm = surfmap.conformal_map(disk)
    assert max(fm.info["residuals"].values()) < 1e-8
    check_square(fm, disk)
    d = surfmap.distortion(fm)
    assert d.n_flipped == 0
    assert d.dilatation_mean <= 1.10
    assert fm.info["flips"]["during_flow"] > 0
    # its modulus-1 prediction is 1.5 % off on the flat metric, so the corners are re-chosen
    assert fm.info["corner_choice"]["switched_at_iteration"] is not None
    assert abs(np.log(fm.info["modulus"])) < 0.01


# ---------------------------------------------------------------------------------------------
# errors


def test_conformal_map_rejects_closed_or_annulus():
    mesh, _ = grid(6, 6)
    keep = np.ones(len(mesh.faces), dtype=bool)
    keep[[42, 43]] = False  # a hole in the middle
    with pytest.raises(MeshError, match="topological disk.*2 boundary loop"):
        surfmap.conformal_map(Mesh(mesh.vertices, mesh.faces[keep]))


def test_conformal_map_rejects_non_mesh():
    with pytest.raises(MeshError, match="expected a surfmap.Mesh"):
        surfmap.conformal_map(np.zeros((3, 3)))


def test_conformal_map_rejects_corner_not_on_boundary():
    mesh, corners = grid(6, 6)
    bad = corners.copy()
    bad[1] = 8  # interior vertex
    with pytest.raises(MeshError, match="not on the boundary"):
        surfmap.conformal_map(mesh, bad)


def test_conformal_map_rejects_adjacent_corners():
    mesh, corners = grid(6, 6)
    bad = corners.copy()
    bad[1] = 1  # next to corner 0
    with pytest.raises(MeshError, match="adjacent"):
        surfmap.conformal_map(mesh, bad)


def test_conformal_map_rejects_wrong_corner_count():
    mesh, corners = grid(6, 6)
    with pytest.raises(MeshError, match="4 integer vertex indices"):
        surfmap.conformal_map(mesh, corners[:3])


def test_conformal_map_rejects_corners_out_of_order():
    mesh, corners = grid(6, 6)
    with pytest.raises(MeshError, match="not in boundary order"):
        surfmap.conformal_map(mesh, corners[[0, 2, 1, 3]])


def test_conformal_map_rejects_bad_tol():
    mesh, corners = grid(4, 4)
    with pytest.raises(surfmap.exceptions.ParameterError, match="tol: expected a positive number"):
        surfmap.conformal_map(mesh, corners, tol=-1.0)


def test_conformal_map_raises_when_max_iter_is_too_small():
    with pytest.raises(surfmap.exceptions.ConvergenceError, match="did not reach tol"):
        surfmap.conformal_map(planar_disk(rings=6), max_iter=1)


def test_conformal_map_accepts_a_stall_at_the_round_off_floor(caplog):
    # tol below what float64 angle sums can reach: Newton stalls near 1e-14 and the map is
    # accepted (below the 1e-8 bar) with reached_tol False and a warning, not an error
    mesh = egg_cap(rings=6, jitter=0.3, seed=3)
    with caplog.at_level("WARNING", logger="surfmap.conformal"):
        fm = surfmap.conformal_map(mesh, tol=1e-18)
    assert fm.info["reached_tol"] is False
    assert max(fm.info["residuals"].values()) < 1e-12
    assert "stalled" in caplog.text
    assert surfmap.conformal_map(mesh).info["reached_tol"] is True


def test_conformal_map_rejects_ears():
    mesh, _ = grid(4, 4)
    V = np.vstack([mesh.vertices, [[0.5, -0.5, 0.0]]])
    F = np.vstack([mesh.faces, [[1, 0, 25]]])  # a triangle hanging below the first cell
    with pytest.raises(MeshError, match="ears"):
        surfmap.conformal_map(Mesh(V, F))


def test_repair_folds_untangles_a_folded_vertex_locally():
    mesh, corners = grid(10, 10)
    uv = mesh.vertices[:, :2].copy()
    uv[60] = uv[60] + [0.25, 0.17]  # fold the faces around an interior vertex
    area = K.signed_areas(uv, mesh.faces)
    assert (area <= 0).sum() > 0
    loop = boundary_loop(mesh.faces)
    fixed, info = C._repair_folds(uv, mesh.vertices, mesh.faces, loop, corners, 1.0, 1.0)
    assert (K.signed_areas(fixed, mesh.faces) > 0).all()
    assert info["folded_input_faces"] == int((area <= 0).sum()) and info["folded_after_repair"] == 0
    np.testing.assert_array_equal(fixed[loop], uv[loop])
    far = np.linalg.norm(mesh.vertices[:, :2] - mesh.vertices[60, :2], axis=1) > 0.45
    np.testing.assert_array_equal(fixed[far], uv[far])  # only a neighbourhood moved
    # the grid is its own conformal map: the repair puts the vertex back where it was
    np.testing.assert_allclose(fixed, mesh.vertices[:, :2], atol=1e-3)  # 1 % of an edge
    assert info["repair_region"]["dilatation_region_after"] < 1.01


def spiked_grid(nx=32, height=0.5, width=0.05, skew=0.3, seed=0):
    """A jittered (non-Delaunay) grid lifted by a narrow Gaussian spike: its flat metric lives on
    a triangulation far from the input's near the spike, where input faces fold on the layout."""
    mesh, corners = grid(nx, nx)
    V = mesh.vertices.copy()
    inner = ((V[:, :2] > 0) & (V[:, :2] < 1)).all(axis=1)
    V[inner, :2] += skew * np.random.default_rng(seed).uniform(-1, 1, (int(inner.sum()), 2)) / nx
    V[:, 2] = height * np.exp(-((V[:, 0] - 0.5) ** 2 + (V[:, 1] - 0.5) ** 2) / width**2)
    return Mesh(V, mesh.faces), corners


def test_conformal_map_repairs_folds_of_the_flipped_layout_locally(monkeypatch):
    mesh, _ = spiked_grid()
    unrepaired = {}
    repair = C._repair_folds

    def spy(uv, *args):
        unrepaired["uv"] = uv.copy()
        return repair(uv, *args)

    monkeypatch.setattr(C, "_repair_folds", spy)
    fm = surfmap.conformal_map(mesh)
    info = fm.info
    assert info["folded_input_faces"] >= 1 and info["folded_after_repair"] == 0
    check_square(fm, mesh)
    uv0 = unrepaired["uv"]
    folded = K.signed_areas(uv0, mesh.faces) <= 0
    assert folded.sum() == info["folded_input_faces"]
    # local: few vertices moved, all within a few rings of the folded faces
    moved = np.flatnonzero((fm.uv != uv0).any(axis=1))
    assert len(moved) == info["repair_region"]["vertices_moved"] <= 0.06 * len(uv0)
    centre = mesh.vertices[np.unique(mesh.faces[folded]), :2]
    dist = np.linalg.norm(mesh.vertices[moved, None, :2] - centre[None], axis=2).min(axis=1)
    assert dist.max() < 4 * 1.5 / 32
    # conformality kept: mean dilatation no worse than the unrepaired map's (its folded faces left out)
    before = surfmap.distortion(surfmap.FlatMap(uv=uv0, faces=fm.faces, vertex_map=fm.vertex_map,
                                                corners=fm.corners, vertices=fm.vertices))
    after = surfmap.distortion(fm)
    assert after.dilatation_mean <= 1.01 * before.dilatation_mean
    np.testing.assert_allclose(info["repair_region"]["dilatation_all_after"], after.dilatation_mean, rtol=1e-6)


def test_conformal_map_splits_a_degenerate_boundary_triangle_and_keeps_the_metric():
    # an interior vertex pulled to 0.002 above the middle of a boundary edge: the angle opposite
    # that edge is 178 degrees, which no flip can remove. The edge is split intrinsically; the
    # flat square is still mapped onto itself (0 iterations) and the inserted vertex is not output
    mesh, corners = grid(8, 8)
    V = mesh.vertices.copy()
    V[12, :2] = [0.4375, 0.002]
    fm = surfmap.conformal_map(Mesh(V, mesh.faces), corners)
    assert fm.info["boundary_splits"]["initial"] == 1
    assert fm.info["iterations"] == 0
    assert fm.uv.shape == (81, 2)
    np.testing.assert_allclose(fm.uv, V[:, :2], atol=1e-12)


def test_split_boundary_edges_reproduces_lengths_and_halves_the_obtuse_angle():
    P = np.array([[0.0, 0.0], [1.0, 0.0], [0.3, 0.01], [0.5, 1.0]])
    F = np.array([[0, 1, 2], [2, 1, 3]])
    twin, ok = K.build_twins(F, 4)
    loop = boundary_loop(F)
    lam = np.log(edge_lengths(np.column_stack([P, np.zeros(4)]), F))[:, [2, 0, 1]].ravel().copy()
    tri = C._Triangulation(F.copy(), twin, lam, K.edge_degrees(F, twin, 4), loop)
    u = np.zeros(4)
    h = C._obtuse_boundary_halfedges(tri, u, C._SPLIT_ANGLE)
    assert h.tolist() == [0]  # 0 -> 1, opposite vertex 2 (178.9 degrees)
    u = C._split_boundary_edges(tri, u, h)
    assert tri.n == 5 and len(tri.F) == 3 and tri.bkey[4] == tri.bkey[0]
    # the new vertex is the foot of the altitude from vertex 2: lay the refined triangulation out
    Q, placed = K.layout(tri.F, tri.twin, tri.lam, u, 5, 0)
    assert placed == 5
    d = lambda a, b: np.linalg.norm(Q[a] - Q[b])  # noqa: E731
    np.testing.assert_allclose([d(0, 4), d(4, 1), d(2, 4)], [0.3, 0.7, 0.01], rtol=1e-12)
    np.testing.assert_allclose([d(0, 2), d(1, 2), d(1, 3), d(2, 3)],
                               [np.hypot(0.3, 0.01), np.hypot(0.7, 0.01), np.hypot(0.5, 1), np.hypot(0.2, 0.99)],
                               rtol=1e-12)
    assert len(C._obtuse_boundary_halfedges(tri, u, C._SPLIT_ANGLE)) == 0


def test_spd_solver_reuses_an_earlier_order_and_extends_it_to_new_vertices():
    mesh = planar_disk(rings=8, jitter=0.3)
    L = cotangent_laplacian(mesh.vertices, mesh.faces).tocsc() + sp.eye(len(mesh.vertices)) * 1e-3
    first = C._SPDSolver(L.tocsc())
    assert sorted(first.reuse_order.tolist()) == list(range(L.shape[0]))
    b = np.random.default_rng(0).normal(size=L.shape[0])
    again = C._SPDSolver(L.tocsc(), order=first.reuse_order)
    np.testing.assert_allclose(L @ again.solve(b), b, atol=1e-10)
    # two more vertices: the order is extended; the old factor preconditions the larger matrix
    big = sp.block_diag([L, sp.eye(2)]).tolil()
    big[0, L.shape[0]] = big[L.shape[0], 0] = -1e-3
    big = big.tocsc() + sp.diags(np.r_[1e-3, np.zeros(L.shape[0] - 1), 1e-3, 0.0])
    b2 = np.r_[b, 1.0, 2.0]
    np.testing.assert_allclose(big @ C._SPDSolver(big, order=first.reuse_order).solve(b2), b2, atol=1e-10)
    x, _, ok = C._pcg(big, b2, C._preconditioner(first, big), 1e-12, 50)
    assert ok
    np.testing.assert_allclose(big @ x, b2, atol=1e-9)
    assert C._preconditioner(C._Stale(first), big) is None


@pytest.mark.parametrize("length, width, nx", [(100.0, 1.0, 100), (1000.0, 0.01, 40)])
def test_conformal_map_too_elongated_for_square_corners_raises_clearly(length, width, nx):
    # modulus-1 corners on a long strip need conformal factors beyond float64 (e^73 and more):
    # a clear error naming the remedy, not a ZeroDivisionError or a flip loop; its own corners work
    mesh, corners = grid(nx, 4, length, width)
    with pytest.raises(surfmap.exceptions.ConvergenceError, match="too elongated.*corners at the ends"):
        surfmap.conformal_map(mesh)
    fm = surfmap.conformal_map(mesh, corners)
    np.testing.assert_allclose(fm.info["modulus"], width / length, rtol=1e-9)


def test_untangling_energy_gradient_matches_finite_differences_and_stays_finite_on_folds():
    rng = np.random.default_rng(4)
    P, F = disk_points(rings=3)
    V = np.column_stack([P, 0.2 * rng.normal(size=len(P))])
    Xinv, _ = C._reference_frames(V, F, np.ones(len(F)))
    Q = P + 0.15 * rng.normal(size=P.shape)  # some faces folded
    free = np.arange(7)  # the centre and its ring
    x = Q[free].ravel()
    for eps in (0.5, 1e-3):
        E, g, mindet = C._untangling_energy(x, Q, free, F, Xinv, eps, C._UNTANGLE_THETA)
        assert np.isfinite(E) and mindet < 0
        h = 1e-7
        num = [
            (C._untangling_energy(x + h * e, Q, free, F, Xinv, eps, C._UNTANGLE_THETA)[0]
             - C._untangling_energy(x - h * e, Q, free, F, Xinv, eps, C._UNTANGLE_THETA)[0]) / (2 * h)
            for e in np.eye(len(x))
        ]
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-6 * np.abs(g).max())
    # a face folded far beyond eps: chi = eps^2 / (2 (sqrt(eps^2 + d^2) - d)) > 0, no cancellation to 0
    E, _, _ = C._untangling_energy(x, Q * [1.0, -1.0], free, F, Xinv, 1e-9, C._UNTANGLE_THETA)
    assert np.isfinite(E) and E > 1e12


def test_one_side_chord_faces_finds_the_faces_beside_chords_within_a_side():
    # a fan from vertex 0 of an octagon: every fan edge is a chord; with corners 0, 2, 4, 6 the
    # chords 0-2 and 0-6 have both ends on one side, 0-3, 0-4 and 0-5 span two sides
    F = np.array([[0, k, k + 1] for k in range(1, 7)])
    loop = np.arange(8)
    flagged = C._one_side_chord_faces(F, loop, np.array([0, 2, 4, 6]))
    assert np.flatnonzero(flagged).tolist() == [0, 1, 4, 5]
    assert not C._one_side_chord_faces(F, loop, np.array([1, 3, 5, 7])).any()
