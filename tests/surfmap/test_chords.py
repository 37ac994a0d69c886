"""Chords (interior edges joining two boundary vertices): split by ``cut``, carried by ``FlatMap``.

A chord whose two ends land on one side of the square makes its two faces flat in any map with
straight sides. ``cut`` splits each chord at its midpoint; the inserted vertices come after the
original ones and every consumer (metrics, Rasterizer, backproject, distortion, GIFTI) interpolates
them exactly.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

import surfmap
from surfmap.exceptions import MeshError, ParameterError
from surfmap.flatmap import FlatMap
from surfmap.mesh import Mesh, chords, cut, face_areas, split_chords, unsplit_faces


def _sorted_faces(F):
    """Faces as a set of rotation-normalised tuples (orientation kept)."""
    out = set()
    for f in np.asarray(F).tolist():
        k = f.index(min(f))
        out.add(tuple(f[k:] + f[:k]))
    return out


def bump_grid(n=9):
    """A curved n x n grid with a 6-face fan glued on the top edge (a, b): (a, b) becomes a chord.

    Returns the mesh, the chord's ends and the four grid corners in boundary order (with them the
    chord's two ends lie on the top side of the square).
    """
    xs, ys = np.meshgrid(np.arange(n), np.arange(n))
    V = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(n * n)]).astype(float)
    F = []
    for j in range(n - 1):
        for i in range(n - 1):
            v = j * n + i
            if (i + j) % 2 == 0:
                F += [[v, v + 1, v + n + 1], [v, v + n + 1, v + n]]
            else:
                F += [[v, v + 1, v + n], [v + 1, v + n + 1, v + n]]
    a, b = (n - 1) * n + 3, (n - 1) * n + 4
    x = len(V)
    p = [x + 1 + k for k in range(4)]
    V = np.vstack([V, [[3.5, n - 0.5, 0.3], [4.0, n - 0.2, 0.2], [3.7, n + 0.2, 0.1], [3.3, n + 0.2, 0.1],
                       [3.0, n - 0.2, 0.2]]])
    F += [[a, b, x], [b, p[0], x], [p[0], p[1], x], [p[1], p[2], x], [p[2], p[3], x], [p[3], a, x]]
    V[:, 2] += 0.05 * np.sin(V[:, 0]) * np.cos(V[:, 1])
    return Mesh(V, np.array(F), name="bump"), (a, b), [0, n - 1, n * n - 1, (n - 1) * n]


@pytest.fixture(scope="module")
def bump():
    return bump_grid()


@pytest.fixture(scope="module", params=["conformal", "area"])
def bump_map(request, bump):
    mesh, _, corners = bump
    return surfmap.flatten(mesh, np.ones(mesh.n_vertices, bool), method=request.param, corners=corners)


def test_split_chords_square():
    V = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]
    V2, F2, ends = split_chords(V, [[0, 1, 2], [0, 2, 3]])
    assert ends.tolist() == [[0, 2]]
    np.testing.assert_allclose(V2[4], [0.5, 0.5, 0.0], atol=0)
    assert len(F2) == 4 and (F2 == 4).any(axis=1).all()
    np.testing.assert_allclose(face_areas(V2, F2), 0.25, rtol=1e-14)
    assert _sorted_faces(unsplit_faces(F2, ends)) == _sorted_faces([[0, 1, 2], [0, 2, 3]])


def test_split_chords_face_with_three_chords():
    # the middle face has three chords (all its vertices on the boundary, its edges interior)
    V = np.array([[0, 0, 0], [2, 0, 0], [1, 2, 0], [1, -1, 0], [2.5, 1.5, 0], [-0.5, 1.5, 0]], float)
    F = np.array([[0, 1, 2], [1, 0, 3], [2, 1, 4], [0, 2, 5]])
    assert chords(F).tolist() == [[0, 1], [0, 2], [1, 2]]
    V2, F2, ends = split_chords(V, F)
    assert len(V2) == 9 and len(F2) == 10
    assert len(chords(F2)) == 0
    assert surfmap.mesh.euler_characteristic(F2) == 1 and len(surfmap.mesh.boundary_loops(F2)) == 1
    # same surface, every face positively oriented
    np.testing.assert_allclose(face_areas(V2, F2).sum(), face_areas(V, F).sum(), rtol=1e-14)
    e1, e2 = V2[F2[:, 1]] - V2[F2[:, 0]], V2[F2[:, 2]] - V2[F2[:, 0]]
    assert (np.cross(e1, e2)[:, 2] > 0).all()
    assert _sorted_faces(unsplit_faces(F2, ends)) == _sorted_faces(F)


def test_chords_none_on_a_grid():
    mesh, _, _ = bump_grid()
    grid_faces = mesh.faces[:-6]
    assert chords(grid_faces).shape == (0, 2)


def test_cut_splits_chord(bump):
    mesh, (a, b), _ = bump
    disk = cut(mesh, np.ones(mesh.n_vertices, bool))
    assert disk.inserted.tolist() == [[a, b]]
    np.testing.assert_allclose(disk.inserted_weights, [[0.5, 0.5]])
    np.testing.assert_array_equal(disk.vertex_map, np.arange(mesh.n_vertices))  # originals only, in order
    assert disk.mesh.n_vertices == mesh.n_vertices + 1
    np.testing.assert_allclose(disk.mesh.vertices[-1], mesh.vertices[[a, b]].mean(axis=0), rtol=1e-15)
    assert any("split 1 chord" in r for r in disk.repairs)
    assert len(chords(disk.mesh.faces)) == 0


def test_cut_too_few_boundary_vertices():
    # a hexagon fan: 6 boundary vertices cannot hold 4 corners 2 edges apart
    t = np.linspace(0, 2 * np.pi, 7)[:-1]
    V = np.vstack([[0, 0, 0], np.column_stack([np.cos(t), np.sin(t), np.zeros(6)])])
    F = np.array([[0, 1 + k, 1 + (k + 1) % 6] for k in range(6)])
    with pytest.raises(MeshError, match="6 boundary vertices; a map onto the square needs at least 8"):
        cut(Mesh(V, F), np.ones(7, bool))


def test_flatten_chord_on_one_side_bijective(bump_map):
    fm = bump_map
    assert fm.n_inserted == 1 and fm.info["n_inserted"] == 1
    assert len(fm.vertex_map) == fm.n_vertices - 1
    assert (fm.signed_areas() > 0).all()
    assert surfmap.distortion(fm).n_flipped == 0
    np.testing.assert_array_equal(fm.uv[fm.corners], [[0, 0], [1, 0], [1, 1], [0, 1]])
    assert fm.uv.min() >= 0 and fm.uv.max() <= 1
    # the chord's ends are on the top side; its midpoint is inside the square
    a, b = fm.inserted[0]
    np.testing.assert_allclose(fm.uv[[a, b], 1], 1.0, atol=1e-12)
    assert fm.uv[-1, 1] < 1 - 1e-3


def test_flatten_without_split_folds(bump):
    # the reason for the split: the same disk mapped as is folds the chord's faces (or fails)
    mesh, _, corners = bump
    try:
        fm = surfmap.conformal_map(mesh, corners=corners)
    except surfmap.SurfmapError:
        return
    assert (fm.signed_areas() <= 0).sum() > 0


def test_inserted_vertex_metrics_interpolated(bump, bump_map):
    mesh, (a, b), _ = bump
    fm = bump_map
    x = np.sin(mesh.vertices[:, 0]) + mesh.vertices[:, 1] ** 2
    xf = fm.to_flat(x)
    assert xf.shape == (fm.n_vertices,)
    np.testing.assert_allclose(xf[-1], 0.5 * (x[a] + x[b]), rtol=1e-15)
    np.testing.assert_array_equal(xf[:-1], x[fm.vertex_map])
    P = fm.interpolation(mesh.n_vertices)
    assert P.shape == (fm.n_vertices, mesh.n_vertices)
    np.testing.assert_allclose(P @ x, xf, rtol=1e-15)
    np.testing.assert_allclose(fm.to_flat(mesh.vertices), fm.vertices, rtol=1e-15)
    R = surfmap.Rasterizer(fm, size=32)
    np.testing.assert_allclose(R(x), R(xf), rtol=1e-6)  # full length: through the interpolation
    np.testing.assert_allclose(R({"x": x}), R(xf), rtol=1e-6)
    # the pixels near the midpoint read its interpolated value: image of a function linear in 3D
    lin = mesh.vertices @ [0.3, -0.2, 1.0]
    back = R.backproject(R(lin)[0], to_original=mesh.n_vertices)
    assert back.shape == (mesh.n_vertices,) and np.isfinite(back).all()
    d1, d2 = surfmap.distortion(fm), surfmap.distortion(fm, mesh)
    np.testing.assert_allclose(d2.dilatation, d1.dilatation, rtol=1e-14)
    np.testing.assert_allclose(d2.log_area_ratio, d1.log_area_ratio, rtol=1e-14, atol=1e-14)


def test_original_faces_and_gifti(tmp_path, bump, bump_map):
    mesh, _, _ = bump
    fm = bump_map
    F0 = fm.original_faces()
    assert _sorted_faces(F0) == _sorted_faces(mesh.faces)
    path = fm.to_gifti(tmp_path / "lh.flat.surf.gii", hemi="left")
    img = nib.load(path)
    xyz, faces = img.darrays[0].data, img.darrays[1].data
    assert xyz.shape == (mesh.n_vertices, 3) and np.all(xyz[:, 2] == 0)
    assert _sorted_faces(faces) == _sorted_faces(mesh.faces)
    assert img.darrays[0].meta["GeometricType"] == "Flat"
    # flat area = 3D area of the cut (mm^2 for a surface in mm); signed, since the restored chord
    # faces overlap (the reason for the split), which leaves the sum unchanged
    e1, e2 = xyz[faces[:, 1]] - xyz[faces[:, 0]], xyz[faces[:, 2]] - xyz[faces[:, 0]]
    signed = 0.5 * np.cross(e1.astype(float), e2.astype(float))[:, 2]
    np.testing.assert_allclose(signed.sum(), mesh.face_areas.sum(), rtol=1e-5)
    if shutil.which("wb_command"):
        out = subprocess.run(["wb_command", "-file-information", str(path)], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Flat" in out.stdout and str(mesh.n_vertices) in out.stdout


def test_to_gifti_n_vertices_too_small(tmp_path, bump_map):
    with pytest.raises(MeshError, match="n_vertices: the map indexes original vertex"):
        bump_map.to_gifti(tmp_path / "x.surf.gii", n_vertices=10)


def test_write_surface_geometric_type(tmp_path):
    with pytest.raises(ParameterError, match="geometric_type: expected one of"):
        surfmap.write_surface(Mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]]), tmp_path / "a.surf.gii",
                              geometric_type="flat")


def test_save_load_keeps_inserted(tmp_path, bump_map):
    fm = bump_map
    back = FlatMap.load(fm.save(tmp_path / "fm.npz"))
    np.testing.assert_array_equal(back.inserted, fm.inserted)
    np.testing.assert_array_equal(back.inserted_weights, fm.inserted_weights)
    np.testing.assert_array_equal(back.vertex_map, fm.vertex_map)


def test_flatmap_inserted_validation(bump_map):
    fm = bump_map
    with pytest.raises(MeshError, match="vertex_map: expected 86 entries"):
        FlatMap(fm.uv, fm.faces, np.append(fm.vertex_map, 0), fm.corners, inserted=fm.inserted)
    with pytest.raises(MeshError, match="weights summing to 1"):
        FlatMap(fm.uv, fm.faces, fm.vertex_map, fm.corners, inserted=fm.inserted, inserted_weights=[[0.5, 0.6]])


@pytest.mark.parametrize("name", ["fsaverage5", "fslr32k"])
def test_templates_have_no_chords(name):
    # nothing is inserted on the templates, so their maps are those of the code before the split
    tpl = surfmap.load_template(name, "left")
    disk = cut(tpl.mesh, tpl.cortex)
    assert disk.n_inserted == 0 and not any("chord" in r for r in disk.repairs)
    np.testing.assert_array_equal(disk.mesh.vertices, tpl.mesh.vertices[disk.vertex_map])


def test_original_faces_refuses_an_insert_between_unmapped_vertices(bump_map):
    fm = bump_map
    assert fm.n_inserted > 0
    outside = int(fm.vertex_map.max()) + 5  # an original vertex the flat map does not hold
    bad = dataclasses.replace(fm, inserted=np.c_[np.full(fm.n_inserted, outside), fm.inserted[:, 1]])
    with pytest.raises(MeshError, match=rf"FlatMap.inserted: vertex {outside} is not a vertex of the flat map"):
        bad.original_faces()
