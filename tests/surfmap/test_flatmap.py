"""FlatMap: validation of its arrays, and the .npz round trip."""

import json

import numpy as np
import pytest

from surfmap import FlatMap
from surfmap.exceptions import FormatError, InputFileNotFoundError, MeshError


def _square(n=3):
    """A triangulated n x n grid of the unit square, corners at (0,0), (1,0), (1,1), (0,1)."""
    x = np.linspace(0.0, 1.0, n)
    uv = np.column_stack([np.tile(x, n), np.repeat(x, n)])
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j
            faces += [[a, b, c], [a, c, d]]
    corners = [0, n - 1, n * n - 1, n * (n - 1)]
    V = np.column_stack([uv * 3.0, np.zeros(len(uv))])
    return FlatMap(uv, faces, np.arange(len(uv)) + 7, corners, {"method": "test", "iterations": 3}, V)


def test_flatmap_save_load_round_trip(tmp_path):
    fm = _square(4)
    path = fm.save(tmp_path / "lh.flatmap.npz")
    back = FlatMap.load(path)
    for name in ("uv", "faces", "vertex_map", "corners", "vertices"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fm, name))
    assert back.info == fm.info
    assert back.uv.dtype == np.float64 and back.faces.dtype == np.int64
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file must be renamed away"


def test_flatmap_save_adds_npz_suffix(tmp_path):
    assert _square().save(tmp_path / "map").name == "map.npz"


def test_flatmap_signed_areas_sum_to_square_area():
    fm = _square(5)
    np.testing.assert_allclose(fm.signed_areas().sum(), 1.0, rtol=1e-14)
    assert (fm.signed_areas() > 0).all()


def test_flatmap_save_failure_leaves_no_temp_file(tmp_path):
    fm = FlatMap(np.zeros((3, 2)), [[0, 1, 2]], [0, 1, 2], [0, 1, 2, 0], {"bad": object()})
    with pytest.raises(TypeError):
        fm.save(tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(uv=np.zeros((9, 3))), r"FlatMap.uv: expected shape \(k, 2\)"),
        (dict(faces=np.zeros((2, 4), int)), r"FlatMap.faces: expected shape \(m, 3\)"),
        (dict(vertex_map=np.arange(5)), r"FlatMap.vertex_map: expected 9 entries"),
        (dict(corners=[0, 1, 2]), r"FlatMap.corners: expected 4 vertex indices"),
        (dict(faces=[[0, 1, 9]]), r"FlatMap.faces: indices must lie in \[0, 8\].*max 9"),
        (dict(vertices=np.zeros((9, 2))), r"FlatMap.vertices: expected shape \(9, 3\)"),
    ],
)
def test_flatmap_rejects_malformed_arrays(change, match):
    fm = _square()
    kw = dict(uv=fm.uv, faces=fm.faces, vertex_map=fm.vertex_map, corners=fm.corners, vertices=fm.vertices)
    kw.update(change)
    with pytest.raises(MeshError, match=match):
        FlatMap(**kw)


def test_flatmap_load_missing_file(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="no such flat-map file"):
        FlatMap.load(tmp_path / "absent.npz")


def test_flatmap_load_other_npz(tmp_path):
    np.savez(tmp_path / "other.npz", uv=np.zeros((3, 2)))
    with pytest.raises(FormatError, match="not a surfmap flat map"):
        FlatMap.load(tmp_path / "other.npz")


def test_flatmap_load_truncated_file(tmp_path):
    path = _square().save(tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated or corrupt"):
        FlatMap.load(path)


def test_flatmap_info_is_json(tmp_path):
    fm = FlatMap(*[getattr(_square(), k) for k in ("uv", "faces", "vertex_map", "corners")],
                 info={"timings": {"cut": np.float64(0.5)}, "residuals": np.array([1e-12, 2e-12])})
    back = FlatMap.load(fm.save(tmp_path / "m.npz"))
    assert json.dumps(back.info) and back.info["timings"]["cut"] == 0.5
    assert back.info["residuals"] == [1e-12, 2e-12]
