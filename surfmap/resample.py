"""Spherical resampling: per-vertex data from one registered mesh to another, like Workbench.

A :class:`Resampler` is one sparse ``(n_target, n_source)`` operator, built once from two spheres
that are in register (a subject's ``?h.sphere.reg`` and fsaverage's sphere, or any sphere and
``fs_LR 32k``'s) and applied to any number of maps: a cohort on one registration pays for the
point location once per subject, and every map of a subject costs one sparse product.

Methods (the names of Connectome Workbench's ``-metric-resample`` in brackets)

- ``"barycentric"`` (``BARYCENTRIC``): each target vertex takes the barycentric interpolation of
  the source triangle closest to it (both spheres scaled to one radius first).
- ``"adaptive"`` (``ADAP_BARY_AREA``): where a target vertex gathers from more source vertices
  than its triangle holds (down-sampling), it averages all the source vertices that land nearest
  to it instead of sampling three; the weights are then corrected by the vertex areas of
  anatomical surfaces of both meshes (``source_area`` / ``target_area``: typically the
  midthickness surfaces), so that the area-weighted integral of a map is kept.
- ``"nearest"`` (``BARYCENTRIC -largest``): the source vertex with the largest barycentric
  weight; for labels.

:func:`project_unproject` carries a sphere through a pair of registered spheres (Workbench's
``-surface-sphere-project-unproject``), the step that puts a FreeSurfer subject's
``?h.sphere.reg`` (registered to fsaverage) in register with fs_LR. :func:`to_template` runs
the whole HCP PostFreeSurfer route for one subject and hemisphere.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .exceptions import InputFileNotFoundError, MeshError, MetricError, ParameterError, TemplateError
from .mesh import Mesh, vertex_areas

__all__ = ["METHODS", "Resampler", "TemplateSubject", "TARGETS", "TARGET_VERTICES", "barycentric_weights",
           "project_unproject", "resample_subject", "template_paths", "to_template", "write_template_subject"]

logger = logging.getLogger(__name__)

METHODS = ("barycentric", "adaptive", "nearest")
NAN_POLICIES = ("raise", "ignore", "propagate")
# a sphere's vertices lie within this relative spread of their mean radius
_SPHERE_TOL = 0.05
_MAX_STEPS = 256
_BLOCK = 4096


def _as_sphere(sphere, name: str) -> Mesh:
    """A Mesh from a Mesh or a surface file, checked to be a sphere centred on the origin."""
    from .io import read_surface

    if isinstance(sphere, Mesh):
        mesh = sphere
    elif isinstance(sphere, (str, os.PathLike)):
        mesh = read_surface(sphere)
    else:
        raise MeshError(f"{name}: expected a surfmap.Mesh or a surface file path; found {type(sphere).__name__}")
    r = np.linalg.norm(mesh.vertices, axis=1)
    mean = float(r.mean()) if len(r) else 0.0
    if mean <= 0 or float(np.abs(r - mean).max()) > _SPHERE_TOL * mean:
        spread = float(np.abs(r - mean).max() / mean) if mean > 0 else float("inf")
        raise MeshError(f"{name} ({mesh.name}): expected a sphere centred on the origin (every vertex within "
                        f"{_SPHERE_TOL:.0%} of the mean radius); found radii from {r.min():.4g} to {r.max():.4g} "
                        f"({spread:.1%} off). Pass the registration sphere (e.g. ?h.sphere.reg), not an "
                        "anatomical surface")
    return mesh


def _unit(V: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(V / np.linalg.norm(V, axis=1, keepdims=True))


def _vertex_faces(F: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the faces around each vertex."""
    v = F.ravel()
    order = np.argsort(v, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(v, minlength=n), out=ptr[1:])
    return ptr, (order // 3).astype(np.int64)


def _locate(mesh: Mesh, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face and barycentric coordinates of the closest point of the unit-radius ``mesh`` to each point."""
    from scipy.spatial import cKDTree

    from ._kernels import resample as _k

    V = _unit(mesh.vertices)
    Q = _unit(np.asarray(points, dtype=np.float64))
    ptr, idx = _vertex_faces(mesh.faces, mesh.n_vertices)
    used = np.flatnonzero(np.diff(ptr) > 0)  # the descent starts from a vertex's faces: skip vertices in none
    _, nearest = cKDTree(V[used]).query(Q, workers=-1)
    start = used[nearest]
    face = np.empty(len(Q), dtype=np.int64)
    w = np.empty((len(Q), 3), dtype=np.float64)
    steps = _k.locate_on_mesh(V, mesh.faces, ptr, idx, Q, start.astype(np.int64), _MAX_STEPS, face, w)
    if np.any(steps >= _MAX_STEPS):
        logger.warning("%s: %d point(s) did not settle on a face in %d steps (a folded sphere?)", mesh.name,
                       int((steps >= _MAX_STEPS).sum()), _MAX_STEPS)
    return face, w


def barycentric_weights(sphere: Mesh, points) -> sp.csr_matrix:
    """Barycentric weights of points on a sphere mesh, as a sparse ``(q, n)`` matrix.

    Both the mesh and the points are scaled onto the unit sphere; each point takes the
    barycentric coordinates of its closest point on the (scaled) triangle mesh, as Workbench does.

    Parameters
    ----------
    sphere : Mesh
        The spherical mesh (``n`` vertices) whose vertices carry the data.
    points : (q, 3) float64
        Points in register with ``sphere`` (any radius).

    Returns
    -------
    (q, n) scipy.sparse.csr_matrix, float64
        Rows sum to 1; at most 3 entries a row (zero weights dropped).
    """
    face, w = _locate(sphere, points)
    q = len(face)
    rows = np.repeat(np.arange(q, dtype=np.int64), 3)
    M = sp.csr_matrix((w.ravel(), (rows, sphere.faces[face].ravel())), shape=(q, sphere.n_vertices))
    M.sum_duplicates()
    M.eliminate_zeros()
    M.sort_indices()
    return M


def _areas(area, sphere: Mesh, name: str) -> np.ndarray:
    """Vertex areas from an array, an anatomical Mesh or surface file with the sphere's vertices, or None
    (the sphere's own)."""
    from .io import read_surface

    n = sphere.n_vertices
    if area is None:
        return vertex_areas(_unit(sphere.vertices), sphere.faces)
    if isinstance(area, (str, os.PathLike)):
        area = read_surface(area)
    if isinstance(area, Mesh):
        if area.n_vertices != n:
            raise MeshError(f"{name} ({area.name}): expected a surface of the sphere's mesh ({n} vertices); found "
                            f"{area.n_vertices}. Pass the anatomical surface (e.g. midthickness) of that mesh")
        return vertex_areas(area.vertices, area.faces)
    a = np.asarray(area, dtype=np.float64)
    if a.shape != (n,):
        raise MetricError(f"{name}: expected vertex areas of shape ({n},) (one per vertex of the sphere); found "
                          f"shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise MetricError(f"{name}: expected finite, non-negative vertex areas; found {int((~(a >= 0)).sum())} "
                          "negative or non-finite values")
    return a


def _adaptive(forward: sp.csr_matrix, reverse: sp.csr_matrix, source_area: np.ndarray,
              target_area: np.ndarray) -> sp.csr_matrix:
    """Workbench's ADAP_BARY_AREA weights from the forward (target <- source) and reverse barycentric
    weights: gather by the reverse weights wherever they reach source vertices the forward ones miss,
    then correct by vertex areas and normalise each row."""
    gather = reverse.T.tocsr()  # (n_target, n_source): source vertices landing around each target vertex
    gather.sort_indices()
    pattern = forward.copy()
    pattern.data[:] = 1.0
    inside = np.asarray(gather.multiply(pattern).astype(bool).sum(axis=1)).ravel()
    use_forward = inside == np.diff(gather.indptr)  # every gathered vertex is among the forward ones
    pick = sp.diags(use_forward.astype(np.float64))
    W = (pick @ forward + sp.diags((~use_forward).astype(np.float64)) @ gather).tocsr()
    W = sp.diags(target_area) @ W
    scatter = np.asarray(W.sum(axis=0)).ravel()  # how much of each source vertex is taken
    scale = np.divide(source_area, scatter, out=np.zeros_like(scatter), where=scatter > 0)
    W = (W @ sp.diags(scale)).tocsr()
    rowsum = np.asarray(W.sum(axis=1)).ravel()
    W = (sp.diags(np.divide(1.0, rowsum, out=np.zeros_like(rowsum), where=rowsum > 0)) @ W).tocsr()
    return W


def _nearest(forward: sp.csr_matrix) -> sp.csr_matrix:
    n = forward.shape[0]
    cols = np.empty(n, dtype=np.int64)
    for_rows = np.diff(forward.indptr)
    starts = forward.indptr[:-1]
    # largest weight of each row (rows hold 1 to 3 entries; ties go to the lowest vertex index)
    best = np.maximum.reduceat(forward.data, starts) if n else np.zeros(0)
    is_best = forward.data == np.repeat(best, for_rows)
    pos = np.flatnonzero(is_best)
    row_of = np.repeat(np.arange(n), for_rows)[pos]
    first = np.unique(row_of, return_index=True)[1]
    cols[row_of[first]] = forward.indices[pos[first]]
    return sp.csr_matrix((np.ones(n), cols, np.arange(n + 1, dtype=np.int64)), shape=forward.shape)


class Resampler:
    """Per-vertex data from one spherical mesh to another in register with it.

    Parameters
    ----------
    source_sphere, target_sphere : Mesh or path
        Spheres centred on the origin (any radius; each is scaled to the unit sphere), in
        register: the source's data, at its vertices, are read at the target's vertices.
    method : {"barycentric", "adaptive", "nearest"}
        See the module docstring. ``"adaptive"`` is the method to use for ordinary metrics
        (thickness, curvature, ...), ``"nearest"`` for labels.
    source_area, target_area : (n,) array, Mesh or path, optional
        ``"adaptive"`` only: vertex areas of each mesh, or an anatomical surface of it (e.g. the
        midthickness) to compute them from; default: the spheres' own vertex areas.
    nan_policy : {"raise", "ignore", "propagate"}
        A non-finite source value that a target vertex uses: raise :class:`~surfmap.MetricError`
        (default), renormalise the vertex's weights over its finite values (``fill_value`` when
        none is), or give NaN; as :class:`~surfmap.Rasterizer` does.
    fill_value : float
        With ``nan_policy="ignore"``: the value of a target vertex whose every source value is
        non-finite.

    Attributes
    ----------
    matrix : (n_target, n_source) scipy.sparse.csr_matrix, float64
        Rows sum to 1.
    info : dict
        ``method`` and the seconds each step took.

    Raises
    ------
    MeshError
        A sphere that is not a sphere, area surfaces of another mesh.
    ParameterError
        Unknown ``method`` or ``nan_policy``.

    Examples
    --------
    >>> from surfmap.templates import load_standard_sphere
    >>> R = Resampler("lh.sphere.reg", load_standard_sphere("fsaverage5", "left"))   # doctest: +SKIP
    >>> thickness_fs5 = R(read_metric("lh.thickness"))                               # doctest: +SKIP
    """

    def __init__(self, source_sphere, target_sphere, method: str = "barycentric", source_area=None,
                 target_area=None, *, nan_policy: str = "raise", fill_value: float = np.nan):
        if method not in METHODS:
            raise ParameterError(f"method: expected one of {list(METHODS)}; found {method!r}")
        if nan_policy not in NAN_POLICIES:
            raise ParameterError(f"nan_policy: expected one of {list(NAN_POLICIES)}; found {nan_policy!r}")
        if method != "adaptive" and (source_area is not None or target_area is not None):
            raise ParameterError(f"source_area/target_area: only the 'adaptive' method uses vertex areas; "
                                 f"found method={method!r}. Pass method='adaptive', or drop the areas")
        src = _as_sphere(source_sphere, "source_sphere")
        dst = _as_sphere(target_sphere, "target_sphere")
        self.method = method
        self.nan_policy = nan_policy
        self.fill_value = float(fill_value)
        self.n_source, self.n_target = src.n_vertices, dst.n_vertices
        t0 = time.perf_counter()
        forward = barycentric_weights(src, dst.vertices)
        info = {"method": method, "seconds_forward": time.perf_counter() - t0}
        if method == "adaptive":
            a_src = _areas(source_area, src, "source_area")
            a_dst = _areas(target_area, dst, "target_area")
            t0 = time.perf_counter()
            reverse = barycentric_weights(dst, src.vertices)
            info["seconds_reverse"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            M = _adaptive(forward, reverse, a_src, a_dst)
            info["seconds_adaptive"] = time.perf_counter() - t0
        elif method == "nearest":
            M = _nearest(forward)
        else:
            M = forward
        M.sort_indices()
        M.indptr = M.indptr.astype(np.int64)
        M.indices = M.indices.astype(np.int64)
        self.matrix = M
        self.info = info

    def __call__(self, values) -> np.ndarray:
        """Resample ``(n_source,)`` or ``(n_source, k)`` values to ``(n_target,)`` / ``(n_target, k)`` float64.

        Raises
        ------
        MetricError
            Wrong length or shape, non-numeric values, or (``nan_policy="raise"``) a non-finite
            value that a target vertex uses.
        """
        try:
            X = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise MetricError(f"values: expected numbers, one per source vertex; could not convert ({err})") from None
        if X.ndim not in (1, 2) or X.shape[0] != self.n_source:
            raise MetricError(f"values: expected shape ({self.n_source},) or ({self.n_source}, k) (one row per vertex "
                              f"of the source sphere); found {X.shape}. Check that the map belongs to the source "
                              "mesh (same subject, hemisphere and resolution)")
        one = X.ndim == 1
        X2 = np.ascontiguousarray(X.reshape(self.n_source, -1))
        out = np.empty((1, X2.shape[1], self.n_target), dtype=np.float64)
        from ._kernels import raster as _kr

        M = self.matrix
        bad = _kr.csr_apply(M.indptr, M.indices, M.data, X2[None], out, self.nan_policy == "ignore",
                            self.fill_value, _BLOCK)
        if self.nan_policy == "raise" and bad.any():
            c = int(np.flatnonzero(bad[0])[0])
            raise MetricError(f"values: {int(bad.sum())} non-finite value(s) at source vertices that target vertices "
                              f"use (column {c}: {int(bad[0, c])}); fix the map, or pass nan_policy='ignore' "
                              "(renormalise over finite vertices) or 'propagate'")
        Y = out[0].T
        return np.ascontiguousarray(Y[:, 0] if one else Y)

    def __repr__(self) -> str:
        return f"Resampler({self.n_source} -> {self.n_target} vertices, method={self.method!r})"


def project_unproject(sphere_in, project_to, unproject_from) -> Mesh:
    """Carry a sphere through a registration (Workbench's ``-surface-sphere-project-unproject``).

    Each vertex of ``sphere_in`` is located on ``project_to`` (barycentric weights of its closest
    point) and moved to the same barycentric position on ``unproject_from``, which is
    ``project_to`` deformed by the registration. The result keeps ``sphere_in``'s faces and (mean)
    radius.

    Parameters
    ----------
    sphere_in : Mesh or path
        A sphere in register with ``project_to`` (e.g. a subject's ``?h.sphere.reg``, in register
        with fsaverage).
    project_to, unproject_from : Mesh or path
        The two ends of a registration, with the same vertices (e.g. fsaverage's sphere and HCP's
        ``fs_L-to-fs_LR_fsaverage.L_LR.spherical_std.164k_fs_L.surf.gii``).

    Returns
    -------
    Mesh
        ``sphere_in``'s mesh, in register with ``unproject_from``'s space.

    Raises
    ------
    MeshError
        A surface that is not a sphere; ``project_to`` and ``unproject_from`` of different meshes.
    """
    sin = _as_sphere(sphere_in, "sphere_in")
    a = _as_sphere(project_to, "project_to")
    b = _as_sphere(unproject_from, "unproject_from")
    if a.n_vertices != b.n_vertices:
        raise MeshError(f"unproject_from ({b.name}): expected the mesh of project_to ({a.n_vertices} vertices), "
                        f"deformed; found {b.n_vertices} vertices")
    W = barycentric_weights(a, sin.vertices)
    radius = float(np.linalg.norm(sin.vertices, axis=1).mean())
    V = _unit(W @ _unit(b.vertices)) * radius
    return Mesh(V, sin.faces, name=f"{sin.name} (in register with {b.name})")


# ---------------------------------------------------------------------------------------------
# a FreeSurfer subject on a standard mesh

TARGETS = ("fslr32k", "fsaverage5")
TARGET_VERTICES = {"fslr32k": 32492, "fsaverage5": 10242}
_TARGET_FOLDER = {"fslr32k": "fsaverage_LR32k", "fsaverage5": "fsaverage5"}
_TARGET_TAG = {"fslr32k": "32k_fs_LR", "fsaverage5": "fsaverage5"}
_FS_PREFIX = {"left": "lh", "right": "rh"}
SURFACES = ("white", "pial", "midthickness")
METRICS = ("thickness", "sulc", "curv")


@dataclass(frozen=True, eq=False)
class TemplateSubject:
    """A subject's hemisphere resampled onto a standard mesh (:func:`to_template`).

    Attributes
    ----------
    subject, hemi, target : str
    surfaces : dict of str to Mesh
        ``white``, ``pial``, ``midthickness`` on the target mesh.
    metrics : dict of str to (n,) float64
        ``thickness``, ``sulc``, ``curv`` on the target mesh.
    cortex : (n,) bool
        The target's cortex mask (:func:`surfmap.load_template`).
    files : dict of str to Path
        What was written (empty when nothing was).
    """

    subject: str
    hemi: str
    target: str
    surfaces: dict
    metrics: dict
    cortex: np.ndarray
    files: dict = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return len(self.cortex)


def _fs_file(surf: Path, name: str) -> Path:
    p = surf / name
    if not p.exists():
        raise InputFileNotFoundError(f"{p}: no such file; a FreeSurfer subject needs surf/{name} (run recon-all to "
                                     "the end, or check SUBJECTS_DIR and the subject name)")
    return p


def _target_sphere(target: str, hemi: str, sphere_reg: Mesh) -> tuple[Mesh, Mesh]:
    """(the subject's sphere in register with the target's space, the target's sphere)."""
    from .templates import load_standard_sphere, registration_spheres

    if target == "fslr32k":
        fs, fs_in_lr = registration_spheres(hemi)
        return project_unproject(sphere_reg, fs, fs_in_lr), load_standard_sphere("fslr32k", hemi)
    return sphere_reg, load_standard_sphere(target, hemi)


def resample_subject(sphere_reg, white, pial, metrics: dict, hemi: str, target: str = "fslr32k", *,
                     method: str = "adaptive", subject: str = "subject") -> TemplateSubject:
    """One hemisphere's surfaces and metrics onto a standard mesh (the work of :func:`to_template`).

    Parameters
    ----------
    sphere_reg, white, pial : Mesh or path
        The subject's registration sphere (in register with fsaverage) and anatomical surfaces,
        all of one mesh.
    metrics : dict of str to (n,) array
        Maps on that mesh.
    hemi, target, method
        As :func:`to_template`.
    subject : str
        Recorded in the result and the surfaces' names.

    Returns
    -------
    TemplateSubject
    """
    from .io import check_metric, normalize_hemi, read_surface
    from .templates import load_template

    if target not in TARGETS:
        raise TemplateError(f"'target' should be one of {list(TARGETS)}; {target!r} was provided")
    if method not in ("adaptive", "barycentric"):
        raise ParameterError(f"method: expected 'adaptive' or 'barycentric' for metrics; found {method!r}")
    side = normalize_hemi(hemi, "hemi", ParameterError)
    reg = _as_sphere(sphere_reg, "sphere_reg")
    white, pial = (read_surface(m) if not isinstance(m, Mesh) else m for m in (white, pial))
    n = reg.n_vertices
    for m in (white, pial):
        if m.n_vertices != n:
            raise MeshError(f"{m.name}: expected {n} vertices (as the sphere {reg.name}); found {m.n_vertices}. The "
                            "files come from different runs or subjects")
    values = {name: check_metric(x, n, str(name)) for name, x in metrics.items()}
    mid = Mesh(0.5 * (white.vertices + pial.vertices), white.faces, name="midthickness")
    reg_t, sphere_t = _target_sphere(target, side, reg)
    geometry = Resampler(reg_t, sphere_t, "barycentric", nan_policy="ignore")
    surfaces = {name: Mesh(geometry(m.vertices), sphere_t.faces, name=f"{subject}.{side}.{name}.{target}")
                for name, m in (("white", white), ("pial", pial), ("midthickness", mid))}
    R = geometry
    if method == "adaptive" and values:
        R = Resampler(reg_t, sphere_t, "adaptive", source_area=mid, target_area=surfaces["midthickness"],
                      nan_policy="ignore")
    resampled = {name: R(x) for name, x in values.items()}
    return TemplateSubject(subject=subject, hemi=side, target=target, surfaces=surfaces, metrics=resampled,
                           cortex=np.asarray(load_template(target, side).cortex))


def to_template(subject_dir, hemi: str, target: str = "fslr32k", *, out=None, metrics=METRICS,
                method: str = "adaptive") -> TemplateSubject:
    """A FreeSurfer subject's hemisphere on a standard mesh, as HCP's PostFreeSurfer pipeline does.

    ``surf/?h.sphere.reg`` (registered to fsaverage) is carried to fs_LR through HCP's fsaverage ->
    fs_LR registration spheres (:func:`project_unproject`; not for ``fsaverage5``, already in
    fsaverage's space); the white and pial surfaces and the midthickness (their mean) are
    resampled by barycentric interpolation, and the metrics by ``method`` (default
    ``"adaptive"``, with the native midthickness and the resampled one as area surfaces).

    Parameters
    ----------
    subject_dir : str or path
        The subject's folder (``<SUBJECTS_DIR>/<subject>``, holding ``surf/``).
    hemi : {"left", "right", "lh", "rh"}
    target : {"fslr32k", "fsaverage5"}
    out : str or path, optional
        Write GIFTI files in the HCP layout under this folder (the subject's folder of a new
        study): ``<out>/MNINonLinear/fsaverage_LR32k/<subject>.L.<surface>.32k_fs_LR.surf.gii``
        and ``<subject>.L.<metric>.32k_fs_LR.shape.gii``, and the target's cortex mask as
        ``<subject>.L.cortex.32k_fs_LR.label.gii`` (``fsaverage5/...fsaverage5...`` for
        fsaverage5), each with its hemisphere's structure, so Workbench opens them and
        ``surfmap batch`` reads them (HCP layout: template or native-32k mode).
    metrics : sequence of str
        FreeSurfer morph files of ``surf/`` to resample (``?h.<name>``).
    method : {"adaptive", "barycentric"}
        For the metrics.

    Returns
    -------
    TemplateSubject
        ``files`` lists what was written.

    Raises
    ------
    InputFileNotFoundError
        A missing FreeSurfer file (``?h.sphere.reg`` most often).
    MeshError, MetricError
        Files of different vertex counts, a sphere that is not one.
    TemplateError
        Unknown target; the standard meshes are not installed.

    Examples
    --------
    >>> sub = to_template("$SUBJECTS_DIR/sub-01", "left", out="study/sub-01")   # doctest: +SKIP
    >>> sub.metrics["thickness"].shape                                           # doctest: +SKIP
    (32492,)
    """
    from .io import normalize_hemi, read_metric

    side = normalize_hemi(hemi, "hemi", ParameterError)
    sdir = Path(subject_dir)
    surf = sdir / "surf"
    if not surf.is_dir():
        raise InputFileNotFoundError(f"{sdir}: no surf/ folder; expected a FreeSurfer subject folder "
                                     "(<SUBJECTS_DIR>/<subject>)")
    h = _FS_PREFIX[side]
    paths = {name: _fs_file(surf, f"{h}.{name}") for name in ("sphere.reg", "white", "pial")}
    values = {name: read_metric(_fs_file(surf, f"{h}.{name}"), hemi=side) for name in metrics}
    sub = resample_subject(paths["sphere.reg"], paths["white"], paths["pial"], values, side, target, method=method,
                           subject=sdir.name)
    if out is None:
        return sub
    files = write_template_subject(out, sub)
    return TemplateSubject(**{**sub.__dict__, "files": files})


def template_paths(out, subject: str, hemi: str, target: str = "fslr32k", metrics=()) -> dict:
    """Where :func:`to_template` writes, in the HCP layout: ``{name: Path}`` for the surfaces, each of
    ``metrics`` (``.shape.gii``) and ``"cortex"`` (``.label.gii``)."""
    folder = Path(out) / "MNINonLinear" / _TARGET_FOLDER[target]
    stem = f"{subject}.{'L' if hemi == 'left' else 'R'}"
    tag = _TARGET_TAG[target]
    return {**{s: folder / f"{stem}.{s}.{tag}.surf.gii" for s in SURFACES},
            **{m: folder / f"{stem}.{m}.{tag}.shape.gii" for m in metrics},
            "cortex": folder / f"{stem}.cortex.{tag}.label.gii"}


def write_template_subject(out, sub: TemplateSubject) -> dict:
    """Write a :class:`TemplateSubject` as GIFTI in the HCP layout under ``out`` (see :func:`to_template`).

    Returns
    -------
    dict of str to Path
        Each surface and metric name, and ``"cortex"``, with the file written.
    """
    from .io import write_label, write_metric, write_surface

    paths = template_paths(out, sub.subject, sub.hemi, sub.target, metrics=tuple(sub.metrics))
    paths["white"].parent.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, mesh in sub.surfaces.items():
        files[name] = write_surface(mesh, paths[name], hemi=sub.hemi, secondary=name)
    for name, x in sub.metrics.items():
        files[name] = write_metric(x, paths[name], hemi=sub.hemi, names=[f"{sub.subject}_{name}"])
    files["cortex"] = write_label(sub.cortex, paths["cortex"], hemi=sub.hemi, names={0: "MEDIAL_WALL", 1: "CORTEX"},
                                  map_name=f"{sub.subject}_cortex")
    return files
