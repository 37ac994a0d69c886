"""Tests of surfmap.raster: the sampling operator, its modes and NaN policies, back-projection."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.tri import LinearTriInterpolator, Triangulation

from _meshes import make_grid

from surfmap.exceptions import MeshError, MetricError
from surfmap.flatmap import FlatMap
from surfmap.raster import Rasterizer, cached_rasterizer, pixel_centres, rasterize


def grid_map(n=21, jitter=0.3, seed=0, offset=0):
    """A triangulated n x n grid of the unit square, interior vertices jittered."""
    grid = make_grid(n)
    uv = grid.vertices[:, :2].copy()
    inner = (uv > 0).all(1) & (uv < 1).all(1)
    rng = np.random.default_rng(seed)
    uv[inner] += rng.uniform(-jitter, jitter, (inner.sum(), 2)) / (n - 1)
    corners = [0, n - 1, n * n - 1, n * (n - 1)]
    return FlatMap(uv, grid.faces, np.arange(n * n) + offset, corners)


def reference_image(fm, x, size):
    """Piecewise-linear interpolation at pixel centres by matplotlib (independent reference)."""
    tri = Triangulation(fm.uv[:, 0], fm.uv[:, 1], fm.faces)
    c = pixel_centres(size)
    return np.asarray(LinearTriInterpolator(tri, x)(c[:, 0], c[:, 1])).reshape(size, size)


def test_rasterizer_piecewise_linear_exact():
    fm = grid_map(17, jitter=0.35)
    x = np.random.default_rng(1).normal(size=fm.n_vertices)
    img = Rasterizer(fm, size=50)(x)
    ref = reference_image(fm, x, 50)
    assert img.shape == (1, 50, 50) and img.dtype == np.float32
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(img[0], ref, atol=1e-6)


def test_rasterizer_global_linear_exact_at_pixel_centres():
    fm = grid_map(25, jitter=0.4, seed=3)
    f = lambda u, v: 2.0 * u - 3.0 * v + 0.5
    img = Rasterizer(fm, size=64)(f(fm.uv[:, 0], fm.uv[:, 1]))
    c = pixel_centres(64)
    np.testing.assert_allclose(img[0].ravel(), f(c[:, 0], c[:, 1]), atol=1e-6)


def test_pixel_centres_row_zero_is_top():
    c = pixel_centres(4)
    np.testing.assert_allclose(c[0], [0.125, 0.875])  # top-left pixel
    np.testing.assert_allclose(c[3], [0.875, 0.875])  # top-right
    np.testing.assert_allclose(c[12], [0.125, 0.125])  # bottom-left
    fm = grid_map(5, jitter=0.0)
    img = Rasterizer(fm, size=4)(fm.uv[:, 1])  # v increases upwards: top row is largest
    np.testing.assert_allclose(img[0, :, 0], [0.875, 0.625, 0.375, 0.125], atol=1e-7)


def test_rasterizer_operator_rows_sum_to_one():
    R = Rasterizer(grid_map(9), size=31)
    np.testing.assert_allclose(np.asarray(R.matrix.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    assert R.matrix.shape == (31 * 31, 81)


def test_rasterizer_no_empty_pixel_when_map_misses_the_edge():
    fm0 = grid_map(11, jitter=0.2)
    uv = 0.5 + (fm0.uv - 0.5) * 0.95  # boundary pulled a little inside: edge pixels fall outside
    fm = FlatMap(uv, fm0.faces, fm0.vertex_map, fm0.corners)
    x = 1.0 + uv[:, 0] + 2.0 * uv[:, 1]
    R = Rasterizer(fm, size=40)
    img = R(x)
    assert R.n_outside > 0
    assert np.isfinite(img).all()
    # an outside centre takes the value at its closest point of the (square) map: the clamped point
    c = pixel_centres(40)
    q = np.clip(c, uv.min(0), uv.max(0))
    np.testing.assert_allclose(img[0].ravel(), 1.0 + q[:, 0] + 2.0 * q[:, 1], atol=1e-6)
    assert R.max_outside_distance == pytest.approx(np.hypot(*(uv.min(0) - c.min(0))), rel=1e-9)


def test_backproject_recovers_smooth_function():
    fm = grid_map(41, jitter=0.3, seed=2)
    u, v = fm.uv.T
    x = np.sin(2 * np.pi * u) * np.cos(3 * np.pi * v) + u * v
    R = Rasterizer(fm, size=64)
    back = R.backproject(R(x))
    assert back.shape == (fm.n_vertices, 1)
    assert np.corrcoef(back[:, 0], x)[0, 1] >= 0.99


def test_backproject_linear_exact_including_border():
    fm = grid_map(13, jitter=0.3)
    f = 0.3 + 1.5 * fm.uv[:, 0] - 0.7 * fm.uv[:, 1]
    R = Rasterizer(fm, size=32)
    np.testing.assert_allclose(R.backproject(R(f)[0]), f, atol=1e-6)


def test_backproject_to_original_nan_outside_cut():
    fm0 = grid_map(6, jitter=0.0)
    vmap = np.arange(fm0.n_vertices) * 2 + 1  # the flat map holds the odd vertices of a 73-vertex mesh
    fm = FlatMap(fm0.uv, fm0.faces, vmap, fm0.corners)
    R = Rasterizer(fm, size=16)
    full = R.backproject(R(fm.uv[:, 0]), to_original=73)
    assert full.shape == (73, 1)
    assert np.isnan(full[::2]).all()
    np.testing.assert_allclose(full[vmap, 0], fm.uv[:, 0], atol=1e-6)
    with pytest.raises(MetricError, match="to_original"):
        R.backproject(R(fm.uv[:, 0]), to_original=50)


def test_backproject_wrong_image_shape():
    R = Rasterizer(grid_map(5), size=8)
    with pytest.raises(MetricError, match=r"image: expected shape \(8, 8\)"):
        R.backproject(np.zeros((9, 9)))


def test_rasterizer_dict_keeps_channel_order_and_names():
    fm = grid_map(9)
    u, v = fm.uv.T
    R = Rasterizer(fm, size=12)
    img = R({"sulc": v, "thickness": u, "curv": u + v})
    assert R.channels == ["sulc", "thickness", "curv"]
    assert img.shape == (3, 12, 12)
    np.testing.assert_allclose(img[0], R(v)[0])
    np.testing.assert_allclose(img[1], R(u)[0])
    np.testing.assert_allclose(img[2], R(np.column_stack([u, v]))[0] + R(v)[0], atol=1e-6)


def test_rasterizer_original_length_goes_through_vertex_map():
    fm = grid_map(7, offset=10)  # flat vertex i is original vertex i + 10
    x_flat = np.random.default_rng(0).normal(size=fm.n_vertices)
    x_orig = np.concatenate([np.full(10, np.nan), x_flat, np.full(3, np.nan)])
    R = Rasterizer(fm, size=10)
    np.testing.assert_array_equal(R(x_orig), R(x_flat))
    with pytest.raises(MetricError, match="found 20"):
        R(np.zeros(20))


def test_apply_many_matches_per_subject():
    fm = grid_map(9)
    X = np.random.default_rng(0).normal(size=(5, fm.n_vertices, 3))
    R = Rasterizer(fm, size=14)
    out = R.apply_many(X)
    assert out.shape == (5, 3, 14, 14)
    for s in range(5):
        np.testing.assert_array_equal(out[s], R(X[s]))
    np.testing.assert_allclose(R.apply_many(X.astype(np.float32)), out, atol=1e-6)
    with pytest.raises(MetricError, match=r"\(S, n, C\)"):
        R.apply_many(X[0])


def test_rasterizer_nan_raises_naming_channel():
    fm = grid_map(9)
    x = fm.uv[:, 0].copy()
    x[40] = np.nan
    R = Rasterizer(fm, size=16)
    with pytest.raises(MetricError, match="non-finite value.*channel 'b'.*nan_policy"):
        R({"a": fm.uv[:, 1], "b": x})


def test_rasterizer_nan_ignore_renormalises():
    fm = grid_map(9, jitter=0.0)
    x = np.ones(fm.n_vertices)
    x[40] = np.nan
    y = x.copy()
    y[40] = 100.0
    R = Rasterizer(fm, size=16, nan_policy="ignore")
    img = R(x)
    np.testing.assert_allclose(img, 1.0)  # a constant stays constant over the finite vertices
    Rp = Rasterizer(fm, size=16, nan_policy="propagate")
    touched = Rasterizer(fm, size=16)(y)[0] != 1.0
    assert np.array_equal(np.isnan(Rp(x)[0]), touched) and touched.any()


def test_rasterizer_nan_ignore_fill_value_when_all_missing():
    fm = grid_map(3, jitter=0.0)
    R = Rasterizer(fm, size=4, nan_policy="ignore", fill_value=-1.0)
    np.testing.assert_array_equal(R(np.full(9, np.nan)), -1.0)


def test_rasterizer_area_mode_averages_vertices_in_pixel():
    fm = grid_map(33, jitter=0.45, seed=5)
    x = np.random.default_rng(0).normal(size=fm.n_vertices)
    size = 8  # ~16 vertices per pixel
    img = Rasterizer(fm, size=size, mode="area")(x)[0]
    j = np.clip(np.floor(fm.uv[:, 0] * size).astype(int), 0, size - 1)
    i = np.clip(np.floor((1 - fm.uv[:, 1]) * size).astype(int), 0, size - 1)
    ref = np.zeros((size, size))
    cnt = np.zeros((size, size))
    np.add.at(ref, (i, j), x)
    np.add.at(cnt, (i, j), 1)
    assert (cnt > 0).all()
    np.testing.assert_allclose(img, ref / cnt, atol=1e-6)


def test_rasterizer_area_mode_fills_empty_pixels_barycentric():
    fm = grid_map(5, jitter=0.0)
    x = np.random.default_rng(0).normal(size=fm.n_vertices)
    size = 32  # far more pixels than vertices: most pixels hold no vertex
    area = Rasterizer(fm, size=size, mode="area")(x)[0]
    bary = Rasterizer(fm, size=size)(x)[0]
    j = np.clip(np.floor(fm.uv[:, 0] * size).astype(int), 0, size - 1)
    i = np.clip(np.floor((1 - fm.uv[:, 1]) * size).astype(int), 0, size - 1)
    empty = np.ones((size, size), bool)
    empty[i, j] = False
    np.testing.assert_array_equal(area[empty], bary[empty])
    np.testing.assert_allclose(area[i, j], x.astype(np.float32))


def test_rasterize_one_shot_and_cache():
    fm = grid_map(7)
    x = fm.uv[:, 0]
    np.testing.assert_array_equal(rasterize(fm, x, size=20), Rasterizer(fm, size=20)(x))
    same = FlatMap(fm.uv.copy(), fm.faces.copy(), fm.vertex_map.copy(), fm.corners)
    assert cached_rasterizer(fm, size=20) is cached_rasterizer(same, size=20)
    assert cached_rasterizer(fm, size=21) is not cached_rasterizer(fm, size=20)


def test_rasterizer_bad_arguments():
    fm = grid_map(4)
    with pytest.raises(ValueError, match="mode: expected one of"):
        Rasterizer(fm, mode="nearest")
    with pytest.raises(ValueError, match="nan_policy: expected one of"):
        Rasterizer(fm, nan_policy="zero")
    with pytest.raises(ValueError, match="size: expected a positive integer"):
        Rasterizer(fm, size=0)
    with pytest.raises(TypeError, match="fm: expected a surfmap.FlatMap"):
        Rasterizer(np.zeros((3, 2)))
    with pytest.raises(MeshError, match="no faces"):
        Rasterizer(FlatMap(fm.uv, np.zeros((0, 3)), fm.vertex_map, fm.corners))
    uv = fm.uv.copy()
    uv[2] = np.nan
    with pytest.raises(MeshError, match="fm.uv: expected finite flat coordinates; found 1 vertices with NaN"):
        Rasterizer(FlatMap(uv, fm.faces, fm.vertex_map, fm.corners))
    with pytest.raises(TypeError, match="fm: expected a surfmap.FlatMap; found ndarray"):
        cached_rasterizer(np.zeros((3, 2)))
    R = Rasterizer(fm, size=4)
    with pytest.raises(ValueError, match=r"out: expected a C-contiguous float32 array of \(1, 4, 4\); found float64"):
        R(np.zeros(fm.n_vertices), out=np.empty((1, 4, 4)))
    with pytest.raises(MetricError, match="dict of metrics is empty"):
        R({})
    with pytest.raises(MetricError, match="expected shape"):
        R(np.zeros((1, 16, 1, 1)))
    with pytest.raises(MetricError, match="expected numbers"):
        R(np.array(["a"] * 16))


def test_rasterizer_for_template_shared_operator():
    from surfmap.templates import load_template

    R = Rasterizer.for_template("fsaverage5", "left", size=32)
    assert Rasterizer.for_template("fsaverage5", "left", size=32) is R  # one map, one operator
    tpl = load_template("fsaverage5", "left")
    subjects = np.stack([tpl.metrics["thickness"] * (1 + 0.1 * s) for s in range(3)])[:, :, None]
    imgs = R(subjects)  # full-length arrays (10,242 vertices): the cortex is read through vertex_map
    assert imgs.shape == (3, 1, 32, 32) and np.isfinite(imgs).all()
    np.testing.assert_allclose(imgs[2], imgs[0] * 1.2, rtol=1e-5)
    np.testing.assert_array_equal(imgs[0], R(tpl.metrics["thickness"][R.flatmap.vertex_map]))
