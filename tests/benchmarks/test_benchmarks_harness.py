"""Smoke tests of the benchmark harness on small meshes (no timing assertions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import report
from benchmarks.measure import distortion
from benchmarks.meshes import Case, midpoint_subdivide
from benchmarks.methods import square_boundary
from benchmarks.run import fit_exponent, measure_method
from surfmap.mesh import Mesh, boundary_loop, face_areas


def grid_disk(n: int = 12, bulge: float = 0.0):
    """A triangulated square grid, optionally lifted onto a bump (a disk mesh)."""
    g = np.linspace(0.0, 1.0, n)
    X, Y = np.meshgrid(g, g)
    Z = bulge * np.exp(-((X - 0.5) ** 2 + (Y - 0.5) ** 2) / 0.05)
    V = np.column_stack([X.ravel(), Y.ravel(), Z.ravel()])
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    F = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])]).astype(np.int64)
    return V, F


def test_midpoint_subdivide_counts_and_areas():
    V, F = grid_disk(5, bulge=0.3)
    V2, F2 = midpoint_subdivide(V, F)
    n_edges = len({tuple(sorted(e)) for f in F for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))})
    assert V2.shape == (len(V) + n_edges, 3)
    assert F2.shape == (4 * len(F), 3)
    np.testing.assert_array_equal(V2[: len(V)], V)  # original vertices first, unchanged
    A, A2 = face_areas(V, F), face_areas(V2, F2)
    # flat subdivision: each child has a quarter of its parent's area
    for k in range(4):
        np.testing.assert_allclose(A2[k * len(F):(k + 1) * len(F)], A / 4, rtol=1e-12)
    # orientation kept: normals of the children agree with the parent's
    def normals(V, F):
        return np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    n0 = np.tile(normals(V, F), (4, 1))
    assert (np.einsum("ij,ij->i", normals(V2, F2), n0) > 0).all()


def test_distortion_anisotropic_scaling():
    V, F = grid_disk(6)
    stats, d, K = distortion(V, F, V[:, :2] * [3.0, 1.0])
    np.testing.assert_allclose(K, 3.0, rtol=1e-12)
    np.testing.assert_allclose(d, 0.0, atol=1e-12)  # areas scale uniformly: no area distortion
    assert stats["flipped"] == 0
    np.testing.assert_allclose(stats["beltrami_abs_mean"], 0.5, rtol=1e-12)


def test_distortion_mirror_is_not_flipped_and_fold_is():
    V, F = grid_disk(6)
    stats, _, _ = distortion(V, F, V[:, :2] * [-1.0, 1.0])
    assert stats["flipped"] == 0 and stats["mirrored"]
    uv = V[:, :2].copy()
    uv[6 + 1] = [0.5, 0.5]  # drag an interior vertex across its neighbours
    stats, d, _ = distortion(V, F, uv)
    assert stats["flipped"] > 0 and not stats["mirrored"]


def test_square_boundary_corners_and_order():
    V, F = grid_disk(7)
    bnd = boundary_loop(F)
    corners = [0, 6, 48, 42]  # (0,0), (1,0), (1,1), (0,1) of the grid
    loop, uv = square_boundary(V, bnd, np.array(corners))
    pos = {int(v): i for i, v in enumerate(loop)}
    np.testing.assert_allclose(uv[[pos[c] for c in corners]], [[0, 0], [1, 0], [1, 1], [0, 1]], atol=1e-14)
    np.testing.assert_allclose(uv, V[loop, :2], atol=1e-12)  # arc length on a square's own boundary


def test_fit_exponent_power_law():
    n = np.array([1e4, 3e4, 1e5])
    assert fit_exponent(n, 2e-6 * n**1.5) == pytest.approx(1.5)
    assert fit_exponent([1e4], [1.0]) is None


def test_measure_method_and_report_smoke(tmp_path):
    pytest.importorskip("igl")
    V, F = grid_disk(14, bulge=0.4)
    mesh = Mesh(V, F, name="bump")
    case = Case("bump", mesh, np.ones(len(V), dtype=bool), mesh, np.arange(len(V)))
    path = case.save(tmp_path / "bump.npz")
    rows = []
    for name in ("igl_lscm", "igl_harmonic_square"):
        r = measure_method(path, name, tmp_path, repeats=1)
        assert "error" not in r, r.get("traceback", r.get("error"))
        assert len(r["warm_s"]) == 1 and r["first_s"] > 0
        assert r["distortion"]["flipped"] == 0
        assert r["peak_mem_mb"] >= 0
        r.update(case="bump", n=case.n, label=name, tool="libigl")
        rows.append(r)
    results = dict(machine=dict(cpu="test", cores=1, python="3", versions={}, date="now"),
                   settings={}, comparison=[report.strip_row(r) for r in rows])
    md = report.markdown(results)
    assert "| bump | igl_lscm |" in md and "1.00" in md  # LSCM's ratio to itself
    json.dumps(results, default=report.json_default)
    assert report.write_histograms(rows, tmp_path, case="bump")[0].exists()


def test_autoflatten_files_round_trip(tmp_path):
    """The autoflatten path without running autoflatten: patch written, a flat patch read back."""
    pytest.importorskip("autoflatten")
    from autoflatten.freesurfer import read_patch, write_patch

    from benchmarks.autoflat import measure_output, write_inputs

    V, F = grid_disk(8, bulge=0.2)
    keep = np.ones(len(V), dtype=bool)
    keep[0] = False  # a corner left out: the disk is the rest
    mesh = Mesh(V, F, name="bump")
    from surfmap.mesh import cut

    c = cut(mesh, keep)
    case = Case("bump-left", mesh, keep, c.mesh, np.asarray(c.vertex_map))
    surf, patch = write_inputs(case, tmp_path / "af")
    _, orig, _ = read_patch(str(patch))
    np.testing.assert_array_equal(np.sort(orig), case.vertex_map)
    flat = tmp_path / "af" / "lh.cortex.flat.patch.3d"
    write_patch(str(flat), V[orig, :2] * [2.0, 1.0], orig)  # a stand-in "flat map": stretched plane
    res = measure_output(case, flat, tmp_path / "f.npz")
    assert res["distortion"]["flipped"] == 0
    assert res["distortion"]["dilatation_mean"] == pytest.approx(2.0, rel=0.05)  # the bump adds a little
