"""Every kind of file surfmap writes opens in Connectome Workbench with the right structure.

The checks that run ``wb_command`` skip when it is absent (``apt-get install connectome-workbench``);
the metadata checks run everywhere.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from surfmap import FlatMap, MeshError, MetricError, flatten, load_template, write_label, write_metric, write_surface
from surfmap.exceptions import FormatError, ParameterError
from surfmap.mesh import face_areas
from surfmap.io import flat_surface, read_mask, write_flat_surface

WB = shutil.which("wb_command")
needs_wb = pytest.mark.skipif(WB is None, reason="wb_command (Connectome Workbench) not installed: apt-get install "
                                                 "connectome-workbench")


def _info(path) -> dict:
    out = subprocess.run([WB, "-file-information", str(path)], capture_output=True, text=True, check=True).stdout
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    return fields


@pytest.fixture(scope="module")
def fs5():
    h = load_template("fsaverage5", "left")
    return h, flatten(h.mesh, h.cortex, method="conformal")


@needs_wb
@pytest.mark.parametrize("hemi, structure", [("left", "CortexLeft"), ("right", "CortexRight")])
def test_every_writer_opens_in_workbench_with_its_structure(tmp_path, fs5, hemi, structure):
    h, fm = fs5
    n = h.n_vertices
    files = {
        "Surface": write_surface(h.mesh, tmp_path / "white.surf.gii", hemi=hemi, secondary="white"),
        "Metric": write_metric(np.column_stack([h.metrics["sulc"], h.metrics["thickness"]]),
                               tmp_path / "maps.func.gii", hemi=hemi, names=["sulc", "thickness"]),
        "Label": write_label(h.cortex, tmp_path / "cortex.label.gii", hemi=hemi, names={1: "CORTEX"}),
        "flat": fm.to_gifti(tmp_path / "flat.surf.gii", hemi=hemi),
    }
    for kind, path in files.items():
        info = _info(path)
        assert info["Structure"] == structure, (kind, info)
        assert info["Type"] == ("Surface" if kind == "flat" else kind)
        assert info["Number of Vertices"] == str(n)
    assert _info(files["flat"])["Surface Type (Primary)"] == "Flat"
    assert _info(files["Surface"])["Surface Type (Secondary)"] == "GrayWhite"


@needs_wb
def test_structure_from_file_name_when_not_given(tmp_path, fs5, caplog):
    h, _ = fs5
    assert _info(write_metric(h.metrics["sulc"], tmp_path / "rh.sulc.shape.gii"))["Structure"] == "CortexRight"
    assert _info(write_metric(h.metrics["sulc"], tmp_path / "sub.L.sulc.shape.gii"))["Structure"] == "CortexLeft"
    with caplog.at_level(logging.WARNING, logger="surfmap.io"):
        write_metric(h.metrics["sulc"], tmp_path / "sulc.shape.gii")
    assert "Structure: Invalid" in caplog.text and "Pass hemi=" in caplog.text


@needs_wb
def test_flat_surface_shows_a_metric_in_workbench(tmp_path, fs5):
    """The flat surface has the original mesh's vertices, so a metric of that mesh maps onto it."""
    h, fm = fs5
    flat = fm.to_gifti(tmp_path / "lh.flat.surf.gii")
    metric = write_metric(h.metrics["thickness"], tmp_path / "lh.thickness.shape.gii")
    # Workbench resamples/smooths on it: it accepts the pair (same vertex count, a valid surface)
    out = tmp_path / "smoothed.shape.gii"
    subprocess.run([WB, "-metric-smoothing", str(flat), str(metric), "1.0", str(out)], check=True,
                   capture_output=True)
    assert _info(out)["Number of Vertices"] == str(h.n_vertices)


def test_flat_surface_matches_the_map(fs5):
    h, fm = fs5
    flat = flat_surface(fm)
    assert flat.n_vertices == h.n_vertices  # the original mesh's count and order
    xy = flat.vertices[fm.vertex_map, :2]
    scale = np.ptp(xy[:, 0]) / np.ptp(fm.uv[:, 0])
    np.testing.assert_allclose(xy, (fm.uv - 0.5) * scale, atol=1e-9)  # uv centred, one scale
    e1 = flat.vertices[flat.faces[:, 1]] - flat.vertices[flat.faces[:, 0]]
    e2 = flat.vertices[flat.faces[:, 2]] - flat.vertices[flat.faces[:, 0]]
    flat_area = 0.5 * np.abs(np.cross(e1, e2)[:, 2]).sum()
    np.testing.assert_allclose(flat_area, face_areas(h.mesh.vertices, fm.original_faces()).sum(), rtol=1e-5)
    assert np.all(flat.vertices[:, 2] == 0)
    off = np.setdiff1d(np.arange(h.n_vertices), fm.vertex_map)
    assert np.all(flat.vertices[off] == 0) and not np.isin(off, flat.faces).any()
    np.testing.assert_array_equal(flat.faces, fm.vertex_map[fm.faces])  # the cut's faces only


def test_flat_surface_gifti_metadata(tmp_path, fs5):
    _, fm = fs5
    img = nib.load(write_flat_surface(fm, tmp_path / "lh.flat.surf.gii"))
    assert img.meta["AnatomicalStructurePrimary"] == "CortexLeft"
    assert img.darrays[0].meta["GeometricType"] == "Flat"


def test_flat_surface_needs_the_vertex_count(fs5):
    _, fm = fs5
    old = FlatMap(fm.uv, fm.faces, fm.vertex_map, fm.corners, info={})
    with pytest.raises(MeshError, match="pass n_vertices="):
        flat_surface(old)
    with pytest.raises(MeshError, match="the map indexes original vertex"):
        flat_surface(fm, n_vertices=10)
    assert flat_surface(old, n_vertices=10242).n_vertices == 10242


def test_write_label_roundtrip(tmp_path):
    labels = np.array([0, 1, 1, 2, 5, 5])
    path = write_label(labels, tmp_path / "lh.parc.label.gii", names={1: "V1", 2: "V2"})
    img = nib.load(path)
    np.testing.assert_array_equal(img.darrays[0].data, labels)
    assert img.labeltable.get_labels_as_dict() == {0: "???", 1: "V1", 2: "V2", 5: "label_5"}
    np.testing.assert_array_equal(read_mask(path, 6, label="V1"), labels == 1)


@pytest.mark.parametrize("labels, name, match, error", [
    (np.array([0.5, 1.0]), "x.label.gii", "should be integers", MetricError),
    (np.ones((2, 2), dtype=int), "x.label.gii", r"shape \(n,\)", MetricError),
    (np.ones(3, dtype=int), "x.shape.gii", "name it \\*.label.gii", FormatError),
])
def test_write_label_errors(tmp_path, labels, name, match, error):
    with pytest.raises(error, match=match):
        write_label(labels, tmp_path / name)


def test_write_surface_unknown_geometric_type(tmp_path, fs5):
    with pytest.raises(ParameterError, match="geometric_type: expected one of"):
        write_surface(fs5[0].mesh, tmp_path / "lh.x.surf.gii", geometric_type="Wobbly")
