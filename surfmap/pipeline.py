"""The ``flatten`` pipeline: cut, conformal map, area-preserving map.

The top layer of the geometry: it imports every stage, and no stage imports it (the stages share only
:class:`~surfmap.flatmap.FlatMap`, the result type).
"""

from __future__ import annotations

import time

import numpy as np

from .conformal import conformal_map
from .exceptions import MeshError, ParameterError
from .flatmap import FlatMap
from .mesh import cut
from .transport import area_preserving_map

__all__ = ["flatten"]


def flatten(mesh, keep, method: str = "area", **kw) -> FlatMap:
    """Cut a hemisphere to its cortex and map it onto the unit square.

    ``surfmap.cut`` (medial wall removed, disk topology checked and repaired), then
    ``surfmap.conformal_map`` (discrete Ricci flow), then for ``method="area"`` (default)
    ``surfmap.area_preserving_map`` (optimal transport) started from the conformal map.

    Parameters
    ----------
    mesh : Mesh
        The whole hemisphere.
    keep : (n_vertices,) bool
        Cortex mask (medial wall False).
    method : {"area", "conformal"}
    **kw
        ``corners`` goes to ``conformal_map``; ``tol``, ``max_iter``, ``area_tol``, ``max_sweeps``
        to ``area_preserving_map`` (with ``method="conformal"``: ``tol`` and ``max_iter`` go to
        ``conformal_map``).

    Returns
    -------
    FlatMap
        ``vertex_map`` indexes ``mesh`` (the cut composed in), ``inserted`` the vertices the cut
        inserted (chord midpoints, the last rows of ``uv``); ``info`` holds ``method``, the cut's
        ``repairs``, ``n_original``, ``n_inserted``, the ``conformal`` and ``transport`` stages' info and ``timings`` per stage (s).

    Raises
    ------
    MaskError, MeshError
        From the cut (bad mask, not a disk) or the maps.
    ValueError
        Unknown ``method`` or keyword.
    """
    if method not in ("area", "conformal"):
        raise ParameterError(f"method: expected 'area' or 'conformal'; found {method!r}")
    conformal_keys = {"corners"} | ({"tol", "max_iter"} if method == "conformal" else set())
    area_keys = {"tol", "max_iter", "area_tol", "max_sweeps"} if method == "area" else set()
    unknown = set(kw) - conformal_keys - area_keys
    if unknown:
        raise ParameterError(
            f"flatten: unknown keyword(s) {sorted(unknown)} for method={method!r}; "
            f"expected some of {sorted(conformal_keys | area_keys)}"
        )
    timings = {}
    t0 = time.perf_counter()
    disk = cut(mesh, keep)
    timings["cut"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    conf = conformal_map(disk.mesh, **{k: v for k, v in kw.items() if k in conformal_keys})
    timings["conformal"] = time.perf_counter() - t0
    info = {"method": method, "n_original": int(mesh.n_vertices), "repairs": list(disk.repairs),
            "conformal": conf.info}
    fm = conf
    if method == "area":
        t0 = time.perf_counter()
        fm = area_preserving_map(disk.mesh, conf, **{k: v for k, v in kw.items() if k in area_keys})
        timings["transport"] = time.perf_counter() - t0
        info["transport"] = fm.info
    timings["total"] = sum(timings.values())
    info["timings"] = timings
    info["n_inserted"] = disk.n_inserted
    if not np.array_equal(fm.vertex_map, np.arange(disk.mesh.n_vertices)):  # pragma: no cover - stages keep order
        raise MeshError(f"flatten: the {method} stage returned {len(fm.vertex_map)} vertices of the "
                        f"{disk.mesh.n_vertices}-vertex disk, not all in order; report this as a bug")
    return FlatMap(
        uv=fm.uv,
        faces=fm.faces,
        vertex_map=disk.vertex_map,
        corners=fm.corners,
        info=info,
        vertices=disk.mesh.vertices,
        inserted=disk.inserted,
        inserted_weights=disk.inserted_weights,
    )
