"""Images from flat maps: the sampling operator, back-projection, template mode.

A :class:`Rasterizer` turns per-vertex values on a :class:`~surfmap.FlatMap` into ``size x size``
images. The sampling is one sparse ``(size * size, k)`` CSR matrix (``R.matrix``), built once by
locating every pixel centre in the flat triangulation; applying it to a subject's metrics is one
sparse product, so a cohort that shares a registered mesh pays for the point location once.

Image convention
----------------
``image[c, i, j]``: channel ``c``, row ``i`` counted **from the top**, column ``j`` from the left.
The centre of pixel ``(i, j)`` lies at ``u = (j + 0.5) / size``, ``v = 1 - (i + 0.5) / size``:
row 0 is the top of the square (``v`` near 1), like a photograph, so ``matplotlib.pyplot.imshow(
image[c], origin="upper", extent=(0, 1, 0, 1))`` shows the map with ``u`` to the right and ``v``
up, the way :func:`surfmap.plotting.plot_flatmap` draws the flat mesh. Flat-map corners
``(0, 0), (1, 0), (1, 1), (0, 1)`` are the bottom-left, bottom-right, top-right and top-left
pixels.

Template mode
-------------
Subjects registered to one mesh (fs_LR 32k for HCP, fsaverage for FreeSurfer ``--qcache``
outputs) share one flat map and one operator: compute them once
(:meth:`Rasterizer.for_template`, or :func:`cached_rasterizer` for a map of your own) and read
only each subject's metrics; ``R(metrics)`` accepts arrays of the full mesh length and picks the
cortex through ``fm.vertex_map``. Pixels then correspond across subjects. For many subjects at
once pass a ``(S, n, C)`` array (:meth:`Rasterizer.apply_many`): the product runs in parallel
over subjects and channels.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from ._kernels import raster as _k
from ._validation import check_choice, check_instance, check_int
from .exceptions import ArgumentTypeError, MeshError, MetricError, ParameterError
from .flatmap import FlatMap

__all__ = ["ArgumentTypeError", "Rasterizer", "cached_rasterizer", "check_image_size", "original_count",
           "pixel_centres", "rasterize"]

logger = logging.getLogger(__name__)

MODES = ("barycentric", "area")
NAN_POLICIES = ("raise", "ignore", "propagate")
# barycentric tolerance for "inside a face": centres on a shared edge are taken by the first face
_INSIDE_EPS = 1e-12
# pixels per parallel task of the sparse product
_BLOCK = 4096


def _check_flatmap(fm) -> FlatMap:
    return check_instance("fm", fm, FlatMap, expected="a surfmap.FlatMap",
                          hint="Make one with surfmap.flatten or FlatMap.load")


def original_count(fm: FlatMap) -> int | None:
    """Vertex count of the mesh given to ``flatten`` (what ``vertex_map`` indexes), when the map records it."""
    n = getattr(fm, "n_original", None)
    if n is None and isinstance(fm.info, dict):
        n = fm.info.get("n_original")
    return int(n) if n is not None else None


def pixel_centres(size: int) -> np.ndarray:
    """Flat coordinates of the pixel centres, in the order of the operator's rows.

    Parameters
    ----------
    size : int
        Image side in pixels.

    Returns
    -------
    (size * size, 2) float64
        Row ``i * size + j`` is ``((j + 0.5) / size, 1 - (i + 0.5) / size)`` (row 0 at the top).
    """
    size = _check_size(size)
    c = (np.arange(size) + 0.5) / size
    jj, ii = np.meshgrid(np.arange(size), np.arange(size))
    return np.column_stack([c[jj.ravel()], 1.0 - c[ii.ravel()]])


def _check_size(size) -> int:
    return check_image_size(check_int("size", size, low=1, hint="Pass the image side in pixels, e.g. 224"))


# bytes per pixel of building the operator (pixel faces, weights, CSR rows, columns and values)
_BYTES_PER_PIXEL = 120


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def check_image_size(size: int) -> int:
    """``size`` when building its ``size x size`` operator fits in this machine's memory.

    Checked before any work (the CLI calls it before flattening), so a typo such as
    ``--size 1000000`` fails at once with the memory it would need instead of a MemoryError.
    """
    need = _BYTES_PER_PIXEL * size * size
    have = _memory_bytes()
    if have is not None and need > have // 2:
        raise ParameterError(f"size: a {size}x{size} image needs about {need / 2**30:.3g} GiB to build its sampling "
                             f"operator; this machine has {have / 2**30:.3g} GiB. Expected a side such as 224 "
                             "(the networks' input)")
    return size


def _boundary_half_edges(F: np.ndarray):
    """Half-edges (a, b) whose reverse is in no face, with their face and the face's third vertex."""
    from .mesh import boundary_half_edge_mask

    F = np.asarray(F, dtype=np.int64)
    on_boundary = boundary_half_edge_mask(F)
    a, b, c = F.ravel(), F[:, [1, 2, 0]].ravel(), F[:, [2, 0, 1]].ravel()
    face = np.repeat(np.arange(len(F), dtype=np.int64), 3)
    return a[on_boundary], b[on_boundary], c[on_boundary], face[on_boundary]


class Rasterizer:
    """Sampling of per-vertex values of a flat map on a ``size x size`` pixel grid.

    Parameters
    ----------
    fm : FlatMap
        The flat map; its ``uv`` should cover the unit square.
    size : int
        Image side in pixels (224 for ImageNet networks).
    mode : {"barycentric", "area"}
        ``"barycentric"`` (default): each pixel takes the linear interpolation, on the face holding
        its centre, of the face's three vertex values (exact for functions linear on each face).
        ``"area"``: "average of the points that fall within the same pixel" (Cerebral Cortex 2022):
        the mean of the values of the vertices whose ``uv`` lies in the pixel; pixels holding no
        vertex take the barycentric value.
    nan_policy : {"raise", "ignore", "propagate"}
        What a non-finite value at a vertex that the image uses does. ``"raise"`` (default): raise
        :class:`~surfmap.MetricError`. ``"ignore"``: renormalise each pixel's weights over its
        finite values; a pixel with none gets ``fill_value``. ``"propagate"``: NaN pixels.
    fill_value : float
        Value of a pixel whose every vertex is non-finite under ``nan_policy="ignore"``.

    Attributes
    ----------
    matrix : (size * size, k) scipy.sparse.csr_matrix, float64
        The operator; rows follow the image convention of this module (row-major, top row first)
        and each row sums to 1.
    flatmap : FlatMap
    n_outside : int
        Pixel centres outside every face (round-off at the square's edge, or a map that does not
        fill the square) that were given the value of the closest point of the map.
    max_outside_distance : float
        Largest distance, in ``uv`` units, from such a centre to its closest point.
    channels : list of str or None
        Names of the channels of the last call with a dict (in the dict's order).

    Examples
    --------
    >>> R = Rasterizer(fm, size=224)                      # doctest: +SKIP
    >>> img = R({"thickness": t, "sulc": s})              # doctest: +SKIP
    >>> img.shape, R.channels                             # doctest: +SKIP
    ((2, 224, 224), ['thickness', 'sulc'])
    >>> back = R.backproject(img[0], to_original=len(t))  # doctest: +SKIP
    """

    def __init__(self, fm: FlatMap, size: int = 224, mode: str = "barycentric",
                 nan_policy: str = "raise", fill_value: float = np.nan):
        _check_flatmap(fm)
        self.size = _check_size(size)
        check_choice("mode", mode, MODES)
        check_choice("nan_policy", nan_policy, NAN_POLICIES)
        if len(fm.faces) == 0:
            raise MeshError("fm: the flat map has no faces; nothing to rasterize")
        if not np.all(np.isfinite(fm.uv)):
            bad = int((~np.isfinite(fm.uv)).any(axis=1).sum())
            raise MeshError(f"fm.uv: expected finite flat coordinates; found {bad} vertices with NaN or inf. "
                            f"The map is broken: flatten the surface again (and check its distortion)")
        self.flatmap = fm
        self.mode = mode
        self.nan_policy = nan_policy
        self.fill_value = float(fill_value)
        self.channels: list[str] | None = None
        self._shared = False  # set by cached_rasterizer: then no call writes to the instance
        self.matrix = self._build()
        self.used = np.zeros(fm.n_vertices, dtype=bool)
        self.used[self.matrix.indices] = True

    # -----------------------------------------------------------------------------------------
    # construction

    def _barycentric(self):
        fm, size = self.flatmap, self.size
        P = size * size
        face_of = np.full(P, -1, dtype=np.int64)
        weights = np.zeros((P, 3), dtype=np.float64)
        _k.locate_pixel_centres(fm.uv, fm.faces, size, _INSIDE_EPS, face_of, weights)
        missing = np.flatnonzero(face_of < 0)
        self.n_outside = len(missing)
        self.max_outside_distance = 0.0
        if len(missing):
            ea, eb, _, ef = _boundary_half_edges(fm.faces)
            if len(ea) == 0:
                raise MeshError("fm: the flat map has no boundary edge; it is not a disk")
            best_edge = np.zeros(len(missing), dtype=np.int64)
            best_s = np.zeros(len(missing), dtype=np.float64)
            dist = np.zeros(len(missing), dtype=np.float64)
            _k.nearest_on_edges(missing, size, fm.uv, ea, eb, best_edge, best_s, dist)
            f = ef[best_edge]
            face_of[missing] = f
            corners = fm.faces[f]
            w = np.where(corners == ea[best_edge, None], (1.0 - best_s)[:, None], 0.0)
            w += np.where(corners == eb[best_edge, None], best_s[:, None], 0.0)
            weights[missing] = w
            self.max_outside_distance = float(dist.max())
            level = logging.WARNING if self.max_outside_distance > 1.0 / size else logging.DEBUG
            logger.log(level, "%d pixel centre(s) outside the flat map took the value of its closest "
                       "point (largest distance %.3g, pixel side %.3g)", len(missing),
                       self.max_outside_distance, 1.0 / size)
        rows = np.repeat(np.arange(P, dtype=np.int64), 3)
        return rows, fm.faces[face_of].ravel(), weights.ravel()

    def _build(self) -> sp.csr_matrix:
        fm, size = self.flatmap, self.size
        P, k = size * size, fm.n_vertices
        rows, cols, data = self._barycentric()
        if self.mode == "area":
            j = np.clip(np.floor(fm.uv[:, 0] * size).astype(np.int64), 0, size - 1)
            i = np.clip(np.floor((1.0 - fm.uv[:, 1]) * size).astype(np.int64), 0, size - 1)
            pix = i * size + j
            count = np.bincount(pix, minlength=P)
            filled = count[rows] > 0
            rows, cols, data = rows[~filled], cols[~filled], data[~filled]
            rows = np.concatenate([rows, pix])
            cols = np.concatenate([cols, np.arange(k, dtype=np.int64)])
            data = np.concatenate([data, 1.0 / count[pix]])
        M = sp.csr_matrix((data, (rows, cols)), shape=(P, k))
        M.sum_duplicates()
        M.eliminate_zeros()
        M.sort_indices()
        M.indptr = M.indptr.astype(np.int64)
        M.indices = M.indices.astype(np.int64)
        return M

    # -----------------------------------------------------------------------------------------
    # forward

    @property
    def n_vertices(self) -> int:
        """Vertices of the flat map (the operator's columns)."""
        return self.flatmap.n_vertices

    def _length(self, n: int, name: str) -> bool:
        """True when ``n`` values are indexed by flat vertex, False by original vertex."""
        k = self.n_vertices
        n_orig = original_count(self.flatmap)
        if n == k and n_orig in (None, k):
            return True
        if n_orig is not None:
            if n == n_orig:
                return False
            if n == k:
                return True
            expected = (f"{n_orig} values (one per vertex of the mesh given to flatten) or {k} (one per flat-map "
                        "vertex)")
        else:  # a map saved by an older surfmap: the original count is unknown
            vmax = int(self.flatmap.vertex_map.max()) if k else -1
            if n > vmax:
                return False
            expected = (f"{k} values (one per flat-map vertex) or the length of the mesh given to flatten (more "
                        f"than {vmax})")
        raise MetricError(f"{name}: expected {expected}; found {n}. Check that the metric belongs to this surface "
                          "(same subject, hemisphere and mesh resolution)")

    def _values(self, values):
        """-> (X (S, n, C), indexed by flat vertex?, channels or None, output ndim)."""
        if isinstance(values, Mapping):
            if not values:
                raise MetricError("values: the dict of metrics is empty; give at least one name -> array")
            cols = []
            for name, arr in values.items():
                a = np.asarray(arr)
                if a.ndim != 1:
                    raise MetricError(f"values[{name!r}]: expected a 1-D per-vertex array; found shape {a.shape}")
                if not self._length(len(a), f"values[{name!r}]"):
                    a = self.flatmap.to_flat(a)
                cols.append(a)
            X = np.stack(cols, axis=1)[None]
            return X, True, [str(n) for n in values], 3
        X = np.asarray(values)
        if X.ndim == 1:
            return X[None, :, None], self._length(len(X), "values"), None, 3
        if X.ndim == 2:
            return X[None], self._length(len(X), "values"), None, 3
        if X.ndim == 3:
            return X, self._length(X.shape[1], "values"), None, 4
        raise MetricError(f"values: expected shape (n,), (n, C) or (S, n, C); found {X.shape}")

    @cached_property
    def _original_operator(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, data) of the operator on the original mesh's vertices.

        The operator's columns mapped through ``fm.vertex_map``; with vertices inserted by the cut,
        the operator times ``fm.interpolation()`` (each inserted vertex's weight spread on its two
        original vertices), so a full-length input gives the same image as ``fm.to_flat(x)``.
        """
        M, fm = self.matrix, self.flatmap
        if fm.n_inserted == 0:
            return M.indptr, fm.vertex_map[M.indices], M.data
        n = int(max(fm.vertex_map.max(), fm.inserted.max())) + 1
        Mo = (M @ fm.interpolation(n)).tocsr()
        Mo.sort_indices()
        return Mo.indptr.astype(np.int64), Mo.indices.astype(np.int64), Mo.data

    def __call__(self, values, out: np.ndarray | None = None) -> np.ndarray:
        """Rasterize per-vertex values.

        Parameters
        ----------
        values : (n,), (n, C) or (S, n, C) array, or dict name -> (n,) array
            ``n`` is the flat map's vertex count ``k`` or the length of the mesh given to
            ``flatten`` (then indexed through ``fm.vertex_map``; both are the same when equal).
        out : (C, size, size) or (S, C, size, size) float32, optional
            Where to write.

        Returns
        -------
        (C, size, size) float32, or (S, C, size, size) for 3-D input
            ``C = 1`` for 1-D input. For a dict, ``self.channels`` holds the names in order.

        Raises
        ------
        MetricError
            Wrong length or shape; a non-finite value at a vertex the image uses (with
            ``nan_policy="raise"``).
        """
        X, flat, channels, ndim = self._values(values)
        if channels is not None and not self._shared:
            self.channels = channels
        if np.iscomplexobj(X):
            raise MetricError("values: expected real numbers; found complex values (dtype "
                              f"{X.dtype}); pass the real part, the magnitude or the phase explicitly "
                              "(np.real, np.abs, np.angle)")
        if X.dtype not in (np.float32, np.float64):
            if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
                raise MetricError(f"values: expected numbers; found dtype {X.dtype}")
            X = X.astype(np.float64)
        X = np.ascontiguousarray(X)
        S, _, C = X.shape
        shape = (S, C, self.size, self.size)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.dtype != np.float32 or out.size != np.prod(shape) or not out.flags.c_contiguous:
            want = shape if ndim == 4 else shape[1:]  # the shape the caller gets back
            raise ParameterError(f"out: expected a C-contiguous float32 array of {want}; found "
                                 f"{out.dtype} {out.shape}; allocate it with np.empty({want}, np.float32)")
        flat_out = out.reshape(S, C, self.size * self.size)
        M = self.matrix
        # a full-length input is read through the original-vertex operator (no copy of it)
        indptr, cols, data = (M.indptr, M.indices, M.data) if flat else self._original_operator
        bad = _k.csr_apply(indptr, cols, data, X, flat_out, self.nan_policy == "ignore",
                           self.fill_value, _BLOCK)
        if self.nan_policy == "raise" and bad.any():
            s, c = (int(i[0]) for i in np.nonzero(bad))
            label = repr(channels[c]) if channels else str(c)
            where = f"subject {s}, " if ndim == 4 else ""
            raise MetricError(
                f"values: {int(bad.sum())} non-finite value(s) at vertices the image uses "
                f"({where}channel {label}: {int(bad[s, c])}); the cortex must be finite. Fix the metric "
                f"or the mask, or pass nan_policy='ignore' (renormalise over finite vertices)"
            )
        return out.reshape(shape) if ndim == 4 else out.reshape(shape[1:])

    def apply_many(self, X, out: np.ndarray | None = None) -> np.ndarray:
        """Rasterize many subjects at once: ``(S, n, C)`` -> ``(S, C, size, size)`` float32.

        One pass over the sparse operator per (subject, channel), in parallel; the same as calling
        the rasterizer on each subject.
        """
        X = np.asarray(X)
        if X.ndim != 3:
            raise MetricError(f"X: expected shape (S, n, C) (subjects, vertices, channels); found {X.shape}")
        return self(X, out=out)

    # -----------------------------------------------------------------------------------------
    # back-projection

    @cached_property
    def backprojection(self) -> sp.csr_matrix:
        """(k, size * size) CSR: bilinear reading of an image at each flat vertex's ``uv``."""
        size, uv = self.size, self.flatmap.uv
        k, P = len(uv), size * size
        if size == 1:
            return sp.csr_matrix((np.ones(k), (np.arange(k), np.zeros(k, dtype=np.int64))), shape=(k, P))
        # pixel-centre coordinates; in the half-pixel rim outside the outermost centres the two
        # nearest rows / columns are extrapolated linearly (so linear functions come back exactly)
        x = np.clip(uv[:, 0], 0.0, 1.0) * size - 0.5
        y = (1.0 - np.clip(uv[:, 1], 0.0, 1.0)) * size - 0.5
        j0 = np.clip(np.floor(x).astype(np.int64), 0, size - 2)
        i0 = np.clip(np.floor(y).astype(np.int64), 0, size - 2)
        fx, fy = x - j0, y - i0
        rows = np.repeat(np.arange(k, dtype=np.int64), 4)
        cols = np.column_stack([i0 * size + j0, i0 * size + j0 + 1,
                                (i0 + 1) * size + j0, (i0 + 1) * size + j0 + 1]).ravel()
        w = np.column_stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]).ravel()
        B = sp.csr_matrix((w, (rows, cols)), shape=(k, P))
        B.eliminate_zeros()
        return B

    def backproject(self, image, to_original: int | None = None) -> np.ndarray:
        """Read an image back at each vertex (bilinear interpolation at the vertex's ``uv``).

        Bilinear between the four nearest pixel centres; a vertex in the half-pixel rim of the
        square, outside the outermost centres, is extrapolated linearly from the two nearest rows
        and columns. So a function linear in ``uv`` comes back exactly, and ``backproject(R(x))``
        differs from a smooth ``x`` by the interpolation error of the pixel grid.

        Parameters
        ----------
        image : (size, size) or (C, size, size) array
            In this module's image convention (row 0 at the top).
        to_original : int, optional
            Length ``n`` of the mesh given to ``flatten``: return values for every original vertex
            (through ``fm.vertex_map``), NaN outside the cut (e.g. the medial wall), ready for
            :func:`surfmap.write_metric`; vertices inserted by the cut are left out.

        Returns
        -------
        (k,) or (k, C) float64, or (n,) / (n, C) with ``to_original``

        Raises
        ------
        MetricError
            The image does not have the rasterizer's size, or ``to_original`` is too small.
        """
        img = np.asarray(image, dtype=np.float64)
        s = self.size
        if img.ndim not in (2, 3) or img.shape[-2:] != (s, s):
            raise MetricError(f"image: expected shape ({s}, {s}) or (C, {s}, {s}); found {img.shape}")
        flat = img.reshape(-1, s * s).T  # (P, C)
        vals = np.asarray(self.backprojection @ flat)
        if img.ndim == 2:
            vals = vals[:, 0]
        if to_original is None:
            return vals
        vmap = self.flatmap.vertex_map
        n = int(to_original)
        n_orig = original_count(self.flatmap)
        if n_orig is not None and n != n_orig:
            raise MetricError(f"to_original: expected {n_orig} (the vertex count of the mesh given to flatten); "
                              f"found {n}")
        if n <= int(vmap.max()):
            raise MetricError(
                f"to_original: the flat map's vertex_map indexes vertices up to {int(vmap.max())}; "
                f"found n={n}. Pass the vertex count of the mesh given to flatten"
            )
        full = np.full((n,) + vals.shape[1:], np.nan)
        full[vmap] = vals[: len(vmap)]  # the vertices inserted by the cut are not original vertices
        return full

    def __repr__(self) -> str:
        return (f"Rasterizer({self.n_vertices} vertices -> {self.size}x{self.size}, mode={self.mode!r}, "
                f"nan_policy={self.nan_policy!r})")

    # -----------------------------------------------------------------------------------------
    # template mode

    @classmethod
    def for_template(cls, name: str = "fslr32k", hemi: str = "left", size: int = 224,
                     method: str = "area", mode: str = "barycentric", nan_policy: str = "raise") -> Rasterizer:
        """The rasterizer of a bundled template's flat cortex, computed once per process.

        Flattens ``load_template(name, hemi)`` (mesh and cortex mask) with ``method`` on the first
        call and keeps the map and the operator; later calls with the same arguments return the
        same object. ``R(x)`` then takes per-subject arrays of the template's full vertex count
        (e.g. 32,492 for fs_LR 32k, medial wall NaN allowed).
        """
        key = ("template", name, hemi, method)
        fm = _MAPS.get(key)
        if fm is None:
            from .pipeline import flatten
            from .templates import load_template

            tpl = load_template(name, hemi)
            fm = flatten(tpl.mesh, tpl.cortex, method=method)
            _MAPS[key] = fm
            while len(_MAPS) > _MAPS_SIZE:
                _MAPS.popitem(last=False)
        else:
            _MAPS.move_to_end(key)
        return cached_rasterizer(fm, size=size, mode=mode, nan_policy=nan_policy)


_MAPS: OrderedDict = OrderedDict()  # flattened templates, the last few only
_MAPS_SIZE = 4
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 8


def flatmap_key(fm: FlatMap) -> str:
    """A content hash of a flat map (uv, faces, vertex_map): equal maps share cached operators."""
    h = hashlib.sha1()
    for a in (fm.uv, fm.faces, fm.vertex_map):
        h.update(np.ascontiguousarray(a).view(np.uint8))
        h.update(str(a.shape).encode())
    return h.hexdigest()


def cached_rasterizer(fm: FlatMap, size: int = 224, mode: str = "barycentric",
                      nan_policy: str = "raise") -> Rasterizer:
    """A :class:`Rasterizer` shared by every caller with the same map (by content) and settings.

    Keeps the 8 most recently used operators of the process (template mode). The instance is
    shared, so calls never change it: its ``channels`` stays None (the channel names of a dict
    are its keys, in order).
    """
    _check_flatmap(fm)
    key = (flatmap_key(fm), _check_size(size), mode, nan_policy)
    R = _CACHE.get(key)
    if R is None:
        R = Rasterizer(fm, size=size, mode=mode, nan_policy=nan_policy)
        R._shared = True
        _CACHE[key] = R
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return R


def rasterize(fm: FlatMap, values, size: int = 224, mode: str = "barycentric",
              nan_policy: str = "raise") -> np.ndarray:
    """One-shot :class:`Rasterizer`: ``Rasterizer(fm, size, mode, nan_policy)(values)``.

    The operator is cached (by map content and settings), so repeated calls on one map are cheap.

    Returns
    -------
    (C, size, size) float32
        Channels in the order of ``values`` (columns, or dict keys).
    """
    return cached_rasterizer(fm, size=size, mode=mode, nan_policy=nan_policy)(values)
