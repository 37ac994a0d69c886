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


def test_read_surface_missing_file(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="no such file"):
        read_surface(tmp_path / "lh.white")


def test_read_surface_unknown_format(tmp_path):
    path = tmp_path / "mesh.xyz"
    path.write_bytes(b"\x00\x01\x02 something else entirely")
    with pytest.raises(FormatError, match="unknown or unsupported format"):
        read_surface(path)


def test_read_surface_empty_file(tmp_path):
    path = tmp_path / "lh.white"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        read_surface(path)


def test_read_surface_freesurfer_truncated(tmp_path, f32_mesh):
    path = tmp_path / "lh.white"
    write_geometry(str(path), f32_mesh.vertices, f32_mesh.faces)
    _truncate(path, 0.6)
    with pytest.raises(FormatError, match=re.escape(str(path)) + ".*truncated"):
        read_surface(path)


def test_read_surface_gifti_truncated(tmp_path, f32_mesh):
    path = write_surface(f32_mesh, tmp_path / "m.surf.gii")
    _truncate(path, 0.7)
    with pytest.raises(FormatError, match=re.escape(str(path)) + ".*truncated or corrupt"):
        read_surface(path)


def test_read_surface_ply_corrupt(tmp_path):
    path = tmp_path / "m.ply"
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1 2\n")
    with pytest.raises(SurfmapError, match=re.escape(str(path))):
        read_surface(path)


def test_read_surface_faces_index_missing_vertices(tmp_path, f32_mesh):
    path = tmp_path / "lh.white"
    F = f32_mesh.faces.copy()
    F[5, 1] = f32_mesh.n_vertices + 3
    write_geometry(str(path), f32_mesh.vertices, F)
    with pytest.raises(MeshError, match=re.escape(str(path)) + ".*do not exist"):
        read_surface(path)


def test_read_surface_obj_faces_index_missing_vertices(tmp_path):
    path = tmp_path / "bad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 2 3 4\n")
    with pytest.raises(MeshError, match=re.escape(str(path)) + ".*vertices that do not exist"):
        read_surface(path)


def test_read_surface_off_faces_index_missing_vertices(tmp_path):
    path = tmp_path / "bad.off"
    path.write_text("OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n3 1 2 5\n")
    with pytest.raises(MeshError, match=re.escape(str(path)) + ".*vertices that do not exist"):
        read_surface(path)


def test_read_surface_nan_coordinates(tmp_path, f32_mesh):
    V = f32_mesh.vertices.copy()
    V[7] = [np.nan, 0, np.inf]
    path = _gifti_surface(tmp_path / "nan.surf.gii", V, f32_mesh.faces)
    with pytest.raises(MeshError, match=re.escape(str(path)) + ".*NaN or infinite"):
        read_surface(path)


def test_read_surface_gifti_non_triangular_faces(tmp_path, grid_mesh):
    quads = np.array([[0, 1, 7, 6], [1, 2, 8, 7]])
    path = _gifti_surface(tmp_path / "quads.surf.gii", grid_mesh.vertices, quads)
    with pytest.raises(MeshError, match=re.escape(str(path)) + ".*must be triangles"):
        read_surface(path)


def test_read_surface_obj_non_triangular_faces(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
    with pytest.raises(MeshError, match=re.escape(str(path)) + ".*must be triangles"):
        read_surface(path)


def test_read_surface_of_a_metric_file(tmp_path, values):
    path = tmp_path / "lh.thickness"
    write_morph_data(str(path), values)
    with pytest.raises(FormatError, match="read_metric"):
        read_surface(path)


def test_read_surface_gifti_without_pointset(tmp_path, values):
    path = write_metric(values, tmp_path / "t.shape.gii")
    with pytest.raises(FormatError, match="POINTSET"):
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


def test_read_metric_freesurfer_truncated(tmp_path, values):
    path = tmp_path / "lh.sulc"
    write_morph_data(str(path), values)
    _truncate(path, 0.8)
    with pytest.raises(FormatError, match=re.escape(str(path)) + ".*truncated"):
        read_metric(path)


@pytest.mark.parametrize("name", ["t.mgh", "t.mgz"])
def test_read_metric_mgh_roundtrip(tmp_path, values, name):
    path = tmp_path / name
    nib.save(nib.MGHImage(values.astype(np.float32).reshape(-1, 1, 1), np.eye(4)), str(path))
    np.testing.assert_array_equal(read_metric(path), values)


def test_read_metric_mgh_truncated(tmp_path, values):
    path = tmp_path / "t.mgz"
    nib.save(nib.MGHImage(values.astype(np.float32).reshape(-1, 1, 1), np.eye(4)), str(path))
    _truncate(path, 0.5)
    with pytest.raises(FormatError, match=re.escape(str(path))):
        read_metric(path)


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


def test_read_metric_gifti_truncated(tmp_path, values):
    path = write_metric(values, tmp_path / "t.shape.gii")
    _truncate(path, 0.5)
    with pytest.raises(FormatError, match=re.escape(str(path)) + ".*truncated or corrupt"):
        read_metric(path)


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


def test_read_metric_length_differs_from_vertex_count(tmp_path, values):
    path = tmp_path / "lh.thickness"
    write_morph_data(str(path), values)
    with pytest.raises(MetricError, match=f"expected {len(values) + 1} values.*found {len(values)}"):
        read_metric(path, n_vertices=len(values) + 1)


def test_read_metric_of_a_surface_file(tmp_path, f32_mesh):
    path = write_surface(f32_mesh, tmp_path / "m.surf.gii")
    with pytest.raises(FormatError, match="read_surface"):
        read_metric(path)


def test_read_metric_missing_file(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="lh.thickness"):
        read_metric(tmp_path / "lh.thickness")


# ---------------------------------------------------------------------------------------------
# check_metric


def test_check_metric_converts_column():
    x = check_metric(np.arange(4, dtype=np.int32).reshape(4, 1), 4, "x")
    assert x.dtype == np.float64 and x.shape == (4,) and x.flags.c_contiguous


def test_check_metric_wrong_length():
    with pytest.raises(MetricError, match="thick: expected 5 values.*found 4"):
        check_metric(np.zeros(4), 5, "thick")


def test_check_metric_wrong_shape():
    with pytest.raises(MetricError, match=r"found shape \(4, 2\)"):
        check_metric(np.zeros((4, 2)), 4)


def test_check_metric_infinite():
    with pytest.raises(MetricError, match="1 values are infinite.*vertex 2"):
        check_metric([0.0, 1.0, np.inf], 3)


def test_check_metric_nan_refused_when_asked():
    np.testing.assert_array_equal(np.isnan(check_metric([0.0, np.nan], 2)), [False, True])
    with pytest.raises(MetricError, match="NaN"):
        check_metric([0.0, np.nan], 2, allow_nan=False)


def test_check_metric_not_numeric():
    with pytest.raises(MetricError, match="expected numbers"):
        check_metric(["a", "b"], 2)


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


def test_read_mask_freesurfer_label_truncated(tmp_path):
    path = _fs_label(tmp_path / "lh.cortex.label", [1, 4, 5, 9])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(FormatError, match=re.escape(str(path)) + ".*announces 4 vertices, 2 were read"):
        read_mask(path, 12)


def test_read_mask_freesurfer_label_corrupt(tmp_path):
    path = tmp_path / "lh.cortex.label"
    path.write_text("#!ascii label\nfour\n1 0 0 0 0\n")
    with pytest.raises(FormatError, match="truncated or corrupt"):
        read_mask(path, 12)


def test_read_metric_gifti_without_arrays(tmp_path):
    path = tmp_path / "empty.shape.gii"
    nib.save(GiftiImage(), str(path))
    with pytest.raises(FormatError, match="holds no data array"):
        read_metric(path)


def test_read_mask_freesurfer_label_beyond_surface(tmp_path):
    path = _fs_label(tmp_path / "lh.cortex.label", [1, 40])
    with pytest.raises(MaskError, match="vertex 40.*12 vertices"):
        read_mask(path, 12)


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


def test_read_mask_gifti_label_no_match(tmp_path):
    path = _gifti_label(tmp_path / "lh.label.gii", [0, 1, 1], {0: "???", 1: "V1"})
    with pytest.raises(MaskError, match=r"no label matches \['cortex'\].*'V1'"):
        read_mask(path, 3)


def test_read_mask_gifti_label_wrong_length(tmp_path):
    path = _gifti_label(tmp_path / "lh.label.gii", [0, 1, 1], {0: "???", 1: "Cortex"})
    with pytest.raises(MaskError, match="expected 5 labels"):
        read_mask(path, 5)


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


def test_read_mask_numeric_not_binary(tmp_path):
    path = write_metric([1.0, 0.5, 0.0], tmp_path / "roi.shape.gii")
    with pytest.raises(MaskError, match="expected a 0/1 mask.*0.5"):
        read_mask(path, 3)


def test_read_mask_numeric_wrong_length(tmp_path):
    path = write_metric([1.0, 1.0, 0.0], tmp_path / "roi.shape.gii")
    with pytest.raises(MaskError, match="expected 4 values"):
        read_mask(path, 4)


def test_read_mask_selects_no_vertex(tmp_path):
    path = write_metric(np.zeros(6), tmp_path / "roi.shape.gii")
    with pytest.raises(MaskError, match="selects no vertex"):
        read_mask(path, 6)


def test_read_mask_every_vertex_then_cut_of_closed_mesh(tmp_path, icosphere_mesh):
    path = _fs_label(tmp_path / "lh.all.label", np.arange(icosphere_mesh.n_vertices))
    keep = read_mask(path, icosphere_mesh.n_vertices)
    assert keep.all()  # allowed here; the cut of a closed surface refuses it
    with pytest.raises(MaskError, match="every vertex of the closed mesh"):
        cut(icosphere_mesh, keep)


def test_read_mask_bad_n_vertices(tmp_path):
    path = _fs_label(tmp_path / "lh.cortex.label", [1])
    with pytest.raises(MaskError, match="'n_vertices' should be a positive int"):
        read_mask(path, 0)


def test_read_mask_missing_file(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="no such file"):
        read_mask(tmp_path / "lh.cortex.label", 10)


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
