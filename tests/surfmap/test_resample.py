"""Spherical resampling: analytic functions, invariants, a brute-force reference, Workbench itself."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from surfmap import MeshError, MetricError, ParameterError, read_metric, read_surface, write_surface
from surfmap.mesh import Mesh, vertex_areas
from surfmap.resample import Resampler, barycentric_weights, project_unproject
from surfmap.exceptions import TemplateError

WB = shutil.which("wb_command")


def _rotated(mesh: Mesh, seed: int = 0, radius: float = 1.0) -> Mesh:
    R = Rotation.random(random_state=seed).as_matrix()
    return Mesh(radius * mesh.vertices @ R.T, mesh.faces, name=f"{mesh.name}-rotated")


def _f(V):
    """A smooth function of the position on the unit sphere."""
    p = V / np.linalg.norm(V, axis=1, keepdims=True)
    return p[:, 0] * p[:, 1] + 0.5 * p[:, 2] ** 2 + p[:, 0]


@pytest.fixture(scope="module")
def spheres():
    from tests.conftest import make_icosphere

    return {s: make_icosphere(s) for s in (2, 3, 4, 5)}


@pytest.mark.parametrize("method", ["barycentric", "adaptive"])
def test_resampler_analytic_function_error_shrinks_with_refinement(spheres, method):
    errors = []
    for s in (2, 3, 4):  # both meshes refined together (adaptive averages over the target's cells)
        src, target = _rotated(spheres[s + 1], seed=s, radius=100.0), spheres[s]  # any radius: scaled to one
        y = Resampler(src, target, method)(_f(src.vertices))
        errors.append(np.abs(y - _f(target.vertices)).max())
    # barycentric interpolation is second order (error / 4 a level); the adaptive average over each
    # target vertex's gathered neighbours is first order (measured: 0.037, 0.020, 0.010, 0.0056)
    ratio = 3.0 if method == "barycentric" else 1.6
    assert errors[1] < errors[0] / ratio and errors[2] < errors[1] / ratio
    assert errors[2] < (0.002 if method == "barycentric" else 0.015)


def test_resampler_barycentric_error_bounded_by_mesh_size(spheres):
    src, target = _rotated(spheres[5], seed=1), spheres[4]
    y = Resampler(src, target)(_f(src.vertices))
    edge = np.linalg.norm(src.vertices[src.faces[:, 0]] - src.vertices[src.faces[:, 1]], axis=1).max()
    # interpolation error of a function with second derivatives <= ~3 on triangles of side h, plus the
    # gap between the flat triangle and the sphere: both O(h^2)
    assert np.abs(y - _f(target.vertices)).max() < 3 * edge**2


@pytest.mark.parametrize("method", ["barycentric", "adaptive", "nearest"])
def test_resampler_constant_stays_constant(spheres, method):
    src, target = _rotated(spheres[4], seed=2), spheres[3]
    y = Resampler(src, target, method)(np.full(src.n_vertices, 2.5))
    np.testing.assert_allclose(y, 2.5, rtol=1e-12)


def test_resampler_adaptive_conserves_area_weighted_integral(spheres):
    src, target = _rotated(spheres[5], seed=3), spheres[3]  # down-sampling, where barycentric loses data
    rng = np.random.default_rng(0)
    x = rng.normal(size=src.n_vertices)  # rough: sampling three vertices a target misses most of it
    a_src, a_dst = vertex_areas(src.vertices, src.faces), vertex_areas(target.vertices, target.faces)
    total = a_src @ x
    ada = Resampler(src, target, "adaptive", source_area=a_src, target_area=a_dst)(x)
    bary = Resampler(src, target, "barycentric")(x)
    err_ada = abs(a_dst @ ada - total) / (a_src @ np.abs(x))
    err_bary = abs(a_dst @ bary - total) / (a_src @ np.abs(x))
    assert err_ada < 2e-3
    assert err_ada < err_bary / 5
    # and every target vertex gathers from more than its three barycentric neighbours
    assert np.diff(Resampler(src, target, "adaptive").matrix.indptr).mean() > 10


def test_resampler_nearest_keeps_labels(spheres):
    src, target = _rotated(spheres[4], seed=4), spheres[3]
    labels = (np.floor(3 * (src.vertices[:, 2] + 1)) + 10 * (src.vertices[:, 0] > 0)).astype(np.int64)
    R = Resampler(src, target, "nearest")
    y = R(labels)
    assert set(np.unique(y)) <= set(np.unique(labels))
    np.testing.assert_array_equal(y, np.round(y))
    assert np.diff(R.matrix.indptr).max() == 1
    # the label is the nearest source vertex's
    from scipy.spatial import cKDTree

    _, nearest = cKDTree(src.vertices).query(target.vertices)
    assert np.mean(y == labels[nearest]) > 0.97


def test_resampler_multi_column_matches_columns(spheres):
    src, target = _rotated(spheres[3], seed=5), spheres[2]
    X = np.column_stack([_f(src.vertices), src.vertices[:, 2]])
    R = Resampler(src, target)
    Y = R(X)
    assert Y.shape == (target.n_vertices, 2)
    np.testing.assert_allclose(Y[:, 1], R(X[:, 1]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(Y, R.matrix @ X, atol=1e-12)


def _distance_to_triangles(V, F, p):
    """Exact distance from p to every triangle (plain numpy): the plane when the foot is inside, else the
    nearest of the three edges."""
    A, B, C = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    n = np.cross(B - A, C - A)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    h = np.einsum("ij,ij->i", p - A, n)
    foot = p - h[:, None] * n
    inside = np.ones(len(F), dtype=bool)
    for X, Y in ((A, B), (B, C), (C, A)):
        inside &= np.einsum("ij,ij->i", np.cross(Y - X, foot - X), n) >= 0
    d = np.where(inside, np.abs(h), np.inf)
    for X, Y in ((A, B), (B, C), (C, A)):
        t = np.clip(np.einsum("ij,ij->i", p - X, Y - X) / np.einsum("ij,ij->i", Y - X, Y - X), 0, 1)
        d = np.minimum(d, np.linalg.norm(X + t[:, None] * (Y - X) - p, axis=1))
    return d


def test_barycentric_weights_match_brute_force(spheres):
    src = _rotated(spheres[2], seed=6)
    pts = _rotated(spheres[3], seed=7).vertices[:200]
    W = barycentric_weights(src, pts)
    V = src.vertices / np.linalg.norm(src.vertices, axis=1, keepdims=True)
    for i, p in enumerate(pts):
        d = _distance_to_triangles(V, src.faces, p)
        q = W[i].toarray()[0] @ V  # the point the weights describe
        np.testing.assert_allclose(np.linalg.norm(q - p), d.min(), rtol=0, atol=1e-12)
        # on a face holding all its vertices
        holders = [f for f in np.flatnonzero(d <= d.min() + 1e-12) if set(W[i].indices) <= set(src.faces[f])]
        assert holders
    np.testing.assert_allclose(np.asarray(W.sum(axis=1)).ravel(), 1.0, rtol=1e-12)


def test_resampler_same_mesh_is_identity(spheres):
    s = spheres[3]
    x = _f(s.vertices)
    for method in ("barycentric", "adaptive", "nearest"):
        np.testing.assert_allclose(Resampler(s, s, method)(x), x, atol=1e-12)


@pytest.mark.parametrize("policy, expect", [("ignore", "finite"), ("propagate", "nan")])
def test_resampler_nan_policy(spheres, policy, expect):
    src, target = _rotated(spheres[3], seed=8), spheres[2]
    x = _f(src.vertices)
    x[src.vertices[:, 2] > 0.8] = np.nan  # a "medial wall"
    y = Resampler(src, target, nan_policy=policy)(x)
    cap = target.vertices[:, 2] > 0.9
    if expect == "finite":
        assert np.isfinite(y[target.vertices[:, 2] < 0.75]).all()
        assert np.isnan(y[cap]).all()  # no finite source value: fill_value (NaN)
    else:
        assert np.isnan(y[cap]).all() and np.isfinite(y[target.vertices[:, 2] < 0.7]).all()


def test_resampler_nan_raises_by_default(spheres):
    src, target = _rotated(spheres[3], seed=8), spheres[2]
    x = _f(src.vertices)
    x[0] = np.nan
    with pytest.raises(MetricError, match="non-finite value"):
        Resampler(src, target)(x)


def test_resampler_errors(spheres, tmp_path):
    s = spheres[2]
    flat = Mesh(s.vertices * np.array([1.0, 1.0, 0.2]), s.faces, name="squashed")
    with pytest.raises(MeshError, match="expected a sphere"):
        Resampler(flat, s)
    with pytest.raises(ParameterError, match="method: expected one of"):
        Resampler(s, s, "cubic")
    with pytest.raises(ParameterError, match="nan_policy"):
        Resampler(s, s, nan_policy="zero")
    with pytest.raises(ParameterError, match="only the 'adaptive' method"):
        Resampler(s, s, "barycentric", source_area=np.ones(s.n_vertices))
    with pytest.raises(MetricError, match="vertex areas of shape"):
        Resampler(s, s, "adaptive", source_area=np.ones(3))
    with pytest.raises(MeshError, match="expected a surface of the sphere's mesh"):
        Resampler(s, s, "adaptive", target_area=spheres[3])
    with pytest.raises(MetricError, match=r"expected shape \(162,\)"):
        Resampler(s, s)(np.ones(5))
    with pytest.raises(MeshError, match="expected a surfmap.Mesh or a surface file"):
        Resampler(42, s)
    path = write_surface(s, tmp_path / "s.surf.gii")  # paths work too
    assert Resampler(path, s).n_source == s.n_vertices


def test_project_unproject_composes_rotations(spheres):
    """Registration = a rotation: a sphere in register with one end comes out rotated the same way."""
    a = spheres[4]
    rot = Rotation.random(random_state=9).as_matrix()
    b = Mesh(a.vertices @ rot.T, a.faces)
    sin = _rotated(spheres[3], seed=10, radius=100.0)
    out = project_unproject(sin, a, b)
    assert out.n_vertices == sin.n_vertices and np.array_equal(out.faces, sin.faces)
    np.testing.assert_allclose(out.vertices, sin.vertices @ rot.T, atol=100 * 2e-3)
    with pytest.raises(MeshError, match="expected the mesh of project_to"):
        project_unproject(sin, a, spheres[3])


# ---------------------------------------------------------------------------------------------
# against Connectome Workbench, on HCP's standard meshes


def _standard_dir():
    from surfmap.templates import standard_mesh_dir

    try:
        return standard_mesh_dir()
    except TemplateError as err:
        pytest.skip(f"HCP standard meshes not installed: {err}")


@pytest.mark.skipif(WB is None, reason="wb_command (Connectome Workbench) not installed: apt-get install "
                                       "connectome-workbench")
@pytest.mark.parametrize("method, wb_method", [("barycentric", "BARYCENTRIC"), ("adaptive", "ADAP_BARY_AREA")])
def test_resampler_matches_wb_command(tmp_path, method, wb_method):
    D = _standard_dir()
    metric = D / "L.refsulc.164k_fs_LR.shape.gii"
    src, dst = D / "fsaverage.L_LR.spherical_std.164k_fs_LR.surf.gii", D / "L.sphere.32k_fs_LR.surf.gii"
    out = tmp_path / "wb.shape.gii"
    cmd = [WB, "-metric-resample", str(metric), str(src), str(dst), wb_method, str(out)]
    if method == "adaptive":
        cmd += ["-area-surfs", str(src), str(dst)]
    subprocess.run(cmd, check=True, capture_output=True)
    ref = read_metric(out)
    kw = {"source_area": src, "target_area": dst} if method == "adaptive" else {}
    y = Resampler(src, dst, method, **kw)(read_metric(metric))
    assert np.corrcoef(y, ref)[0, 1] >= 0.999
    assert np.percentile(np.abs(y - ref), 99) <= 0.01 * np.ptp(ref)
    # in fact they agree to float32 round-off
    assert np.percentile(np.abs(y - ref), 99) <= 1e-5 * np.ptp(ref)


@pytest.mark.skipif(WB is None, reason="wb_command (Connectome Workbench) not installed")
def test_project_unproject_matches_wb_command(tmp_path):
    from surfmap.templates import load_standard_sphere, registration_spheres

    D = _standard_dir()
    sin = write_surface(load_standard_sphere("fsaverage5", "left"), tmp_path / "in.surf.gii", hemi="left")
    out = tmp_path / "wb.surf.gii"
    subprocess.run([WB, "-surface-sphere-project-unproject", str(sin),
                    str(D / "fs_L/fsaverage.L.sphere.164k_fs_L.surf.gii"),
                    str(D / "fs_L/fs_L-to-fs_LR_fsaverage.L_LR.spherical_std.164k_fs_L.surf.gii"), str(out)],
                   check=True, capture_output=True)
    mine = project_unproject(sin, *registration_spheres("left"))
    np.testing.assert_allclose(mine.vertices, read_surface(out).vertices, atol=0.05)  # radius 100
