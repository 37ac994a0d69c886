"""The :class:`FlatMap` result type: a disk mesh laid out in the unit square."""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._json import json_default
from .exceptions import FormatError, InputFileNotFoundError, MeshError, MetricError

__all__ = ["FlatMap"]

_CORNER_POSITIONS = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class FlatMap:
    """A flattened disk: vertex positions in [0, 1]^2 and the disk's faces.

    Attributes
    ----------
    uv : (k, 2) float64
        Flat position of each vertex of the disk, inside the unit square.
    faces : (m, 3) int64
        Triangles indexing ``uv`` (the input connectivity, positively oriented in the plane).
    vertex_map : (k,) int64
        Index in the mesh given to ``flatten`` / ``conformal_map`` of each flat vertex that is an
        original vertex: the first ``k`` rows of ``uv``. The rows after them are vertices inserted
        by :func:`surfmap.cut` (chord midpoints), see ``inserted``.
    corners : (4,) int64
        Indices into ``uv`` of the vertices at (0, 0), (1, 0), (1, 1), (0, 1).
    info : dict
        Method, iterations, residuals, repairs and stage timings (JSON-serialisable).
    vertices : (k + j, 3) float64 or None
        3D positions of the flat vertices, used by :func:`surfmap.distortion`.
    inserted : (j, 2) int64
        For flat vertex ``k + i``: the two original vertices (indices like ``vertex_map``) whose
        edge it splits. Empty for most maps.
    inserted_weights : (j, 2) float64
        Its interpolation weights: a per-vertex function ``x`` of the original mesh takes
        ``inserted_weights[i] @ x[inserted[i]]`` there (exact for functions linear on the faces).
        :meth:`to_flat` and :meth:`interpolation` apply them.
    """

    uv: np.ndarray
    faces: np.ndarray
    vertex_map: np.ndarray
    corners: np.ndarray
    info: dict = field(default_factory=dict)
    vertices: np.ndarray | None = None
    inserted: np.ndarray | None = None
    inserted_weights: np.ndarray | None = None

    def __post_init__(self):
        uv = np.ascontiguousarray(self.uv, dtype=np.float64)
        faces = np.ascontiguousarray(self.faces, dtype=np.int64)
        vmap = np.ascontiguousarray(self.vertex_map, dtype=np.int64)
        corners = np.ascontiguousarray(self.corners, dtype=np.int64)
        ins = np.zeros((0, 2)) if self.inserted is None else np.asarray(self.inserted)
        ins = np.ascontiguousarray(ins, dtype=np.int64).reshape(-1, 2) if ins.size == 0 else ins
        w = np.full(ins.shape, 0.5) if self.inserted_weights is None else np.asarray(self.inserted_weights)
        w = np.ascontiguousarray(w, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise MeshError(f"FlatMap.uv: expected shape (k, 2); found {uv.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise MeshError(f"FlatMap.faces: expected shape (m, 3); found {faces.shape}")
        if ins.ndim != 2 or ins.shape[1] != 2 or w.shape != ins.shape:
            raise MeshError(f"FlatMap.inserted: expected (j, 2) vertex pairs and (j, 2) weights; found shapes "
                            f"{ins.shape} and {w.shape}")
        ins = np.ascontiguousarray(ins, dtype=np.int64)
        if vmap.shape != (len(uv) - len(ins),):
            raise MeshError(f"FlatMap.vertex_map: expected {len(uv) - len(ins)} entries (one per uv row, less the "
                            f"{len(ins)} inserted vertices); found {vmap.shape}")
        if len(ins) and (ins.min() < 0 or not np.allclose(w.sum(axis=1), 1.0)):
            raise MeshError("FlatMap.inserted: expected vertex indices >= 0 and weights summing to 1 per row; "
                            f"found min index {int(ins.min())}, weight sums in [{w.sum(1).min():.3g}, "
                            f"{w.sum(1).max():.3g}]")
        object.__setattr__(self, "inserted", ins)
        object.__setattr__(self, "inserted_weights", w)
        if corners.shape != (4,):
            raise MeshError(f"FlatMap.corners: expected 4 vertex indices; found shape {corners.shape}")
        if len(faces) and (faces.min() < 0 or faces.max() >= len(uv)):
            raise MeshError(f"FlatMap.faces: indices must lie in [0, {len(uv) - 1}] (one uv row per vertex); "
                            f"found min {int(faces.min())} and max {int(faces.max())}")
        object.__setattr__(self, "uv", uv)
        object.__setattr__(self, "faces", faces)
        object.__setattr__(self, "vertex_map", vmap)
        object.__setattr__(self, "corners", corners)
        if self.vertices is not None:
            V = np.ascontiguousarray(self.vertices, dtype=np.float64)
            if V.shape != (len(uv), 3):
                raise MeshError(f"FlatMap.vertices: expected shape ({len(uv)}, 3); found {V.shape}")
            object.__setattr__(self, "vertices", V)

    @property
    def n_vertices(self) -> int:
        """Vertices of the flat map (rows of ``uv``), inserted ones included."""
        return len(self.uv)

    @property
    def n_inserted(self) -> int:
        """Vertices inserted by the cut (the last rows of ``uv``)."""
        return len(self.inserted)

    @property
    def n_original(self) -> int | None:
        """Vertex count of the mesh given to ``flatten`` (``info['n_original']``), None when not recorded."""
        n = self.info.get("n_original") if isinstance(self.info, dict) else None
        return int(n) if n is not None else None

    def _original_count(self, n=None) -> int:
        if n is None:
            n = self.n_original
        if n is None:
            n = int(max(self.vertex_map.max(initial=-1), self.inserted.max(initial=-1))) + 1
        return int(n)

    def interpolation(self, n_original: int | None = None):
        """The sparse ``(n_vertices, n_original)`` CSR matrix taking original-vertex values to the flat vertices.

        Row ``i < len(vertex_map)`` picks ``vertex_map[i]``; an inserted vertex's row holds its
        ``inserted_weights`` on its two ``inserted`` vertices.
        """
        import scipy.sparse as sp

        n = self._original_count(n_original)
        k, j = len(self.vertex_map), self.n_inserted
        rows = np.concatenate([np.arange(k), np.repeat(np.arange(k, k + j), 2)])
        cols = np.concatenate([self.vertex_map, self.inserted.ravel()])
        vals = np.concatenate([np.ones(k), self.inserted_weights.ravel()])
        return sp.csr_matrix((vals, (rows, cols)), shape=(k + j, n))

    def to_flat(self, values) -> np.ndarray:
        """Per-vertex values of the mesh given to ``flatten`` -> values at the flat vertices.

        Parameters
        ----------
        values : (n, ...) array
            One row per original vertex (e.g. a metric, or the 3D coordinates).

        Returns
        -------
        (n_vertices, ...) array
            ``values[vertex_map]`` then, for each inserted vertex, its weighted mean of the rows of
            its two original vertices (float; NaN in either gives NaN).
        """
        x = np.asarray(values)
        top = int(max(self.vertex_map.max(initial=-1), self.inserted.max(initial=-1)))
        if x.ndim == 0 or len(x) <= top:
            raise MetricError(f"values: expected one row per vertex of the mesh given to flatten (more than "
                              f"{top}); found {x.shape}")
        out = x[self.vertex_map]
        if self.n_inserted == 0:
            return out
        w = self.inserted_weights.reshape((-1, 2) + (1,) * (x.ndim - 1))
        mid = w[:, 0] * x[self.inserted[:, 0]] + w[:, 1] * x[self.inserted[:, 1]]
        return np.concatenate([out.astype(mid.dtype, copy=False), mid])

    def original_faces(self) -> np.ndarray:
        """The map's faces in the indices of the mesh given to ``flatten``, split faces restored.

        (m', 3) int64: the cut's faces before its chord splits, in no particular order.
        """
        from .mesh import unsplit_faces

        if self.n_inserted == 0:
            return self.vertex_map[self.faces]
        # flat index of each inserted vertex's two ends (original vertices are in vertex_map)
        ins = np.asarray(self.inserted, dtype=np.int64)
        pos = np.full(max(int(self.vertex_map.max()), int(ins.max())) + 1, -1, dtype=np.int64)
        pos[self.vertex_map] = np.arange(len(self.vertex_map))
        ends = pos[ins]
        if (ends < 0).any():
            missing = int(ins[ends < 0][0])
            raise MeshError(f"FlatMap.inserted: vertex {missing} is not a vertex of the flat map")
        return self.vertex_map[unsplit_faces(self.faces, ends)]

    def signed_areas(self) -> np.ndarray:
        """Signed area (m,) of each face in the plane; positive when not flipped."""
        a, b, c = self.uv[self.faces[:, 0]], self.uv[self.faces[:, 1]], self.uv[self.faces[:, 2]]
        e1, e2 = b - a, c - a
        return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])

    def save(self, path) -> Path:
        """Write the map to ``path`` (.npz), atomically (write, then rename)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        arrays = dict(
            uv=self.uv,
            faces=self.faces,
            vertex_map=self.vertex_map,
            corners=self.corners,
            info=np.array(json.dumps(self.info, default=json_default)),
            format=np.array("surfmap.FlatMap/1"),
        )
        if self.vertices is not None:
            arrays["vertices"] = self.vertices
        if self.n_inserted:
            arrays["inserted"] = self.inserted
            arrays["inserted_weights"] = self.inserted_weights
        return atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))

    @classmethod
    def load(cls, path) -> "FlatMap":
        """Read a map written by :meth:`save`.

        Raises
        ------
        InputFileNotFoundError
            The file does not exist.
        FormatError
            The file is not a surfmap flat map or is corrupt.
        """
        path = Path(path)
        if not path.exists():
            raise InputFileNotFoundError(f"{path}: no such flat-map file")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z or not str(z["format"]).startswith("surfmap.FlatMap"):
                    raise FormatError(
                        f"{path}: not a surfmap flat map (expected an .npz written by FlatMap.save)"
                    )
                arrays = {k: z[k] for k in ("uv", "faces", "vertex_map", "corners")}
                info = json.loads(str(z["info"]))
                vertices = z["vertices"] if "vertices" in z else None
                ins = {k: z[k] for k in ("inserted", "inserted_weights") if k in z}
        except FormatError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise FormatError(f"{path}: could not read the flat map: truncated or corrupt ({err})") from None
        try:
            fm = cls(**arrays, info=info, vertices=vertices, **ins)
        except (MeshError, ValueError, TypeError) as err:
            raise FormatError(f"{path}: not a valid flat map: {err}") from None
        _check_loaded(fm, path)
        return fm

    def to_gifti(self, path, hemi: str | None = None, n_vertices: int | None = None) -> Path:
        """Write the map as a Workbench flat surface of the original mesh (:func:`surfmap.io.write_flat_surface`)."""
        from .io import write_flat_surface

        return write_flat_surface(self, path, hemi=hemi, n_vertices=n_vertices)

    def __repr__(self) -> str:
        return f"FlatMap({self.n_vertices} vertices, {len(self.faces)} faces, method={self.info.get('method')!r})"


# uv may leave the square by round-off only (the maps put the boundary on it to ~1e-12)
_UV_SLACK = 1e-6


def _check_loaded(fm: FlatMap, path) -> None:
    """What a file can get wrong that the constructor does not check: FormatError naming the file."""
    bad = f"{path}: not a valid flat map:"
    fix = "re-create it with surfmap flatten (or FlatMap.save)"
    if not isinstance(fm.info, dict):
        raise FormatError(f"{bad} 'info' should be a JSON object (dict); found a {type(fm.info).__name__}; {fix}")
    k = fm.n_vertices
    if k == 0 or len(fm.faces) == 0:
        raise FormatError(f"{bad} expected vertices and faces; found {k} vertices, {len(fm.faces)} faces; {fix}")
    if not np.isfinite(fm.uv).all():
        raise FormatError(f"{bad} {int((~np.isfinite(fm.uv)).any(axis=1).sum())} uv rows are NaN or inf; {fix}")
    lo, hi = float(fm.uv.min()), float(fm.uv.max())
    if lo < -_UV_SLACK or hi > 1 + _UV_SLACK:
        raise FormatError(f"{bad} uv should lie in the unit square [0, 1]^2; found values in [{lo:.6g}, {hi:.6g}]; "
                          f"{fix}")
    if fm.corners.min() < 0 or fm.corners.max() >= k:
        raise FormatError(f"{bad} corners should index the {k} uv rows; found {fm.corners.tolist()}; {fix}")
    far = np.abs(fm.uv[fm.corners] - _CORNER_POSITIONS).max()
    if far > 1e-3:
        raise FormatError(f"{bad} the corners should sit at (0,0), (1,0), (1,1), (0,1); found "
                          f"{np.round(fm.uv[fm.corners], 4).tolist()}; {fix}")
    if fm.vertex_map.min() < 0:
        raise FormatError(f"{bad} vertex_map should hold vertex indices (>= 0); found {int(fm.vertex_map.min())}; "
                          f"{fix}")
    n = fm.info.get("n_original")
    top = max(int(fm.vertex_map.max()), int(fm.inserted.max(initial=-1)))
    if n is not None and (not isinstance(n, int) or top >= n):
        raise FormatError(f"{bad} vertex_map reaches vertex {top}, but info['n_original'] "
                          f"says the mesh had {n!r} vertices; {fix}")
    area = float(fm.signed_areas().sum())
    if area <= 0:
        raise FormatError(f"{bad} the faces are mirrored (clockwise in the plane: total signed area {area:.3g}), "
                          f"so images would be flipped left to right; {fix}")


def __getattr__(name):
    # ``from surfmap.flatmap import flatten`` (the old home of the pipeline) keeps working, with a warning;
    # looked up by name at call time so that this module, which the stages import for FlatMap, imports none of them.
    if name == "flatten":
        import importlib
        import warnings

        warnings.warn("surfmap.flatmap.flatten moved to surfmap.pipeline.flatten (also surfmap.flatten); "
                      "import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module("surfmap.pipeline").flatten
    raise AttributeError(f"module 'surfmap.flatmap' has no attribute {name!r}")
