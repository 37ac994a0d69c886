"""Tests of the ``surfmap`` command line (called through ``main([...])``)."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import surfmap
from surfmap import flatten
from surfmap.cli import main
from surfmap.flatmap import FlatMap


def test_main_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"surfmap {surfmap.__version__}"


def test_main_missing_surface_one_line_error(tmp_path, capsys):
    code = main(["flatten", str(tmp_path / "lh.white"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("surfmap: error: ") and "lh.white" in err
    assert not (tmp_path / "out").exists()


def test_main_debug_shows_traceback(tmp_path):
    with pytest.raises(surfmap.InputFileNotFoundError):
        main(["flatten", str(tmp_path / "lh.white"), "-o", str(tmp_path / "out"), "--debug"])


def test_main_bad_metric_argument(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["flatten", "lh.white", "--metric", "thickness", "-o", "x"])
    assert exc.value.code == 2
    assert "expected NAME=FILE" in capsys.readouterr().err


def test_main_flatten_writes_outputs(tmp_path, cohort, capsys):
    V, F = cohort.sphere()
    nib.freesurfer.write_geometry(str(tmp_path / "lh.white"), V, F)
    nib.freesurfer.write_morph_data(str(tmp_path / "lh.thickness"), cohort.metric_values(V, "thickness"))
    nib.freesurfer.write_morph_data(str(tmp_path / "lh.sulc"), cohort.metric_values(V, "sulc"))
    cohort.write_label(tmp_path / "lh.cortex.label", np.flatnonzero(cohort.cortex_of(V)), V)
    out = tmp_path / "flat"
    code = main(["flatten", str(tmp_path / "lh.white"), "--mask", str(tmp_path / "lh.cortex.label"),
                 "--metric", f"sulc={tmp_path / 'lh.sulc'}", "--metric", f"thickness={tmp_path / 'lh.thickness'}",
                 "--size", "32", "-o", str(out)])
    assert code == 0
    z = np.load(out / "images.npz")
    assert list(z["channels"]) == ["sulc", "thickness"] and z["images"].shape == (2, 32, 32)
    fm = FlatMap.load(out / "flatmap.npz")
    np.testing.assert_array_equal(fm.vertex_map, np.flatnonzero(cohort.cortex_of(V)))
    assert isinstance(json.loads((out / "distortion.json").read_text()), dict)
    assert (out / "preview.png").read_bytes()[:4] == b"\x89PNG"
    assert str(out / "images.npz") in capsys.readouterr().out


def test_main_flatten_metric_of_wrong_length(tmp_path, cohort, capsys):
    V, F = cohort.sphere()
    nib.freesurfer.write_geometry(str(tmp_path / "lh.white"), V, F)
    nib.freesurfer.write_morph_data(str(tmp_path / "lh.thickness"), np.ones(10))
    code = main(["flatten", str(tmp_path / "lh.white"), "--metric", f"t={tmp_path / 'lh.thickness'}",
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "lh.thickness" in err


def test_main_batch_freesurfer_exit_code_and_manifest(tmp_path, cohort, capsys):
    src = cohort.freesurfer_dir(tmp_path / "subjects")
    out = tmp_path / "out"
    code = main(["batch", str(src), "-o", str(out), "--hemi", "left", "--size", "16", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 3  # some subjects failed
    assert "3 jobs: 2 done, 0 skipped (already finished), 1 failed" in text
    assert (out / "manifest.tsv").exists() and (out / "failures.tsv").exists()
    code = main(["batch", str(src), "-o", str(out), "--hemi", "left", "--size", "16", "--no-progress",
                 "--subjects", "sub-01", "sub-02"])
    assert code == 0 and "2 skipped" in capsys.readouterr().out


def test_main_batch_hcp_template_file(tmp_path, cohort, capsys):
    from surfmap.mesh import Mesh

    src = cohort.hcp_dir(tmp_path / "hcp", subjects=("100307",))
    V, F = cohort.sphere(seed=0)
    flatten(Mesh(V, F), cohort.cortex_of(V)).save(tmp_path / "maps" / "left" / "flatmap.npz")
    out = tmp_path / "out"
    code = main(["batch", str(src), "-o", str(out), "--hemi", "left", "--size", "16", "--no-progress",
                 "--template", str(tmp_path / "maps" / "{hemi}" / "flatmap.npz")])
    assert code == 0, capsys.readouterr()
    z = np.load(out / "100307" / "left" / "images.npz")
    assert list(z["channels"]) == ["thickness", "sulc", "curvature", "myelin"]


def test_main_batch_unknown_source(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_main_batch_freesurfer_template_mode_refused(tmp_path, cohort, capsys):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    assert main(["batch", str(src), "-o", str(tmp_path / "o"), "--mode", "template"]) == 1
    assert "--mode template" in capsys.readouterr().err


def test_main_batch_table_template_mode_without_template(tmp_path, capsys):
    table = tmp_path / "cohort.tsv"
    table.write_text("subject\themi\tthickness\nsub-01\tleft\tlh.thickness\n")
    assert main(["batch", str(table), "-o", str(tmp_path / "o"), "--mode", "template"]) == 1
    assert "expected --template" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["1", "0", "-3"])
def test_main_flatten_size_too_small(tmp_path, capsys, size):
    assert main(["flatten", str(tmp_path / "lh.white"), "--size", size, "-o", str(tmp_path / "o")]) == 1
    assert f"--size: expected an image side of at least 2 pixels; found {size}" in capsys.readouterr().err


def test_main_flatten_metric_name_twice(tmp_path, cohort, capsys):
    V, F = cohort.sphere()
    nib.freesurfer.write_geometry(str(tmp_path / "lh.white"), V, F)
    nib.freesurfer.write_morph_data(str(tmp_path / "lh.thickness"), cohort.metric_values(V, "thickness"))
    code = main(["flatten", str(tmp_path / "lh.white"), "--metric", f"t={tmp_path / 'lh.thickness'}",
                 "--metric", f"t={tmp_path / 'lh.thickness'}", "-o", str(tmp_path / "out")])
    assert code == 1 and "the name 't' is given twice" in capsys.readouterr().err


def test_python_dash_m_surfmap_version():
    res = subprocess.run([sys.executable, "-m", "surfmap", "--version"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == f"surfmap {surfmap.__version__}"


def test_main_demo_writes_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--size", "32"]) == 0
    text = capsys.readouterr().out
    assert "conformal" in text and "area" in text and str(out) in text
    for name in ("images_conformal.png", "images_area.png", "flatmap_area.png", "distortion_histograms.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    z = np.load(out / "images_area.npz")
    assert z["images"].shape == (3, 32, 32) and np.isfinite(z["images"]).all()
    assert sorted(z["channels"]) == ["curvature", "sulc", "thickness"]
    assert json.loads((out / "distortion_area.json").read_text())["n_flipped"] == 0
