"""SYNTHETIC cohort generator: eigenmodes, regions, planted effects, sites, file layouts."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import surfmap
from learn import ConfigError, DataError
from learn.surface import synthetic as S


def test_laplacian_eigenmodes_grid_matches_neumann_square():
    t = S.grid_template(16, spacing_mm=1.0)
    evals, evecs = S.laplacian_eigenmodes(t.mesh, 6)
    M = np.asarray(t.mesh.vertex_areas)
    np.testing.assert_allclose(evecs.T @ (M[:, None] * evecs), np.eye(6), atol=1e-8)
    assert abs(evals[0]) < 1e-8
    assert np.all(np.diff(evals) >= -1e-12)
    # Neumann Laplacian of a 15 x 15 square: (pi/15)^2 twice (x and y modes), then 2 (pi/15)^2
    lam = (np.pi / 15.0) ** 2
    np.testing.assert_allclose(evals[1:4], [lam, lam, 2 * lam], rtol=0.03)


def test_laplacian_eigenmodes_cached_same_object():
    t = S.grid_template(8)
    a = S.laplacian_eigenmodes(t.mesh, 5)
    assert S.laplacian_eigenmodes(t.mesh, 5) is a


def test_laplacian_eigenmodes_too_many_modes():
    t = S.grid_template(4)
    with pytest.raises(ConfigError, match="'n_modes' should lie in"):
        S.laplacian_eigenmodes(t.mesh, 16)


def test_geodesic_ball_profile_along_grid_axis():
    t = S.grid_template(21, spacing_mm=1.0)
    centre = 10 * 21 + 10
    ball = S.geodesic_ball(t.mesh, centre, 6.0)
    assert ball[centre] == 1.0
    for k in range(1, 9):  # along +x the edge path is the straight line
        expected = 0.5 * (1 + np.cos(np.pi * k / 6.0)) if k < 6 else 0.0
        assert ball[centre + k] == pytest.approx(expected, abs=1e-12)


def test_geodesic_ball_bad_centre():
    t = S.grid_template(4)
    with pytest.raises(ConfigError, match="vertex index in"):
        S.geodesic_ball(t.mesh, 99, 3.0)


def test_metric_matrix_subject_independent_and_reproducible():
    c1 = S.hcp_like_cohort(12, template="grid", hemis=("left",), grid_size=12, radius_mm=6.0, n_regions=1)
    c2 = S.hcp_like_cohort(12, template="grid", hemis=("left",), grid_size=12, radius_mm=6.0, n_regions=1)
    all_rows = c1.metric_matrix("left", "thickness")
    np.testing.assert_array_equal(c1.metric_matrix("left", "thickness", [5])[0], all_rows[5])
    np.testing.assert_array_equal(c2.metric_matrix("left", "thickness"), all_rows)
    pd.testing.assert_frame_equal(c1.table, c2.table)
    assert c1.table["synthetic"].all() and "synthetic" in c1.spec.name


def test_planted_effect_recovered_at_vertices():
    c = S.hcp_like_cohort(300, template="grid", hemis=("left",), metrics=("thickness",), effect_size=1.0,
                          n_regions=2, radius_mm=12.0, grid_size=20, fwhm_mm=10.0)
    X = c.metric_matrix("left", "thickness")
    y = c.table["label"].to_numpy()
    truth = c.effect_map("label", "left", "thickness")
    _, sigma = c._base("left", "thickness")
    d = (X[y == 1].mean(0) - X[y == 0].mean(0)) / sigma
    assert np.corrcoef(d, truth)[0, 1] > 0.75  # sampling noise of d: SE ~ 0.12 per vertex
    slope = float(d @ truth / (truth @ truth))
    assert slope == pytest.approx(1.0, abs=0.15)
    centres = [e.center for e in c.spec.effects]
    assert np.argmax(d) in np.flatnonzero(truth > 0.6)
    np.testing.assert_allclose(d[centres], 1.0, atol=0.3)  # Cohen's d at the centres (SE ~ 0.12)
    # between-subject SD away from the effects is sigma (noise_scale x spatial SD of the template map)
    far = truth == 0
    np.testing.assert_allclose(np.median(X[y == 0][:, far].std(0) / sigma), 1.0, atol=0.15)


def test_abide_like_sites_prevalence_and_sex_bias():
    c = S.abide_like_cohort(6, (30, 40), template="grid", hemis=("left",), grid_size=16, radius_mm=6.0,
                            n_regions=1, seed=3)
    t = c.table
    assert t["site"].nunique() == 6 and t["dataset"].eq("synthetic-abide-like").all()
    for s in c.spec.sites:
        rows = t[t["site"] == s.name]
        assert len(rows) == s.n_subjects
        assert rows["label"].sum() == round(s.prevalence * s.n_subjects)
    assert t.loc[t.label == 1, "sex"].mean() > t.loc[t.label == 0, "sex"].mean()
    assert {e.column for e in c.spec.effects} == {"label", "sex"}
    # site gain and offset move the site's mean map
    X = c.metric_matrix("left", "thickness")
    mu, sigma = c._base("left", "thickness")
    for s in c.spec.sites[:3]:
        rows = np.flatnonzero(t["site"].to_numpy() == s.name)
        expected = s.gain * mu.mean() + s.offset * sigma
        assert X[rows].mean() == pytest.approx(expected, abs=0.6 * sigma)


def test_make_cohort_name_must_say_synthetic():
    spec = S.CohortSpec(name="hcp", template="grid", hemis=("left",), sites=(S.Site("a", 4),), grid_size=8)
    with pytest.raises(ConfigError, match="must say it is synthetic"):
        S.make_cohort(spec)


def test_make_cohort_unknown_effect_metric():
    spec = S.CohortSpec(name="synthetic-x", template="grid", hemis=("left",), sites=(S.Site("a", 4),),
                        effects=(S.Effect("label", "left", "myelin", 0, 3.0, 1.0),), grid_size=8)
    with pytest.raises(ConfigError, match="effect on metric 'myelin'"):
        S.make_cohort(spec)


def test_make_cohort_bad_site():
    spec = S.CohortSpec(name="synthetic-x", template="grid", hemis=("left",),
                        sites=(S.Site("a", 4, prevalence=1.5),), grid_size=8)
    with pytest.raises(ConfigError, match="prevalence in"):
        S.make_cohort(spec)


def test_subject_metrics_unknown_subject():
    c = S.hcp_like_cohort(4, template="grid", hemis=("left",), grid_size=8, radius_mm=3.0, n_regions=1)
    with pytest.raises(DataError, match="not in SYNTHETIC cohort"):
        c.subject_metrics("nobody", "left")


def test_images_grid_rasterizer_is_vertex_reshape():
    c = S.hcp_like_cohort(3, template="grid", hemis=("left",), grid_size=8, radius_mm=3.0, n_regions=1)
    images, channels = c.images(S.template_rasterizers(c, size=8))
    assert images.shape == (3, 3, 8, 8) and channels == ["left_thickness", "left_curvature", "left_sulc"]
    x = c.metric_matrix("left", "curvature", [1])[0]
    np.testing.assert_allclose(images[1, 1], x.reshape(8, 8)[::-1], rtol=1e-6)  # row 0 = top (largest y)
    # the grid's FlatMap with surfmap's Rasterizer: vertices at the corners of the square, a linear
    # function of (x, y) is reproduced and read back exactly
    R = surfmap.Rasterizer(S.grid_flatmap(c.templates["left"]), size=8)
    V = c.templates["left"].mesh.vertices
    lin = 2.0 * V[:, 0] - V[:, 1]
    np.testing.assert_allclose(R.backproject(R(lin))[: len(lin)].ravel(), lin, atol=1e-4)


def test_write_freesurfer_read_back(tmp_path):
    c = S.hcp_like_cohort(2, template="fsaverage5", hemis=("left",), n_modes=12, n_regions=1,
                          geometry_jitter_mm=0.5)
    root = c.write_freesurfer(tmp_path / "synthetic_subjects")
    s = c.subjects[1]
    mesh = surfmap.read_surface(root / s / "surf" / "lh.white")
    np.testing.assert_allclose(mesh.vertices, c.subject_vertices(s, "left"), atol=1e-4)
    assert np.abs(mesh.vertices - c.templates["left"].mesh.vertices).max() > 0.1  # native-mode jitter
    values = c.subject_metrics(s, "left")
    for m, fname in (("thickness", "thickness"), ("curvature", "curv"), ("sulc", "sulc")):
        got = surfmap.read_metric(root / s / "surf" / f"lh.{fname}")
        np.testing.assert_allclose(got, values[m], rtol=1e-6, atol=1e-6)
    keep = surfmap.read_mask(root / s / "label" / "lh.cortex.label", mesh.n_vertices)
    np.testing.assert_array_equal(keep, c.templates["left"].cortex)
    gt = nib.load(root / "ground_truth" / "label_thickness_left.func.gii").darrays[0].data
    np.testing.assert_allclose(gt, c.effect_map("label", "left", "thickness"), atol=1e-6)
    table = pd.read_csv(root / "cohort.csv")
    assert table["synthetic"].all() and len(table) == 2
    assert json.loads((root / "synthetic.json").read_text())["synthetic"] is True
    assert "SYNTHETIC" in (root / "SYNTHETIC_README.txt").read_text()


def test_write_hcp_read_back(tmp_path):
    c = S.hcp_like_cohort(1, template="fslr32k", hemis=("left",), n_modes=8, n_regions=1)
    root = c.write_hcp(tmp_path / "synthetic_hcp")
    s = c.subjects[0]
    folder = root / s / "MNINonLinear" / "fsaverage_LR32k"
    mesh = surfmap.read_surface(folder / f"{s}.L.midthickness.32k_fs_LR.surf.gii")
    assert mesh.n_vertices == 32492
    values = c.subject_metrics(s, "left")
    cortex = c.templates["left"].cortex
    for m, stem in (("thickness", "thickness"), ("myelin", "MyelinMap")):
        got = surfmap.read_metric(folder / f"{s}.{stem}.32k_fs_LR.dscalar.nii", hemi="left")
        np.testing.assert_allclose(got[cortex], values[m][cortex], rtol=1e-6)
        assert np.isnan(got[~cortex]).all()


def test_freesurfer_layout_through_surfmap_batch_equals_template_mode(tmp_path):
    from learn.surface.dataset import SurfaceImageDataset
    from surfmap.batch import freesurfer_jobs, run_batch

    c = S.hcp_like_cohort(3, template="fsaverage5", hemis=("left",), metrics=("thickness", "sulc"), n_modes=12)
    root = c.write_freesurfer(tmp_path / "synthetic_subjects")
    out = tmp_path / "flat"
    jobs = freesurfer_jobs(root, out, hemis=("left",), metrics=("thickness", "sulc"), size=32, method="conformal")
    result = run_batch(jobs, out, progress=False)
    assert [r["status"] for r in result.records] == ["done"] * 3
    ds = SurfaceImageDataset.from_manifest(out / "manifest.tsv", root / "cohort.csv", hemis=("left",))
    assert ds.channels == ["left_thickness", "left_sulc"] and ds.labels.tolist() == c.table["label"].tolist()
    # native mode on the (unjittered) template mesh = template mode: same map, same images
    images, _ = c.images(S.template_rasterizers(c, size=32, method="conformal"))
    for k in range(2):
        r = np.corrcoef(ds.images[:, k].ravel(), images[:, k].ravel())[0, 1]
        assert r > 0.999
