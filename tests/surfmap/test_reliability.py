"""Reliability of the batch, the CLI and the loaders under bad, hostile or changed input (issue 17).

Each section is one numbered case of the issue; the signal cases (5) run real processes in
``test_reliability_signals.py``. The cohorts are the tiny icosphere subjects of ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import re

import nibabel as nib
import numpy as np
import pytest

import surfmap
import surfmap.pipeline
from surfmap import batch, cli, raster
from surfmap.exceptions import (BatchError, FormatError, MaskError, MeshError, MetricError, ParameterError,
                                SurfmapError)
from surfmap.flatmap import FlatMap
from surfmap.mesh import Mesh, cut
from surfmap.raster import Rasterizer, cached_rasterizer


def _table(tmp_path, cohort, rows, header="subject,hemi,surface,mask,thickness"):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=2)
    lines = [header]
    for subject, s in rows:
        lines.append(f"{subject},lh,{src}/{s}/surf/lh.white,{src}/{s}/label/lh.cortex.label,{src}/{s}/surf/lh.thickness")
    table = tmp_path / "t.csv"
    table.write_text("\n".join(lines) + "\n")
    return table, src


# ---------------------------------------------------------------------------------------------
# 2. writes outside the output folder


@pytest.mark.parametrize("name, problem", [
    ("../../escaped", "path separator"), ("a/b", "path separator"), ("a\\b", "path separator"),
    ("..", "starts with '.'"), (".hidden", "starts with '.'"), ("/abs", "path separator"),
    ("_template", "template mode's folder"), ("a\x00b", "control character"), (" ", "non-empty"),
])
def test_check_name_refuses_paths(name, problem):
    with pytest.raises(BatchError, match=problem):
        batch.check_name(name, "subject")


def test_table_subject_escaping_output_folder_is_refused(tmp_path, cohort, capsys):
    table, _ = _table(tmp_path, cohort, [("../../escaped", "sub-01")])
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(BatchError, match=r"t.csv, line 2: subject '../../escaped' contains the path separator"):
        batch.table_jobs(table, out)
    assert cli.main(["batch", str(table), "-o", str(out), "--no-progress"]) == 1
    assert "path separator" in capsys.readouterr().err
    assert not (tmp_path / "a" / "escaped").exists() and not (tmp_path / "escaped").exists()
    with pytest.raises(BatchError, match="subjects: subject '../x'"):
        batch.freesurfer_jobs(tmp_path / "subjects", out, subjects=["../x"])
    with pytest.raises(BatchError, match="hemi: expected one of"):
        batch.Job(subject="s", hemi="../left", out_dir=str(out))


# ---------------------------------------------------------------------------------------------
# 3. re-runs never mix settings


def test_rerun_with_other_settings_redoes_jobs(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=2)
    out = tmp_path / "out"
    first = batch.run_batch(batch.freesurfer_jobs(src, out, hemis=["left"], size=16), out, progress=False)
    assert [r["status"] for r in first.records] == ["done", "done"]
    status = json.loads((out / "sub-01" / "left" / "status.json").read_text())
    assert status["settings"]["size"] == 16 and status["settings"]["channels"] == ["thickness", "sulc", "curv"]
    assert status["outputs"]["sub-01/left/images.npz"] > 0

    again = batch.run_batch(batch.freesurfer_jobs(src, out, hemis=["left"], size=16), out, progress=False)
    assert [r["status"] for r in again.records] == ["skipped", "skipped"]

    other = batch.run_batch(batch.freesurfer_jobs(src, out, hemis=["left"], size=8, method="conformal",
                                                  metrics=["thickness"]), out, progress=False)
    assert [r["status"] for r in other.records] == ["done", "done"]
    assert re.search(r"redone: settings changed: channels .*; method 'area' -> 'conformal'.*size 16 -> 8",
                     other.records[0]["message"])
    z = np.load(out / "sub-01" / "left" / "images.npz")
    assert z["images"].shape == (1, 8, 8) and list(z["channels"]) == ["thickness"]
    assert FlatMap.load(out / "sub-01" / "left" / "flatmap.npz").info["method"] == "conformal"
    manifest = cohort.read_tsv(out / "manifest.tsv")
    assert manifest[0]["size"] == "8" and manifest[0]["message"].startswith("redone: settings changed")


def test_rerun_redoes_jobs_with_missing_truncated_or_changed_files(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=3, broken=None)
    out = tmp_path / "out"
    jobs = batch.freesurfer_jobs(src, out, hemis=["left"], size=16)
    batch.run_batch(jobs, out, progress=False)
    (out / "sub-01" / "left" / "images.npz").unlink()
    images = out / "sub-02" / "left" / "images.npz"
    images.write_bytes(images.read_bytes()[:100])
    V, _ = cohort.sphere(seed=2)
    nib.freesurfer.write_morph_data(str(src / "sub-03" / "surf" / "lh.thickness"), 2 * cohort.metric_values(V, "thickness"))
    os.utime(src / "sub-03" / "surf" / "lh.thickness", ns=(1, 1))  # a new file, whatever the clock says
    result = batch.run_batch(jobs, out, progress=False)
    assert [r["status"] for r in result.records] == ["done", "done", "done"]
    messages = [r["message"] for r in result.records]
    assert "images.npz is missing" in messages[0]
    assert re.search(r"images.npz has 100 bytes, \d+ when written", messages[1])
    assert "input file(s) changed: metric:thickness" in messages[2]
    z = np.load(images)
    assert z["images"].shape == (3, 16, 16)


def test_template_map_is_never_replaced_under_finished_jobs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    path, n = batch.prepare_template(out, "left", "fsaverage5", method="conformal")
    assert n == 10242
    stamp = path.stat().st_mtime_ns
    assert batch.prepare_template(out, "left", "fsaverage5", method="conformal") == (path, n)  # re-used

    def no_flatten(*a, **k):
        raise AssertionError("the template must not be flattened again")

    monkeypatch.setattr(surfmap.pipeline, "flatten", no_flatten)
    with pytest.raises(BatchError, match=r"made with other settings \(method 'conformal' -> 'area'\).*another "
                                         r"output folder"):
        batch.prepare_template(out, "left", "fsaverage5", method="area")
    assert path.stat().st_mtime_ns == stamp


def test_template_jobs_redo_when_the_given_map_changes(tmp_path, cohort):
    src = cohort.hcp_dir(tmp_path / "hcp")
    _, template = cohort.template_map(tmp_path, method="conformal")
    out = tmp_path / "out"
    jobs = batch.hcp_jobs(src, out, hemis=["left"], template=template, size=16)
    assert [r["status"] for r in batch.run_batch(jobs, out, progress=False).records] == ["done", "failed", "done"]
    cohort.template_map(tmp_path, method="area")  # the map file is replaced by another map
    jobs = batch.hcp_jobs(src, out, hemis=["left"], template=template, size=16)
    result = batch.run_batch(jobs, out, progress=False)
    assert result.records[0]["status"] == "done" and "the template map changed" in result.records[0]["message"]


# ---------------------------------------------------------------------------------------------
# 4. wrong-length metrics


def test_rasterizer_refuses_wrong_length_with_original_count(cohort):
    V, F = cohort.sphere(seed=0)
    fm = surfmap.flatten(Mesh(V, F), cohort.cortex_of(V), method="conformal")
    assert fm.info["n_original"] == len(V) == 162
    R = Rasterizer(fm, size=8)
    with pytest.raises(MetricError, match=r"expected 162 values \(one per vertex of the mesh given to flatten\) or "
                                          rf"{fm.n_vertices} \(one per flat-map vertex\); found 200"):
        R(np.arange(200.0))  # longer than the mesh: refused, not truncated
    np.testing.assert_allclose(R(np.ones(162)), 1.0)
    with pytest.raises(MetricError, match="to_original: expected 162"):
        R.backproject(np.zeros((8, 8)), to_original=200)


def test_batch_template_map_of_another_mesh_fails_jobs(tmp_path, cohort, meshes):
    src = cohort.hcp_dir(tmp_path / "hcp")
    big = meshes.icosphere(3)  # 642 vertices; the cohort's metrics have 162
    fm = surfmap.flatten(big, big.vertices[:, 2] < 0.6, method="conformal")
    fm.save(tmp_path / "other" / "left" / "flatmap.npz")
    out = tmp_path / "out"
    jobs = batch.hcp_jobs(src, out, hemis=["left"], template=str(tmp_path / "other" / "{hemi}" / "flatmap.npz"),
                          metrics=["thickness"], size=16)
    assert jobs[0].n_vertices == 642
    result = batch.run_batch(jobs, out, progress=False)
    assert [r["status"] for r in result.records] == ["failed"] * 3
    assert "expected 642 values" in result.records[0]["message"]


# ---------------------------------------------------------------------------------------------
# 5. (in-process parts) stale temporary files, the lock


def test_stale_tmp_files_of_a_killed_run_are_removed(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    out = tmp_path / "out"
    folder = out / "sub-01" / "left"
    folder.mkdir(parents=True)
    for name in (".images.npz.4242.tmp", ".flatmap.npz.4242.tmp.npz"):
        (folder / name).write_bytes(b"half")
    (out / ".manifest.tsv.4242.tmp").write_bytes(b"half")
    batch.run_batch(batch.freesurfer_jobs(src, out, hemis=["left"], size=8), out, progress=False)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_second_batch_on_a_locked_folder_is_refused(tmp_path, cohort):
    import subprocess
    import sys

    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    out = tmp_path / "out"
    with batch.batch_lock(out):
        with batch.batch_lock(out):  # re-entrant in one process
            pass
        proc = subprocess.run([sys.executable, "-m", "surfmap", "batch", str(src), "-o", str(out), "--no-progress"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
                              timeout=120)
    assert proc.returncode == 1
    assert re.search(rf"another surfmap batch \(pid {os.getpid()}\) is writing to this output folder", proc.stderr)
    assert not (out / "manifest.tsv").exists()
    assert batch.run_batch(batch.freesurfer_jobs(src, out, hemis=["left"], size=8), out,
                           progress=False).records[0]["status"] == "done"  # released


# ---------------------------------------------------------------------------------------------
# 6. silent data loss


def test_duplicate_rows_are_an_error(tmp_path, cohort):
    table, _ = _table(tmp_path, cohort, [("a", "sub-01"), ("a", "sub-02")])
    with pytest.raises(BatchError, match=r"lines 2 and 3: subject 'a' hemi 'left' is listed twice"):
        batch.table_jobs(table, tmp_path / "out")
    job = batch.Job(subject="a", hemi="left", out_dir=str(tmp_path / "out" / "a" / "left"))
    with pytest.raises(BatchError, match="both write"):
        batch.run_batch([job, job], tmp_path / "out", progress=False)


def test_hemisphere_mismatch_of_labels_and_metrics(tmp_path, cohort, capsys):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    surf = src / "sub-01" / "surf"
    with pytest.raises(MaskError, match=r"rh.cortex.label': the file is for the right hemisphere \(its name\), but "
                                        "hemi='left'"):
        surfmap.read_mask(src / "sub-01" / "label" / "rh.cortex.label", 162, hemi="left")
    with pytest.raises(MetricError, match="rh.thickness': the file is for the right hemisphere"):
        surfmap.read_metric(surf / "rh.thickness", hemi="lh")
    with pytest.raises(MetricError, match="'hemi' should be one of"):
        surfmap.read_metric(surf / "lh.thickness", hemi="bogus")  # no longer ignored for morph files
    # a CortexRight GIFTI label beside a left surface, no --hemi: the surface's name gives the hemisphere
    lab = nib.gifti.GiftiImage(meta=nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": "CortexRight"}))
    for key, name in ((0, "???"), (1, "CORTEX")):
        label = nib.gifti.GiftiLabel(key)
        label.label = name
        lab.labeltable.labels.append(label)
    V, _ = cohort.sphere(seed=0)
    lab.add_gifti_data_array(nib.gifti.GiftiDataArray(cohort.cortex_of(V).astype(np.int32),
                                                      intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32"))
    nib.save(lab, str(tmp_path / "cortex.label.gii"))
    out = tmp_path / "out"
    assert cli.main(["flatten", str(surf / "lh.white"), "--mask", str(tmp_path / "cortex.label.gii"), "-o",
                     str(out)]) == 1
    assert "the file is for CortexRight, but hemi='left'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["flatten", str(surf / "lh.white"), "--hemi", "bogus", "-o", str(out)])
    assert exit_.value.code == 2 and "expected left or right" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 7. SurfmapErrors instead of raw tracebacks


@pytest.mark.parametrize("content, match", [
    ("subject,hemi,surface,thickness\ncaf\xe9,lh,x,y\n".encode("latin-1"), r"line 2: not UTF-8 text \(byte 0xe9"),
    (b"\x00\x01\x02binary\x00", "a binary file"),
    (b"subject,hemi,surface,thickness\n", r"has a header \(subject, hemi, surface, thickness\) but no rows"),
    (b"", "the table is empty"),
])
def test_table_bad_encodings_and_empty_tables(tmp_path, content, match):
    table = tmp_path / "t.csv"
    table.write_bytes(content)
    with pytest.raises(BatchError, match=match):
        batch.table_jobs(table, tmp_path / "out")


def test_table_with_utf8_bom_is_read(tmp_path, cohort):
    table, _ = _table(tmp_path, cohort, [("a", "sub-01")])
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    jobs = batch.table_jobs(table, tmp_path / "out", size=8)
    assert [(j.subject, j.hemi) for j in jobs] == [("a", "left")]


def test_huge_size_is_refused_before_the_work(tmp_path, cohort, capsys):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    out = tmp_path / "out"
    assert cli.main(["flatten", str(src / "sub-01" / "surf" / "lh.white"), "--size", "1000000", "-o", str(out)]) == 1
    assert re.search(r"--size: a 1000000x1000000 image needs about [\d.e+]+ GiB", capsys.readouterr().err)
    assert not out.exists()  # refused before flattening or writing anything
    with pytest.raises(ParameterError, match="size: a 1000000x1000000 image"):
        raster.check_image_size(1_000_000)


def test_truncated_mgh_is_a_format_error(tmp_path):
    img = nib.MGHImage(np.arange(1000, dtype=np.float32).reshape(1000, 1, 1), np.eye(4))
    nib.save(img, str(tmp_path / "x.mgh"))
    data = (tmp_path / "x.mgh").read_bytes()
    (tmp_path / "t.mgh").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"t.mgh': could not read it as MGH: the file is truncated or corrupt"):
        surfmap.read_metric(tmp_path / "t.mgh")


def test_rasterizer_bad_type_and_complex_values(cohort):
    with pytest.raises(SurfmapError, match="fm: expected a surfmap.FlatMap; found str") as err:
        Rasterizer("x")
    assert isinstance(err.value, TypeError)
    with pytest.raises(SurfmapError, match="found str"):
        cached_rasterizer("x")
    V, F = cohort.sphere(seed=0)
    fm = surfmap.flatten(Mesh(V, F), cohort.cortex_of(V), method="conformal")
    with pytest.raises(MetricError, match="expected real numbers; found complex values"):
        Rasterizer(fm, size=8)(np.ones(162) + 1j)


# ---------------------------------------------------------------------------------------------
# 8. messages that say what happened


def test_cut_messages_two_hemispheres_far_vertex_one_face():
    tpl = surfmap.load_template("fsaverage5", "left")
    V, F = tpl.mesh.vertices, tpl.mesh.faces
    both = Mesh(np.vstack([V, V + [100.0, 0, 0]]), np.vstack([F, F + len(V)]), name="both.gii")
    with pytest.raises(MeshError, match=r"both.gii: the mesh holds 2 separate pieces with masked vertices "
                                        r"\(10242 vertices \(9465 masked\).*both hemispheres\?"):
        cut(both, np.concatenate([tpl.cortex, tpl.cortex]))
    far = V.copy()
    far[5000] = 1e30
    with pytest.raises(MeshError, match=r"far.gii: vertex 5000 at \[1e\+30, 1e\+30, 1e\+30\] is far from its "
                                        "neighbours.*a corrupt coordinate"):
        cut(Mesh(far, F, name="far.gii"), tpl.cortex)
    one = np.zeros(len(V), dtype=bool)
    one[F[100]] = True
    with pytest.raises(MaskError, match=r"1 face\(s\) on 3 vertices, each face on the boundary; too small or thin"):
        cut(tpl.mesh, one)


def test_cli_out_naming_a_file_fails_before_the_work(tmp_path, cohort, capsys, monkeypatch):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    (tmp_path / "taken").write_text("x")
    monkeypatch.setattr(surfmap.pipeline, "flatten", lambda *a, **k: pytest.fail("flattened before checking -o"))
    assert cli.main(["flatten", str(src / "sub-01" / "surf" / "lh.white"), "-o", str(tmp_path / "taken")]) == 1
    assert "-o/--out: " in capsys.readouterr().err
    assert cli.main(["batch", str(src), "-o", str(tmp_path / "taken"), "--no-progress"]) == 1
    assert "is a file; expected an output folder" in capsys.readouterr().err


def test_cli_messages_cite_flags_not_api_names(tmp_path, cohort, capsys):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    surf = src / "sub-01" / "surf"
    V, _ = cohort.sphere(seed=0)
    x = cohort.metric_values(V, "thickness")
    x[np.flatnonzero(cohort.cortex_of(V))[:3]] = np.nan
    nib.freesurfer.write_morph_data(str(surf / "lh.nan"), x)
    assert cli.main(["flatten", str(surf / "lh.white"), "--mask", str(src / "sub-01" / "label" / "lh.cortex.label"),
                     "--metric", f"t={surf / 'lh.nan'}", "--size", "8", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "--nan-policy ignore" in err and "nan_policy" not in err
    assert cli.main(["batch", str(src), "-o", str(tmp_path / "b"), "--jobs", "0"]) == 1
    err = capsys.readouterr().err
    assert "--jobs: expected a positive number" in err and "n_jobs" not in err


# ---------------------------------------------------------------------------------------------
# 9. loaders check their files


def _saved_map(cohort, tmp_path, **change):
    V, F = cohort.sphere(seed=0)
    fm = surfmap.flatten(Mesh(V, F), cohort.cortex_of(V), method="conformal")
    arrays = dict(uv=fm.uv, faces=fm.faces, vertex_map=fm.vertex_map, corners=fm.corners,
                  info=np.array(json.dumps(fm.info)), format=np.array("surfmap.FlatMap/1"))
    for key, fn in change.items():
        arrays[key] = fn(fm)
    np.savez(tmp_path / "m.npz", **arrays)
    return tmp_path / "m.npz"


@pytest.mark.parametrize("change, match", [
    ({"corners": lambda fm: np.array([0, 1, 2, 10**6])}, "corners should index the"),
    ({"corners": lambda fm: np.roll(fm.corners, 1)}, r"the corners should sit at \(0,0\), \(1,0\)"),
    ({"vertex_map": lambda fm: fm.vertex_map - 1000}, r"vertex_map should hold vertex indices \(>= 0\)"),
    ({"vertex_map": lambda fm: fm.vertex_map + 1000}, r"vertex_map reaches vertex \d+, but info\['n_original'\]"),
    ({"uv": lambda fm: fm.uv * 2}, r"uv should lie in the unit square \[0, 1\]\^2; found values in \[0, 2\]"),
    ({"uv": lambda fm: np.column_stack([1 - fm.uv[:, 0], fm.uv[:, 1]]),
      "corners": lambda fm: fm.corners[[1, 0, 3, 2]]}, "the faces are mirrored"),
    ({"info": lambda fm: np.array("[1, 2]")}, r"'info' should be a JSON object \(dict\); found a list"),
])
def test_flatmap_load_validates(tmp_path, cohort, change, match):
    path = _saved_map(cohort, tmp_path, **change)
    with pytest.raises(FormatError, match=r"m.npz: not a valid flat map: " + match):
        FlatMap.load(path)


def test_flatmap_load_accepts_a_saved_map(tmp_path, cohort):
    fm = FlatMap.load(_saved_map(cohort, tmp_path))
    assert fm.info["n_original"] == 162


# ---------------------------------------------------------------------------------------------
# 10. shared mutable state


def test_cached_rasterizer_is_not_mutated_by_calls(cohort):
    V, F = cohort.sphere(seed=0)
    fm = surfmap.flatten(Mesh(V, F), cohort.cortex_of(V), method="conformal")
    R = cached_rasterizer(fm, size=8)
    R({"thickness": np.ones(162)})
    assert R.channels is None and cached_rasterizer(fm, size=8) is R
    own = Rasterizer(fm, size=8)
    own({"a": np.ones(162), "b": np.zeros(162)})
    assert own.channels == ["a", "b"]  # an instance of one's own still reports the last call


def test_caches_are_bounded(tmp_path, cohort, monkeypatch):
    V, F = cohort.sphere(seed=0)
    fm = surfmap.flatten(Mesh(V, F), cohort.cortex_of(V), method="conformal")
    monkeypatch.setattr(raster, "_MAPS", type(raster._MAPS)())
    monkeypatch.setattr(surfmap.pipeline, "flatten", lambda *a, **k: fm)
    monkeypatch.setattr(surfmap.templates, "load_template",
                        lambda name, hemi: type("T", (), {"mesh": None, "cortex": None}))
    for i in range(raster._MAPS_SIZE + 3):
        Rasterizer.for_template(f"t{i}", "left", size=4)
    assert len(raster._MAPS) == raster._MAPS_SIZE
    monkeypatch.setattr(batch, "_MAP_CACHE", type(batch._MAP_CACHE)())
    for i in range(batch._MAP_CACHE_SIZE + 3):
        fm.save(tmp_path / f"m{i}.npz")
        job = batch.Job(subject="s", hemi="left", out_dir=str(tmp_path), template_map=str(tmp_path / f"m{i}.npz"),
                        size=4)
        batch._template_rasterizer(job)
    assert len(batch._MAP_CACHE) == batch._MAP_CACHE_SIZE


def test_run_job_never_raises(tmp_path, cohort, monkeypatch):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    job = batch.freesurfer_jobs(src, tmp_path / "out", hemis=["left"], size=8)[0]

    real = batch.write_json_atomic

    def full_disk(obj, path):
        if path.name == "status.json":
            raise OSError(28, "No space left on device")
        return real(obj, path)

    monkeypatch.setattr(batch, "write_json_atomic", full_disk)  # fails writing status.json
    rec = batch.run_job(job)
    assert rec["status"] == "failed" and rec["error"] == "OSError" and "No space left" in rec["message"]


def test_table_surface_of_the_other_hemisphere_fails_the_job(tmp_path, cohort):
    src = cohort.freesurfer_dir(tmp_path / "subjects", n_subjects=1)
    s = f"{src}/sub-01"
    table = tmp_path / "t.csv"
    table.write_text("subject,hemi,surface,mask,thickness\n"
                     f"a,lh,{s}/surf/rh.white,{s}/label/lh.cortex.label,{s}/surf/lh.thickness\n")
    rec = batch.run_batch(batch.table_jobs(table, tmp_path / "out", size=8), tmp_path / "out", progress=False).records[0]
    assert rec["status"] == "failed" and "rh.white: the surface is of the right hemisphere" in rec["message"]
