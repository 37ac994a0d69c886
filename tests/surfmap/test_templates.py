"""Offline templates: fsaverage5 (nilearn package data) and fs_LR 32k (brainspace data files)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import surfmap.templates as templates
from surfmap.exceptions import TemplateError
from surfmap.templates import Hemisphere, load_template

# name, hemi, vertices, cortex vertices, metric names
CASES = [
    ("fsaverage5", "left", 10242, 9465, {"thickness", "curvature", "sulc"}),
    ("fsaverage5", "right", 10242, 9537, {"thickness", "curvature", "sulc"}),
    ("fslr32k", "left", 32492, 29271, {"thickness", "curvature", "myelin"}),
    ("fslr32k", "right", 32492, 29287, {"thickness", "curvature", "myelin"}),
]


@pytest.mark.parametrize("name, hemi, n, n_cortex, metrics", CASES)
def test_load_template_contents(name, hemi, n, n_cortex, metrics):
    h = load_template(name, hemi)
    assert isinstance(h, Hemisphere) and (h.name, h.hemi) == (name, hemi)
    assert h.mesh.n_vertices == n and h.mesh.n_faces == 2 * n - 4  # closed sphere: chi 2
    assert h.mesh.euler_characteristic == 2
    assert h.cortex.dtype == bool and h.cortex.shape == (n,)
    assert int(h.cortex.sum()) == n_cortex
    assert set(h.metrics) == metrics
    for key, x in h.metrics.items():
        assert x.dtype == np.float64 and x.shape == (n,), key
        assert np.isfinite(x[h.cortex]).all(), key
    # cortical thickness of an adult group average: about 2.5 mm
    assert 2.0 < float(np.mean(h.metrics["thickness"][h.cortex])) < 3.0


@pytest.mark.parametrize("hemi", ["left", "right"])
def test_load_template_fslr32k_metrics_nan_exactly_on_medial_wall(hemi):
    h = load_template("fslr32k", hemi)
    for key, x in h.metrics.items():
        np.testing.assert_array_equal(np.isnan(x), ~h.cortex, err_msg=key)


def test_load_template_fsaverage5_cortex_is_the_flat_patch():
    h = load_template("fsaverage5", "left")
    flat = h.surface("flat")
    np.testing.assert_array_equal(np.flatnonzero(h.cortex), np.unique(flat.faces))
    np.testing.assert_array_equal(flat.vertices[h.cortex, 2], 0.0)  # a flat patch
    assert int(h.medial_wall.sum()) == 777


def test_load_template_hemispheres_are_mirror_images():
    left, right = load_template("fsaverage5", "left"), load_template("fsaverage5", "right")
    assert left.mesh.vertices[:, 0].mean() < 0 < right.mesh.vertices[:, 0].mean()
    left, right = load_template("fslr32k", "lh"), load_template("fslr32k", "rh")
    assert left.mesh.vertices[:, 0].mean() < 0 < right.mesh.vertices[:, 0].mean()


def test_load_template_cached_and_aliases():
    assert load_template("fsaverage5", "lh") is load_template("fsaverage5", "left")
    assert load_template("FSLR32K", "R") is load_template("fslr32k", "right")


def test_load_template_read_only():
    h = load_template("fsaverage5", "left")
    with pytest.raises(ValueError):
        h.cortex[0] = False
    with pytest.raises(ValueError):
        h.metrics["thickness"][0] = 0.0
    with pytest.raises(TypeError):
        h.metrics["new"] = h.metrics["sulc"]


@pytest.mark.parametrize(
    "name, kinds", [("fsaverage5", ["pial", "inflated", "sphere"]), ("fslr32k", ["sphere"])]
)
def test_hemisphere_surface_other_kinds_share_vertices(name, kinds):
    h = load_template(name, "left")
    for kind in kinds:
        m = h.surface(kind)
        assert m.n_vertices == h.n_vertices
        np.testing.assert_array_equal(m.faces, h.mesh.faces)
    r = np.linalg.norm(h.surface("sphere").vertices, axis=1)
    np.testing.assert_allclose(r, r.mean(), rtol=1e-3)


def test_load_template_surface_argument():
    h = load_template("fsaverage5", "left", surface="pial")
    assert h.surface_kind == "pial" and h.mesh.name == "fsaverage5.left.pial"
    assert load_template("fsaverage5", "left").surface_kind == "white"
    assert load_template("fslr32k", "left").surface_kind == "midthickness"


def test_load_template_pickles():
    h = load_template("fsaverage5", "right")
    h2 = pickle.loads(pickle.dumps(h))
    np.testing.assert_array_equal(h2.mesh.vertices, h.mesh.vertices)
    np.testing.assert_array_equal(h2.metrics["sulc"], h.metrics["sulc"])
    np.testing.assert_array_equal(h2.cortex, h.cortex)


def test_load_template_unknown_name():
    with pytest.raises(
        TemplateError, match=r"'name' should be one of \['fsaverage5', 'fslr32k'\]; 'fsaverage' was"
    ):
        load_template("fsaverage", "left")


def test_load_template_unknown_hemi():
    with pytest.raises(TemplateError, match="'hemi' should be one of.*'both' was provided"):
        load_template("fsaverage5", "both")


def test_load_template_unknown_surface():
    with pytest.raises(TemplateError, match="'surface' should be one of.*'flat'"):
        load_template("fslr32k", "left", surface="flat")
    with pytest.raises(TemplateError, match="'kind' should be one of"):
        load_template("fslr32k", "left").surface("pial")


def test_load_template_without_brainspace(monkeypatch):
    real = templates.importlib.util.find_spec
    monkeypatch.setattr(
        templates.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "brainspace" else real(name, *a),
    )
    with pytest.raises(TemplateError, match=r'pip install "surfmap\[templates\]"'):
        templates._load_surface.__wrapped__("fslr32k", "left", "sphere")  # bypass the cache
