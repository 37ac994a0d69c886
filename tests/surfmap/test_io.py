"""Reading and writing surfaces, metrics and masks: round trips through files written by nibabel
(and by hand), and one failing-path test per error branch."""

from __future__ import annotations

import os
import re

import nibabel as nib
import numpy as np
import pytest
from nibabel import cifti2
from nibabel.freesurfer import write_annot, write_geometry, write_morph_data
from nibabel.gifti import GiftiDataArray, GiftiImage, GiftiLabel, GiftiLabelTable

from surfmap.exceptions import (
    FormatError,
    InputFileNotFoundError,
    MaskError,
    MeshError,
    MetricError,
    SurfmapError,
)
from surfmap.io import (
    check_metric,
    detect_format,
    normalize_hemi,
    read_mask,
    read_metric,
    read_patch,
    read_surface,
    write_metric,
    write_surface,
)
from surfmap.mesh import Mesh, cut


@pytest.fixture
def f32_mesh(hemisphere_mesh):
    """The hemisphere with float32-representable coordinates (what FreeSurfer and GIFTI store)."""
    V = hemisphere_mesh.vertices.astype(np.float32).astype(np.float64)
    return Mesh(V, hemisphere_mesh.faces, name="hemi32")


@pytest.fixture
def values(f32_mesh):
    rng = np.random.default_rng(0)
    return rng.normal(2.5, 0.5, f32_mesh.n_vertices).astype(np.float32).astype(np.float64)


def _gifti_surface(path, V, F, intent_f="NIFTI_INTENT_TRIANGLE"):
    img = GiftiImage()
    img.add_gifti_data_array(GiftiDataArray(np.asarray(V, np.float32), intent="NIFTI_INTENT_POINTSET"))
    img.add_gifti_data_array(GiftiDataArray(np.asarray(F, np.int32), intent=intent_f))
    nib.save(img, str(path))
    return path


def _truncate(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


# ---------------------------------------------------------------------------------------------
# read_surface


def test_read_surface_freesurfer_roundtrip(tmp_path, f32_mesh):
    path = tmp_path / "lh.white"  # no suffix: detected by magic
    write_geometry(str(path), f32_mesh.vertices, f32_mesh.faces)
    m = read_surface(path)
    assert detect_format(path) == "fs_geometry"
    np.testing.assert_array_equal(m.vertices, f32_mesh.vertices)
    np.testing.assert_array_equal(m.faces, f32_mesh.faces)
    assert m.vertices.dtype == np.float64 and m.faces.dtype == np.int64
    assert m.name == str(path)


def _volume_info(cras):
    return {
        "head": np.array([2, 0, 20]),
        "valid": "1  # volume info valid",
        "filename": "orig.mgz",
        "volume": np.array([256, 256, 256]),
        "voxelsize": np.array([1.0, 1.0, 1.0]),
        "xras": np.array([-1.0, 0.0, 0.0]),
        "yras": np.array([0.0, 0.0, -1.0]),
        "zras": np.array([0.0, 1.0, 0.0]),
        "cras": np.asarray(cras, dtype=float),
    }


def test_read_surface_freesurfer_cras_kept_as_stored_by_default(tmp_path, f32_mesh):
    path = tmp_path / "lh.pial"
    cras = [1.5, -20.25, 12.0]
    write_geometry(str(path), f32_mesh.vertices, f32_mesh.faces, volume_info=_volume_info(cras))
    np.testing.assert_array_equal(read_surface(path).vertices, f32_mesh.vertices)
    np.testing.assert_allclose(
        read_surface(path, add_cras=True).vertices, f32_mesh.vertices + cras, rtol=0, atol=1e-12
    )


def test_read_surface_freesurfer_add_cras_without_footer_leaves_coordinates(tmp_path, f32_mesh):
    path = tmp_path / "lh.white"
    write_geometry(str(path), f32_mesh.vertices, f32_mesh.faces)
    np.testing.assert_array_equal(read_surface(path, add_cras=True).vertices, f32_mesh.vertices)


def test_read_surface_freesurfer_quad_file(tmp_path):
    # new quad format: magic 0xFFFFFD, 3-byte counts, float32 coordinates, 3-byte indices
    V = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [1, 1, 0], [2, 1, 0]], dtype=">f4")
    quads = [[0, 1, 4, 3], [1, 2, 5, 4]]
    raw = b"\xff\xff\xfd" + (6).to_bytes(3, "big") + (2).to_bytes(3, "big") + V.tobytes()
    raw += b"".join(i.to_bytes(3, "big") for q in quads for i in q)
    path = tmp_path / "lh.orig.nofix"
    path.write_bytes(raw)
    m = read_surface(path)
    assert detect_format(path) == "fs_quad" and m.n_faces == 4
    np.testing.assert_allclose(m.face_areas.sum(), 2.0, rtol=1e-15)
    assert m.euler_characteristic == 1


@pytest.mark.parametrize("name", ["mesh.surf.gii", "mesh.surf.gii.gz"])
def test_write_surface_gifti_roundtrip(tmp_path, f32_mesh, name):
    path = write_surface(f32_mesh, tmp_path / name, hemi="lh")
    m = read_surface(path)
    np.testing.assert_array_equal(m.vertices, f32_mesh.vertices)
    np.testing.assert_array_equal(m.faces, f32_mesh.faces)
    img = nib.load(str(path))
    P, T = img.darrays
    assert nib.nifti1.intent_codes.label[P.intent] == "pointset" and P.data.dtype == np.float32
    assert nib.nifti1.intent_codes.label[T.intent] == "triangle" and T.data.dtype == np.int32
    assert img.meta["AnatomicalStructurePrimary"] == "CortexLeft"
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_read_surface_gifti_written_by_nibabel(tmp_path, f32_mesh):
    path = _gifti_surface(tmp_path / "x.surf.gii", f32_mesh.vertices, f32_mesh.faces)
    np.testing.assert_array_equal(read_surface(path).vertices, f32_mesh.vertices)


def _obj_text(V, F):
    lines = ["# test"] + [f"v {float(x)!r} {float(y)!r} {float(z)!r}" for x, y, z in V]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in F]
    return "\n".join(lines) + "\n"


def test_read_surface_obj_keeps_vertex_order(tmp_path, hemisphere_mesh):
    # permute the vertices so that they are in no order trimesh would choose
    perm = np.random.default_rng(1).permutation(hemisphere_mesh.n_vertices)
    inv = np.argsort(perm)
    V, F = hemisphere_mesh.vertices[perm], inv[hemisphere_mesh.faces]
    path = tmp_path / "m.obj"
    path.write_text(_obj_text(V, F))
    m = read_surface(path)
    np.testing.assert_array_equal(m.vertices, V)
    np.testing.assert_array_equal(m.faces, F)


def test_read_surface_off_roundtrip(tmp_path, disk_mesh):
    V, F = disk_mesh.vertices, disk_mesh.faces
    text = f"OFF\n{len(V)} {len(F)} 0\n" + "".join(
        f"{float(x)!r} {float(y)!r} {float(z)!r}\n" for x, y, z in V
    )
    text += "".join(f"3 {a} {b} {c}\n" for a, b, c in F)
    path = tmp_path / "m.off"
    path.write_text(text)
    m = read_surface(path)
    np.testing.assert_array_equal(m.vertices, V)
    np.testing.assert_array_equal(m.faces, F)


def test_read_surface_ply_roundtrip(tmp_path, f32_mesh):
    import trimesh

    path = tmp_path / "m.ply"
    tm = trimesh.Trimesh(f32_mesh.vertices, f32_mesh.faces, process=False)
    path.write_bytes(tm.export(file_type="ply"))  # binary, float32 coordinates
    m = read_surface(path)
    np.testing.assert_array_equal(m.vertices, f32_mesh.vertices)
    np.testing.assert_array_equal(m.faces, f32_mesh.faces)


def _write_bytes(name, data):
    """A case builder: ``name`` in the test folder holding ``data`` (bytes or text)."""
    def build(tmp_path, mesh, values):
        path = tmp_path / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path
    return build


def _fs_surface_bad_face(tmp_path, mesh, values):
    F = mesh.faces.copy()
    F[5, 1] = mesh.n_vertices + 3
    write_geometry(str(tmp_path / "lh.white"), mesh.vertices, F)
    return tmp_path / "lh.white"


def _gifti_nan_coordinates(tmp_path, mesh, values):
    V = mesh.vertices.copy()
    V[7] = [np.nan, 0, np.inf]
    return _gifti_surface(tmp_path / "nan.surf.gii", V, mesh.faces)


def _fs_surface_truncated(tmp_path, mesh, values):
    write_geometry(str(tmp_path / "lh.white"), mesh.vertices, mesh.faces)
    return _truncate(tmp_path / "lh.white", 0.6)


def _fs_morph(tmp_path, mesh, values, name="lh.thickness"):
    write_morph_data(str(tmp_path / name), values)
    return tmp_path / name


# (case builder(tmp_path, mesh, values) -> path, error, message after the path); every message names the file
READ_SURFACE_ERRORS = {
    "missing": (lambda tmp_path, mesh, values: tmp_path / "lh.white", InputFileNotFoundError, "no such file"),
    "unknown-format": (_write_bytes("mesh.xyz", b"\x00\x01\x02 something else entirely"), FormatError,
                       "unknown or unsupported format"),
    "empty": (_write_bytes("lh.white", b""), FormatError, "empty"),
    "freesurfer-truncated": (_fs_surface_truncated, FormatError, "truncated"),
    "gifti-truncated": (lambda tmp_path, mesh, values: _truncate(write_surface(mesh, tmp_path / "m.surf.gii"), 0.7),
                        FormatError, "truncated or corrupt"),
    "ply-corrupt": (_write_bytes("m.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
                                          "end_header\n1 2\n"), SurfmapError, ""),
    "freesurfer-face-beyond-vertices": (_fs_surface_bad_face, MeshError, "do not exist"),
    "obj-face-beyond-vertices": (_write_bytes("bad.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 2 3 4\n"), MeshError,
                                 "vertices that do not exist"),
    "off-face-beyond-vertices": (_write_bytes("bad.off", "OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n3 1 2 5\n"),
                                 MeshError, "vertices that do not exist"),
    "nan-coordinates": (_gifti_nan_coordinates, MeshError, "NaN or infinite"),
    "gifti-quads": (lambda tmp_path, mesh, values: _gifti_surface(tmp_path / "quads.surf.gii", mesh.vertices,
                                                                  np.array([[0, 1, 7, 6], [1, 2, 8, 7]])),
                    MeshError, "must be triangles"),
    "obj-quads": (_write_bytes("quad.obj", "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n"), MeshError,
                  "must be triangles"),
    "a-metric-file": (_fs_morph, FormatError, "read_metric"),
    "gifti-without-pointset": (lambda tmp_path, mesh, values: write_metric(values, tmp_path / "t.shape.gii"),
                               FormatError, "POINTSET"),
}


@pytest.mark.parametrize("case", sorted(READ_SURFACE_ERRORS))
def test_read_surface_refuses(tmp_path, f32_mesh, values, case):
    build, error, message = READ_SURFACE_ERRORS[case]
    path = build(tmp_path, f32_mesh, values)
    with pytest.raises(error, match=re.escape(str(path)) + ".*" + message):
        read_surface(path)


# ---------------------------------------------------------------------------------------------
# read_metric


def test_read_metric_freesurfer_morph_roundtrip(tmp_path, values):
    path = tmp_path / "lh.thickness"
    write_morph_data(str(path), values)
    assert detect_format(path) == "fs_morph"
    x = read_metric(path)
    assert x.dtype == np.float64 and x.shape == values.shape
    np.testing.assert_array_equal(x, values)


def test_read_metric_freesurfer_old_format(tmp_path):
    vals = np.array([-1.25, 0.0, 2.5, 3.07])
    raw = len(vals).to_bytes(3, "big") + (0).to_bytes(3, "big") + np.round(vals * 100).astype(">i2").tobytes()
    path = tmp_path / "lh.curv"
    path.write_bytes(raw)
    np.testing.assert_allclose(read_metric(path), vals, rtol=0, atol=1e-12)


def _mgh_truncated(tmp_path, mesh, values):
    nib.save(nib.MGHImage(values.astype(np.float32).reshape(-1, 1, 1), np.eye(4)), str(tmp_path / "t.mgz"))
    return _truncate(tmp_path / "t.mgz", 0.5)


def _gifti_without_arrays(tmp_path, mesh, values):
    nib.save(GiftiImage(), str(tmp_path / "empty.shape.gii"))
    return tmp_path / "empty.shape.gii"


# (case builder, read_metric keywords given the values, error, message after the path)
READ_METRIC_ERRORS = {
    "missing": (lambda tmp_path, mesh, values: tmp_path / "lh.thickness", {}, InputFileNotFoundError, ""),
    "freesurfer-truncated": (lambda tmp_path, mesh, values: _truncate(_fs_morph(tmp_path, mesh, values, "lh.sulc"),
                                                                      0.8), {}, FormatError, "truncated"),
    "mgh-truncated": (_mgh_truncated, {}, FormatError, ""),
    "gifti-truncated": (lambda tmp_path, mesh, values: _truncate(write_metric(values, tmp_path / "t.shape.gii"), 0.5),
                        {}, FormatError, "truncated or corrupt"),
    "gifti-without-arrays": (_gifti_without_arrays, {}, FormatError, "holds no data array"),
    "a-surface-file": (lambda tmp_path, mesh, values: write_surface(mesh, tmp_path / "m.surf.gii"), {}, FormatError,
                       "read_surface"),
    "length-differs-from-vertex-count": (_fs_morph, {"n_vertices": 146}, MetricError, "expected 146 values.*found 145"),
}


@pytest.mark.parametrize("case", sorted(READ_METRIC_ERRORS))
def test_read_metric_refuses(tmp_path, f32_mesh, values, case):
    build, kwargs, error, message = READ_METRIC_ERRORS[case]
    assert len(values) == 145  # the numbers in the messages above
    path = build(tmp_path, f32_mesh, values)
    with pytest.raises(error, match=re.escape(str(path)) + ".*" + message):
        read_metric(path, **kwargs)


@pytest.mark.parametrize("name", ["t.mgh", "t.mgz"])
def test_read_metric_mgh_roundtrip(tmp_path, values, name):
    path = tmp_path / name
    nib.save(nib.MGHImage(values.astype(np.float32).reshape(-1, 1, 1), np.eye(4)), str(path))
    np.testing.assert_array_equal(read_metric(path), values)


@pytest.mark.parametrize("name", ["t.shape.gii", "t.func.gii", "t.shape.gii.gz"])
def test_write_metric_gifti_roundtrip(tmp_path, values, name):
    path = write_metric(values, tmp_path / name, hemi="right")
    np.testing.assert_array_equal(read_metric(path), values)
    d = nib.load(str(path)).darrays[0]
    assert d.data.dtype == np.float32 and nib.nifti1.intent_codes.label[d.intent] == "shape"


def test_write_metric_several_maps(tmp_path, values):
    stack = np.column_stack([values, -values, np.full_like(values, np.nan)])
    path = write_metric(stack, tmp_path / "t.func.gii", intent="zscore", names=["a", "b", "c"])
    np.testing.assert_array_equal(read_metric(path, map_index=1), -values)
    assert np.isnan(read_metric(path, map_index=2)).all()
    with pytest.raises(FormatError, match="map_index"):
        read_metric(path, map_index=3)


def test_read_metric_gifti_other_hemisphere(tmp_path, values):
    path = write_metric(values, tmp_path / "t.shape.gii", hemi="left")
    np.testing.assert_array_equal(read_metric(path, hemi="left"), values)
    with pytest.raises(MetricError, match="CortexLeft"):
        read_metric(path, hemi="right")


def test_read_metric_text_and_npy(tmp_path, values):
    np.savetxt(tmp_path / "t.txt", values, fmt="%.9g")
    np.save(tmp_path / "t.npy", values)
    np.testing.assert_allclose(read_metric(tmp_path / "t.txt"), values, rtol=1e-8)
    np.testing.assert_array_equal(read_metric(tmp_path / "t.npy"), values)


def _cifti(path, maps, structures, n_vertices, names):
    """A dscalar file; ``structures`` maps a CIFTI brain structure to the vertex indices it holds."""
    bm = None
    for name, vertices in structures.items():
        axis = cifti2.BrainModelAxis.from_surface(np.asarray(vertices), n_vertices, name=name)
        bm = axis if bm is None else bm + axis
    header = cifti2.Cifti2Header.from_axes((cifti2.ScalarAxis(names), bm))
    cifti2.Cifti2Image(np.asarray(maps, dtype=np.float32), header).to_filename(str(path))
    return path


def test_read_metric_cifti_roundtrip_medial_wall_nan(tmp_path):
    n = 40
    rng = np.random.default_rng(2)
    left = np.setdiff1d(np.arange(n), [0, 1, 2, 17])  # 4 medial-wall vertices absent
    right = np.setdiff1d(np.arange(n), [5, 6])
    full = rng.normal(size=(2, 2 * n)).astype(np.float32).astype(np.float64)
    maps = np.concatenate([full[:, :n][:, left], full[:, n:][:, right]], axis=1)
    path = _cifti(
        tmp_path / "s.dscalar.nii", maps, {"CortexLeft": left, "CortexRight": right}, n, ["thick", "myelin"]
    )

    x = read_metric(path, hemi="left")
    assert x.shape == (n,)
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(x)), [0, 1, 2, 17])
    np.testing.assert_array_equal(x[left], full[0, :n][left])
    y = read_metric(path, hemi="rh", map_index="myelin")
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(y)), [5, 6])
    np.testing.assert_array_equal(y[right], full[1, n:][right])
    np.testing.assert_array_equal(read_metric(path, hemi="right", map_index=1), y)


def test_read_metric_cifti_without_requested_hemisphere(tmp_path):
    path = _cifti(tmp_path / "l.dscalar.nii", np.ones((1, 5)), {"CortexLeft": np.arange(5)}, 8, ["a"])
    with pytest.raises(MetricError, match="no CIFTI_STRUCTURE_CORTEX_RIGHT"):
        read_metric(path, hemi="right")


def test_read_metric_cifti_requires_hemi(tmp_path):
    path = _cifti(tmp_path / "l.dscalar.nii", np.ones((1, 5)), {"CortexLeft": np.arange(5)}, 8, ["a"])
    with pytest.raises(MetricError, match="hemi='left' or hemi='right'"):
        read_metric(path)


def test_read_metric_cifti_unknown_map_name(tmp_path):
    path = _cifti(tmp_path / "l.dscalar.nii", np.ones((1, 5)), {"CortexLeft": np.arange(5)}, 8, ["a"])
    with pytest.raises(FormatError, match="no map named 'b'"):
        read_metric(path, hemi="left", map_index="b")


# ---------------------------------------------------------------------------------------------
# check_metric


def test_check_metric_converts_column():
    x = check_metric(np.arange(4, dtype=np.int32).reshape(4, 1), 4, "x")
    assert x.dtype == np.float64 and x.shape == (4,) and x.flags.c_contiguous


@pytest.mark.parametrize("x, n, message", [
    (np.zeros(4), 5, "thick: expected 5 values.*found 4"),
    (np.zeros((4, 2)), 4, r"thick: .*found shape \(4, 2\)"),
    ([0.0, 1.0, np.inf], 3, "thick: 1 values are infinite.*vertex 2"),
    (["a", "b"], 2, "thick: expected numbers"),
], ids=["length", "shape", "infinite", "not-numeric"])
def test_check_metric_refuses(x, n, message):
    with pytest.raises(MetricError, match=message):
        check_metric(x, n, "thick")


def test_check_metric_nan_refused_when_asked():
    np.testing.assert_array_equal(np.isnan(check_metric([0.0, np.nan], 2)), [False, True])
    with pytest.raises(MetricError, match="NaN"):
        check_metric([0.0, np.nan], 2, allow_nan=False)


def test_normalize_hemi_aliases_and_error():
    assert [normalize_hemi(h) for h in ("lh", "Left", "R", "right")] == ["left", "left", "right", "right"]
    with pytest.raises(MetricError, match="'hemi' should be one of"):
        normalize_hemi("both")


# ---------------------------------------------------------------------------------------------
# read_mask


def _fs_label(path, vertices, n_coords=True):
    lines = ["#!ascii label  , from subject fsaverage5 vox2ras=TkReg", str(len(vertices))]
    lines += [f"{v} 0.0 0.0 0.0 0.0000000000" for v in vertices]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_mask_freesurfer_label(tmp_path):
    path = _fs_label(tmp_path / "lh.cortex.label", [1, 4, 5, 9])
    keep = read_mask(path, 12)
    assert keep.dtype == bool and keep.shape == (12,)
    np.testing.assert_array_equal(np.flatnonzero(keep), [1, 4, 5, 9])


def _fs_label_truncated(tmp_path):
    path = _fs_label(tmp_path / "lh.cortex.label", [1, 4, 5, 9])
    path.write_text("\n".join(path.read_text().splitlines()[:-2]) + "\n")
    return path


def _text_file(name, text):
    def build(tmp_path):
        (tmp_path / name).write_text(text)
        return tmp_path / name
    return build


# (case builder(tmp_path) -> path, n_vertices, error, message after the path)
READ_MASK_ERRORS = {
    "missing": (lambda tmp_path: tmp_path / "lh.cortex.label", 10, InputFileNotFoundError, "no such file"),
    "label-truncated": (_fs_label_truncated, 12, FormatError, "announces 4 vertices, 2 were read"),
    "label-corrupt": (_text_file("lh.cortex.label", "#!ascii label\nfour\n1 0 0 0 0\n"), 12, FormatError,
                      "truncated or corrupt"),
    "label-beyond-surface": (lambda tmp_path: _fs_label(tmp_path / "lh.cortex.label", [1, 40]), 12, MaskError,
                             "vertex 40.*12 vertices"),
    "gifti-label-no-match": (lambda tmp_path: _gifti_label(tmp_path / "lh.label.gii", [0, 1, 1], {0: "???", 1: "V1"}),
                             3, MaskError, r"no label matches \['cortex'\].*'V1'"),
    "gifti-label-wrong-length": (lambda tmp_path: _gifti_label(tmp_path / "lh.label.gii", [0, 1, 1],
                                                               {0: "???", 1: "Cortex"}),
                                 5, MaskError, "expected 5 labels"),
    "numeric-not-binary": (lambda tmp_path: write_metric([1.0, 0.5, 0.0], tmp_path / "roi.shape.gii"), 3, MaskError,
                           "expected a 0/1 mask.*0.5"),
    "numeric-wrong-length": (lambda tmp_path: write_metric([1.0, 1.0, 0.0], tmp_path / "roi.shape.gii"), 4, MaskError,
                             "expected 4 values"),
    "selects-no-vertex": (lambda tmp_path: write_metric(np.zeros(6), tmp_path / "roi.shape.gii"), 6, MaskError,
                          "selects no vertex"),
    "bad-n-vertices": (lambda tmp_path: _fs_label(tmp_path / "lh.cortex.label", [1]), 0, MaskError,
                       "'n_vertices' should be a positive int"),
}


@pytest.mark.parametrize("case", sorted(READ_MASK_ERRORS))
def test_read_mask_refuses(tmp_path, case):
    build, n_vertices, error, message = READ_MASK_ERRORS[case]
    path = build(tmp_path)
    with pytest.raises(error, match=re.escape(str(path)) + ".*" + message if case != "bad-n-vertices" else message):
        read_mask(path, n_vertices)


def _gifti_label(path, keys, table):
    img = GiftiImage(labeltable=GiftiLabelTable())
    for key, name in table.items():
        lab = GiftiLabel(key=key, red=1.0, green=1.0, blue=1.0, alpha=1.0)
        lab.label = name
        img.labeltable.labels.append(lab)
    img.add_gifti_data_array(GiftiDataArray(np.asarray(keys, np.int32), intent="NIFTI_INTENT_LABEL"))
    nib.save(img, str(path))
    return path


def test_read_mask_gifti_label_by_name(tmp_path):
    keys = np.array([0, 1, 1, 2, 1, 0, 2, 1])
    path = _gifti_label(tmp_path / "lh.label.gii", keys, {0: "???", 1: "CORTEX_LEFT", 2: "Medial_Wall"})
    np.testing.assert_array_equal(read_mask(path, 8), keys == 1)  # default "cortex", case-insensitive
    np.testing.assert_array_equal(read_mask(path, 8, label="medial"), keys == 2)
    np.testing.assert_array_equal(read_mask(path, 8, label=["cortex_left", "medial_wall"]), keys > 0)


def test_read_mask_annot(tmp_path):
    labels = np.array([0, 1, 1, 2, -1, 1])
    ctab = np.array([[25, 5, 25, 0, 0], [10, 200, 20, 0, 0], [220, 20, 10, 0, 0]])
    path = tmp_path / "lh.aparc.annot"
    write_annot(str(path), labels, ctab, [b"unknown", b"precentral", b"postcentral"], fill_ctab=True)
    np.testing.assert_array_equal(read_mask(path, 6, label="PRECENTRAL"), labels == 1)


def test_read_mask_numeric_shape_file(tmp_path):
    keep = np.array([1, 1, 0, 1, 0], dtype=float)
    path = write_metric(keep, tmp_path / "atlasroi.shape.gii")
    np.testing.assert_array_equal(read_mask(path, 5), keep == 1)


def test_read_mask_every_vertex_then_cut_of_closed_mesh(tmp_path, icosphere_mesh):
    path = _fs_label(tmp_path / "lh.all.label", np.arange(icosphere_mesh.n_vertices))
    keep = read_mask(path, icosphere_mesh.n_vertices)
    assert keep.all()  # allowed here; the cut of a closed surface refuses it
    with pytest.raises(MaskError, match="every vertex of the closed mesh"):
        cut(icosphere_mesh, keep)


# ---------------------------------------------------------------------------------------------
# writers


def test_write_surface_not_gifti(tmp_path, f32_mesh):
    with pytest.raises(FormatError, match="writes GIFTI"):
        write_surface(f32_mesh, tmp_path / "m.obj")


def test_write_surface_not_a_mesh(tmp_path):
    with pytest.raises(MeshError, match="'mesh' should be a surfmap.Mesh"):
        write_surface(np.zeros((3, 3)), tmp_path / "m.surf.gii")


def test_write_surface_missing_folder(tmp_path, f32_mesh):
    with pytest.raises(InputFileNotFoundError, match="does not exist"):
        write_surface(f32_mesh, tmp_path / "nope" / "m.surf.gii")


def test_write_metric_unknown_intent(tmp_path, values):
    with pytest.raises(FormatError, match="'intent' should be one of"):
        write_metric(values, tmp_path / "t.shape.gii", intent="banana")


def test_write_metric_bad_values_leave_existing_file(tmp_path, values):
    path = write_metric(values, tmp_path / "t.shape.gii")
    before = path.read_bytes()
    bad = values.copy()
    bad[3] = np.inf
    with pytest.raises(MetricError, match="infinite"):
        write_metric(bad, path)
    assert path.read_bytes() == before


def test_write_metric_interrupted_write_is_atomic(tmp_path, values, monkeypatch):
    path = write_metric(values, tmp_path / "t.shape.gii")
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_metric(-values, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["t.shape.gii"]  # the temporary file was removed


# ---------------------------------------------------------------------------------------------
# FreeSurfer patch


def test_read_patch_roundtrip(tmp_path):
    vno = np.array([3, 0, 7, 8])
    xyz = np.array([[1.5, 2.0, 0.0], [-3.0, 0.25, 0.0], [4.0, 4.0, 0.0], [0.0, -1.0, 0.0]])
    border = np.array([False, True, False, True])
    rec = np.zeros(4, dtype=[("vno", ">i4"), ("xyz", ">f4", 3)])
    rec["vno"] = np.where(border, -(vno + 1), vno + 1)
    rec["xyz"] = xyz
    path = tmp_path / "lh.cortex.patch.flat"
    path.write_bytes(np.array([-1, 4], dtype=">i4").tobytes() + rec.tobytes())
    assert detect_format(path) == "fs_patch"
    got_v, got_xyz = read_patch(path, n_vertices=9)
    np.testing.assert_array_equal(got_v, vno)
    np.testing.assert_array_equal(got_xyz, xyz)
    with pytest.raises(MaskError, match="vertex 8.*8 vertices"):
        read_patch(path, n_vertices=8)
    _truncate(path, 0.7)
    with pytest.raises(FormatError, match="truncated"):
        read_patch(path)
