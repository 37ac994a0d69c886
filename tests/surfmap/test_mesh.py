"""surfmap.mesh: geometry against analytic values and libigl, topology, and the cut to a disk
(repairs, errors, real templates)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

from surfmap.exceptions import MaskError, MeshError
from surfmap.mesh import (
    CutMesh,
    Mesh,
    angles_from_lengths,
    chords,
    unsplit_faces,
    boundary_loop,
    boundary_loops,
    connected_components,
    corner_angles,
    cotangent_laplacian,
    cut,
    edge_lengths,
    edges,
    euler_characteristic,
    face_areas,
    face_normals,
    non_manifold_edges,
    vertex_areas,
)

# ---------------------------------------------------------------------------------------------
# Mesh construction and validation


def test_mesh_converts_dtypes_and_freezes():
    m = Mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])
    assert m.vertices.dtype == np.float64 and m.faces.dtype == np.int64
    assert m.vertices.flags.c_contiguous and not m.vertices.flags.writeable and not m.faces.flags.writeable


def test_mesh_pads_2d_vertices():
    m = Mesh([[0, 0], [1, 0], [0, 1]], [[0, 1, 2]])
    np.testing.assert_array_equal(m.vertices[:, 2], 0.0)


def test_mesh_nan_coordinates():
    with pytest.raises(
        MeshError, match="src.gii: 1 vertices have NaN or infinite coordinates \\(first: vertex 1\\)"
    ):
        Mesh([[0, 0, 0], [np.nan, 0, 0], [0, 1, 0]], [[0, 1, 2]], name="src.gii")


def test_mesh_faces_index_missing_vertices():
    with pytest.raises(MeshError, match=r"do not exist: indices must lie in \[0, 2\], found min 0 and max 3"):
        Mesh(np.eye(3), [[0, 1, 3]])


def test_mesh_negative_indices():
    with pytest.raises(MeshError, match="found min -1"):
        Mesh(np.eye(3), [[0, 1, -1]])


def test_mesh_non_triangular_faces():
    with pytest.raises(MeshError, match=r"faces must be triangles.*found \(1, 4\)"):
        Mesh(np.zeros((4, 3)), [[0, 1, 2, 3]])


def test_mesh_non_integer_faces():
    with pytest.raises(MeshError, match="face indices must be integers"):
        Mesh(np.eye(3), [[0, 1, 1.5]])


def test_mesh_collapsed_face():
    with pytest.raises(MeshError, match="repeat a vertex"):
        Mesh(np.eye(3), [[0, 1, 1]])


def test_mesh_empty():
    with pytest.raises(MeshError, match="at least one vertex and one face"):
        Mesh(np.eye(3), np.zeros((0, 3), dtype=int))


def test_mesh_wrong_vertex_shape():
    with pytest.raises(MeshError, match=r"shape \(n, 3\)"):
        Mesh(np.zeros((3, 4)), [[0, 1, 2]])


# ---------------------------------------------------------------------------------------------
# geometry: analytic values


def test_face_areas_right_triangle():
    V = np.array([[0.0, 0, 0], [3, 0, 0], [0, 4, 0]])
    np.testing.assert_allclose(face_areas(V, [[0, 1, 2]]), [6.0], rtol=1e-15)
    np.testing.assert_allclose(face_areas(V[:, :2], [[0, 1, 2]]), [6.0], rtol=1e-15)  # 2-D branch


def test_face_areas_grid_and_disk(grid_mesh, meshes):
    np.testing.assert_allclose(grid_mesh.face_areas, 1.0 / 50, rtol=1e-12)
    disk = meshes.disk(3, 12, radius=2.0)
    # 12-gon of radius 2: 12/2 r^2 sin(2 pi/12)
    np.testing.assert_allclose(disk.face_areas.sum(), 6 * 4 * np.sin(np.pi / 6), rtol=1e-12)


def test_face_areas_rotation_and_scale_invariance(hemisphere_mesh):
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    V2 = 2.5 * hemisphere_mesh.vertices @ Q.T + [1.0, -2.0, 3.0]
    np.testing.assert_allclose(
        face_areas(V2, hemisphere_mesh.faces), 6.25 * hemisphere_mesh.face_areas, rtol=1e-12
    )


def test_face_areas_sphere_converges_to_4pi(meshes):
    err = [abs(meshes.icosphere(s).face_areas.sum() - 4 * np.pi) for s in (1, 2, 3)]
    assert err[0] > err[1] > err[2] and err[2] < 0.02 * 4 * np.pi


def test_vertex_areas_sum_to_total(hemisphere_mesh):
    A = vertex_areas(hemisphere_mesh.vertices, hemisphere_mesh.faces)
    np.testing.assert_allclose(A.sum(), hemisphere_mesh.face_areas.sum(), rtol=1e-13)
    assert A.shape == (hemisphere_mesh.n_vertices,) and (A > 0).all()


def test_vertex_areas_grid_interior(meshes):
    m = meshes.grid(4, width=3.0)  # unit spacing
    # an interior vertex touches 6 triangles of area 1/2
    np.testing.assert_allclose(vertex_areas(m.vertices, m.faces)[[5, 6, 9, 10]], 6 * 0.5 / 3, rtol=1e-14)


def test_corner_angles_equilateral_and_345():
    V = np.array([[0.0, 0, 0], [1, 0, 0], [0.5, np.sqrt(3) / 2, 0], [4, 0, 0], [0, 3, 0]])
    F = np.array([[0, 1, 2], [0, 3, 4]])
    a = corner_angles(V, F)
    np.testing.assert_allclose(a[0], np.pi / 3, rtol=1e-14)
    np.testing.assert_allclose(a[1], [np.pi / 2, np.arctan2(3, 4), np.arctan2(4, 3)], rtol=1e-14)


@pytest.mark.parametrize("eps", [1e-3, 1e-9])
def test_angles_from_lengths_needle_is_accurate(eps):
    l = np.array([[eps, 1.0, 1.0]])  # isosceles needle: apex angle 2 asin(eps / 2)
    a = angles_from_lengths(l)
    apex = 2 * np.arcsin(eps / 2)
    np.testing.assert_allclose(a[0], [apex, (np.pi - apex) / 2, (np.pi - apex) / 2], rtol=1e-14)
    np.testing.assert_allclose(a.sum(), np.pi, rtol=1e-15)


def test_corner_angles_sum_to_pi(hemisphere_mesh):
    np.testing.assert_allclose(
        corner_angles(hemisphere_mesh.vertices, hemisphere_mesh.faces).sum(axis=1), np.pi, rtol=1e-13
    )


def _angle_sums(m):
    return np.bincount(
        m.faces.ravel(), weights=corner_angles(m.vertices, m.faces).ravel(), minlength=m.n_vertices
    )


def test_angle_sums_planar_interior_is_2pi(grid_mesh):
    s = _angle_sums(grid_mesh)
    interior = np.setdiff1d(np.arange(grid_mesh.n_vertices), boundary_loop(grid_mesh.faces))
    np.testing.assert_allclose(s[interior], 2 * np.pi, rtol=1e-14)


@pytest.mark.parametrize("which", ["icosphere", "hemisphere", "disk"])
def test_angle_defects_gauss_bonnet(meshes, which):
    m = {"icosphere": meshes.icosphere(2), "hemisphere": meshes.hemisphere(), "disk": meshes.disk()}[which]
    s = _angle_sums(m)
    bnd = np.zeros(m.n_vertices, dtype=bool)
    for loop in boundary_loops(m.faces):
        bnd[loop] = True
    total = np.sum(2 * np.pi - s[~bnd]) + np.sum(np.pi - s[bnd])  # interior + geodesic boundary curvature
    np.testing.assert_allclose(total, 2 * np.pi * m.euler_characteristic, rtol=1e-12)


def test_face_normals_orientation(grid_mesh, icosphere_mesh):
    np.testing.assert_allclose(
        face_normals(grid_mesh.vertices, grid_mesh.faces), [[0, 0, 1]] * 50, atol=1e-15
    )
    V, F = icosphere_mesh.vertices, icosphere_mesh.faces
    N = face_normals(V, F)
    assert (np.einsum("ij,ij->i", N, V[F].mean(axis=1)) > 0.9).all()  # outward


# ---------------------------------------------------------------------------------------------
# cotangent Laplacian


def test_cotangent_laplacian_structure(hemisphere_mesh):
    L = cotangent_laplacian(hemisphere_mesh.vertices, hemisphere_mesh.faces)
    assert sp.issparse(L) and L.shape == (hemisphere_mesh.n_vertices,) * 2
    np.testing.assert_allclose(abs(L - L.T).max(), 0.0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(L.sum(axis=1)).ravel(), 0.0, atol=1e-12)
    w = np.linalg.eigvalsh(L.toarray())
    assert w[0] > -1e-12 and w[1] > 1e-6  # PSD, connected: one zero eigenvalue


def test_cotangent_laplacian_linear_precision_and_quadratic(meshes):
    h = 0.25
    m = meshes.grid(5, width=1.0)
    L = cotangent_laplacian(m.vertices, m.faces)
    interior = np.setdiff1d(np.arange(m.n_vertices), boundary_loop(m.faces))
    x, y = m.vertices[:, 0], m.vertices[:, 1]
    np.testing.assert_allclose((L @ (2 * x - 3 * y + 1))[interior], 0.0, atol=1e-13)
    # sum_j w_ij |x_j - x_i|^2 = 4 x (circumcentric dual area) = 4 h^2 on this right-triangle grid
    np.testing.assert_allclose((L @ (x**2 + y**2))[interior], -4 * h * h, rtol=1e-12)


def test_cotangent_laplacian_matches_libigl(hemisphere_mesh):
    igl = pytest.importorskip("igl")
    V, F = hemisphere_mesh.vertices, hemisphere_mesh.faces
    L = cotangent_laplacian(V, F)
    L_igl = igl.cotmatrix(V, F)  # negative semi-definite convention
    np.testing.assert_allclose((L + L_igl).toarray(), 0.0, atol=1e-12)
    M = igl.massmatrix(V, F, igl.MASSMATRIX_TYPE_BARYCENTRIC)
    np.testing.assert_allclose(M.diagonal(), vertex_areas(V, F), rtol=1e-12)


def test_cotangent_laplacian_degenerate_face_has_no_weight():
    V = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [1, 1, 0]])
    L = cotangent_laplacian(V, [[0, 1, 2], [0, 2, 3]])  # first face has zero area
    assert np.isfinite(L.toarray()).all()
    np.testing.assert_allclose(np.asarray(L.sum(axis=1)).ravel(), 0.0, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# topology


def test_edges_unique_sorted(grid_mesh):
    E = edges(grid_mesh.faces)
    assert (E[:, 0] < E[:, 1]).all()
    assert len(np.unique(E, axis=0)) == len(E)
    # chi = V - E + F = 1 for a disk
    assert len(E) == grid_mesh.n_vertices + grid_mesh.n_faces - 1
    np.testing.assert_allclose(edge_lengths(grid_mesh.vertices, grid_mesh.faces).max(), 0.2 * np.sqrt(2))


def _torus(n=6, m=5):
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    a = (i * m + j).ravel()
    b = (((i + 1) % n) * m + j).ravel()
    c = (((i + 1) % n) * m + (j + 1) % m).ravel()
    d = (i * m + (j + 1) % m).ravel()
    u, v = 2 * np.pi * i.ravel() / n, 2 * np.pi * j.ravel() / m
    V = np.column_stack([(2 + np.cos(v)) * np.cos(u), (2 + np.cos(v)) * np.sin(u), np.sin(v)])
    return Mesh(V, np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])]), name="torus")


def test_euler_characteristic(grid_mesh, disk_mesh, hemisphere_mesh, icosphere_mesh):
    assert [m.euler_characteristic for m in (grid_mesh, disk_mesh, hemisphere_mesh, icosphere_mesh)] == [
        1,
        1,
        1,
        2,
    ]
    assert euler_characteristic(_torus().faces) == 0


def test_euler_characteristic_counts_only_used_vertices(grid_mesh):
    assert euler_characteristic(grid_mesh.faces[:1]) == 1


def test_boundary_loops_grid_order_and_orientation(grid_mesh):
    loops = boundary_loops(grid_mesh.faces)
    assert len(loops) == 1 and len(loops[0]) == 20
    loop = loops[0]
    P = grid_mesh.vertices[loop, :2]
    # consecutive vertices are one grid step apart, and the polygon is counter-clockwise
    steps = np.linalg.norm(np.roll(P, -1, axis=0) - P, axis=1)
    np.testing.assert_allclose(steps, 0.2, rtol=1e-12)
    signed = 0.5 * np.sum(P[:, 0] * np.roll(P[:, 1], -1) - np.roll(P[:, 0], -1) * P[:, 1])
    np.testing.assert_allclose(signed, 1.0, rtol=1e-12)


def test_boundary_loops_closed_and_annulus(icosphere_mesh, meshes):
    assert boundary_loops(icosphere_mesh.faces) == []
    disk = meshes.disk(4, 16)
    annulus = disk.faces[16:]  # drop the centre fan
    loops = boundary_loops(annulus)
    assert [len(l) for l in loops] == [16, 16]
    r = [np.linalg.norm(disk.vertices[l, :2], axis=1) for l in loops]
    outer, inner = (loops[0], loops[1]) if r[0][0] > r[1][0] else (loops[1], loops[0])
    np.testing.assert_allclose(np.linalg.norm(disk.vertices[outer, :2], axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(disk.vertices[inner, :2], axis=1), 0.25, rtol=1e-14)

    def area(loop):
        P = disk.vertices[loop, :2]
        return 0.5 * np.sum(P[:, 0] * np.roll(P[:, 1], -1) - np.roll(P[:, 0], -1) * P[:, 1])

    assert area(outer) > 0 > area(inner)  # interior on the left of both loops


def test_boundary_loop_errors(icosphere_mesh, disk_mesh):
    with pytest.raises(MeshError, match="exactly one boundary loop.*found 0"):
        boundary_loop(icosphere_mesh.faces)
    with pytest.raises(MeshError, match="exactly one boundary loop.*found 2"):
        boundary_loop(disk_mesh.faces[16:])


def test_connected_components_two_pieces(grid_mesh):
    F = np.concatenate([grid_mesh.faces, grid_mesh.faces + grid_mesh.n_vertices])
    k, lab = connected_components(F)
    assert k == 2
    np.testing.assert_array_equal(lab, np.repeat([0, 1], grid_mesh.n_faces))
    # faces that share only a vertex are different components
    assert connected_components(np.array([[0, 1, 2], [2, 3, 4]]))[0] == 2


def test_non_manifold_edges():
    F = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    np.testing.assert_array_equal(non_manifold_edges(F), [[0, 1]])
    assert len(non_manifold_edges(F[:2])) == 0


# ---------------------------------------------------------------------------------------------
# cut


def _check_disk(cm: CutMesh, original: Mesh):
    m = cm.mesh
    assert connected_components(m.faces)[0] == 1
    assert len(boundary_loops(m.faces)) == 1
    assert m.euler_characteristic == 1
    vm = cm.vertex_map
    assert vm.dtype == np.int64 and (np.diff(vm) > 0).all()
    k = len(vm)
    np.testing.assert_array_equal(m.vertices[:k], original.vertices[vm])
    # inserted vertices (chord midpoints) come last and interpolate two original vertices
    np.testing.assert_allclose(m.vertices[k:], np.einsum("ij,ijk->ik", cm.inserted_weights,
                                                         original.vertices[cm.inserted]), rtol=1e-14)
    assert len(chords(m.faces)) == 0
    # every face of the disk, split chords restored, is a face of the original mesh
    n = original.n_vertices

    def key(F):  # rotation-invariant, orientation-sensitive
        F = np.asarray(F)
        r = np.argmin(F, axis=1)[:, None]
        F = np.take_along_axis(F, (r + np.arange(3)) % 3, axis=1)
        return (F[:, 0] * n + F[:, 1]) * n + F[:, 2]

    pos = np.searchsorted(vm, cm.inserted)
    assert np.isin(key(vm[unsplit_faces(m.faces, pos)]), key(original.faces)).all()
    assert len(np.unique(m.faces)) == m.n_vertices  # no unused vertex


def test_cut_open_mesh_full_mask_is_identity(disk_mesh):
    cm = cut(disk_mesh, np.ones(disk_mesh.n_vertices, dtype=bool))
    _check_disk(cm, disk_mesh)
    np.testing.assert_array_equal(cm.vertex_map, np.arange(disk_mesh.n_vertices))
    assert cm.repairs == ()


def test_cut_sphere_cap(icosphere_mesh):
    keep = icosphere_mesh.vertices[:, 2] > -0.5
    cm = cut(icosphere_mesh, keep)
    _check_disk(cm, icosphere_mesh)
    np.testing.assert_array_equal(cm.kept_mask(icosphere_mesh.n_vertices), keep)


def test_cut_accepts_01_mask(icosphere_mesh):
    keep = (icosphere_mesh.vertices[:, 2] > -0.5).astype(int)
    np.testing.assert_array_equal(cut(icosphere_mesh, keep).vertex_map, np.flatnonzero(keep))


def test_cut_fills_small_hole(meshes):
    ico = meshes.icosphere(3)  # 642 vertices
    keep = ico.vertices[:, 2] > -0.5
    pole = int(np.argmax(ico.vertices[:, 2]))
    keep[pole] = False  # a one-vertex hole inside the cortex
    cm = cut(ico, keep)
    _check_disk(cm, ico)
    assert pole in cm.vertex_map
    assert any("filled 1 hole" in r and "(1 vertices added)" in r for r in cm.repairs)


def test_cut_removes_ears(grid_mesh):
    # this triangulation leaves the corners (1, 0) and (0, 1) of the square in a single face each
    cm = cut(grid_mesh, np.ones(grid_mesh.n_vertices, dtype=bool))
    _check_disk(cm, grid_mesh)
    np.testing.assert_array_equal(np.setdiff1d(np.arange(36), cm.vertex_map), [5, 30])
    assert any("removed 2 ear" in r for r in cm.repairs)
    assert any("dropped 2 masked vertices" in r for r in cm.repairs)


def test_cut_keeps_largest_piece(meshes):
    ico = meshes.icosphere(3)
    z = ico.vertices[:, 2]
    keep = (z > 0.3) | (z < -0.97)  # a big cap and a crumb (7 vertices): the crumb is dropped
    cm = cut(ico, keep)
    _check_disk(cm, ico)
    np.testing.assert_array_equal(cm.vertex_map, np.flatnonzero(z > 0.3))
    assert any("kept the largest of 2 pieces" in r for r in cm.repairs)
    keep = (z > 0.3) | (z < -0.8)  # a second cap of 61 vertices is no crumb: an error, no silent loss
    with pytest.raises(MeshError, match=r"splits the region into 2 separate pieces of 223, 61 vertices"):
        cut(ico, keep)


def test_cut_pinched_vertex(meshes):
    # 6 x 6 grid (square (p, q) has lower-left vertex (p, q)): a notch from the bottom edge
    # (squares (2, 0), (2, 1)) and an interior hole (square (1, 2)) touch at vertex v = (2, 2),
    # where two fans of two faces each meet: one piece, the boundary touching itself at v
    m = meshes.grid(6)
    square = np.concatenate([np.arange(25), np.arange(25)])  # face k belongs to square k % 25
    pinched = Mesh(m.vertices, m.faces[~np.isin(square, [2, 7, 11])], name="pinched")
    assert connected_components(pinched.faces)[0] == 1 and pinched.euler_characteristic == 0
    cm = cut(pinched, np.ones(36, dtype=bool))
    _check_disk(cm, pinched)
    assert any("removed 2 face(s) at vertices where the boundary touches itself" in r for r in cm.repairs)
    assert 14 in cm.vertex_map  # v itself stays


def test_cut_zero_area_face_on_boundary_removed(meshes):
    m = meshes.grid(5)
    V = m.vertices.copy()
    # face (2,0)-(3,0)-(3,1): move (3,0) onto the segment (2,0)-(3,1)
    V[3] = 0.5 * (V[2] + V[8])
    cm = cut(Mesh(V, m.faces), np.ones(25, dtype=bool))
    _check_disk(cm, Mesh(V, m.faces))
    assert any("removed 1 zero-area face" in r for r in cm.repairs)


def test_cut_zero_area_interior_face(meshes):
    m = meshes.grid(5)
    V = m.vertices.copy()
    V[7] = 0.5 * (V[6] + V[12])  # face (1,1)-(2,1)-(2,2) collapses inside the grid
    with pytest.raises(MeshError, match="1 zero-area faces inside the region"):
        cut(Mesh(V, m.faces, name="flatgrid"), np.ones(25, dtype=bool))


def test_cut_annulus(icosphere_mesh):
    keep = np.abs(icosphere_mesh.vertices[:, 2]) < 0.5  # a band: both caps are large holes
    with pytest.raises(
        MeshError, match=r"1 connected component\(s\), 2 boundary loop\(s\).*leaves an annulus"
    ):
        cut(icosphere_mesh, keep)


def test_cut_large_hole_is_not_filled(meshes):
    ico = meshes.icosphere(3)
    z = ico.vertices[:, 2]
    keep = (z > -0.6) & ~(z > 0.8)  # the hole at the north pole holds more than 5% of the faces
    with pytest.raises(MeshError, match="annulus.*max_hole_fraction=0.05"):
        cut(ico, keep)
    _check_disk(cut(ico, keep, max_hole_fraction=0.2), ico)


def test_cut_non_manifold_edge(disk_mesh):
    V = np.vstack([disk_mesh.vertices, [[0.1, 0.1, 1.0]]])
    F = np.vstack([disk_mesh.faces, [[0, 1, len(V) - 1]]])  # a fin on edge (0, 1)
    with pytest.raises(MeshError, match="1 non-manifold edges.*first \\[0, 1\\]"):
        cut(Mesh(V, F, name="fin"), np.ones(len(V), dtype=bool))


def test_cut_inconsistent_orientation(disk_mesh):
    F = disk_mesh.faces.copy()
    F[20] = F[20, ::-1]
    with pytest.raises(
        MeshError, match="3 edges are used twice in the same direction.*not consistently oriented"
    ):
        cut(Mesh(disk_mesh.vertices, F, name="flipped"), np.ones(disk_mesh.n_vertices, dtype=bool))


def test_cut_empty_mask(icosphere_mesh):
    with pytest.raises(MaskError, match="selects no vertex"):
        cut(icosphere_mesh, np.zeros(icosphere_mesh.n_vertices, dtype=bool))


def test_cut_full_mask_closed_mesh(icosphere_mesh):
    with pytest.raises(MaskError, match="every vertex of the closed mesh icosphere2"):
        cut(icosphere_mesh, np.ones(icosphere_mesh.n_vertices, dtype=bool))


def test_cut_wrong_mask_length(icosphere_mesh):
    with pytest.raises(
        MaskError, match=re.escape("expected a mask of 162 values") + ".*found shape \\(10,\\)"
    ):
        cut(icosphere_mesh, np.ones(10, dtype=bool))


def test_cut_non_binary_mask(icosphere_mesh):
    with pytest.raises(MaskError, match="boolean mask"):
        cut(icosphere_mesh, np.full(icosphere_mesh.n_vertices, 0.5))


def test_cut_no_face_left(icosphere_mesh):
    keep = np.zeros(icosphere_mesh.n_vertices, dtype=bool)
    keep[[0, 50]] = True  # two vertices, no face
    with pytest.raises(MaskError, match="no face"):
        cut(icosphere_mesh, keep)


@pytest.mark.parametrize("name", ["fsaverage5", "fslr32k"])
@pytest.mark.parametrize("hemi", ["left", "right"])
def test_cut_templates_give_a_disk(name, hemi):
    from surfmap.templates import load_template

    h = load_template(name, hemi)
    cm = cut(h.mesh, h.cortex)
    _check_disk(cm, h.mesh)
    vm = cm.vertex_map
    # every kept vertex is in the mask, except those a filled hole added; every dropped masked
    # vertex is accounted for by a repair
    added = np.setdiff1d(vm, np.flatnonzero(h.cortex))
    dropped = np.setdiff1d(np.flatnonzero(h.cortex), vm)
    n_added = sum(int(m) for r in cm.repairs for m in re.findall(r"\((\d+) vertices added\)", r))
    n_dropped = sum(int(m) for r in cm.repairs for m in re.findall(r"dropped (\d+) masked vertices", r))
    assert len(added) == n_added and len(dropped) == n_dropped
    assert len(dropped) < 0.001 * h.cortex.sum() and len(added) < 0.005 * h.cortex.sum()
