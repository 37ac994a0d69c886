"""The robustness sweep in small: a few fsaverage5 patches, each bijective or a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import sweep
from surfmap.exceptions import ConvergenceError


@pytest.fixture(scope="module")
def fs5():
    return sweep.load("fsaverage5", "left", "white")


@pytest.mark.parametrize("kind, param, seed", [("disc", 0.45, 0), ("lobe", 2, 0), ("irregular", 0.5, 1)])
def test_sweep_patch_bijective(kind, param, seed):
    o = sweep.run_case(sweep.Case("fsaverage5", "left", "white", kind, param, seed))
    assert o.status == "bijective", o.error
    for m in (o.conformal, o.area):
        assert m["flipped"] == 0 and m["outside"] == 0 and m["corner_error"] < 1e-9
    assert o.area["area_abs_p95"] < o.conformal["area_abs_p95"]
    assert o.conformal["dilatation_mean"] < o.area["dilatation_mean"]


def test_sweep_large_hole_is_clear_error():
    o = sweep.run_case(sweep.Case("fsaverage5", "left", "white", "irregular", 0.7, 0))
    assert o.status == "clear error" and o.stage == "cut"
    assert "annulus" in o.error


def test_sweep_masks(fs5):
    mesh, cortex = fs5
    V, F = mesh.vertices, mesh.faces
    small, _ = sweep.make_mask("disc", V, F, cortex, 0.2, 0)
    big, info = sweep.make_mask("disc", V, F, cortex, 0.45, 0)
    assert small[info["centre"]] and (small <= big).all() and 0 < small.sum() < big.sum() < cortex.sum()
    assert not (big & ~cortex).any()
    lobes = [sweep.make_mask("lobe", V, F, cortex, k, 0)[0] for k in range(4)]
    assert all(0.05 * cortex.sum() < m.sum() < 0.6 * cortex.sum() for m in lobes)
    # same seed, same mask; another seed, another centre
    again, _ = sweep.make_mask("irregular", V, F, cortex, 0.5, 1)
    np.testing.assert_array_equal(again, sweep.make_mask("irregular", V, F, cortex, 0.5, 1)[0])
    assert sweep.make_mask("irregular", V, F, cortex, 0.5, 2)[1]["centre"] != sweep.make_mask(
        "irregular", V, F, cortex, 0.5, 1)[1]["centre"]


def test_sweep_stage_error_is_failure_with_repro(monkeypatch):
    import surfmap

    def broken(*a, **k):
        raise ConvergenceError("transport: did not converge")

    monkeypatch.setattr(surfmap, "area_preserving_map", broken)
    case = sweep.Case("fsaverage5", "left", "white", "disc", 0.2, 0)
    o = sweep.run_case(case)
    assert o.status == "failure" and o.stage == "transport" and "did not converge" in o.error
    assert o.conformal["flipped"] == 0
    md = sweep.table([o])
    assert "| fsaverage5 | left | white | 1 | 0 | 0 | 1 |" in md
    assert f"python -m benchmarks.sweep --case '{case.id}'" in md
    assert sweep.Case.parse(case.id) == case


def test_sweep_cases_cover_meshes_and_kinds():
    todo = sweep.cases(quick=False)
    ids = {c.id.split(":")[0] for c in todo}
    kinds = {c.kind for c in todo}
    assert ids == {"fsaverage5", "fslr32k"} and kinds == {"cortex", "disc", "lobe", "irregular"}
    surfaces = {(c.mesh, c.surface) for c in todo}
    assert {("fsaverage5", "white"), ("fsaverage5", "pial"), ("fsaverage5", "inflated")} <= surfaces
    assert len(todo) >= 4 * 12
