import json

import numpy as np
import pytest

import surfmap
from surfmap.exceptions import ArgumentTypeError, MeshError
from surfmap.flatmap import FlatMap
from surfmap.mesh import Mesh


def square(n=6):
    x, y = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
    V = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    F = []
    for j in range(n):
        for i in range(n):
            p, q, r, s = idx[j, i], idx[j, i + 1], idx[j + 1, i + 1], idx[j + 1, i]
            F += [[p, q, r], [p, r, s]]
    return Mesh(V, np.array(F))


def flat(mesh, uv):
    corners = np.array([0, 6, 48, 42])
    return FlatMap(
        uv=uv, faces=mesh.faces, vertex_map=np.arange(len(uv)), corners=corners, vertices=mesh.vertices
    )


def test_distortion_identity_map_is_undistorted():
    mesh = square()
    d = surfmap.distortion(flat(mesh, mesh.vertices[:, :2]))
    np.testing.assert_allclose(d.log_area_ratio, 0.0, atol=1e-12)
    np.testing.assert_allclose(d.dilatation, 1.0, atol=1e-12)
    np.testing.assert_allclose(d.angle_difference, 0.0, atol=1e-10)
    assert d.n_flipped == 0 and d.n_degenerate == 0
    assert d.area_fraction_within_10pct == 1.0
    np.testing.assert_allclose([d.area_abs_p95, d.area_mean_abs, d.beltrami_mean], 0.0, atol=1e-12)


def test_distortion_affine_stretch_has_constant_dilatation():
    mesh = square()
    uv = mesh.vertices[:, :2] * [2.0, 1.0]
    d = surfmap.distortion(flat(mesh, uv))
    np.testing.assert_allclose(d.dilatation, 2.0, rtol=1e-12)
    np.testing.assert_allclose(d.log_area_ratio, 0.0, atol=1e-12)  # totals normalised
    np.testing.assert_allclose(d.beltrami_mean, 1.0 / 3.0, rtol=1e-12)
    np.testing.assert_allclose(d.dilatation_p95, 2.0, rtol=1e-12)


def test_distortion_log_area_ratio_of_graded_map():
    mesh = square()
    uv = mesh.vertices[:, :2].copy()
    uv[:, 0] = uv[:, 0] ** 2  # area factor 2x in the cell column at x
    d = surfmap.distortion(flat(mesh, uv))
    a = np.abs(d.signed_area)
    A = mesh.face_areas
    np.testing.assert_allclose(d.log_area_ratio, np.log((a / a.sum()) / (A / A.sum())), rtol=1e-12)
    np.testing.assert_allclose(d.area_abs_p95, np.percentile(np.abs(d.log_area_ratio), 95))


def test_distortion_counts_flipped_faces():
    mesh = square()
    uv = mesh.vertices[:, :2].copy()
    uv[8] = [0.4, 0.4]  # vertex (2/6, 1/6) pushed across its neighbours
    d = surfmap.distortion(flat(mesh, uv))
    expected = int((flat(mesh, uv).signed_areas() <= 0).sum())
    assert expected >= 1
    assert d.n_flipped == expected


def test_distortion_to_dict_is_json_and_summary_mentions_flips():
    mesh = square()
    d = surfmap.distortion(flat(mesh, mesh.vertices[:, :2]), mesh)
    out = json.loads(json.dumps(d.to_dict()))
    assert out["n_flipped"] == 0 and "log_area_ratio" not in out
    assert len(d.to_dict(arrays=True)["log_area_ratio"]) == len(mesh.faces)
    assert "flipped: 0" in d.summary()


def test_distortion_needs_3d_vertices():
    mesh = square()
    fm = FlatMap(uv=mesh.vertices[:, :2], faces=mesh.faces, vertex_map=np.arange(49), corners=[0, 6, 48, 42])
    with pytest.raises(MeshError, match="expected 3D vertices for fm; found fm.vertices is None. Pass mesh="):
        surfmap.distortion(fm)


def test_distortion_argument_types():
    mesh = square()
    fm = flat(mesh, mesh.vertices[:, :2])
    with pytest.raises(TypeError, match="fm: expected a surfmap.FlatMap; found Mesh"):
        surfmap.distortion(mesh)
    with pytest.raises(ArgumentTypeError, match="mesh: expected a surfmap.Mesh or None; found ndarray"):
        surfmap.distortion(fm, mesh.vertices)


def test_distortion_rejects_mismatched_mesh():
    mesh = square()
    small = Mesh(mesh.vertices[:10], [[0, 1, 2]])
    with pytest.raises(MeshError, match="vertex_map indexes vertex"):
        surfmap.distortion(flat(mesh, mesh.vertices[:, :2]), small)
