"""Tests of surfmap.batch: FreeSurfer / HCP / table cohorts, failures, resume, atomic writes, Dask.

The cohorts are tiny (icosphere meshes of 162 vertices with a cap left out as the medial wall,
written as real FreeSurfer, GIFTI and CIFTI files with nibabel), so flattening each subject with
the real ``surfmap.flatten`` takes milliseconds.
"""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

import surfmap
from surfmap import batch
from surfmap.exceptions import BatchError, InputFileNotFoundError, MeshError, SurfmapError
from surfmap.flatmap import FlatMap
from surfmap.raster import Rasterizer

# ---------------------------------------------------------------------------------------------
# FreeSurfer, native mode


def test_freesurfer_jobs_lists_subjects_and_hemis(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects")
    jobs = batch.freesurfer_jobs(src, tmp_path / "out", hemis=["lh", "right"])
    assert [(j.subject, j.hemi) for j in jobs] == [(f"sub-0{s}", h) for s in (1, 2, 3) for h in ("left", "right")]
    assert [m for m, _ in jobs[0].metrics] == ["thickness", "sulc", "curv"]
    assert jobs[0].surface.endswith("sub-01/surf/lh.white") and jobs[0].problem is None
    assert batch.detect_layout(src) == "freesurfer"


def test_run_batch_freesurfer_outputs_and_failure_record(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects")
    out = tmp_path / "out"
    jobs = batch.freesurfer_jobs(src, out, hemis=["left"], size=32)
    result = batch.run_batch(jobs, out, progress=False)
    assert [r["status"] for r in result.records] == ["done", "done", "failed"]

    z = np.load(out / "sub-01" / "left" / "images.npz")
    assert z["images"].shape == (3, 32, 32) and z["images"].dtype == np.float32
    assert list(z["channels"]) == ["thickness", "sulc", "curv"]
    fm = FlatMap.load(out / "sub-01" / "left" / "flatmap.npz")
    V, _ = cohort.sphere(seed=0)
    expected = Rasterizer(fm, size=32)({m: cohort.metric_values(V, m) for m in batch.FREESURFER_METRICS})
    np.testing.assert_allclose(z["images"], expected, atol=1e-6)
    assert set(fm.vertex_map) == set(np.flatnonzero(cohort.cortex_of(V)))
    dist = json.loads((out / "sub-01" / "left" / "distortion.json").read_text())
    assert dist["n_flipped"] == 0

    manifest = cohort.read_tsv(out / "manifest.tsv")
    assert [(r["subject"], r["hemi"], r["status"]) for r in manifest] == [
        ("sub-01", "left", "done"), ("sub-02", "left", "done"), ("sub-03", "left", "failed")]
    assert manifest[0]["images"] == "sub-01/left/images.npz"
    assert manifest[0]["channels"] == "thickness,sulc,curv"
    failures = cohort.read_tsv(out / "failures.tsv")
    assert len(failures) == 1 and failures[0]["subject"] == "sub-03"
    assert failures[0]["error"] == "MetricError" and "lh.sulc" in failures[0]["message"]
    assert not (out / "sub-03" / "left" / "images.npz").exists()


def test_run_batch_resume_skips_finished_jobs(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects")
    out = tmp_path / "out"
    jobs = batch.freesurfer_jobs(src, out, hemis=["left"], size=16)
    batch.run_batch(jobs, out, progress=False)
    stamp = (out / "sub-01" / "left" / "images.npz").stat().st_mtime_ns
    # fix the broken subject, run again: finished jobs are skipped, the failed one is redone
    V, _ = cohort.sphere(seed=2)
    nib.freesurfer.write_morph_data(str(src / "sub-03" / "surf" / "lh.sulc"), cohort.metric_values(V, "sulc"))
    again = batch.run_batch(jobs, out, progress=False)
    assert [r["status"] for r in again.records] == ["skipped", "skipped", "done"]
    assert (out / "sub-01" / "left" / "images.npz").stat().st_mtime_ns == stamp
    assert cohort.read_tsv(out / "failures.tsv") == []
    assert [r["status"] for r in cohort.read_tsv(out / "manifest.tsv")] == ["skipped", "skipped", "done"]
    assert cohort.read_tsv(out / "manifest.tsv")[0]["images"] == "sub-01/left/images.npz"


def test_run_batch_crash_mid_write_leaves_no_output(tmp_path, cohort, monkeypatch):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    out = tmp_path / "out"
    jobs = batch.freesurfer_jobs(src, out, hemis=["left"], size=16)

    real_savez = np.savez_compressed

    def exploding_savez(fh, **arrays):
        if "images" not in arrays:
            return real_savez(fh, **arrays)
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(batch.np, "savez_compressed", exploding_savez)
    result = batch.run_batch(jobs, out, progress=False)
    assert result.records[0]["status"] == "failed" and "disk full" in result.records[0]["message"]
    folder = out / "sub-01" / "left"
    assert not (folder / "images.npz").exists() and not (folder / "status.json").exists()
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]
    monkeypatch.undo()
    assert batch.run_batch(jobs, out, progress=False).records[0]["status"] == "done"


def test_freesurfer_jobs_missing_file_fails_job_not_listing(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=2)
    (src / "sub-02" / "label" / "lh.cortex.label").unlink()
    jobs = batch.freesurfer_jobs(src, tmp_path / "out", hemis=["left"], size=16)
    assert "lh.cortex.label: no such file" in jobs[1].problem
    result = batch.run_batch(jobs, tmp_path / "out", progress=False)
    assert [r["status"] for r in result.records] == ["done", "failed"]
    assert result.records[1]["error"] == "InputFileNotFoundError"


def test_freesurfer_jobs_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(batch.BatchError, match="no subject folder with 'surf/'"):
        batch.freesurfer_jobs(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(InputFileNotFoundError, match="no such folder"):
        batch.freesurfer_jobs(tmp_path / "nope", tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# HCP, template mode


def test_run_batch_hcp_template_mode(tmp_path, cohort):
    src = cohort.hcp_dir(tmp_path / "hcp")
    assert batch.detect_layout(src) == "hcp"
    fm, template = cohort.template_map(tmp_path)
    out = tmp_path / "out"
    jobs = batch.hcp_jobs(src, out, hemis=["left"], template=template, size=24)
    assert all(j.template_map and j.surface is None for j in jobs)
    result = batch.run_batch(jobs, out, progress=False)
    assert [r["status"] for r in result.records] == ["done", "failed", "done"]
    assert result.records[1]["error"] == "FormatError" and "MyelinMap_BC_MSMAll" in result.records[1]["message"]
    z = np.load(out / "101915" / "left" / "images.npz")
    assert list(z["channels"]) == ["thickness", "sulc", "curvature", "myelin"]
    V, _ = cohort.sphere(seed=12)
    expected = Rasterizer(fm, size=24)({m: cohort.metric_values(V, m) for m in batch.HCP_METRICS})
    np.testing.assert_allclose(z["images"], expected, atol=1e-6)
    assert not (out / "101915" / "left" / "flatmap.npz").exists()  # template mode: one shared map
    manifest = cohort.read_tsv(out / "manifest.tsv")
    assert manifest[0]["flatmap"].endswith("maps/left/flatmap.npz")


def test_run_batch_hcp_native_mode_uses_template_mask(tmp_path, cohort, monkeypatch):
    src = cohort.hcp_dir(tmp_path / "hcp", subjects=("100307",))
    V0, _ = cohort.sphere(seed=0)

    class FakeTemplate:
        n_vertices = len(V0)
        cortex = cohort.cortex_of(V0)

    import surfmap.templates

    monkeypatch.setattr(surfmap.templates, "load_template", lambda name, hemi: FakeTemplate)
    jobs = batch.hcp_jobs(src, tmp_path / "out", hemis=["left"], mode="native", size=16)
    assert jobs[0].surface.endswith("100307.L.midthickness_MSMAll.32k_fs_LR.surf.gii")
    rec = batch.run_batch(jobs, tmp_path / "out", progress=False).records[0]
    assert rec["status"] == "done", rec
    fm = FlatMap.load(tmp_path / "out" / "100307" / "left" / "flatmap.npz")
    np.testing.assert_array_equal(fm.vertex_map, np.flatnonzero(FakeTemplate.cortex))


def test_run_job_native_mode_template_of_other_size(tmp_path, cohort, monkeypatch):
    src = cohort.hcp_dir(tmp_path / "hcp", subjects=("100307",))

    class FakeTemplate:
        n_vertices = 999
        cortex = np.ones(999, dtype=bool)

    import surfmap.templates

    monkeypatch.setattr(surfmap.templates, "load_template", lambda name, hemi: FakeTemplate)
    job = batch.hcp_jobs(src, tmp_path / "out", hemis=["left"], mode="native", size=16)[0]
    rec = batch.run_job(job)
    assert rec["status"] == "failed" and rec["error"] == MeshError.__name__
    assert re.search(r"midthickness.*expected 999 vertices.*found 162.*'mask' column", rec["message"]), rec


def test_run_batch_process_pool_matches_serial(tmp_path, cohort):
    src = cohort.hcp_dir(tmp_path / "hcp")
    _, template = cohort.template_map(tmp_path)
    serial = batch.run_batch(batch.hcp_jobs(src, tmp_path / "a", hemis=["left"], template=template, size=16),
                             tmp_path / "a", progress=False)
    pooled = batch.run_batch(batch.hcp_jobs(src, tmp_path / "b", hemis=["left"], template=template, size=16),
                             tmp_path / "b", n_jobs=2, progress=False)
    assert [r["status"] for r in pooled.records] == [r["status"] for r in serial.records]
    for s in ("100307", "101915"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / s / "left" / "images.npz")["images"],
                                      np.load(tmp_path / "b" / s / "left" / "images.npz")["images"])


def test_run_batch_dask_local_cluster(tmp_path, cohort):
    distributed = pytest.importorskip("dask.distributed")
    src = cohort.freesurfer_dir(tmp_path / "subjects")
    out = tmp_path / "out"
    jobs = batch.freesurfer_jobs(src, out, hemis=["left"], size=16)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        result = batch.run_batch(jobs, out, scheduler=cluster.scheduler_address, progress=False)
    assert [r["status"] for r in result.records] == ["done", "done", "failed"]
    assert cohort.read_tsv(out / "failures.tsv")[0]["subject"] == "sub-03"
    assert np.load(out / "sub-02" / "left" / "images.npz")["images"].shape == (3, 16, 16)


# ---------------------------------------------------------------------------------------------
# tables


def test_table_jobs_native_and_missing_file(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    table = tmp_path / "cohort.csv"
    table.write_text(
        "subject,hemi,surface,mask,thickness,sulc\n"
        "a,lh,subjects/sub-01/surf/lh.white,subjects/sub-01/label/lh.cortex.label,"
        "subjects/sub-01/surf/lh.thickness,subjects/sub-01/surf/lh.sulc\n"
        f"b,left,{src}/sub-01/surf/lh.white,,subjects/sub-01/surf/lh.thickness,missing.sulc\n"
    )
    assert batch.detect_layout(table) == "table"
    jobs = batch.table_jobs(table, tmp_path / "out", size=16)
    assert [m for m, _ in jobs[0].metrics] == ["thickness", "sulc"]
    result = batch.run_batch(jobs, tmp_path / "out", progress=False)
    assert [r["status"] for r in result.records] == ["done", "failed"]
    assert "missing.sulc: no such file" in result.records[1]["message"]
    assert list(np.load(tmp_path / "out" / "a" / "left" / "images.npz")["channels"]) == ["thickness", "sulc"]


def test_table_jobs_bad_table(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("subject,surface,thickness\na,x,y\n")
    with pytest.raises(batch.BatchError, match="expected a 'hemi' column"):
        batch.table_jobs(table, tmp_path / "out")
    table.write_text("subject,hemi,surface\na,lh,x\n")
    with pytest.raises(batch.BatchError, match="no metric column"):
        batch.table_jobs(table, tmp_path / "out")
    table.write_text("subject,hemi,surface,thickness\na,middle,x,y\n")
    with pytest.raises(batch.BatchError, match="line 2.*'hemi' should be one of"):
        batch.table_jobs(table, tmp_path / "out")
    with pytest.raises(InputFileNotFoundError, match="no such table file"):
        batch.table_jobs(tmp_path / "none.csv", tmp_path / "out")


def test_batch_error_is_a_surfmap_value_error():
    assert batch.BatchError is BatchError is surfmap.BatchError
    assert issubclass(BatchError, SurfmapError) and issubclass(BatchError, ValueError)


def test_detect_layout_unknown_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(batch.BatchError, match="pass --layout"):
        batch.detect_layout(tmp_path)
