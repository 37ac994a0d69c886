"""surfmap.flatten: cut + conformal map (+ optimal transport), vertex_map into the input mesh."""

import numpy as np
import pytest

import surfmap
from surfmap.mesh import Mesh, face_areas


def capped_sphere():
    trimesh = pytest.importorskip("trimesh")
    s = trimesh.creation.icosphere(subdivisions=3)  # 642 vertices
    mesh = Mesh(s.vertices, s.faces, name="icosphere")
    keep = mesh.vertices[:, 2] < 0.6  # remove a polar cap
    return mesh, keep


@pytest.fixture
def harmonic_conformal(monkeypatch):
    """Stand in the harmonic square map for the conformal stage, to test the pipeline alone (the pipeline
    imports its stages at the top, so the stand-in goes where ``flatten`` looks the stage up)."""
    from surfmap import pipeline
    from surfmap.transport import _harmonic_square_map

    monkeypatch.setattr(pipeline, "conformal_map", lambda mesh, **kw: _harmonic_square_map(mesh))


def check_flat(fm, mesh):
    assert (fm.signed_areas() > 0).all()
    assert ((fm.uv >= 0) & (fm.uv <= 1)).all()
    np.testing.assert_array_equal(fm.uv[fm.corners], [[0, 0], [1, 0], [1, 1], [0, 1]])
    # vertex_map indexes the ORIGINAL mesh
    np.testing.assert_array_equal(fm.vertices, mesh.vertices[fm.vertex_map])


def test_flatten_area_composes_vertex_map(harmonic_conformal):
    mesh, keep = capped_sphere()
    fm = surfmap.flatten(mesh, keep)
    check_flat(fm, mesh)
    assert keep[fm.vertex_map].all() and len(fm.vertex_map) == keep.sum()
    assert fm.info["method"] == "area"
    assert fm.info["transport"]["cell_area_error"] < 1e-6
    assert set(fm.info["timings"]) >= {"cut", "conformal", "transport", "total"}
    A = face_areas(fm.vertices, fm.faces)
    d = np.log(fm.signed_areas() / (A / A.sum()))
    assert np.percentile(np.abs(d), 95) <= 0.05


def test_flatten_conformal_method_skips_transport(harmonic_conformal):
    mesh, keep = capped_sphere()
    fm = surfmap.flatten(mesh, keep, method="conformal")
    check_flat(fm, mesh)
    assert "transport" not in fm.info and fm.info["method"] == "conformal"


def test_flatten_end_to_end_sphere_with_cap_removed():
    mesh, keep = capped_sphere()
    fm = surfmap.flatten(mesh, keep)
    check_flat(fm, mesh)
    assert fm.info["transport"]["cell_area_error"] < 1e-6
    assert "conformal" in fm.info


def test_flatten_bad_method_raises():
    mesh, keep = capped_sphere()
    with pytest.raises(ValueError, match="method: expected 'area' or 'conformal'"):
        surfmap.flatten(mesh, keep, method="lscm")


def test_flatten_unknown_keyword_raises():
    mesh, keep = capped_sphere()
    with pytest.raises(ValueError, match="unknown keyword"):
        surfmap.flatten(mesh, keep, area_tol=0.1, bogus=1)


def test_flatten_bad_mask_raises():
    mesh, keep = capped_sphere()
    with pytest.raises(surfmap.MaskError, match="keep"):
        surfmap.flatten(mesh, keep[:-1])


def test_flatten_old_import_path_warns_and_is_the_pipeline():
    from surfmap.pipeline import flatten

    with pytest.warns(DeprecationWarning, match="moved to surfmap.pipeline.flatten"):
        from surfmap.flatmap import flatten as old
    assert old is flatten is surfmap.flatten
