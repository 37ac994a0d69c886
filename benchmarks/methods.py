"""The flattening methods, each a plug-in measured the same way.

A method is a :class:`Method`: ``prepare(case, **kwargs)`` does the imports and anything that is an
input rather than work (it is not timed); ``run(prepared)`` maps the mesh and returns a
:class:`Result` (uv, faces, 3D positions of the uv rows, info). To add a tool, write the two
functions and register it in :data:`METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Result:
    uv: np.ndarray  # (k, 2) float64
    faces: np.ndarray  # (m, 3) int64, indexing uv
    vertices3d: np.ndarray  # (k, 3) float64, the 3D position of each uv row
    info: dict = field(default_factory=dict)
    flatmap: Any = None  # surfmap's FlatMap, when the method makes one


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # for tables and plots
    tool: str  # "surfmap" | "libigl" | ...
    prepare: Callable[..., Any]
    run: Callable[[Any], Result]
    needs_corners: bool = False  # takes ``corners=`` (surfmap's conformal corners of the same cortex)
    needs_conformal: bool = False  # takes ``init_path=`` (surfmap's conformal map of the same cortex)
    gives_conformal: bool = False  # takes ``save_to=`` (where to write its conformal map)
    finish: Callable[[Any, Result], None] | None = None  # after the timed calls (e.g. save the map)


def _disk_inputs(case):
    return np.ascontiguousarray(case.disk.vertices), np.ascontiguousarray(case.disk.faces)


# ---------------------------------------------------------------------------------------------
# libigl baselines

def _prep_igl(case, **_):
    import igl  # noqa: F401  (import outside the timing)

    return _disk_inputs(case)


def _igl_lscm(prep) -> Result:
    """LSCM with two boundary vertices fixed: the first of the boundary loop and the one halfway round."""
    import igl

    V, F = prep
    bnd = igl.boundary_loop(F)
    b = np.array([bnd[0], bnd[len(bnd) // 2]], dtype=np.int64)
    bc = np.array([[0.0, 0.0], [1.0, 0.0]])
    out = igl.lscm(V, F, b, bc)
    uv = out[0] if isinstance(out, tuple) else out
    return Result(np.asarray(uv, dtype=np.float64), F, V, dict(fixed=b.tolist()))


def _igl_harmonic_disk(prep) -> Result:
    """Harmonic (cotangent) map with the boundary on the unit circle by arc length."""
    import igl

    V, F = prep
    bnd = igl.boundary_loop(F)
    bnd_uv = igl.map_vertices_to_circle(np.asfortranarray(V), bnd.astype(np.int32))
    uv = igl.harmonic(V, F, bnd, np.ascontiguousarray(bnd_uv), 1)
    return Result(np.asarray(uv, dtype=np.float64), F, V, {})


def square_boundary(V: np.ndarray, bnd: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Place a boundary loop on the unit square's sides, the 4 corners at (0,0), (1,0), (1,1), (0,1).

    Each side is parametrised by arc length between its corners. The loop is reversed if needed so
    that the corners come in the given order.

    Returns
    -------
    loop : (b,) int64, the loop starting at ``corners[0]``
    uv : (b, 2) float64, its positions
    """
    bnd = np.asarray(bnd, dtype=np.int64)
    pos = {int(v): i for i, v in enumerate(bnd)}
    missing = [int(c) for c in corners if int(c) not in pos]
    if missing:
        raise ValueError(f"corners {missing} are not on the boundary loop")
    loop = np.roll(bnd, -pos[int(corners[0])])
    idx = [int(np.flatnonzero(loop == c)[0]) for c in corners]
    if not (idx[0] < idx[1] < idx[2] < idx[3]):
        loop = np.concatenate([loop[:1], loop[1:][::-1]])
        idx = [int(np.flatnonzero(loop == c)[0]) for c in corners]
    seg = np.linalg.norm(V[np.roll(loop, -1)] - V[loop], axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])  # s[i] = arc length up to loop[i]; s[-1] total
    P = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    uv = np.empty((len(loop), 2))
    ends = idx + [len(loop)]
    for k in range(4):
        i0, i1 = ends[k], ends[k + 1]
        t = (s[i0:i1] - s[i0]) / (s[i1] - s[i0])
        uv[i0:i1] = P[k] + t[:, None] * (P[k + 1] - P[k])
    return loop, uv


def _prep_igl_square(case, corners=None, **_):
    import igl

    V, F = _disk_inputs(case)
    if corners is None:  # quarter points by arc length
        bnd = igl.boundary_loop(F)
        seg = np.linalg.norm(V[np.roll(bnd, -1)] - V[bnd], axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()
        corners = [int(bnd[np.argmin(np.abs(s - q))]) for q in (0.0, 0.25, 0.5, 0.75)]
    return V, F, np.asarray(corners, dtype=np.int64)


def _igl_harmonic_square(prep) -> Result:
    """Harmonic (cotangent) map with the boundary on the square's sides by arc length, fixed corners."""
    import igl

    V, F, corners = prep
    bnd = igl.boundary_loop(F)
    loop, bnd_uv = square_boundary(V, bnd, corners)
    uv = igl.harmonic(V, F, loop, bnd_uv, 1)
    return Result(np.asarray(uv, dtype=np.float64), F, V, dict(corners=corners.tolist()))


# ---------------------------------------------------------------------------------------------
# surfmap

def _fm_result(fm, V3) -> Result:
    info = dict(fm.info)
    info["corners"] = np.asarray(fm.corners).tolist()
    # 3D position of every uv row (vertices inserted by the cut interpolated)
    V = fm.vertices if fm.vertices is not None else fm.to_flat(V3)
    return Result(fm.uv, fm.faces, V, info, flatmap=fm)


def _prep_surfmap_disk(case, save_to=None, **_):
    import surfmap

    surfmap.conformal_map, surfmap.area_preserving_map  # noqa: B018  (import outside the timing)
    return case.disk, save_to


def _surfmap_conformal(prep) -> Result:
    import surfmap

    disk, _ = prep
    return _fm_result(surfmap.conformal_map(disk), disk.vertices)


def _save_conformal(prep, res: Result) -> None:
    """After the timing: write the map to ``save_to`` (the OT stage's input)."""
    save_to = prep[1]
    if save_to and res.flatmap is not None:
        res.flatmap.save(save_to)


def _prep_surfmap_ot(case, init_path=None, **_):
    """The conformal map is an input: read from ``init_path`` (written by the conformal run of the
    same case) when it exists, else computed here (not timed)."""
    import os

    import surfmap

    disk = case.disk
    if init_path and os.path.exists(init_path):
        return disk, surfmap.FlatMap.load(init_path)
    return disk, surfmap.conformal_map(disk)


def _surfmap_ot(prep) -> Result:
    """The optimal-transport stage alone, started from the conformal map."""
    import surfmap

    disk, init = prep
    return _fm_result(surfmap.area_preserving_map(disk, init=init), disk.vertices)


def _prep_surfmap_flatten(case, **_):
    import surfmap

    surfmap.flatten  # noqa: B018
    return case.mesh, case.keep


def _surfmap_flatten(prep) -> Result:
    """The whole pipeline: cut, conformal map, optimal transport."""
    import surfmap

    mesh, keep = prep
    return _fm_result(surfmap.flatten(mesh, keep, method="area"), mesh.vertices)


def _surfmap_flatten_conformal(prep) -> Result:
    """The conformal pipeline: cut, conformal map."""
    import surfmap

    mesh, keep = prep
    return _fm_result(surfmap.flatten(mesh, keep, method="conformal"), mesh.vertices)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("surfmap_conformal", "surfmap conformal (Ricci flow)", "surfmap", _prep_surfmap_disk,
               _surfmap_conformal, gives_conformal=True, finish=_save_conformal),
        Method("surfmap_ot", "surfmap OT stage (from conformal)", "surfmap", _prep_surfmap_ot, _surfmap_ot,
               needs_conformal=True),
        Method("surfmap_flatten", "surfmap flatten (cut+conformal+OT)", "surfmap", _prep_surfmap_flatten,
               _surfmap_flatten),
        Method("surfmap_flatten_conformal", "surfmap flatten, conformal (cut+conformal)", "surfmap",
               _prep_surfmap_flatten, _surfmap_flatten_conformal),
        Method("igl_lscm", "libigl LSCM (2 fixed vertices)", "libigl", _prep_igl, _igl_lscm),
        Method("igl_harmonic_disk", "libigl harmonic, disk", "libigl", _prep_igl, _igl_harmonic_disk),
        Method("igl_harmonic_square", "libigl harmonic, square (surfmap's corners)", "libigl",
               _prep_igl_square, _igl_harmonic_square, needs_corners=True),
    ]
}
