"""The real-subject benchmark's plumbing, on a stand-in for pycortex's S1 made of fsaverage5 files."""

from __future__ import annotations

import numpy as np
import pytest

import surfmap
from benchmarks import real_subject
from benchmarks.meshes import freesurfer_flat_patch
from surfmap.mesh import Mesh


@pytest.fixture(scope="module")
def fake_s1(tmp_path_factory):
    """wm_lh.gii (fsaverage5 white) and flat_lh.gii (FreeSurfer's flat patch, S1's layout: every vertex, z = 0)."""
    d = tmp_path_factory.mktemp("S1")
    tpl = surfmap.load_template("fsaverage5", "left")
    surfmap.write_surface(tpl.mesh, d / "wm_lh.gii")
    p = freesurfer_flat_patch("left")
    V = np.zeros((tpl.n_vertices, 3))
    V[:, :2] = p["uv"]
    surfmap.write_surface(Mesh(V, p["faces"]), d / "flat_lh.gii")
    return d, tpl, p


def test_s1_case_and_pycortex_row(fake_s1, tmp_path):
    d, tpl, p = fake_s1
    keep = real_subject.cortex_mask(d, "left", tpl.n_vertices)
    np.testing.assert_array_equal(np.flatnonzero(keep), np.unique(p["faces"]))
    case, cut = real_subject.s1_case(d, "white")
    assert case.name == "S1-left-white" and cut["n_mesh"] == tpl.n_vertices and cut["inserted"] == 0
    assert case.n == cut["n_disk"] < int(keep.sum()) + 20
    row = real_subject.pycortex_row(d, case, "white", tmp_path)
    # FreeSurfer's patch vs the white surface: the numbers benchmarks/README.md reports for it
    assert row["distortion"]["flipped"] == 0
    np.testing.assert_allclose(row["distortion"]["logarea_abs_p95"], 0.655, atol=2e-3)
    # the figure reads the saved map
    assert real_subject.plot_maps([row], tmp_path, case.name).exists()


def test_s1_summary_ratios_and_stages():
    rows = [
        dict(case="S1-left-white", method="igl_lscm", median_s=2.0, first_s=2.5, peak_mem_mb=100.0, n=10),
        dict(case="S1-left-white", method="surfmap_flatten", median_s=5.0, first_s=7.0, peak_mem_mb=250.0, n=10,
             info={"timings": {"cut": 1.0, "conformal": 2.5, "transport": 1.5, "total": 5.0},
                   "conformal": {"timings": {"newton": 2.0, "factorisations": 3, "total": 2.5}}}),
        dict(case="S1-left-white", method="surfmap_flatten_conformal", first_s=4.0, median_s=None, n=10,
             peak_mem_mb=None, info={}),
    ]
    s = real_subject.summary(rows)["S1-left-white"]
    f = s["methods"]["surfmap_flatten"]
    assert f["x_lscm"] == pytest.approx(2.5) and f["mem_x_lscm"] == pytest.approx(2.5) and f["warm"]
    assert f["stages"] == {"cut": 1.0, "conformal": 2.5, "transport": 1.5, "conformal.newton": 2.0}
    assert s["methods"]["surfmap_flatten_conformal"]["warm"] is False
    md = real_subject.markdown(dict(rows=rows, cuts={}, summary={"S1-left-white": s}))
    assert "| S1-left-white | surfmap_flatten | 5.00 | 2.50 | 250 | 2.50 |" in md


def test_s1_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip download --no-deps pycortex==1.4.0"):
        real_subject.check_dir(tmp_path)
