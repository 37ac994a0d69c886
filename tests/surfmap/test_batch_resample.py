"""FreeSurfer subjects on fs_LR 32k: to_template, ``surfmap batch --resample``, images that agree.

The cohort is synthetic (benchmarks/fs_cohort.py): each subject has its own sphere mesh (fsaverage5's
turned and jittered) and carries maps defined on the registered sphere, so through a common mesh
their images should agree within the resampling error, and native images should not.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest

from surfmap import read_metric, read_surface
from surfmap.cli import main
from surfmap.exceptions import TemplateError

WB = shutil.which("wb_command")


def _standard_meshes():
    from surfmap.templates import standard_mesh_dir

    try:
        standard_mesh_dir()
    except TemplateError as err:
        pytest.skip(f"HCP standard meshes not installed: {err}")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from benchmarks.fs_cohort import make_cohort

    root = tmp_path_factory.mktemp("subjects")
    make_cohort(root, 3, seed=0)
    return root


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _truth_on_fslr32k():
    """The planted maps at fs_LR 32k's vertices: their positions in fsaverage space, through the inverse of
    HCP's fsaverage -> fs_LR registration."""
    from benchmarks.fs_cohort import true_maps
    from surfmap.resample import project_unproject
    from surfmap.templates import load_standard_sphere, registration_spheres

    fs, fs_in_lr = registration_spheres("left")
    back = project_unproject(load_standard_sphere("fslr32k", "left"), fs_in_lr, fs)
    return true_maps(back.vertices)


def test_to_template_fslr32k_writes_hcp_layout(cohort, tmp_path):
    _standard_meshes()
    from surfmap import load_template, to_template

    sub = to_template(cohort / "sub-01", "left", out=tmp_path / "sub-01")
    assert sub.n_vertices == 32492 and sub.cortex.sum() == load_template("fslr32k", "left").cortex.sum()
    folder = tmp_path / "sub-01" / "MNINonLinear" / "fsaverage_LR32k"
    for name in ("white", "pial", "midthickness"):
        mesh = read_surface(folder / f"sub-01.L.{name}.32k_fs_LR.surf.gii")
        assert mesh.n_vertices == 32492
    from surfmap import read_mask

    np.testing.assert_array_equal(read_mask(folder / "sub-01.L.cortex.32k_fs_LR.label.gii", 32492), sub.cortex)
    truth = _truth_on_fslr32k()
    for name in ("thickness", "sulc", "curv"):
        x = read_metric(folder / f"sub-01.L.{name}.32k_fs_LR.shape.gii", hemi="left")
        np.testing.assert_allclose(x, sub.metrics[name], atol=1e-5)  # float32 on disk
        err = np.abs(x - truth[name])[sub.cortex]
        # the planted map comes back within the resampling error of a 10k mesh (edge ~4 mm of 100)
        assert np.percentile(err, 99) < 0.02 * np.ptp(truth[name])
    # surfmap batch reads the layout as an HCP folder (per-hemisphere GIFTI metrics)
    from surfmap.batch import hcp_jobs

    jobs = hcp_jobs(tmp_path, tmp_path / "out", hemis="left", metrics=("thickness",), mode="native")
    assert jobs[0].problem is None and jobs[0].metrics[0][1].endswith("sub-01.L.thickness.32k_fs_LR.shape.gii")


@pytest.mark.slow
def test_batch_resample_fslr32k_images_agree_native_do_not(cohort, tmp_path):
    _standard_meshes()
    from benchmarks.fs_cohort import disagreement

    subjects = ["sub-01", "sub-02", "sub-03"]
    out_r, out_n = tmp_path / "resampled", tmp_path / "native"
    common = ["--hemi", "left", "--method", "conformal", "--no-progress"]
    assert main(["batch", str(cohort), "-o", str(out_r), "--resample", "fslr32k", *common]) == 0
    assert main(["batch", str(cohort), "-o", str(out_n), *common]) == 0
    resampled, native = disagreement(out_r, subjects), disagreement(out_n, subjects)
    for key in resampled:
        assert resampled[key]["p99"] < 1.0, (key, resampled[key])  # percent of the channel's range
        assert native[key]["p99"] > 10.0, (key, native[key])
    # pixel for pixel within the resampling error: an image is a convex combination of cortex values,
    # so two subjects' pixels differ by at most their largest difference at a cortex vertex
    folder = "MNINonLinear/fsaverage_LR32k"
    from surfmap import load_template

    cortex = load_template("fslr32k", "left").cortex
    ref = np.load(out_r / "sub-01" / "left" / "images.npz")
    for s in subjects[1:]:
        img = np.load(out_r / s / "left" / "images.npz")
        assert str(img["geometry"]) == str(ref["geometry"]) and str(ref["geometry"]).startswith("template:")
        for c, name in enumerate(ref["channels"]):
            a = read_metric(out_r / "sub-01" / folder / f"sub-01.L.{name}.32k_fs_LR.shape.gii")
            b = read_metric(out_r / s / folder / f"{s}.L.{name}.32k_fs_LR.shape.gii")
            bound = np.abs(a - b)[cortex].max()
            assert np.abs(ref["images"][c] - img["images"][c]).max() <= bound + 1e-5
    assert str(np.load(out_n / "sub-02" / "left" / "images.npz")["geometry"]) == "native"
    # every subject's resampled files and the template's flat surface are there
    assert (out_r / "_template" / "left" / "lh.flat.surf.gii").is_file()
    assert (out_n / "sub-01" / "left" / "lh.flat.surf.gii").is_file()
    # resumable: a second run skips every job
    assert main(["batch", str(cohort), "-o", str(out_r), "--resample", "fslr32k", *common]) == 0
    assert {r["status"] for r in _rows(out_r / "manifest.tsv")} == {"skipped"}


def test_batch_resample_failures_are_recorded(tmp_path):
    from benchmarks.fs_cohort import make_cohort

    root = tmp_path / "subjects"
    make_cohort(root, 3, seed=5)
    (root / "sub-02" / "surf" / "lh.sphere.reg").unlink()
    bad = root / "sub-03" / "surf" / "lh.thickness"
    from nibabel.freesurfer import write_morph_data

    write_morph_data(str(bad), np.ones(100, dtype=np.float32))  # another mesh's size
    out = tmp_path / "out"
    code = main(["batch", str(root), "-o", str(out), "--hemi", "left", "--resample", "fsaverage5", "--method",
                 "conformal", "--no-progress"])
    assert code == 3
    fails = {r["subject"]: r for r in _rows(out / "failures.tsv")}
    assert set(fails) == {"sub-02", "sub-03"}
    assert "lh.sphere.reg: no such file" in fails["sub-02"]["message"]
    assert fails["sub-03"]["error"] == "MetricError" and "expected 10242 values" in fails["sub-03"]["message"]
    status = json.loads((out / "sub-01" / "left" / "status.json").read_text())
    assert status["settings"]["resample"] == {"target": "fsaverage5", "method": "adaptive"}
    assert "resample:sphere.reg" in status["settings"]["inputs"]
    img = np.load(out / "sub-01" / "left" / "images.npz")
    assert img["images"].shape == (3, 224, 224) and np.isfinite(img["images"]).all()
    # a changed sphere redoes the job
    reg = root / "sub-01" / "surf" / "lh.sphere.reg"
    reg.write_bytes(reg.read_bytes())
    import os

    os.utime(reg, ns=(1, 1))
    main(["batch", str(root), "-o", str(out), "--hemi", "left", "--resample", "fsaverage5", "--method", "conformal",
          "--no-progress"])
    rows = {r["subject"]: r for r in _rows(out / "manifest.tsv")}
    assert rows["sub-01"]["status"] == "done" and "resample:sphere.reg" in rows["sub-01"]["message"]
    # another cohort rasterized with this cohort's map: the same geometry (what a transfer needs)
    shared = str(out / "_template" / "{hemi}" / "flatmap.npz")
    other = tmp_path / "other"
    assert main(["batch", str(root), "-o", str(other), "--hemi", "left", "--resample", "fsaverage5", "--template",
                 shared, "--subjects", "sub-01", "--no-progress"]) == 0
    assert not (other / "_template").exists()
    a, b = (np.load(d / "sub-01" / "left" / "images.npz") for d in (out, other))
    assert str(a["geometry"]) == str(b["geometry"])
    np.testing.assert_allclose(a["images"], b["images"], atol=1e-6)


def test_batch_resample_refuses_a_map_of_another_mesh(cohort, tmp_path, capsys):
    from surfmap import FlatMap, flatten, load_template

    h = load_template("fsaverage5", "left")
    path = flatten(h.mesh, h.cortex, method="conformal").save(tmp_path / "fs5.npz")
    assert isinstance(FlatMap.load(path), FlatMap)
    code = main(["batch", str(cohort), "-o", str(tmp_path / "o"), "--hemi", "left", "--resample", "fslr32k",
                 "--template", str(path)])
    assert code == 1
    assert "a flat map of a 10242-vertex mesh; --resample fslr32k needs a map of the fslr32k mesh" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--resample", "fslr32k", "--surface", "pial"], "--resample: every subject is rasterized"),
    (["--resample", "fslr32k", "--mode", "native"], "--resample: every subject is rasterized"),
    (["--resample", "fslr32k", "--template", "fsaverage5"], "--resample: every subject is rasterized"),
])
def test_batch_resample_cli_refuses_conflicting_options(cohort, tmp_path, capsys, argv, match):
    assert main(["batch", str(cohort), "-o", str(tmp_path / "o"), "--hemi", "left", *argv]) == 1
    assert match in capsys.readouterr().err


def test_batch_resample_refuses_non_freesurfer_layout(tmp_path, capsys):
    (tmp_path / "s1" / "MNINonLinear" / "fsaverage_LR32k").mkdir(parents=True)
    assert main(["batch", str(tmp_path), "-o", str(tmp_path / "o"), "--resample", "fslr32k"]) == 1
    assert "expected a FreeSurfer SUBJECTS_DIR" in capsys.readouterr().err


@pytest.mark.skipif(WB is None, reason="wb_command (Connectome Workbench) not installed: apt-get install "
                                       "connectome-workbench")
def test_to_template_files_open_in_workbench(cohort, tmp_path):
    from surfmap import to_template

    sub = to_template(cohort / "sub-02", "left", target="fsaverage5", out=tmp_path)
    for path in sub.files.values():
        info = subprocess.run([WB, "-file-information", str(path)], capture_output=True, text=True, check=True)
        assert "CortexLeft" in info.stdout and "10242" in info.stdout
